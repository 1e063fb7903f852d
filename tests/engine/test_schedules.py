"""Pipeline schedules (npusim.engine.schedules) and the SimPy pipeline (npusim.engine.pipeline)."""
from __future__ import annotations

from collections import Counter

import pytest

from npusim.engine.pipeline import StageCost, simulate_pipeline
from npusim.engine.schedules import interleaved, one_f_one_b, peak_in_flight, schedule_orders

ONE_F_ONE_B_CASES = [(p, m) for p in (1, 2, 3, 4, 8) for m in (1, 2, 3, 4, 5, 8, 9)]
INTERLEAVED_CASES = [(p, v, m) for p in (2, 3, 4) for v in (2, 3) for m in (p, 2 * p, 3 * p)]


def _check_order(order, chunks: int, m: int) -> None:
    counts = Counter(order)
    expected = {(k, c, i) for k in "FB" for c in range(chunks) for i in range(m)}
    assert set(counts) == expected
    assert all(n == 1 for n in counts.values()), [u for u, n in counts.items() if n > 1]
    pos = {u: j for j, u in enumerate(order)}
    for c in range(chunks):
        for i in range(m):
            assert pos[("B", c, i)] > pos[("F", c, i)], f"B({c},{i}) before its F"


@pytest.mark.parametrize("p,m", ONE_F_ONE_B_CASES)
def test_one_f_one_b_orders_complete(p, m):
    for r in range(p):
        _check_order(one_f_one_b(r, p, m), 1, m)


@pytest.mark.parametrize("p,v,m", INTERLEAVED_CASES)
def test_interleaved_orders_complete(p, v, m):
    for r in range(p):
        _check_order(interleaved(r, p, v, m), v, m)


def test_schedule_orders_dispatch():
    assert schedule_orders("1f1b", 4, 1, 8) == [one_f_one_b(r, 4, 8) for r in range(4)]
    assert schedule_orders("interleaved", 4, 2, 8) == [interleaved(r, 4, 2, 8) for r in range(4)]
    # interleaved with vpp == 1 falls back to 1F1B
    assert schedule_orders("interleaved", 4, 1, 8) == [one_f_one_b(r, 4, 8) for r in range(4)]
    with pytest.raises(ValueError):
        schedule_orders("gpipe", 4, 1, 8)


def _stages(n: int, f: float, b: float, p2p: float = 0.0) -> list[StageCost]:
    return [StageCost({"compute": f}, {"compute": b}, p2p) for _ in range(n)]


def _run(p, v, m, sched, f=1.0, b=2.0, p2p=0.0):
    traces = simulate_pipeline(_stages(p * v, f, b, p2p), p, v, m, sched, keep_events=True)
    ev = {}
    for r, tr in enumerate(traces):
        for kind, stage, i, s, e in tr.events:
            assert (kind, stage, i) not in ev
            assert stage % p == r, "stage placed on the wrong rank"
            ev[(kind, stage, i)] = (s, e)
    return traces, ev


DEP_CASES = [(4, 1, 8, "1f1b"), (3, 1, 2, "1f1b"), (2, 1, 5, "1f1b"), (4, 2, 8, "interleaved"),
             (2, 3, 4, "interleaved"), (4, 2, 4, "interleaved")]


@pytest.mark.parametrize("p,v,m,sched", DEP_CASES)
@pytest.mark.parametrize("p2p", [0.0, 0.25])
def test_pipeline_respects_dependencies(p, v, m, sched, p2p):
    f, b = 1.0, 2.0
    traces, ev = _run(p, v, m, sched, f, b, p2p)
    n = p * v
    eps = 1e-12
    assert len(ev) == 2 * n * m
    for i in range(m):
        for j in range(n):
            s, e = ev[("F", j, i)]
            assert e - s == pytest.approx(f)
            if j > 0:
                assert s >= ev[("F", j - 1, i)][1] + p2p - eps, f"F({j},{i}) starts before F({j - 1},{i}) arrives"
            s, e = ev[("B", j, i)]
            assert e - s == pytest.approx(b)
            if j < n - 1:
                assert s >= ev[("B", j + 1, i)][1] + p2p - eps, f"B({j},{i}) starts before B({j + 1},{i}) arrives"
            else:
                assert s >= ev[("F", j, i)][1] - eps, "last stage's B before its own F"
    # one unit at a time on each rank
    for tr in traces:
        spans = sorted((s, e) for _, _, _, s, e in tr.events)
        for (s0, e0), (s1, _) in zip(spans, spans[1:]):
            assert s1 >= e0 - eps
        assert tr.finish_s == pytest.approx(spans[-1][1])


@pytest.mark.parametrize("p,m", [(2, 1), (2, 5), (4, 3), (4, 8), (8, 8), (8, 16), (1, 4)])
def test_one_f_one_b_bubble_fraction(p, m):
    f, b = 1.0, 2.0
    traces, _ = _run(p, 1, m, "1f1b", f, b)
    total = max(t.finish_s for t in traces)
    assert total == pytest.approx((m + p - 1) * (f + b), rel=1e-12)
    assert traces[0].bubble_s / total == pytest.approx((p - 1) / (m + p - 1), abs=1e-9)
    for tr in traces:
        # idle time inside the step (waits plus time after the rank's own finish) is the bubble
        assert tr.pp_wait_s == 0.0
        assert tr.busy["compute"] == pytest.approx(m * (f + b))
        assert tr.bubble_s + (total - tr.finish_s) == pytest.approx((p - 1) * (f + b), abs=1e-9)


@pytest.mark.parametrize("p,v,m", [(2, 2, 4), (4, 2, 4), (4, 2, 8), (4, 3, 4), (2, 4, 6), (8, 2, 16)])
def test_interleaved_bubble(p, v, m):
    f_chunk, b_chunk = 1.0, 2.0
    f_rank, b_rank = v * f_chunk, v * b_chunk  # per micro-batch on one rank (all its chunks)
    traces, _ = _run(p, v, m, "interleaved", f_chunk, b_chunk)
    total = max(t.finish_s for t in traces)
    expected = (p - 1) * (f_rank + b_rank) / v
    for tr in traces:
        idle = tr.bubble_s + (total - tr.finish_s)
        assert idle == pytest.approx(expected, rel=1e-6)
    assert traces[0].bubble_s / total == pytest.approx((p - 1) / (v * m + p - 1), rel=1e-6)


def test_interleaved_beats_1f1b_bubble():
    p, m = 4, 8
    one, _ = _run(p, 1, m, "1f1b", 2.0, 4.0)  # same per-rank work as 2 chunks of (1, 2)
    inter, _ = _run(p, 2, m, "interleaved", 1.0, 2.0)
    assert max(t.finish_s for t in inter) < max(t.finish_s for t in one)


@pytest.mark.parametrize("p,m", ONE_F_ONE_B_CASES)
def test_peak_in_flight_rank0(p, m):
    assert peak_in_flight(one_f_one_b(0, p, m)) == {0: min(p, m)}
    for r in range(p):
        assert peak_in_flight(one_f_one_b(r, p, m))[0] == min(p - r, m)
