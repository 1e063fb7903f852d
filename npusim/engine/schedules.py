"""Pipeline schedules as per-rank orders of work units.

A unit is (kind, local chunk, micro-batch) with kind 'F' (forward), 'B' (backward: the input
gradient; a full backward unless the order also holds the unit's 'W') or 'W' (deferred weight
gradient), or ('FB', chunk, micro-batch, chunk, micro-batch): a forward and a backward run as one
overlapped unit. Which stage a local chunk is depends on the schedule (``npusim.engine.layout``).
"""
from __future__ import annotations

from npusim.engine.dualpipe import dualpipe, dualpipev
from npusim.config.schedules import schedule_facts
from npusim.engine.layout import GREEDY_SCHEDULES

Unit = tuple


def one_f_one_b(rank: int, pp: int, m: int) -> list[Unit]:
    """PipeDream-flush 1F1B: warm-up forwards, steady one-forward-one-backward, cool-down backwards."""
    warmup = min(pp - rank - 1, m)
    order: list[Unit] = [("F", 0, i) for i in range(warmup)]
    f, b = warmup, 0
    while f < m:
        order.append(("F", 0, f))
        order.append(("B", 0, b))
        f, b = f + 1, b + 1
    order += [("B", 0, i) for i in range(b, m)]
    return order


def interleaved(rank: int, pp: int, vpp: int, m: int) -> list[Unit]:
    """Megatron's interleaved 1F1B over ``vpp`` model chunks per rank (needs m % pp == 0)."""
    total = m * vpp
    group = pp * vpp

    def chunk(k: int, forward: bool) -> int:
        """Local chunk of the k-th forward or backward."""
        c = (k % group) // pp
        return c if forward else vpp - 1 - c

    def mb(k: int) -> int:
        """Micro-batch of the k-th forward or backward."""
        return (k // group) * pp + k % pp

    warmup = min((pp - rank - 1) * 2 + (vpp - 1) * pp, total)
    order: list[Unit] = [("F", chunk(k, True), mb(k)) for k in range(warmup)]
    for k in range(total - warmup):
        order.append(("F", chunk(warmup + k, True), mb(warmup + k)))
        order.append(("B", chunk(k, False), mb(k)))
    order += [("B", chunk(k, False), mb(k)) for k in range(total - warmup, total)]
    return order


def pair_steady(order: list[Unit]) -> list[Unit]:
    """The order with each steady-state backward and the forward after it merged into one
    overlapped ('FB', ...) unit: Megatron-Core's 1F1B all-to-all overlap (and Pangu's adaptive pipe
    overlap) run one micro-batch's forward beside another's backward so each hides the other's EP
    all-to-all. Pairing a backward with the *next* forward (one more warm-up forward) keeps every
    pair's inputs produced by earlier units, so no rank waits on itself."""
    out: list[Unit] = []
    i = 0
    while i < len(order):
        u = order[i]
        nxt = order[i + 1] if i + 1 < len(order) else None
        if u[0] == "B" and nxt is not None and nxt[0] == "F":
            out.append(("FB", nxt[1], nxt[2], u[1], u[2]))
            i += 2
            continue
        out.append(u)
        i += 1
    return out


def paired_fb(model, plan) -> bool:
    """True when the plan runs 1F1B's steady state as overlapped forward+backward pairs: EP overlap
    on an MoE model with expert parallelism (plan dependent)."""
    return (bool(plan.ep_overlap) and model.is_moe and plan.expert_ep > 1
            and not schedule_facts(plan.pipeline_schedule).pairs_fb and not schedule_facts(plan.pipeline_schedule).greedy)


def schedule_orders(name: str, pp: int, vpp: int, m: int) -> list[list[Unit]]:
    """Per-rank unit orders of a named schedule ('forward' = inference: forwards only, in order).

    Zero-bubble schedules decide their order at run time; here they are the orders they take with
    equal F, B and W times and no p2p latency.
    """
    if name == "interleaved" and vpp > 1:
        return [interleaved(r, pp, vpp, m) for r in range(pp)]
    if name in ("1f1b", "interleaved"):
        return [one_f_one_b(r, pp, m) for r in range(pp)]
    if name == "forward":
        return [[("F", c, i) for i in range(m) for c in range(vpp)] for _ in range(pp)]
    if name == "dualpipe":
        return [dualpipe(r, pp, m) for r in range(pp)]
    if name == "dualpipev":
        return [dualpipev(r, pp, m) for r in range(pp)]
    if name in GREEDY_SCHEDULES:
        return _greedy_orders(name, pp, vpp, m)
    raise ValueError(f"unknown schedule {name!r}")


def _greedy_orders(name: str, pp: int, vpp: int, m: int) -> list[list[Unit]]:
    """Orders a run-time schedule takes with unit F, B and W times."""
    from npusim.engine.layout import pipeline_layout
    from npusim.engine.pipeline import StageCost, simulate_pipeline

    one = {"compute": 1.0}
    n = pipeline_layout(name, pp, vpp).stages
    stages = [StageCost(one, {"compute": 2.0}, 0.0, backward_input=one, backward_weight=one)] * n
    traces = simulate_pipeline(stages, pp, vpp, m, name, keep_events=True)
    lay = pipeline_layout(name, pp, vpp)
    return [[(k, lay.chunk_of(r, s), i) for k, s, i, _, _ in tr.events] for r, tr in enumerate(traces)]


def _released(order: list[Unit]) -> set[tuple[int, int]]:
    """(chunk, micro-batch) of the units whose weight gradient is deferred to a W."""
    return {(u[1], u[2]) for u in order if u[0] == "W"}


def live_counts(order: list[Unit], chunks: int) -> list[tuple[int, ...]]:
    """After every unit that can raise memory: per chunk, micro-batches waiting for their B, then
    per chunk those whose W is pending."""
    split = _released(order)
    fb, bw = [0] * chunks, [0] * chunks
    out = []

    def backward(c: int, i: int) -> None:
        """Count the input gradient of (c, i)."""
        fb[c] -= 1
        if (c, i) in split:
            bw[c] += 1
            out.append((*fb, *bw))

    for u in order:
        kind = u[0]
        if kind in ("F", "FB"):
            fb[u[1]] += 1
            out.append((*fb, *bw))
        if kind == "B":
            backward(u[1], u[2])
        elif kind == "FB":
            backward(u[3], u[4])
        elif kind == "W":
            bw[u[1]] -= 1
    return out


def peak_in_flight(order: list[Unit]) -> dict[int, int]:
    """Most micro-batches whose activations a rank holds at once (forward done, B not), per local chunk."""
    chunks = 1 + max(c for u in order for c in (u[1::2] if u[0] == "FB" else u[1:2]))
    live = live_counts(order, chunks)
    return {c: max((v[c] for v in live), default=0) for c in range(chunks)}


def peak_in_flight_total(order: list[Unit], weight: dict[int, float], w_weight: dict[int, float] | None = None) -> float:
    """Peak of the summed activation weight held at once: ``weight`` per chunk per micro-batch
    waiting for its B, ``w_weight`` per chunk per micro-batch whose W is pending."""
    chunks = len(weight)
    ww = w_weight or {c: 0.0 for c in weight}
    best = 0.0
    for v in live_counts(order, chunks):
        best = max(best, sum(weight[c] * v[c] + ww[c] * v[chunks + c] for c in range(chunks)))
    return best
