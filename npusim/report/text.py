"""Human-readable text of a Result."""
from __future__ import annotations


def format_result(res) -> str:
    """A short report: headline metrics, the step-time breakdown and memory."""
    c = res.config
    plan = c["plan"]
    lines = [
        f"{c['model']['name']} on {c['devices']} x {c['hardware']}  "
        f"tp={plan['tp']} pp={plan['pp']} vpp={plan['vpp']} cp={plan['cp']} dp={plan['dp']} ep={plan['ep']} "
        f"mb={plan['micro_batch']} m={c['micro_batches']} {c['schedule']} recompute={plan['recompute']}",
        f"step time   {res.step_time_s:10.3f} s",
        f"tokens/s    {res.tokens_per_s:14,.0f}   ({res.tokens_per_s_per_device:,.1f} per device)",
        f"MFU         {100 * res.mfu:10.1f} %    HFU {100 * res.hfu:.1f} %   "
        f"model FLOPs/token {res.model_flops_per_token / 1e9:.1f} G",
        f"memory      {res.peak_memory_GB:10.1f} GB of {res.hbm_capacity_GB:.1f} GB "
        f"({'fits' if res.fits_in_memory else 'DOES NOT FIT'})",
        "breakdown (s, adds up to the step time):",
    ]
    if res.ttft_s is not None:
        lines.insert(1, f"TTFT        {res.ttft_s * 1e3:10.2f} ms")
    if res.tpot_s is not None:
        lines.insert(1, f"TPOT        {res.tpot_s * 1e3:10.2f} ms   (KV cache {res.kv_cache_GB:.1f} GB per device)")
    for k, v in res.breakdown_s.items():
        if v > 0:
            lines.append(f"  {k:12s} {v:9.3f}  {100 * v / res.step_time_s:5.1f} %")
    return "\n".join(lines)
