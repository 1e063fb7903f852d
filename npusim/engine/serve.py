"""Serving: a prefill (TTFT) or one decode step (TPOT) through the same cost models and event engine.

The forward passes of the pipeline stages run as a forward-only schedule in the SimPy pipeline
(``pp`` micro-batches in flight); the step's makespan is TTFT for prefill, and per-step time for
decode (TPOT = step / output tokens per step, which speculative and block decoding raise above 1).
"""
from __future__ import annotations

from npusim.config.errors import ConfigError
from dataclasses import replace

from npusim.cost.collectives import collective_time, placements
from npusim.cost.compute import matrix_dtype, op_time
from npusim.cost.passes import named_sum
from npusim.engine.opgraph import Overlap, build_graph, ping_pong
from npusim.engine.pipeline import StageCost, simulate_pipeline
from npusim.engine.unit import UnitRun, run_unit
from npusim.engine.unitcost import combine_runs, hidden_of, shrink_spec
from npusim.engine.resolved import ResolvedStep, resolve_serving_step
from npusim.engine.serve_setup import comm_view, resolve_serving_plan, serve_shard, serving_memory
from npusim.result import Result
from npusim.workload.layers import ACT_BYTES, elementwise
from npusim.workload.ops import Comm, Pass
from npusim.workload.serving import ServeShard, kv_bytes, serve_head, serve_layer


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
            one = ServeShard(**{**sh.__dict__, "q_tokens": 1, "bidirectional": False})
            for _ in range(wl.draft_tokens):
                p.extend(serve_layer(model, one, model.is_moe))
                p.extend(serve_head(model, one))
    return p


def simulate_serving(model, hw, plan, wl, devices: int, *, strict_memory: bool = True,
                     keep_timeline: bool = False) -> Result:
    """Predict a prefill (TTFT) or one decode step (TPOT) of ``wl`` on ``devices`` devices (chips)."""
    step = resolve_serving_step(model, hw, plan, wl, devices)
    return simulate_resolved_serving(step, hw, wl, strict_memory=strict_memory, keep_timeline=keep_timeline)


def simulate_resolved_serving(step: ResolvedStep, hw, wl, *, strict_memory: bool = True,
                              keep_timeline: bool = False) -> Result:
    """``simulate_serving`` of a step resolved by ``npusim.engine.resolved.resolve_serving_step``
    (``hw``: the profile itself; the step's inputs hold the view its collectives see)."""
    model, plan, devices, fw = step.inputs.model, step.plan, step.inputs.devices, step.forward
    if fw is None:
        raise ValueError("a training step is simulated by npusim.simulate.simulate, not as serving")
    mem = serving_memory(model, plan, wl, fw.seqs_per_group)
    if strict_memory:
        _check_fits(hw, plan, mem, fw.seqs_per_group, wl)
    m, halves, sh, chw, places = fw.micro_batches, fw.halves, fw.shard, step.inputs.hw, step.places
    seqs = max(1, fw.seqs_per_group // m)
    gemm_plan = plan.model_copy(update={"precision": "bf16"}) if plan.weight_only else plan
    p2p = Comm("pp_p2p", "pp", "send_recv", "pp", 2, seqs * wl.query_tokens * model.hidden * ACT_BYTES / plan.tp)
    p2p_s = collective_time(p2p, places["pp"], chw) if plan.pp > 1 else 0.0
    coster = StageCoster(model, sh, wl, chw, gemm_plan.precision, places,
                          Overlap(tp=plan.tp_comm_overlap, ep=halves > 1), halves)
    stages: list[StageCost] = []
    hidden: dict[str, float] = {}
    for spec in step.specs:
        run = coster.stage(spec)
        fwd = _stage_pass(model, spec, sh, wl)
        flops = sum(o.flops for o in fwd.ops if o.kind in ("gemm", "grouped_gemm", "attention")) * m * halves
        stages.append(StageCost(dict(run.parts), {}, p2p_s, flops))
        for k, v in hidden_of(run).items():
            hidden[k] = max(hidden.get(k, 0.0), v)
    traces = simulate_pipeline(stages, plan.pp, 1, m, "forward", keep_timeline)
    res = _result(model, hw, plan, wl, devices, traces, stages, mem, keep_timeline)
    res.extra.update({"hidden_comm_by_part_s": hidden, "engine_unit_simulations": coster.simulations,
                      "engine_op_events": coster.op_events})
    res.extra.update({"moe_load_factor": sh.load_factor, "tbo_micro_batches": halves,
                      "cards": devices / hw.node.chips_per_card, "chips_per_card": hw.node.chips_per_card,
                      "tokens_per_s_per_card": res.tokens_per_s * hw.node.chips_per_card / devices})
    return res


class StageCoster:
    """Forward passes of pipeline stages on the op-level event engine (``npusim.engine.unit``), as
    training units are: kernels and collectives share the device's streams, HBM and links, and
    overlap comes from dependencies. Two-batch overlap runs the stage as two chains (the halves)
    issued to one compute stream in turn between all-to-alls (``opgraph.ping_pong``), so one half's
    all-to-all hides only behind the other half's kernels. Stages of
    more than ``EXACT_LAYERS`` layers of a kind are simulated shortened and extended linearly, as
    ``npusim.engine.unitcost`` does (single chains only) (checked against the exact run in ``tests/engine/test_serve.py``)."""

    def __init__(self, model, sh: ServeShard, wl, hw, precision: str, places: dict, ov: Overlap,
                 chains: int, exact: bool = False):
        self.model, self.sh, self.wl, self.hw, self.precision = model, sh, wl, hw, precision
        self.places, self.ov, self.chains, self.exact = places, ov, chains, exact
        self.cache: dict = {}
        self.memo: dict = {}
        self.simulations = 0
        self.op_events = 0

    def _run(self, spec) -> UnitRun:
        key = replace(spec, index=0)
        hit = self.memo.get(key)
        if hit is None:
            items = _stage_pass(self.model, spec, self.sh, self.wl).items
            nodes = build_graph([items] * self.chains, self.ov)
            if self.chains == 2:
                nodes = ping_pong(nodes)
            self.simulations += 1
            self.op_events += len(nodes)
            hit = self.memo[key] = run_unit(nodes, self.hw, self.precision, self.places, self.cache)
        return hit

    def stage(self, spec) -> UnitRun:
        """The stage's forward unit (coalesced unless ``exact``)."""
        if self.exact or self.chains > 1:
            # Two halves drift against each other layer by layer (as training's overlapped pairs),
            # so they are not a steady state of identical layers: simulated whole.
            return self._run(spec)
        base = shrink_spec(spec)
        runs = [(1.0, self._run(base))]
        for field_ in ("dense_layers", "moe_layers"):
            n = getattr(spec, field_) - getattr(base, field_)
            if n > 0:
                runs += [(n, self._run(replace(base, **{field_: getattr(base, field_) + 1}))), (-n, runs[0][1])]
        return runs[0][1] if len(runs) == 1 else combine_runs(runs)


def _check_fits(hw, plan, mem: dict, seqs_group: int, wl) -> None:
    """Raise a one-line ConfigError when the batch does not fit in device memory."""
    cap = hw.chip.hbm_capacity_GB * 1e9
    total = sum(mem.values())
    if total <= cap:
        return
    per_seq = mem["kv_cache"] / seqs_group
    fit = int(max(0.0, cap - mem["weights"] - mem["workspace"]) // per_seq) * plan.dp if per_seq else 0
    hint = " (or kv_precision=int8)" if kv_bytes(plan) > 1 else ""
    raise ConfigError("--batch", "batch", wl.batch,
                      f"does not fit: {total / 1e9:.1f} GB per device of {hw.chip.hbm_capacity_GB:.1f} GB "
                      f"(weights {mem['weights'] / 1e9:.1f}, KV cache {mem['kv_cache'] / 1e9:.1f}, "
                      f"kv_precision={plan.kv_precision})", f"batch <= about {fit} on this plan{hint}")


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
    any overlap."""

    plan = resolve_serving_plan(plan, model, devices, wl.batch)
    seqs_group = wl.batch // plan.dp
    sh = serve_shard(model, plan, wl, max(1, seqs_group // max(1, min(plan.pp, seqs_group))))
    precision = "bf16" if plan.weight_only else plan.precision
    chw = comm_view(hw, devices)
    places = placements(plan, chw)
    layer = serve_layer(model, sh, model.is_moe)
    out: dict[str, float] = {}
    for op in layer.ops:
        out[op.name] = out.get(op.name, 0.0) + op_time(op, hw, precision)
    for c in layer.comms:
        out[c.name] = out.get(c.name, 0.0) + collective_time(c, places[c.group], chw)
    return out
