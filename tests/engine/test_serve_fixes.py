"""Issue 16's serving fixes: chips vs cards, weight bytes, workspace, routing load, two-batch overlap,
redundant experts, host topology (H2P) and bidirectional block decoding."""
import pytest

from npusim.cli import main
from npusim.config.errors import ConfigError
from npusim.config.hardware import load_profile
from npusim.config.model import load_model
from npusim.config.plan import make_plan, parse_plan
from npusim.config.workload import InferenceWorkload
from npusim.cost.collectives import collective_time, placements
from npusim.engine.serve import resolve_serving_plan, simulate_serving
from npusim.engine.serve_setup import comm_view, serving_memory
from npusim.workload.ops import Comm
from serve_helpers import PRO, run

H2P = "tp=4,dp=2,ep=4,etp=2,shared_tp=8,sp=1,moe_dispatch=allgather,precision=int8"
FLAT_TP = "tp=8,ep=1,etp=8,shared_tp=8,sp=1,precision=int8"



def test_300i_duo_cards_are_two_chips(capsys):
    args = ["simulate", "--workload", "decode", "--model", "llama3-8b", "--hardware", "atlas-300i-duo",
            "--batch", "8", "--plan", "tp=4,sp=1,precision=fp16", "--json"]
    assert main(args + ["--cards", "2"]) == 0
    by_cards = capsys.readouterr().out
    assert main(args + ["--devices", "4"]) == 0
    assert capsys.readouterr().out == by_cards and '"cards": 2.0' in by_cards
    assert main(args + ["--devices", "4", "--cards", "2"]) == 2 and "not both" in capsys.readouterr().err


def test_weight_bytes_follow_the_stored_dtype():
    m = load_model("pangu-pro-moe-72b")
    wl = InferenceWorkload(kind="decode", batch=8, input_len=1024)

    def weights(text):
        return serving_memory(m, resolve_serving_plan(make_plan(parse_plan(text)), m, 4, 8), wl, 8)["weights"]

    bf16 = weights("tp=4,ep=4,precision=bf16")
    assert weights("tp=4,ep=4,precision=fp8") == pytest.approx(bf16 / 2)
    assert weights("tp=4,ep=4,precision=int8") == pytest.approx(bf16 / 2)
    assert weights("tp=4,ep=4,precision=int8,weight_dtype=int4") == pytest.approx(bf16 / 4)
    # W4A8 reads half the weight bytes of W8A8: a memory-bound small-batch decode step is faster.
    assert run(PRO + ",weight_dtype=int4", batch=4).tpot_s < run(batch=4).tpot_s
    with pytest.raises(ConfigError, match="weight_dtype"):
        run(PRO + ",weight_dtype=bf16")


def test_workspace_is_per_device_not_times_dp():
    m = load_model("llama3-8b")
    wl = InferenceWorkload(kind="prefill", batch=4, input_len=1024)
    one = serving_memory(m, resolve_serving_plan(make_plan(parse_plan("tp=2")), m, 2, 4), wl, 4)
    four = serving_memory(m, resolve_serving_plan(make_plan(parse_plan("tp=2,dp=4")), m, 8, 16), wl, 4)
    assert four["workspace"] == pytest.approx(one["workspace"])


@pytest.mark.parametrize("kind,batch", [("decode", 1), ("decode", 64), ("prefill", 2)])
def test_routing_load_reaches_serving_moe_layers(kind, batch):
    plain = "tp=4,ep=4,etp=1,shared_tp=4,sp=1,moe_dispatch=allgather,precision=int8"
    times = {r: run(plain + f",routing={r}", model="qwen3-30b-a3b", kind=kind, batch=batch).step_time_s
             for r in ("balanced", "uniform", "learned", "zipf")}
    assert times["uniform"] > times["balanced"]
    assert times["learned"] > times["balanced"]
    assert times["zipf"] > times["uniform"]


@pytest.mark.parametrize("routing", ["uniform", "learned", "zipf"])
def test_moge_groups_keep_every_ep_device_balanced(routing):
    # Pangu Pro MoE: 8 groups of 8 experts, one expert per group per token; EP4 holds 2 whole groups
    # per device, so every device gets exactly 2 slots per token whatever the popularity inside a
    # group. The same model without groups (plain top-8 of 64) loads its busiest device more.
    from npusim.config.model import load_model as lm

    moge = run(PRO + f",routing={routing}", batch=1)
    assert moge.extra["moe_load_factor"] == pytest.approx(1.0)
    flat = simulate_serving(lm("pangu-pro-moe-72b", expert_groups=0), load_profile("atlas-800i-a2"),
                            make_plan(parse_plan(PRO + f",routing={routing}")),
                            InferenceWorkload(kind="decode", batch=1, input_len=2048), 4)
    assert flat.extra["moe_load_factor"] > 1.2 and flat.tpot_s > moge.tpot_s


def test_two_batch_overlap_hides_alltoall_dispatch():
    a2a = "tp=1,dp=8,ep=8,etp=1,shared_tp=1,precision=int8"
    plain = run(a2a, devices=8, batch=512)
    tbo = run(a2a + ",ep_overlap=1", devices=8, batch=512)
    assert tbo.extra["tbo_micro_batches"] == 2
    assert tbo.breakdown_s["ep_comm"] < 0.5 * plain.breakdown_s["ep_comm"]
    with pytest.raises(ConfigError, match="alltoall"):
        run(PRO + ",ep_overlap=1")


def test_redundant_experts_let_ep_not_divide_the_expert_count():
    plan = "tp=1,dp=72,ep=72,etp=1,shared_tp=1,precision=fp8,kv_precision=int8"
    with pytest.raises(ConfigError, match="redundant_experts"):
        run(plan, model="deepseek-v3", devices=72, batch=72)
    r = run(plan + ",redundant_experts=32", model="deepseek-v3", devices=72, batch=72 * 16)
    # 256 experts + 32 copies = 4 slots on each of 72 devices; balanced load is then 4 / (256/72).
    assert r.extra["moe_load_factor"] == pytest.approx(4 / (256 / 72))


def test_300i_duo_host_view_makes_cross_cpu_collectives_slower():
    hw = load_profile("atlas-300i-duo")
    plan = resolve_serving_plan(make_plan(parse_plan("tp=8")), load_model("llama3-8b"), 8, 8)
    ag = Comm("ag", "ep", "all_gather", "tp", 8, 8e6)
    flat = collective_time(ag, placements(plan, hw)["tp"], hw)
    host = comm_view(hw, 8)
    assert host.node.devices_per_node == 4
    assert collective_time(ag, placements(plan, host)["tp"], host) > flat
    a2 = load_profile("atlas-800i-a2")
    assert comm_view(a2, 8) is a2  # HCCS does not go through the CPUs: the profile as it is


def test_h2p_beats_flat_tp_on_300i_duo():
    # Pangu Pro MoE sec. 4.2: attention DP2 x TP4 (inside one CPU's 4 chips), experts TP2 x EP4,
    # shared experts TP8, versus tensor parallelism over all 8 chips of 4 cards.
    h2p = run(H2P, hw="atlas-300i-duo", devices=8, batch=64)
    flat = run(FLAT_TP, hw="atlas-300i-duo", devices=8, batch=64)
    assert h2p.tpot_s < flat.tpot_s


def test_block_attention_is_bidirectional():
    from npusim.engine.serve import layer_op_times

    m, hw, plan = load_model("llama3-8b"), load_profile("atlas-800i-a2"), make_plan(parse_plan("tp=1"))
    block = layer_op_times(m, hw, plan, InferenceWorkload(kind="decode", batch=64, input_len=256, block_size=256,
                                                          denoise_steps=8), 1)
    prefill = layer_op_times(m, hw, plan, InferenceWorkload(kind="prefill", batch=64, input_len=256), 1)
    # Same 256 query tokens per sequence: the block also attends to 256 cached tokens, and all 256
    # of its own both ways, so its attention exceeds the causal prefill's by more than 2x.
    assert block["attention"] > 2 * prefill["attention"]


def test_bad_block_steps_and_cards_flags_are_one_line_errors(capsys):
    base = ["simulate", "--workload", "decode", "--model", "llama3-8b", "--devices", "1", "--plan", "tp=1"]
    assert main(base + ["--block-size", "8", "--denoise-steps", "9"]) == 2
    assert "1..block_size" in capsys.readouterr().err
    assert main(["simulate", "--cards", "2"]) == 2
    assert "serving flag" in capsys.readouterr().err
