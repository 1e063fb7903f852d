"""Scaling invariants: adding data-parallel replicas at fixed per-device work never lowers aggregate
throughput by more than the added communication explains; resolved degrees multiply to the devices."""
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from npusim.config.errors import ConfigError
from npusim.config.hardware import load_profile
from npusim.config.model import load_model
from npusim.config.plan import make_plan, parse_plan
from npusim.config.workload import TrainWorkload
from npusim.simulate import simulate

COMM = ("tp_comm", "cp_comm", "ep_comm", "pp_comm", "dp_comm")
CASES = [
    ("llama3-8b", "nvidia-h100-sxm-80g", "tp=2,zero=1", 4096),
    ("llama2-7b", "atlas-800t-a2", "tp=4,pp=2,zero=0", 4096),
    ("qwen3-30b-a3b", "nvidia-h100-sxm-80g", "tp=1,pp=2,ep=8,zero=1", 4096),
    ("mixtral-8x7b", "atlas-800t-a2", "tp=4,pp=2,ep=2,zero=1,sp=1", 2048),
]


def run(model, hw, plan, seq, devices, gb):
    return simulate(load_model(model), load_profile(hw), make_plan(parse_plan(plan)),
                    TrainWorkload(seq_len=seq, global_batch=gb), devices)


@settings(max_examples=24, deadline=None)
@given(case=st.sampled_from(CASES), replicas=st.sampled_from([1, 2, 4, 8]), factor=st.sampled_from([2, 4, 8]),
       per_replica=st.sampled_from([4, 8]))
def test_more_replicas_lose_throughput_only_to_communication(case, replicas, factor, per_replica):
    model, hw, plan, seq = case
    p = make_plan(parse_plan(plan))
    mp = p.tp * p.pp * p.cp
    try:
        small = run(model, hw, plan, seq, mp * replicas, per_replica * replicas)
    except ConfigError:  # e.g. too few replicas to host the expert-parallel group
        assume(False)
    big = run(model, hw, plan, seq, mp * replicas * factor, per_replica * replicas * factor)
    added_comm = sum(big.breakdown_s[k] - small.breakdown_s[k] for k in COMM)
    # Tolerance 0.1 % of the step: the bucketed overlap of the DP reduction moves a few microseconds
    # between ranks when the replica count changes.
    assert big.step_time_s - small.step_time_s <= max(0.0, added_comm) + 1e-3 * small.step_time_s
    # Aggregate throughput falls below linear scaling only by that communication.
    ideal = small.tokens_per_s * factor
    assert big.tokens_per_s >= ideal * small.step_time_s / (small.step_time_s + max(0.0, added_comm)) * (1 - 1e-3)
    d = big.config["plan"]
    assert d["tp"] * d["pp"] * d["cp"] * d["dp"] == mp * replicas * factor
