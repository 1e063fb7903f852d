"""Compare a measured PyTorch profiler trace of one training step with the simulation, by operator class.

A Kineto Chrome trace (``torch.profiler`` ... ``export_chrome_trace``; torch_npu's ``trace_view.json``
has the same event format) is read, its kernels are put into npusim's operator classes by the
regular expressions of ``RULES`` (first match wins, case-insensitive), and their durations are summed
per class. The simulator's side sums, for one device over the step, the ``op_time`` of every lowered
op by class (times the micro-batches the device runs), the full time of every collective by kind,
and the optimizer update.

What is counted: GPU kernels, memcpy and memset (Kineto categories ``kernel``, ``gpu_memcpy``,
``gpu_memset``) and tasks of an "Ascend Hardware" process (HCCL ``hcom_*`` operations of an "HCCL"
process) when the trace has them; otherwise (a CPU-only trace) every ``cpu_op`` by its self time
(its duration less that of the ops it calls). An op whose name matches no rule takes the class of the
op that called it; an op called inside an optimizer step (``Optimizer.step#...`` annotation, or a
kernel inside the matching GPU annotation) or inside an attention op counts as optimizer or attention.
Collective kernels are counted whole, hidden or not: the predicted side is the full collective time,
not the exposed part of ``Result.breakdown_s`` (which the report prints apart).
"""
from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from npusim.config.errors import ConfigError

RULES: tuple[tuple[str, str], ...] = (
    (r"all_?reduce", "comm:all_reduce"),
    (r"all_?gather", "comm:all_gather"),
    (r"reduce_?scatter", "comm:reduce_scatter"),
    (r"all_?to_?all", "comm:all_to_all"),
    (r"send_?recv|(nccl|hcom|hccl|c10d).*(send|recv|receive)", "comm:send_recv"),
    (r"nccl|hccl|hcom_|c10d::|broadcast", "comm:other"),
    (r"adam|multi_tensor|foreach|optimizer\.step|fused_sgd|lamb", "optimizer"),
    (r"flash|fmha|sdpa|scaled_?dot_?product|attention", "attention"),
    (r"gemm|matmul|\b(mm|bmm|addmm|baddbmm|linear|einsum)\b|mmbackward|cutlass|xmma|nvjet|cublas|"
     r"ampere_|hopper_|volta_|turing_", "gemm"),
    (r"norm|rms|softmax|gelu|silu|swiglu|relu|sigmoid|tanh|dropout|elementwise|vectorized|add|mul|div|sub|"
     r"copy|memcpy|memset|fill|zero|cast|clone|cat\b|stack|embedding|index|gather|scatter|cross_entropy|"
     r"nll_loss|rope|rotary|reduce|sum|mean|exp|sqrt|pow|where|transpose|permute|accumulategrad|triton",
     "elementwise"),
)
"""(pattern, class) in priority order: collectives by kind, optimizer, attention, GEMM, then norm and
elementwise (memory-bound) kernels. Anything else is 'other'."""
_COMPILED = tuple((re.compile(p, re.IGNORECASE), c) for p, c in RULES)
CLASSES = ("gemm", "attention", "elementwise", "comm:all_reduce", "comm:all_gather", "comm:reduce_scatter",
           "comm:all_to_all", "comm:send_recv", "comm:other", "optimizer", "other")
"""Every class, in report order for ties."""
DEVICE_CATS = ("kernel", "gpu_memcpy", "gpu_memset")
"""Kineto categories of device work."""
OP_CLASS = {"gemm": "gemm", "grouped_gemm": "gemm", "attention": "attention", "memory": "elementwise",
            "vector": "elementwise"}
"""npusim op kind -> class."""
COMM_CLASS = {"all_reduce": "comm:all_reduce", "all_gather": "comm:all_gather",
              "reduce_scatter": "comm:reduce_scatter", "all_to_all": "comm:all_to_all",
              "all_to_all_inter": "comm:all_to_all", "all_to_all_intra": "comm:all_to_all",
              "send_recv": "comm:send_recv"}
"""npusim collective -> class."""
_STEP = re.compile(r"^ProfilerStep#\d+")


def classify(name: str) -> str | None:
    """The class of a kernel or op name by ``RULES`` (None when no rule matches)."""
    for pattern, cls in _COMPILED:
        if pattern.search(name):
            return cls
    return None


@dataclass
class TraceSummary:
    """Measured time per class of one profiled step."""

    by_class_s: dict[str, float]
    total_s: float
    what: str
    """'device kernels' or 'CPU ops'."""
    events: int
    steps: int
    unclassified_s: dict[str, float] = field(default_factory=dict)
    """Time of the biggest names no rule matched."""

    @property
    def coverage(self) -> float:
        """Share of the counted time that is classified (not 'other')."""
        return 1.0 - self.by_class_s.get("other", 0.0) / self.total_s if self.total_s > 0 else 0.0


def read_trace(path: str | Path) -> list[dict]:
    """The events of a Chrome-trace JSON file (an object with ``traceEvents`` or a bare list)."""
    from npusim.config.policy import read_text

    p = Path(path)
    if not p.is_file() and not p.is_dir():
        raise ConfigError("--trace", "trace", str(path), "file not found", "a Chrome-trace JSON file")
    text = read_text(p, str(path), max_bytes=None)  # profiler traces may be large; unreadable: one line
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(str(path), "<file>", f"line {e.lineno}", f"not JSON: {e.msg}") from None
    except RecursionError:
        raise ConfigError(str(path), "<file>", None, "JSON nested too deeply to parse",
                          "a Chrome trace (an object with traceEvents, or a list of events)") from None
    except ValueError as e:  # e.g. an integer longer than Python converts
        raise ConfigError(str(path), "<file>", None, f"not JSON: {' '.join(str(e).split())[:80]}") from None
    events = data.get("traceEvents") if isinstance(data, dict) else data
    if not isinstance(events, list):
        raise ConfigError(str(path), "traceEvents", None, "missing", "a Chrome trace (list of events)")
    return [e for e in events if isinstance(e, dict)]


def _process_names(events: list[dict]) -> dict:
    """pid -> process name from the metadata events."""
    return {e.get("pid"): str(e.get("args", {}).get("name", "")) for e in events
            if e.get("ph") == "M" and e.get("name") == "process_name"}


def _is_device(e: dict, procs: dict) -> bool:
    """True for device work: a Kineto GPU kernel/memcpy/memset or an Ascend hardware task."""
    if e.get("cat") in DEVICE_CATS:
        return True
    proc = procs.get(e.get("pid"), "").lower()
    return "ascend hardware" in proc or ("hccl" in proc and str(e.get("name", "")).startswith("hcom_"))


def _complete(events: list[dict]) -> list[dict]:
    """Complete ('X') events with a numeric start and duration."""
    return [e for e in events if e.get("ph") == "X" and isinstance(e.get("ts"), (int, float))
            and isinstance(e.get("dur"), (int, float)) and "name" in e]


def summarize_trace(events: list[dict], steps: int | None = None) -> TraceSummary:
    """Measured seconds per class (per step: divided by ``steps``, or by the number of ProfilerStep#
    annotations, else 1)."""
    procs = _process_names(events)
    xs = _complete(events)
    device = [e for e in xs if _is_device(e, procs)]
    if device:
        counted, context_cats, what = device, ("gpu_user_annotation",), "device kernels"
    else:
        counted, context_cats, what = [e for e in xs if e.get("cat") == "cpu_op"], ("user_annotation",), "CPU ops"
    if not counted:
        raise ConfigError("--trace", "traceEvents", None, "no kernels or CPU ops to classify",
                          "a torch.profiler Chrome trace of a training step")
    ids = {id(e) for e in counted}
    context = [e for e in xs if e.get("cat") in context_cats and id(e) not in ids]
    self_s, cls_of = _attribute(counted + context, ids)
    by_class: dict[str, float] = defaultdict(float)
    unknown: dict[str, float] = defaultdict(float)
    for e in counted:
        c = cls_of[id(e)] or "other"
        by_class[c] += self_s[id(e)]
        if c == "other":
            unknown[e["name"]] += self_s[id(e)]
    found = {e["name"] for e in xs if e.get("cat") == "user_annotation" and _STEP.match(e["name"])}
    n = steps or len(found) or 1
    top = dict(sorted(unknown.items(), key=lambda kv: -kv[1])[:5])
    return TraceSummary({k: v / n for k, v in by_class.items()}, sum(by_class.values()) / n, what, len(counted), n,
                        {k: v / n for k, v in top.items()})


def _attribute(events: list[dict], counted: set[int]) -> tuple[dict[int, float], dict[int, str | None]]:
    """Self time (s) and class of every counted event, walking each thread's nesting (see module doc)."""
    tracks: dict[tuple, list[dict]] = defaultdict(list)
    for e in events:
        tracks[(e.get("pid"), e.get("tid"))].append(e)
    self_s: dict[int, float] = {}
    cls_of: dict[int, str | None] = {}
    for track in tracks.values():
        track.sort(key=lambda e: (e["ts"], -e["dur"], id(e) in counted))
        stack: list[tuple[float, dict, str | None, str | None]] = []  # (end, event, class, context)
        for e in track:
            while stack and stack[-1][0] <= e["ts"]:
                stack.pop()
            own = classify(e["name"])
            ctx = next((s[3] for s in stack if s[3]), None)
            cls = ctx or own or (stack[-1][2] if stack else None)
            gives = own if own == "optimizer" or (own == "attention" and e.get("cat") == "cpu_op") else None
            if id(e) in counted:
                self_s[id(e)] = e["dur"] * 1e-6
                cls_of[id(e)] = cls
                parent = next((s[1] for s in reversed(stack) if id(s[1]) in counted), None)
                if parent is not None:
                    self_s[id(parent)] = max(0.0, self_s[id(parent)] - e["dur"] * 1e-6)
            stack.append((e["ts"] + e["dur"], e, cls, gives))
    return self_s, cls_of


def predicted_by_class(inp, rank: int = 0) -> dict[str, float]:
    """Predicted seconds per class on one device of pipeline rank ``rank`` over one step: every lowered
    op's ``op_time`` and every collective's full time, times the micro-batches the rank runs per chunk,
    plus DP gradient reduction / parameter gather, pipeline send/recv and the optimizer update."""
    from npusim.cost.collectives import collective_time
    from npusim.cost.compute import op_time
    from npusim.cost.memory import chunk_params
    from npusim.engine.layout import pipeline_layout
    from npusim.engine.step import chunk_passes, dp_reduce_time, make_shard, optimizer_time
    from npusim.report.rebuild import step_parts
    from npusim.workload.layers import ACT_BYTES
    from npusim.workload.ops import Comm

    sp = step_parts(inp)
    si, places, hw = sp.inputs, sp.places, sp.inputs.hw
    plan = si.plan
    if not 0 <= rank < plan.pp:
        raise ConfigError("--rank", "rank", rank, "not a pipeline rank of the plan", f"0 .. {plan.pp - 1}")
    layout = pipeline_layout(plan.pipeline_schedule, plan.pp, plan.vpp)
    sh = make_shard(si.model, plan, si.seq_len, places["ep"].domains, sp.load.dropped_fraction, sp.load.expert_spread)
    m = si.micro_batches / layout.copies
    out: dict[str, float] = defaultdict(float)
    cache: dict = {}
    dense = expert = 0.0
    for stage in layout.rank_chunks[rank]:
        spec = sp.specs[stage]
        for p in chunk_passes(si, sh, spec):
            for op in p.ops:
                if op not in cache:
                    cache[op] = op_time(op, hw, plan.precision)
                out[OP_CLASS.get(op.kind, "other")] += cache[op] * m
            for c in p.comms:
                out[COMM_CLASS.get(c.collective, "comm:other")] += collective_time(c, places[c.group], hw) * m
        red, gather = dp_reduce_time(si, spec, places)
        out["comm:reduce_scatter" if plan.zero >= 1 else "comm:all_reduce"] += red
        out["comm:all_gather"] += gather
        if plan.pp > 1:
            p2p = Comm("pp_p2p", "pp", "send_recv", "pp", 2, sh.tokens * si.model.hidden * ACT_BYTES / plan.tp)
            hops = (stage > 0) + (stage < layout.stages - 1)
            out["comm:send_recv"] += 2 * hops * m * collective_time(p2p, places["pp"], hw)
        cp = chunk_params(si.model, plan, spec)
        dense, expert = dense + cp.dense, expert + cp.expert
    out["optimizer"] += optimizer_time(si, dense, expert, places)
    return {k: v for k, v in out.items() if v > 0}


def compare_classes(measured: dict[str, float], predicted: dict[str, float]) -> list[dict]:
    """Rows ``{class, measured_s, predicted_s, gap_s, gap_pct}`` (gap = predicted - measured; pct of the
    measured time, None when nothing was measured), largest absolute gap first."""
    rows = []
    for c in [c for c in CLASSES if c in measured or c in predicted] + sorted(set(measured) - set(CLASSES)):
        ms, ps = measured.get(c, 0.0), predicted.get(c, 0.0)
        rows.append({"class": c, "measured_s": ms, "predicted_s": ps, "gap_s": ps - ms,
                     "gap_pct": round(100.0 * (ps - ms) / ms, 1) if ms > 0 else None})
    return sorted(rows, key=lambda r: -abs(r["gap_s"]))


def format_comparison(rows: list[dict], summary: TraceSummary, footer: str = "") -> str:
    """An aligned text table of ``compare_classes`` rows with the trace's coverage line."""
    head = ("class", "measured s", "predicted s", "gap s", "gap %")
    body = [(r["class"], f"{r['measured_s']:.4g}", f"{r['predicted_s']:.4g}", f"{r['gap_s']:+.4g}",
             "-" if r["gap_pct"] is None else f"{r['gap_pct']:+.1f}") for r in rows]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(x, widths)))
             for x in [head, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"measured: {summary.events} {summary.what}, {summary.total_s:.4g} s per step over {summary.steps} "
                 f"step(s), {100 * summary.coverage:.1f} % classified")
    if summary.unclassified_s:
        lines.append("unclassified: " + ", ".join(f"{k} {v:.3g} s" for k, v in summary.unclassified_s.items()))
    if footer:
        lines.append(footer)
    return "\n".join(lines)
