"""The longest-path pipeline evaluation equals the SimPy pipeline for the same unit durations."""
import random

import pytest

from npusim.engine.longest_path import compile_order, finish_times
from npusim.engine.pipeline import StageCost, simulate_pipeline


@pytest.mark.parametrize("schedule,pp,vpp,m", [
    ("1f1b", 4, 1, 8), ("1f1b", 16, 1, 3), ("interleaved", 4, 2, 8), ("interleaved", 5, 5, 10),
    ("interleaved", 8, 2, 32), ("interleaved", 2, 5, 2),
])
def test_finish_and_last_backward_equal_the_event_simulation(schedule, pp, vpp, m):
    rng = random.Random(pp * 100 + vpp * 10 + m)
    n = pp * vpp
    fwd = [rng.uniform(1.0, 2.0) for _ in range(n)]
    bwd = [rng.uniform(2.0, 4.0) for _ in range(n)]
    p2p = [rng.uniform(0.0, 0.3) for _ in range(n)]
    traces = simulate_pipeline([StageCost({"c": fwd[s]}, {"c": bwd[s]}, p2p[s]) for s in range(n)],
                               pp, vpp, m, schedule)
    ends, last_b = finish_times(compile_order(schedule, pp, vpp, m, False), fwd, bwd, p2p)
    assert ends == pytest.approx([tr.finish_s for tr in traces], rel=1e-12)
    assert last_b == pytest.approx([traces[s % pp].last_backward_end_s[s // pp] for s in range(n)], rel=1e-12)


def test_paired_units_last_as_long_as_their_forward_and_backward():
    # one rank: pairs run back to back, so the finish is the sum of all unit durations
    fwd, bwd = [1.0, 2.0], [3.0, 5.0]
    prog = compile_order("interleaved", 1, 2, 4, True)
    assert any(node[1] >= 0 and node[2] >= 0 for node in prog.nodes)
    ends, _ = finish_times(prog, fwd, bwd, [0.0, 0.0])
    assert ends == [pytest.approx(4 * (1.0 + 2.0 + 3.0 + 5.0))]


def test_a_schedule_with_deferred_weight_gradients_has_no_fixed_graph():
    with pytest.raises(ValueError, match="no fixed-duration graph"):
        compile_order("zb-h1", 4, 1, 8, False)
