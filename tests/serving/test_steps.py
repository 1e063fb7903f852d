"""The memoised step-time grid of request-level serving."""
import pytest

from npusim.config.hardware import load_profile
from npusim.config.model import load_model
from npusim.config.plan import make_plan, parse_plan
from npusim.config.workload import InferenceWorkload
from npusim.engine.serve import simulate_serving
from npusim.serving.steps import StepModel

M, HW = load_model("pangu-pro-moe-72b"), load_profile("atlas-800i-a2")
PLAN = make_plan(parse_plan("tp=4,ep=4,etp=1,shared_tp=4,sp=1,moe_dispatch=allgather,precision=int8"))


def exact(kind, batch, tokens):
    wl = InferenceWorkload(kind=kind, batch=batch, input_len=tokens)
    return simulate_serving(M, HW, PLAN, wl, 4, strict_memory=False).step_time_s


def test_grid_points_are_the_step_model_and_between_is_close():
    s = StepModel(M, HW, PLAN, 4)
    assert s.decode_s(8, 2048) == exact("decode", 8, 2048)
    assert s.prefill_s(2048) == exact("prefill", 1, 2048)
    for b, c in ((37, 2300), (150, 3000)):
        assert s.decode_s(b, c) == pytest.approx(exact("decode", b, c), rel=0.03)
    assert s.prefill_s(3000) == pytest.approx(exact("prefill", 1, 3000), rel=0.03)


def test_mixed_step_shares_one_weight_read():
    s = StepModel(M, HW, PLAN, 4)
    mixed = s.mixed_s(32, 2048, 512)
    assert s.decode_s(32, 2048) < mixed < s.decode_s(32, 2048) + s.prefill_s(512)
    assert s.mixed_s(0, 0, 512) == s.prefill_s(512) and s.mixed_s(32, 2048, 0) == s.decode_s(32, 2048)


def test_memo_grows_only_at_new_grid_points():
    s = StepModel(M, HW, PLAN, 4)
    s.decode_s(100, 2100)
    n = s.evals
    s.decode_s(101, 2150)
    assert s.evals == n
