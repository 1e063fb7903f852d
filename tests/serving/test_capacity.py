"""Serving capacity planning (issue 16): the fewest cards meeting p99 TTFT and TPOT."""
import json

import pytest

from npusim.cli import main
from npusim.config.errors import ConfigError
from npusim.config.hardware import load_profile
from npusim.config.model import load_model
from npusim.config.plan import make_plan, parse_plan
from npusim.serving.capacity import Slo, fewest, plan_serving
from npusim.serving.requests import poisson_requests
from npusim.serving.run import simulate_requests
from npusim.serving.spec import ServeSpec

PRO = "tp=4,ep=4,etp=1,shared_tp=4,sp=1,moe_dispatch=allgather,precision=int8"
M, HW = load_model("pangu-pro-moe-72b"), load_profile("atlas-800i-a2")


def test_fewest_finds_the_threshold_of_a_monotone_test():
    assert fewest(lambda n: n >= 13) == 13
    assert fewest(lambda n: n >= 1) == 1
    assert fewest(lambda n: False, limit=64) is None


def test_plan_is_the_fewest_instances_that_meet_the_slo():
    plan = make_plan(parse_plan(PRO))
    reqs = poisson_requests(12.0, 30.0, 2048, 64, 0)
    slo = Slo(ttft_p99_s=0.5, tpot_p99_s=0.05)
    res = plan_serving(M, HW, reqs, 30.0, slo, lambda d: plan, sizes=(4,), disaggregated=False)
    n = res["best"]["layout"]["instances"]
    assert slo.met(res["best"]) and res["best"]["cards"] == 4 * n
    assert n > 1 and not slo.met(simulate_requests(M, HW, plan, 4, reqs, ServeSpec(instances=n - 1), 30.0))


def test_disaggregated_layouts_are_searched_and_compared_by_cards():
    plan = make_plan(parse_plan(PRO))
    reqs = poisson_requests(6.0, 20.0, 2048, 64, 0)
    res = plan_serving(M, HW, reqs, 20.0, Slo(0.5, 0.05), lambda d: plan, sizes=(4,), disaggregated=True)
    assert any("prefill" in t["layout"] for t in res["tried"])
    met = [t["cards"] for t in res["tried"] if t["met"]]
    assert res["best"]["cards"] == min(met)


def test_no_layout_is_a_one_line_error():
    plan = make_plan(parse_plan(PRO))
    reqs = poisson_requests(1.0, 10.0, 2048, 16, 0)
    with pytest.raises(ConfigError, match="meets the SLO"):
        plan_serving(M, HW, reqs, 10.0, Slo(0.001, 0.05), lambda d: plan, sizes=(4,), disaggregated=False)


def test_cli_plan_serve(capsys):
    base = ["plan", "--serve", "--model", "pangu-pro-moe-72b", "--hardware", "atlas-800i-a2", "--devices", "4",
            "--plan", PRO, "--qps", "2", "--ttft-p99", "1", "--tpot-p99", "0.05", "--output-len", "32",
            "--duration", "20", "--no-disagg"]
    assert main(base + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["best"]["cards"] == 4 and out["best"]["ttft_s"]["p99"] <= 1
    assert main(base) == 0 and "cards        4" in capsys.readouterr().out
    assert main(["plan", "--serve", "--model", "pangu-pro-moe-72b", "--hardware", "atlas-800i-a2", "--qps", "2",
                 "--ttft-p99", "1"]) == 2
    assert "--tpot-p99" in capsys.readouterr().err
    assert main(["plan", "--model", "llama3-8b", "--hardware", "atlas-800t-a2", "--days", "3"]) == 2
    assert "--tokens" in capsys.readouterr().err
