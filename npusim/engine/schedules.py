"""Pipeline schedules as per-rank orders of work units ('F' or 'B', local chunk, micro-batch)."""
from __future__ import annotations

Unit = tuple[str, int, int]


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
        c = (k % group) // pp
        return c if forward else vpp - 1 - c

    def mb(k: int) -> int:
        return (k // group) * pp + k % pp

    warmup = min((pp - rank - 1) * 2 + (vpp - 1) * pp, total)
    order: list[Unit] = [("F", chunk(k, True), mb(k)) for k in range(warmup)]
    for k in range(total - warmup):
        order.append(("F", chunk(warmup + k, True), mb(warmup + k)))
        order.append(("B", chunk(k, False), mb(k)))
    order += [("B", chunk(k, False), mb(k)) for k in range(total - warmup, total)]
    return order


def schedule_orders(name: str, pp: int, vpp: int, m: int) -> list[list[Unit]]:
    """Per-rank unit orders of a named schedule ('forward' = inference: forwards only, in order)."""
    if name == "interleaved" and vpp > 1:
        return [interleaved(r, pp, vpp, m) for r in range(pp)]
    if name in ("1f1b", "interleaved"):
        return [one_f_one_b(r, pp, m) for r in range(pp)]
    if name == "forward":
        return [[("F", c, i) for i in range(m) for c in range(vpp)] for _ in range(pp)]
    raise ValueError(f"unknown schedule {name!r}")


def peak_in_flight(order: list[Unit]) -> dict[int, int]:
    """Most micro-batches whose activations a rank holds at once, per local chunk."""
    live: dict[int, int] = {}
    peak: dict[int, int] = {}
    for kind, c, _ in order:
        live[c] = live.get(c, 0) + (1 if kind == "F" else -1)
        peak[c] = max(peak.get(c, 0), live[c])
    return peak


def peak_in_flight_total(order: list[Unit], weight: dict[int, float]) -> float:
    """Peak of the summed activation weight over chunks held at once (weight per chunk)."""
    live = cur = best = 0.0
    for kind, c, _ in order:
        cur += weight[c] if kind == "F" else -weight[c]
        best = max(best, cur)
    del live
    return best
