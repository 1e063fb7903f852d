"""Predict the measured metric of one run record with the simulator."""
from __future__ import annotations

from npusim.validate.runs import RunRecord

AUTO_MICRO_BATCHES = (1, 2, 4, 8)
"""Candidates tried when a row does not publish its micro-batch."""


MTP_ACCEPTED_TOKENS = 0.85
"""Accepted draft tokens per step for one MTP head when a row does not state it: the DeepSeek-V3
technical report measures 85-90 % acceptance of the second token (we take the low end)."""

SERVING_PLAN = "tp={n},ep={n},etp=1,shared_tp={n},sp=1,moe_dispatch=allgather"
"""Serving layout for rows that do not state one: attention TP over all cards, routed experts EP over
all cards, shared experts TP over all cards, all-gather MoE dispatch and RS+AG instead of all-reduce
(the Pangu Pro MoE H2P scheme collapsed onto the row's card count)."""


def predict_record(rec: RunRecord) -> float:
    """Predicted value of the row's metric (train: step time; prefill: TTFT; decode: TPOT, in s)."""
    if rec.workload == "train":
        return simulate_record(rec).step_time_s
    res = simulate_serving_record(rec)
    return res.ttft_s if rec.workload == "prefill" else res.tpot_s


def simulate_serving_record(rec: RunRecord):
    """Simulate a prefill or decode row with the documented serving defaults."""
    from npusim.config.hardware import load_profile
    from npusim.config.plan import make_plan, parse_plan
    from npusim.config.workload import InferenceWorkload
    from npusim.engine.serve import simulate_serving
    from npusim.validate.runs import record_model

    model = record_model(rec)
    fields = parse_plan(SERVING_PLAN.format(n=rec.devices)) if model.is_moe else {"tp": rec.devices, "sp": True}
    fields["precision"] = rec.precision or "bf16"
    if rec.tp or rec.ep:
        fields.update({k: getattr(rec, k) for k in ("tp", "pp", "ep") if getattr(rec, k)})
    mtp = "MTP" in (rec.notes or "") and rec.workload == "decode"
    wl = InferenceWorkload(kind=rec.workload, batch=rec.batch, input_len=rec.input_len, output_len=rec.output_len,
                           draft_tokens=1 if mtp else 0, accepted_tokens=MTP_ACCEPTED_TOKENS if mtp else 0.0)
    return simulate_serving(model, load_profile(rec.hardware), make_plan(fields), wl, rec.devices)


def simulate_record(rec: RunRecord):
    """Simulate a training row. Unpublished choices are filled the way the run's authors had to:
    the recompute policy is the lightest of none / selective / full that fits in memory, and the
    micro-batch the fastest of AUTO_MICRO_BATCHES that fits. Neither looks at the measured time."""
    from npusim.config.errors import ConfigError
    from npusim.config.hardware import load_profile
    from npusim.config.plan import make_plan
    from npusim.simulate import simulate
    from npusim.validate.runs import record_model, record_plan_fields, record_workload

    hw, model, wl = load_profile(rec.hardware), record_model(rec), record_workload(rec)
    fields = record_plan_fields(rec)
    recomputes = (fields["recompute"],) if rec.recompute is not None else ("none", "selective", "full")
    micro = (fields["micro_batch"],) if fields.get("micro_batch") is not None else AUTO_MICRO_BATCHES
    fallback, first_error = None, None
    for rc in recomputes:
        best = None
        for mb in micro:
            try:
                res = simulate(model, hw, make_plan({**fields, "recompute": rc, "micro_batch": mb}), wl, rec.devices)
            except ConfigError as e:  # e.g. global batch not divisible by this micro-batch
                first_error = first_error or e
                continue
            fallback = fallback or res
            if res.fits_in_memory and (best is None or res.step_time_s < best.step_time_s):
                best = res
        if best is not None:
            return best
    if fallback is None:
        raise first_error or ValueError(f"{rec.id}: no valid micro-batch in {micro}")
    return fallback  # nothing fits: report the first valid plan (its fits_in_memory is False)
