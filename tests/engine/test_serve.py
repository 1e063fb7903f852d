"""Serving: prefill and decode through the shared cost models and event engine."""
import pytest

from npusim.config.errors import ConfigError
from npusim.config.hardware import load_profile
from npusim.config.model import load_model
from npusim.config.plan import make_plan, parse_plan
from npusim.config.workload import InferenceWorkload
from npusim.engine.serve import simulate_serving
from serve_helpers import PRO, run




def parts_sum(r):
    return sum(r.breakdown_s.values())


def test_decode_breakdown_sums_and_tpot():
    r = run()
    assert parts_sum(r) == pytest.approx(r.step_time_s, rel=1e-9)
    assert r.tpot_s == pytest.approx(r.step_time_s) and r.ttft_s is None
    assert r.to_dict()["tpot_s"] > 0 and r.to_dict()["kv_cache_GB"] > 0


def test_decode_grows_with_context_and_batch():
    assert run(input_len=8192).tpot_s > run(input_len=1024).tpot_s
    assert run(batch=256).tpot_s > run(batch=16).tpot_s
    assert run(batch=256).tokens_per_s > run(batch=16).tokens_per_s


def test_decode_is_memory_bound_weight_reads_dominate_small_batch():
    fast_mem = load_profile("atlas-800i-a2").with_changes(hbm_bw=2.0)
    m, plan = load_model("pangu-pro-moe-72b"), make_plan(parse_plan(PRO))
    wl = InferenceWorkload(kind="decode", batch=64, input_len=2048)
    base = simulate_serving(m, load_profile("atlas-800i-a2"), plan, wl, 4)
    faster = simulate_serving(m, fast_mem, plan, wl, 4)
    assert faster.tpot_s < 0.85 * base.tpot_s


def test_prefill_reports_ttft_and_input_throughput():
    r = run(kind="prefill", batch=2, devices=2, plan="tp=2,ep=2,etp=1,shared_tp=2,sp=1,moe_dispatch=allgather,precision=int8")
    assert r.ttft_s == pytest.approx(r.step_time_s) and r.tpot_s is None
    assert r.tokens_per_s == pytest.approx(2 * 2048 / r.ttft_s)


def test_kv_int8_halves_cache_and_auto_is_16bit_at_every_batch():
    a = run(batch=256, plan=PRO + ",kv_precision=bf16")
    b = run(batch=256, plan=PRO + ",kv_precision=int8")
    assert b.kv_cache_GB == pytest.approx(a.kv_cache_GB / 2)
    assert run(batch=256).kv_cache_GB == pytest.approx(a.kv_cache_GB)
    with pytest.raises(ConfigError, match="kv_precision=int8"):
        run(batch=584)  # a 16-bit cache does not fit: auto never switches, the error says how to fit it


def test_auto_kv_precision_time_never_falls_as_batch_grows():
    # Issue 16: the former auto switched to int8 mid-range and TPOT dropped from batch 500 to 520.
    m, hw, plan = load_model("pangu-pro-moe-72b"), load_profile("atlas-800i-a2"), make_plan(parse_plan(PRO))
    times = [simulate_serving(m, hw, plan, InferenceWorkload(kind="decode", batch=b, input_len=2048), 4,
                              strict_memory=False).tpot_s for b in range(480, 560, 8)]
    assert all(b >= a for a, b in zip(times, times[1:])), times


def test_speculative_and_block_decoding_change_tokens_per_step():
    plain = run()
    spec = run(draft_tokens=1, accepted_tokens=0.85)
    assert spec.tpot_s < plain.tpot_s and spec.step_time_s > plain.step_time_s
    block = run(block_size=32, denoise_steps=8)
    assert block.extra["tokens_per_step"] == pytest.approx(4.0)
    adaptive = run(block_size=32, denoise_steps=6.4)  # a confidence threshold's expected passes per block
    assert adaptive.extra["tokens_per_step"] == pytest.approx(5.0)
    assert adaptive.step_time_s == pytest.approx(block.step_time_s) and adaptive.tpot_s < block.tpot_s


def test_weight_only_int8_uses_16bit_matmul_peak():
    w8a16 = run(plan=PRO + ",weight_only=1", kind="prefill", batch=4)
    w8a8 = run(kind="prefill", batch=4)
    assert w8a16.ttft_s > w8a8.ttft_s


def test_300i_duo_has_no_bf16_and_still_runs_fp16():
    r = run(model="llama3-8b", hw="atlas-300i-duo", plan="tp=2,sp=1,precision=fp16", devices=2, batch=8)
    assert r.tpot_s > 0


@pytest.mark.parametrize("plan,batch,msg", [
    (PRO, 5000, "does not fit"),
    ("tp=3,ep=4,precision=int8", 8, "tp*pp*dp"),
    ("tp=4,ep=3,precision=int8", 8, "experts"),
    ("tp=2,dp=2,ep=4,precision=int8", 3, "dp"),
])
def test_bad_serving_inputs_are_one_line_errors(plan, batch, msg):
    with pytest.raises(ConfigError) as e:
        run(plan=plan, batch=batch)
    assert msg in str(e.value) and "\n" not in str(e.value)


def _coster(plan_text: str, devices: int, batch: int, exact: bool, chains: int = 1):
    from npusim.cost.collectives import placements
    from npusim.engine.opgraph import Overlap
    from npusim.engine.serve import StageCoster, resolve_serving_plan, serve_shard
    from npusim.engine.serve_setup import comm_view

    model, hw = load_model("pangu-pro-moe-72b"), load_profile("atlas-800i-a2")
    wl = InferenceWorkload(kind="decode", batch=batch, input_len=2048)
    plan = resolve_serving_plan(make_plan(parse_plan(plan_text)), model, devices, batch)
    sh = serve_shard(model, plan, wl, batch // plan.dp // chains)
    chw = comm_view(hw, devices)
    return StageCoster(model, sh, wl, chw, plan.precision, placements(plan, chw),
                        Overlap(tp=plan.tp_comm_overlap, ep=chains > 1), chains, exact=exact)


@pytest.mark.parametrize("plan_text,chains", [
    ("tp=4,ep=4,etp=1,shared_tp=4,sp=1,moe_dispatch=allgather,precision=int8", 1),
    ("tp=1,dp=4,ep=4,etp=1,shared_tp=1,precision=int8,ep_overlap=1", 2)])
def test_serving_stage_coalescing_matches_the_exact_engine_run(plan_text, chains):
    """A decode stage on the op-level engine, simulated shortened and extended linearly, is within
    0.1 % of simulating every layer, with and without two-batch overlap."""
    from npusim.workload.passes import chunk_specs

    spec = chunk_specs(load_model("pangu-pro-moe-72b"), 1, 1)[0]
    fast = _coster(plan_text, 4, 64, exact=False, chains=chains).stage(spec)
    exact = _coster(plan_text, 4, 64, exact=True, chains=chains).stage(spec)
    assert fast.duration_s == pytest.approx(exact.duration_s, rel=1e-3)


def test_two_batch_overlap_alternates_the_halves_on_one_stream():
    """ping_pong: half B's segment k starts after half A's segment k, and A's next segment after
    B's segment k, so an all-to-all of one half can only overlap the other half's kernels."""
    from npusim.engine.opgraph import Overlap, tbo_segments, build_graph, ping_pong
    from npusim.workload.ops import Comm, Op

    k = [Op(f"k{i}", "gemm", 1e9, 1e6, m=64, n=64, k=64) for i in range(3)]
    a2a = Comm("ep_dispatch", "ep", "all_to_all", "ep", 8, 1e6)
    items = [k[0], a2a, k[1], a2a, k[2]]
    nodes = ping_pong(build_graph([items, items], Overlap(ep=True)))
    a, b = tbo_segments(nodes, 0), tbo_segments(nodes, 1)
    assert len(a) == len(b) == 3
    for s in range(3):
        assert a[s][-1] in nodes[b[s][0]].deps
        if s + 1 < 3:
            assert b[s][-1] in nodes[a[s + 1][0]].deps


def test_two_batch_overlap_earns_its_hiding_on_the_engine():
    """With two-batch overlap the all-to-all is hidden behind the other half's kernels (exposed
    EP time falls), but each half reads the weights again, so memory-bound decode kernels take longer."""
    plain = simulate_serving(load_model("pangu-pro-moe-72b"), load_profile("atlas-800i-a2"),
                             make_plan(parse_plan("tp=1,dp=8,ep=8,etp=1,shared_tp=1,precision=int8")),
                             InferenceWorkload(kind="decode", batch=512, input_len=2048), 8)
    tbo = simulate_serving(load_model("pangu-pro-moe-72b"), load_profile("atlas-800i-a2"),
                           make_plan(parse_plan("tp=1,dp=8,ep=8,etp=1,shared_tp=1,precision=int8,ep_overlap=1")),
                           InferenceWorkload(kind="decode", batch=512, input_len=2048), 8)
    assert tbo.breakdown_s.get("ep_comm", 0.0) < 0.1 * plain.breakdown_s["ep_comm"]
    assert tbo.extra["hidden_comm_by_part_s"]["ep_comm"] > 0
    assert tbo.breakdown_s["compute"] > plain.breakdown_s["compute"]


def test_serving_and_simulate_share_the_resolved_step():
    """simulate_serving consumes the ResolvedStep that resolve_serving_step builds, the type the
    training path (resolve_step) builds; the serving step's fields are the serving plan's."""
    from npusim.config.workload import TrainWorkload
    from npusim.engine.resolved import ResolvedStep, resolve_serving_step, resolve_step
    from npusim.engine.serve import simulate_resolved_serving

    model, hw = load_model("pangu-pro-moe-72b"), load_profile("atlas-800i-a2")
    wl = InferenceWorkload(kind="decode", batch=64, input_len=2048)
    step = resolve_serving_step(model, hw, make_plan(parse_plan(PRO)), wl, 4)
    train = resolve_step(model, hw, make_plan(parse_plan("tp=4,ep=4,sp=1")), TrainWorkload(seq_len=4096, global_batch=8), 4)
    assert type(step) is type(train) is ResolvedStep and train.forward is None
    assert step.plan.dp == 1 and step.micro_batches == 1 and step.forward.seqs_per_group == 64
    assert step.facts.name == "forward" and [s.layers for s in step.specs] == [model.layers]
    assert step.load.max_over_mean == step.forward.shard.load_factor == pytest.approx(1.0)  # MoGE: balanced
    r = simulate_resolved_serving(step, hw, wl)
    assert r.to_dict() == run().to_dict()
    with pytest.raises(ValueError, match="serving step"):
        step.stage_costs()


def test_serving_load_stats_of_an_unbalanced_router():
    """Plain top-8 of 64 experts (no MoGE groups) spreads unevenly over 4 EP devices: busiest > 1 >
    idlest, imbalance score > 0, and the shard's load factor is the busiest device's."""
    from npusim.engine.resolved import resolve_serving_step

    model, hw = load_model("pangu-pro-moe-72b", expert_groups=0), load_profile("atlas-800i-a2")
    step = resolve_serving_step(model, hw, make_plan(parse_plan(PRO + ",routing=uniform")),
                                InferenceWorkload(kind="decode", batch=16, input_len=2048), 4)
    load = step.load
    assert load.max_over_mean > 1.0 > load.min_over_mean and load.imbalance_score > 0
    assert step.forward.shard.load_factor == load.max_over_mean
