"""Serving: a prefill (TTFT) or one decode step (TPOT) through the same cost models and event engine.

The forward passes of the pipeline stages run as a forward-only schedule in the SimPy pipeline
(``pp`` micro-batches in flight); the step's makespan is TTFT for prefill, and per-step time for
decode (TPOT = step / output tokens per step, which speculative and block decoding raise above 1).
"""
from __future__ import annotations

from npusim.config.errors import ConfigError
from npusim.cost.collectives import collective_time, placements
from npusim.cost.compute import matrix_dtype
from npusim.cost.passes import named_sum, pass_parts
from npusim.engine.pipeline import StageCost, simulate_pipeline
from npusim.result import Result
from npusim.workload.layers import ACT_BYTES, elementwise
from npusim.workload.ops import Comm, Pass
from npusim.workload.passes import chunk_specs
from npusim.workload.serving import ServeShard, kv_elems_per_token, serve_head, serve_layer


def resolve_serving_plan(plan, model, devices: int, batch: int, source: str = "--plan"):
    """Derive dp and check a serving plan; one-line ConfigError on any violation."""
    def bad(field, value, problem, allowed=""):
        return ConfigError(source, field, value, problem, allowed)

    if plan.cp != 1:
        raise bad("cp", plan.cp, "context parallelism is not modelled for serving", "1")
    mp = plan.tp * plan.pp
    dp = plan.dp or (devices // mp if devices % mp == 0 else 0)
    if dp == 0 or mp * dp != devices:
        raise bad("devices", devices, f"not equal to tp*pp*dp (tp*pp = {mp})", f"a multiple of {mp}")
    if model.heads % plan.tp:
        raise bad("tp", plan.tp, f"does not divide heads ({model.heads})", "a divisor of the head count")
    if batch % dp:
        raise bad("batch", batch, f"not divisible by the attention data-parallel size dp = {dp}", f"a multiple of {dp}")
    if model.layers < plan.pp:
        raise bad("pp", plan.pp, f"more stages than layers ({model.layers})", f"<= {model.layers}")
    group = plan.tp * dp
    etp = plan.etp or 1
    if model.is_moe:
        if model.experts % plan.ep:
            raise bad("ep", plan.ep, f"does not divide experts ({model.experts})", "a divisor of the expert count")
        if group % (plan.ep * etp):
            raise bad("ep", plan.ep, f"ep*etp = {plan.ep * etp} does not divide tp*dp = {group}", "ep*etp dividing tp*dp")
        if model.expert_ffn_hidden % etp:
            raise bad("etp", etp, f"does not divide expert_ffn_hidden ({model.expert_ffn_hidden})")
        stp = plan.shared_tp or plan.tp
        if model.shared_experts and (group % stp or (model.shared_experts * model.expert_ffn_hidden) % stp):
            raise bad("shared_tp", stp, f"must divide tp*dp ({group}) and the shared width", "a divisor of both")
    elif plan.ep > 1:
        raise bad("ep", plan.ep, "a dense model has no experts", "1")
    return plan.model_copy(update={"dp": dp, "etp": etp})


def _shard(model, plan, wl, seqs: int, hw) -> ServeShard:
    """The per-device split of one forward pass."""
    int8 = plan.precision == "int8"
    kv = {"auto": ACT_BYTES, "bf16": 2, "fp16": 2, "int8": 1}[plan.kv_precision]
    return ServeShard(seqs, wl.query_tokens, wl.input_len, wl.kind == "prefill", plan.tp, plan.dp, plan.ep,
                      plan.etp, plan.shared_tp, plan.sp, plan.moe_dispatch == "allgather",
                      1 if int8 else ACT_BYTES, kv, int8 and not plan.weight_only)


def _stage_pass(model, spec, sh: ServeShard, wl) -> Pass:
    """Forward pass of one pipeline stage, including embedding, head and speculative drafting."""
    p = Pass()
    if spec.embedding:
        p.add(elementwise("embedding_lookup", sh.tokens * model.hidden, passes=1.0, flops_per_elem=0))
    for moe, count in ((False, spec.dense_layers), (True, spec.moe_layers)):
        if count:
            lp = serve_layer(model, sh, moe)
            for _ in range(count):
                p.extend(lp)
    if spec.head:
        p.extend(serve_head(model, sh))
        if wl.draft_tokens:
            # Drafting: each draft token is one extra layer (an MTP module) and LM head at q = 1.
            one = ServeShard(**{**sh.__dict__, "q_tokens": 1})
            for _ in range(wl.draft_tokens):
                p.extend(serve_layer(model, one, model.is_moe))
                p.extend(serve_head(model, one))
    return p


def serving_memory(model, plan, wl, seqs_per_device_group: int) -> dict[str, float]:
    """Bytes per device: weights (by their split), KV cache and a working buffer."""
    w_bytes = 1 if plan.precision == "int8" else ACT_BYTES
    layers = -(-model.layers // plan.pp)
    attn = model.attention_params() / plan.tp + model.norm_params()
    if model.is_moe:
        experts = model.experts * model.ffn_params(model.expert_ffn_hidden) / (plan.ep * plan.etp)
        shared = model.ffn_params(model.shared_experts * model.expert_ffn_hidden) / (plan.shared_tp or plan.tp) if model.shared_experts else 0.0
        ffn = experts + shared + model.hidden * model.experts
    else:
        ffn = model.ffn_params(model.ffn_hidden) / plan.tp
    params = layers * (attn + ffn) + model.vocab * model.hidden / plan.tp * (1 if model.tied_embeddings else 2) / plan.pp
    kv_bytes = {"auto": ACT_BYTES, "bf16": 2, "fp16": 2, "int8": 1}[plan.kv_precision]
    kv = seqs_per_device_group * wl.kv_len * layers * kv_elems_per_token(model, plan.tp) * kv_bytes
    tokens = seqs_per_device_group * plan.dp * wl.query_tokens
    work = tokens * model.hidden * ACT_BYTES * 8
    return {"weights": params * w_bytes, "kv_cache": kv, "workspace": work}


def simulate_serving(model, hw, plan, wl, devices: int, *, strict_memory: bool = True,
                     keep_timeline: bool = False) -> Result:
    """Predict a prefill (TTFT) or one decode step (TPOT) of ``wl`` on ``devices`` devices."""
    plan = resolve_serving_plan(plan, model, devices, wl.batch)
    seqs_group = wl.batch // plan.dp
    cap = hw.chip.hbm_capacity_GB * 1e9
    mem = serving_memory(model, plan, wl, seqs_group)
    if plan.kv_precision == "auto" and sum(mem.values()) > cap:
        # auto: 16-bit KV cache when the batch fits, else an int8 KV cache (what a deployment does
        # to reach the batch); the choice is reported in the result's plan.
        plan = plan.model_copy(update={"kv_precision": "int8"})
        mem = serving_memory(model, plan, wl, seqs_group)
    total = sum(mem.values())
    if strict_memory and total > cap:
        per_seq = mem["kv_cache"] / seqs_group
        fit = int(max(0.0, cap - mem["weights"] - mem["workspace"]) // per_seq) * plan.dp if per_seq else 0
        raise ConfigError("--batch", "batch", wl.batch,
                          f"does not fit: {total / 1e9:.1f} GB per device of {hw.chip.hbm_capacity_GB:.1f} GB "
                          f"(weights {mem['weights'] / 1e9:.1f}, KV cache {mem['kv_cache'] / 1e9:.1f})",
                          f"batch <= about {fit} on this plan")
    m = max(1, min(plan.pp, seqs_group))
    sh = _shard(model, plan, wl, max(1, seqs_group // m), hw)
    places = placements(plan, hw)
    gemm_plan = plan.model_copy(update={"precision": "bf16"}) if plan.weight_only else plan
    p2p = Comm("pp_p2p", "pp", "send_recv", "pp", 2, sh.tokens * model.hidden * ACT_BYTES / plan.tp)
    p2p_s = collective_time(p2p, places["pp"], hw) if plan.pp > 1 else 0.0
    cache: dict = {}
    stages = []
    for spec in chunk_specs(model, plan.pp, 1):
        fwd = _stage_pass(model, spec, sh, wl)
        flops = sum(o.flops for o in fwd.ops if o.kind in ("gemm", "grouped_gemm", "attention")) * m
        stages.append(StageCost(pass_parts(fwd, hw, gemm_plan, places, cache), {}, p2p_s, flops))
    traces = simulate_pipeline(stages, plan.pp, 1, m, "forward", keep_timeline)
    return _result(model, hw, plan, wl, devices, traces, stages, mem, keep_timeline)


def _result(model, hw, plan, wl, devices, traces, stages, mem, keep_timeline) -> Result:
    """Assemble the serving Result (breakdown from the busiest pipeline rank)."""
    step = max(t.finish_s for t in traces)
    crit = max(range(plan.pp), key=lambda r: (sum(traces[r].busy.values()), -r))
    tr = traces[crit]
    breakdown = named_sum(tr.busy, {"pp_comm": tr.pp_wait_s, "bubble": tr.bubble_s + (step - tr.finish_s)}, step_s=step)
    if wl.kind == "prefill":
        tokens, ttft, tpot = wl.batch * wl.input_len, step, None
        processed = tokens
    else:
        tpot = step / wl.tokens_per_step
        tokens, ttft = wl.batch * wl.tokens_per_step, None
        processed = wl.batch * wl.query_tokens
    tps = tokens / step
    ctx = wl.input_len / 2 if wl.kind == "prefill" else wl.input_len
    attn = 2.0 * model.heads * _head_dims(model) * ctx * model.layers
    mf_tok = 2.0 * model.activated_matmul_params() + attn
    peak = hw.matrix_peak_flops(matrix_dtype(hw, "bf16" if plan.weight_only else plan.precision))
    total = sum(mem.values())
    hw_flops = sum(s.hw_flops for s in stages) / plan.pp
    config = {"model": model.model_dump(mode="json"), "hardware": hw.name, "devices": devices,
              "plan": plan.model_dump(mode="json"), "workload": wl.model_dump(mode="json"),
              "micro_batches": len(traces[0].busy) and max(1, min(plan.pp, wl.batch // plan.dp)), "schedule": "forward"}
    return Result(step_time_s=step, breakdown_s=breakdown, tokens_per_s=tps, tokens_per_s_per_device=tps / devices,
                  mfu=mf_tok * processed / step / (devices * peak), hfu=min(1.0, hw_flops / (step * peak)) if hw_flops else 0.0,
                  model_flops_per_token=mf_tok, peak_memory_GB=total / 1e9,
                  memory_GB={**{k: v / 1e9 for k, v in mem.items()}, "total": total / 1e9},
                  hbm_capacity_GB=hw.chip.hbm_capacity_GB, config=config,
                  timeline=[(r, e) for r, t in enumerate(traces) for e in t.events] if keep_timeline else [],
                  ttft_s=ttft, tpot_s=tpot, kv_cache_GB=mem["kv_cache"] / 1e9,
                  extra={"critical_rank": crit, "tokens_per_step": wl.tokens_per_step if wl.kind == "decode" else None})


def _head_dims(model) -> int:
    """d_qk + d_v of one head."""
    if model.attention == "mla":
        return model.mla.qk_nope_head_dim + model.mla.qk_rope_head_dim + model.mla.v_head_dim
    return 2 * model.d_head


def layer_op_times(model, hw, plan, wl, devices: int) -> dict[str, float]:
    """Seconds of each kernel and collective of one layer's forward on one device, by op name (MoE
    layer for MoE models): a drill-down of ``simulate_serving`` with the same shard and costs, before
    any overlap. ``plan.kv_precision`` is taken as given ('auto' = 16-bit)."""
    from npusim.cost.compute import op_time

    plan = resolve_serving_plan(plan, model, devices, wl.batch)
    seqs_group = wl.batch // plan.dp
    sh = _shard(model, plan, wl, max(1, seqs_group // max(1, min(plan.pp, seqs_group))), hw)
    precision = "bf16" if plan.weight_only else plan.precision
    places = placements(plan, hw)
    layer = serve_layer(model, sh, model.is_moe)
    out: dict[str, float] = {}
    for op in layer.ops:
        out[op.name] = out.get(op.name, 0.0) + op_time(op, hw, precision)
    for c in layer.comms:
        out[c.name] = out.get(c.name, 0.0) + collective_time(c, places[c.group], hw)
    return out
