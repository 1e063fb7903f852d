"""DualPipe and DualPipeV against the published comparison (DeepSeek-V3 report Table 2, DualPipe
README): bubble (PP/2 - 1)(F&B + B - 3W), activations PP + 1 per device, parameters 2x; and the
overlapped F&B unit (EP all-to-all hidden behind the other micro-batch's compute, with interference).

PP is the number of pipeline stages: pp ranks for DualPipe, 2 pp for DualPipeV (two per rank). F,
B (full backward = input gradient b + weight gradient W) and W are per stage; F&B is the time of
one overlapped forward-backward pair.
"""
from __future__ import annotations

from collections import Counter

import pytest

from npusim.engine.dualpipe import dual_program, dualpipe, dualpipev
from npusim.engine.layout import pipeline_layout
from npusim.engine.overlap import Interference, fb_parts, hide
from npusim.engine.pipeline import StageCost, simulate_pipeline
from npusim.engine.verify import dependency_violations

INTER = Interference(matrix=0.1, vector=0.25, comm=0.1)


def stages(n: int, f: float, b: float, w: float, ep: float, inter: Interference = INTER) -> list[StageCost]:
    """n equal stages whose forward and input gradient each carry ``ep`` s of EP all-to-all."""
    return [StageCost({"compute": f, "ep_comm": ep}, {"compute": b + w, "ep_comm": ep}, 0.0,
                      backward_input={"compute": b, "ep_comm": ep}, backward_weight={"compute": w},
                      matrix_fraction=0.8, interference=inter)] * n


def run(sched: str, p: int, m: int, st: list[StageCost]):
    """(traces, per-rank idle, F&B seconds) of one simulation."""
    v = 1 if sched == "dualpipe" else 2
    traces = simulate_pipeline(st, p, v, m, sched, keep_events=True)
    assert dependency_violations(traces, st, pipeline_layout(sched, p, v), m) == []
    total = max(t.finish_s for t in traces)
    s = st[0]
    pair, _ = fb_parts(s.forward, s.matrix_fraction, s.backward, s.matrix_fraction, s.interference)
    return traces, [total - sum(t.busy.values()) for t in traces], sum(pair.values())


@pytest.mark.parametrize("n", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("extra", [0, 1, 5])
def test_program_runs_every_micro_batch_once(n, extra):
    chunks = 2 * n + extra
    for h in range(n):
        prog = dual_program(n, chunks, h)
        count = Counter()
        for op in prog:
            if op[0] == "FB":
                count[("F", op[1])] += 1
                count[("B", op[2])] += 1
            elif op[0] in "FB":
                count[(op[0], op[1])] += 1
                count["W-"] += op[0] == "B" and op[2]
            else:
                count["W+"] += 1
        assert count[("F", 0)] == count[("F", 1)] == count[("B", 0)] == count[("B", 1)] == chunks
        assert count["W-"] == count["W+"] == 2 * (n - h - 1) + h + 1


def test_program_needs_enough_micro_batches():
    with pytest.raises(ValueError):
        dual_program(4, 7, 0)


PP_CASES = [(2, 4), (4, 8), (4, 12), (6, 12), (8, 16), (8, 24), (16, 32), (16, 120)]
UNIT_CASES = [(1.0, 1.0, 1.0, 0.0), (1.0, 1.0, 1.0, 0.3), (1.0, 1.0, 0.5, 0.2), (0.6, 0.6, 0.4, 0.5)]


@pytest.mark.parametrize("p,m", PP_CASES)
@pytest.mark.parametrize("f,b,w,ep", UNIT_CASES)
def test_dualpipe_bubble_matches_published_formula(p, m, f, b, w, ep):
    # Exact (1e-9) for F = b, the table's setting; every rank's bubble is at most the formula.
    traces, idle, fb = run("dualpipe", p, m, stages(p, f, b, w, ep))
    B, W = b + w + ep, w
    assert max(idle) == pytest.approx((p / 2 - 1) * (fb + B - 3 * W), abs=1e-9)
    assert [t.peak_in_flight for t in traces] == [p + 1] * p  # activations: PP + 1 stages


@pytest.mark.parametrize("p,m", [(2, 4), (4, 8), (8, 16), (16, 32), (16, 120)])
@pytest.mark.parametrize("f,b,w,ep", UNIT_CASES)
def test_dualpipev_bubble_matches_published_formula(p, m, f, b, w, ep):
    # DualPipeV: PP = 2p stages on p ranks (two per rank, V-shaped), same formula and PP + 1.
    traces, idle, fb = run("dualpipev", p, m, stages(2 * p, f, b, w, ep))
    pp_stages = 2 * p
    assert max(idle) == pytest.approx((pp_stages / 2 - 1) * (fb + (b + w + ep) - 3 * w), abs=1e-9)
    assert [t.peak_in_flight for t in traces] == [pp_stages + 1] * p


@pytest.mark.parametrize("p,m", [(4, 8), (8, 24), (16, 32)])
def test_bubble_is_an_upper_bound_for_unequal_forward_and_backward(p, m):
    _, idle, fb = run("dualpipe", p, m, stages(p, 1.0, 2.0, 1.0, 0.5))
    assert max(idle) <= (p / 2 - 1) * (fb + 3.5 - 3.0) + 1e-9


@pytest.mark.parametrize("p,m", [(4, 8), (8, 16), (16, 120)])
def test_dualpipe_beats_1f1b_and_zb1p(p, m):
    # Table 2 ordering with F = b = W: 1F1B 3(p-1) > ZB1P (p-1) > DualPipe 2(p/2-1).
    f = b = w = 1.0
    _, idle, fb = run("dualpipe", p, m, stages(p, f, b, w, 0.0))
    assert fb == pytest.approx(f + b + w)
    assert max(idle) == pytest.approx((p / 2 - 1) * 2, abs=1e-9)
    assert max(idle) < (p - 1) * (f + b + w - 2 * w) < (p - 1) * 3


def test_dualpipe_holds_two_copies_of_the_parameters():
    lay = pipeline_layout("dualpipe", 8, 1)
    assert lay.copies == 2
    assert [sorted(c) for c in lay.rank_chunks] == [sorted((r, 7 - r)) for r in range(8)]
    assert pipeline_layout("dualpipev", 8, 2).rank_chunks[0] == (0, 15)


def test_orders_feed_each_direction_from_its_end():
    p, m = 4, 8
    orders = [dualpipe(r, p, m) for r in range(p)]
    assert orders[0][0] == ("F", 0, 0)  # rank 0 starts the forward direction
    assert orders[p - 1][0] == ("F", 1, m // 2)  # rank p-1 starts the reverse direction
    assert dualpipev(0, p, m)[0] == ("F", 0, 0)
    fb = [u for u in orders[1] if u[0] == "FB"]
    assert fb and all(u[1] != u[3] for u in fb)  # a pair is always one micro-batch of each direction


# ---- the overlapped unit -----------------------------------------------------------------------
def test_hide_without_interference():
    assert hide(0.3, 1.0, Interference(), 1.0) == (0.0, 0.3, 0.0)
    exposed, hidden, extra = hide(1.5, 1.0, Interference(), 1.0)
    assert (exposed, hidden, extra) == pytest.approx((0.5, 1.0, 0.0))


def test_hide_with_interference():
    inter = Interference(matrix=0.1, vector=0.3, comm=0.2)
    exposed, hidden, extra = hide(0.5, 2.0, inter, 0.75)
    assert exposed == 0.0 and hidden == pytest.approx(0.5)
    # the collective runs 0.6 s next to compute that slows by 0.75*0.1 + 0.25*0.3 = 0.15
    assert extra == pytest.approx(0.6 * 0.15)
    exposed, hidden, extra = hide(1.0, 0.6, inter, 1.0)
    assert exposed == pytest.approx(1.0 - 0.6 / 1.2) and hidden == pytest.approx(0.5)
    assert extra == pytest.approx(0.6 * 0.1)


def test_fb_pair_hides_each_ep_behind_the_other():
    f = {"compute": 1.0, "ep_comm": 0.4, "tp_comm": 0.1}
    b = {"compute": 2.0, "ep_comm": 0.5}
    parts, hidden = fb_parts(f, 1.0, b, 1.0, Interference())
    assert parts == pytest.approx({"compute": 3.0, "ep_comm": 0.0, "tp_comm": 0.1})
    assert hidden == pytest.approx(0.9)
    parts, hidden = fb_parts(f, 1.0, {"compute": 0.2, "ep_comm": 0.5}, 1.0, Interference())
    assert parts["ep_comm"] == pytest.approx(0.2) and hidden == pytest.approx(0.7)  # F's a2a: 0.2 s of cover
    slow, _ = fb_parts(f, 1.0, b, 1.0, Interference(matrix=0.1))
    assert sum(slow.values()) > sum(parts.values())


def test_interference_never_makes_the_pair_faster_than_free_overlap():
    st_free = stages(4, 1.0, 1.0, 1.0, 0.4, Interference())
    st_slow = stages(4, 1.0, 1.0, 1.0, 0.4)
    _, idle_free, fb_free = run("dualpipe", 4, 8, st_free)
    _, idle_slow, fb_slow = run("dualpipe", 4, 8, st_slow)
    assert fb_free < fb_slow < 1.0 + 1.0 + 1.0 + 0.8
    assert max(idle_free) <= max(idle_slow)


def test_profiles_carry_the_interference_factors():
    from npusim.config.hardware import load_profile
    from npusim.engine.step import interference

    npu, gpu = interference(load_profile("atlas-800t-a2")), interference(load_profile("nvidia-h800-sxm-80g"))
    assert npu.vector > npu.matrix > 0 and npu.comm > 0  # HCCL on the AIV vector cores, HBM shared
    assert gpu.vector > gpu.matrix > 0 and gpu.comm > 0  # NCCL kernels occupy SMs
