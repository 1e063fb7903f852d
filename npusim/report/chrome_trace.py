"""The simulated step as a Chrome trace (open it in https://ui.perfetto.dev or chrome://tracing).

One process per pipeline rank (every DP replica and TP/CP/EP peer of a rank does the same, so one
pipeline stands for the cluster); one thread per resource of that rank's device:

====  =====================================================================================
tid   thread
====  =====================================================================================
0     schedule: one event per forward (F) / backward (B) unit of the pipeline schedule
1     matrix unit: GEMMs and attention (recompute marked), MoE imbalance wait
2     vector unit: norms, activations, elementwise kernels; the optimizer step
3-7   TP, CP, EP, PP, DP links: exposed collectives, PP sends, DP gradient reduction
10-   engine tracks (``op_level=True``): every kernel and collective of each unit as the op-level
      event engine ran it (``npusim.engine.unit``), one track per resource or traffic class; these
      overlap where the engine overlapped them (category 'engine')
====  =====================================================================================

Each unit is cut into consecutive slices, one per named part of its time (see
``npusim.report.unit_parts``), so the slices of a unit tile it exactly. Times are microseconds
rounded to the nanosecond (3 decimals); ``args`` carry the micro-batch, the virtual stage, FLOPs,
bytes and the collectives' groups. The output is deterministic: same inputs, same bytes.
"""
from __future__ import annotations

import json
from pathlib import Path

from npusim.report.unit_parts import RESOURCES, Slice, StageDetail, details_from_costs, stage_details

TRACE_VERSION = 1
TIDS = {"schedule": 0, **{r: i + 1 for i, r in enumerate(RESOURCES)}}
ENGINE_TRACKS = ("matrix", "vector", "tp_comm", "cp_comm", "ep_comm", "pp_comm", "dp_comm")
TIDS.update({f"engine:{t}": 10 + i for i, t in enumerate(ENGINE_TRACKS)})
THREAD_NAMES = {
    "schedule": "schedule (F/B units)",
    "matrix": "matrix unit (GEMM, attention)",
    "vector": "vector unit (elementwise, optimizer)",
    "tp": "TP link", "cp": "CP link", "ep": "EP link", "pp": "PP link", "dp": "DP link",
    **{f"engine:{t}": f"engine: {t.replace('_comm', ' traffic')}" for t in ENGINE_TRACKS},
}


def _engine_events(rank: int, units: list[tuple], stages, split: bool) -> list[dict]:
    """Op-level slices of each unit (kind, stage, mb, start, end) from the event engine's run of it;
    an overlapped pair is two timeline entries with the same start, shown once."""
    out, seen = [], set()
    for i, (kind, stage, mb, start, end) in enumerate(units):
        st = stages[stage]
        coster = st.pair_fn.args[0] if st.pair_fn is not None else None
        if coster is None or (rank, start) in seen:
            continue
        if kind == "FB":
            seen.add((rank, start))
            other = units[i + 1] if i + 1 < len(units) else units[i]
            parts = [(st.spec, "F"), (stages[other[1]].spec, "Bi" if split else "B")]
        else:
            parts = [(st.spec, {"F": "F", "W": "W"}.get(kind, "Bi" if split else "B"))]
        run = coster.unit(parts)[1]
        for track, name, s0, s1 in run.slices:
            key = f"engine:{track}"
            if key in TIDS and start + s0 < end:
                out.append(_event(name, "engine", rank, key, start + s0, min(end, start + s1),
                                  {"micro_batch": mb, "virtual_stage": stage, "unit": kind}))
    return out


def _us(t_s: float) -> float:
    """Seconds to microseconds, rounded to the nanosecond."""
    return round(t_s * 1e6, 3)


def _event(name: str, cat: str, pid: int, tid: str, start_s: float, end_s: float, args: dict) -> dict:
    """One complete ('X') event; start and end are rounded first so that neighbours tile exactly."""
    ts, te = _us(start_s), _us(end_s)
    return {"name": name, "cat": cat, "ph": "X", "pid": pid, "tid": TIDS[tid], "ts": ts,
            "dur": round(max(0.0, te - ts), 3), "args": args}


def _unit_events(rank: int, kind: str, stage: int, mb: int, start: float, end: float, pp: int,
                 slices: tuple[Slice, ...]) -> list[dict]:
    """The schedule event of one unit and its slices, laid end to end across [start, end]."""
    cat = "forward" if kind == "F" else "backward"
    base = {"micro_batch": mb, "virtual_stage": stage, "chunk": stage // pp}
    out = [_event(f"{kind}{mb}", cat, rank, "schedule", start, end, dict(base, duration_s=float(f"{end - start:.6g}")))]
    total = sum(s.seconds for s in slices)
    scale = (end - start) / total if total > 0 else 0.0
    t = start
    for s in slices:
        t1 = t + s.seconds * scale
        out.append(_event(s.name, cat, rank, s.resource, t, t1, dict(base, **s.args)))
        t = t1
    return out


def _p2p_events(rank: int, kind: str, stage: int, mb: int, end: float, n_stages: int,
                details: list[StageDetail]) -> list[dict]:
    """The activation (F) or gradient (B) this unit sends to the neighbouring stage."""
    if kind == "F" and stage < n_stages - 1:
        hop, to, what = details[stage].p2p_s, stage + 1, "send activation"
    elif kind == "B" and stage > 0:
        hop, to, what = details[stage - 1].p2p_s, stage - 1, "send gradient"
    else:
        return []
    if hop <= 0:
        return []
    args = {"micro_batch": mb, "virtual_stage": stage, "to_stage": to,
            "bytes": float(f"{details[stage].p2p_bytes:.6g}"), "group": "pp (send/recv)"}
    return [_event(what, "forward" if kind == "F" else "backward", rank, "pp", end, end + hop, args)]


def _tail_events(rank: int, events: list[tuple], sp) -> list[dict]:
    """DP gradient reduction, optimizer step and exposed ZeRO parameter all-gather of one rank,
    composed as ``npusim.simulate`` composes them."""
    from npusim.cost.memory import chunk_params
    from npusim.engine.pipeline import RankTrace
    from npusim.engine.step import dp_reduce_time, dp_tail, optimizer_time

    si, specs, places = sp.inputs, sp.specs, sp.places
    plan = si.plan
    tr = RankTrace(finish_s=max(e[4] for e in events))
    for kind, stage, _mb, start, end in sorted(events, key=lambda e: e[4]):
        if kind == "B":
            tr.last_backward_start_s[stage // plan.pp] = start
            tr.last_backward_end_s[stage // plan.pp] = end
    mine = [specs[c * plan.pp + rank] for c in range(plan.vpp)]
    reduce = {c: dp_reduce_time(si, s, places) for c, s in enumerate(mine)}
    red = {c: v[0] for c, v in reduce.items()}
    if plan.overlap_grad_reduce:  # what the buckets leave after the last backward, as simulate does
        costs = sp.stage_costs()
        red = {c: costs[c * plan.pp + rank].dp_after_s for c in range(plan.vpp)}
    gather = sum(v[1] for v in reduce.values())
    tail = dp_tail(tr, red, plan.overlap_grad_reduce)
    out = []
    t = 0.0 if plan.overlap_grad_reduce else tr.finish_s
    for c in sorted(red, key=lambda c: tr.last_backward_end_s.get(c, 0.0)):
        if red[c] <= 0:
            continue
        if plan.overlap_grad_reduce:  # the recurrence of npusim.engine.step.dp_tail
            s0 = max(t, tr.last_backward_end_s.get(c, 0.0))
            t = s0 + red[c]
        else:
            s0, t = t, t + red[c]
        out.append(_event("gradient reduce", "dp", rank, "dp", s0, t,
                          {"chunk": c, "virtual_stage": c * plan.pp + rank, "total_s": float(f"{red[c]:.6g}"),
                           "zero": plan.zero}))
    t_opt = tr.finish_s + tail
    dense = sum(chunk_params(si.model, plan, s).dense for s in mine)
    expert = sum(chunk_params(si.model, plan, s).expert for s in mine)
    opt = optimizer_time(si, dense, expert, places)
    out.append(_event("optimizer step", "optimizer", rank, "vector", t_opt, t_opt + opt,
                      {"params": float(f"{dense + expert:.6g}"), "zero": plan.zero}))
    exposed = gather / (8.0 * plan.vpp) if plan.overlap_param_gather else gather
    if exposed > 0:
        out.append(_event("param all-gather (exposed)", "dp", rank, "dp", t_opt + opt, t_opt + opt + exposed,
                          {"total_s": float(f"{gather:.6g}"), "zero": plan.zero}))
    return out


def _metadata(rank: int, pp: int, vpp: int, used: set[str]) -> list[dict]:
    """Process and thread names (and sort order) of one rank."""
    stages = ", ".join(str(c * pp + rank) for c in range(vpp))
    out = [{"name": "process_name", "ph": "M", "pid": rank, "tid": 0,
            "args": {"name": f"pipeline rank {rank} (stage{'s' if vpp > 1 else ''} {stages})"}},
           {"name": "process_sort_index", "ph": "M", "pid": rank, "tid": 0, "args": {"sort_index": rank}}]
    for res in sorted(used, key=TIDS.get):
        out.append({"name": "thread_name", "ph": "M", "pid": rank, "tid": TIDS[res], "args": {"name": THREAD_NAMES[res]}})
        out.append({"name": "thread_sort_index", "ph": "M", "pid": rank, "tid": TIDS[res],
                    "args": {"sort_index": TIDS[res]}})
    return out


def chrome_trace(result, stage_costs=None, *, hardware=None, op_level: bool = False) -> dict:
    """The Chrome trace (a JSON-able dict) of ``result``'s step.

    ``stage_costs`` (``npusim.engine.step.stage_costs`` output or ``unit_parts.StageDetail`` list)
    are recomputed from the result's config when omitted; ``hardware`` (profile, name or path) is
    needed when that config names a profile that is not a loadable preset. A result simulated
    without ``keep_timeline`` is rerun with it. ``op_level`` adds the event engine's tracks (every
    kernel and collective of every unit; units of more than 3 identical layers show the simulated
    ones, see docs/engine.md)."""
    from npusim.report.rebuild import inputs_from_result, plan_label, simulate_inputs, step_parts

    inp = inputs_from_result(result, hardware)
    if not result.timeline:
        result = simulate_inputs(inp, keep_timeline=True)
    sp = step_parts(inp)
    plan = sp.inputs.plan
    if stage_costs is None:
        details = stage_details(sp)
    elif all(isinstance(d, StageDetail) for d in stage_costs):
        details = list(stage_costs)
    else:
        details = details_from_costs(stage_costs)
    n_stages = plan.pp * plan.vpp
    if len(details) != n_stages:
        raise ValueError(f"{len(details)} stage costs for {n_stages} virtual stages")
    by_rank: dict[int, list[tuple]] = {r: [] for r in range(plan.pp)}
    for rank, ev in result.timeline:
        by_rank[rank].append(ev)
    meta, events = [], []
    engine_stages = None
    split = sp.facts.split_backward
    if op_level:
        engine_stages = sp.stage_costs()
    for rank in range(plan.pp):
        mine = []
        for kind, stage, mb, start, end in by_rank[rank]:
            d = details[stage]
            mine += _unit_events(rank, kind, stage, mb, start, end, plan.pp, d.forward if kind == "F" else d.backward)
            mine += _p2p_events(rank, kind, stage, mb, end, n_stages, details)
        if by_rank[rank]:
            mine += _tail_events(rank, by_rank[rank], sp)
        if engine_stages is not None:
            mine += _engine_events(rank, by_rank[rank], engine_stages, split)
        meta += _metadata(rank, plan.pp, plan.vpp, {"schedule"} | {k for k, v in TIDS.items() if any(e["tid"] == v for e in mine)})
        events += mine
    events.sort(key=lambda e: (e["pid"], e["tid"], e["ts"], -e["dur"]))
    c = result.config
    other = {"npusim_trace_version": TRACE_VERSION, "model": c["model"].get("name"), "hardware": c["hardware"],
             "devices": c["devices"], "plan": plan_label(c["plan"]), "micro_batches": c.get("micro_batches"),
             "schedule": c.get("schedule"), "step_time_s": float(f"{result.step_time_s:.6g}"),
             "critical_rank": result.extra.get("critical_rank"), "time_unit": "us"}
    return {"displayTimeUnit": "ms", "otherData": other, "traceEvents": meta + events}


def dumps_trace(trace: dict) -> str:
    """The trace as deterministic JSON text: sorted keys, one event per line."""
    head = {k: v for k, v in trace.items() if k != "traceEvents"}
    lines = [json.dumps(e, sort_keys=True, separators=(",", ":")) for e in trace["traceEvents"]]
    inner = json.dumps(head, sort_keys=True, separators=(",", ":"))[1:-1]
    return "{" + inner + ',"traceEvents":[\n' + ",\n".join(lines) + "\n]}\n"


def write_chrome_trace(result, path, *, hardware=None, stage_costs=None, op_level: bool = False) -> Path:
    """Write ``chrome_trace(result)`` to ``path`` (JSON); return the path."""
    from npusim.outputs import write_text

    return write_text(path, dumps_trace(chrome_trace(result, stage_costs, hardware=hardware, op_level=op_level)))
