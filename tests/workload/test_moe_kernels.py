"""MoE block lowering (npusim.workload.layers.moe_pass): every kernel of the block, forward and
backward, with bytes and FLOPs, and the all-gather / drop-and-pad variants."""
from dataclasses import replace

import pytest

from npusim.config.hardware import load_profile
from npusim.config.model import load_model
from npusim.cost.compute import op_time
from npusim.workload.layers import Shard, expected_domains_touched, moe_pass
from npusim.workload.passes import backward_pass

KERNELS = ("router", "router_score", "router_topk", "router_aux_loss", "permute_index", "permute",
           "dispatch_sort", "expert_up", "expert_act", "expert_down", "combine_sort", "unpermute")


@pytest.fixture(scope="module")
def model():
    return load_model("deepseek-v2-lite")


def shard(**kw):
    base = Shard(micro_batch=1, seq_len=4096, tp=1, cp=1, sp=False, expert_ep=8, expert_tp=1, flash_attention=True)
    return replace(base, **kw)


def test_every_moe_kernel_lowered_forward_and_backward(model):
    fwd = moe_pass(model, shard())
    names = [o.name for o in fwd.ops]
    bwd = [o.name for o in backward_pass(fwd).ops]
    for k in KERNELS:
        assert k in names, k
        gemm_like = k in ("router", "expert_up", "expert_down")
        assert ({f"{k}_dgrad", f"{k}_wgrad"} <= set(bwd)) if gemm_like else (f"{k}_bwd" in bwd), k
    for o in fwd.ops:
        assert o.bytes > 0 and o.flops >= 0, o
    assert [c.collective for c in fwd.comms] == ["all_to_all", "all_to_all"]


def test_vector_kernels_pay_the_vector_launch_on_ascend(model):
    hw = load_profile("atlas-800t-a2")
    small = moe_pass(model, shard(seq_len=16))
    for o in small.ops:
        if o.kind == "memory":
            assert op_time(o, hw, "bf16") >= hw.derating.vector_launch_us * 1e-6


def test_routing_kernels_scale_with_tokens_and_experts(model):
    a = {o.name: o for o in moe_pass(model, shard(seq_len=4096)).ops}
    b = {o.name: o for o in moe_pass(model, shard(seq_len=8192)).ops}
    for k in ("router_score", "router_topk", "router_aux_loss", "permute", "unpermute"):
        assert b[k].bytes == pytest.approx(2 * a[k].bytes, rel=0.01)


def test_allgather_dispatch_gathers_every_token_and_reduce_scatters(model):
    ag = moe_pass(model, shard(moe_dispatch="allgather"))
    kinds = [c.collective for c in ag.comms]
    assert "all_to_all" not in kinds and kinds.count("all_gather") == 2 and "reduce_scatter" in kinds
    tokens = next(c for c in ag.comms if c.name == "ep_gather_tokens")
    assert tokens.bytes == 4096 * 8 * model.hidden * 2  # all EP ranks' tokens
    assert "dispatch_sort" not in [o.name for o in ag.ops]


def test_drop_and_pad_computes_the_full_capacity(model):
    free = {o.name: o for o in moe_pass(model, shard()).ops}
    padded = {o.name: o for o in moe_pass(model, shard(capacity_factor=1.5, pad_to_capacity=True)).ops}
    assert padded["expert_up"].flops == pytest.approx(1.5 * free["expert_up"].flops)
    assert padded["expert_up"].groups == model.experts // 8 and padded["expert_up"].spread == 0.0


def test_spread_reaches_the_expert_gemms(model):
    ops = {o.name: o for o in moe_pass(model, shard(expert_spread=0.3)).ops}
    assert ops["expert_up"].spread == 0.3 and ops["expert_down"].spread == 0.3


def test_hierarchical_dispatch_fuses_the_layout_into_the_all_to_all(model):
    """A DeepEP-style dispatch reads tokens and top-k indices directly and reduces the top-k outputs
    in its combine: no permute before it and no scatter-add after it, only the local sort by expert
    on each side, across servers and within one server alike (DeepEP's intranode kernels)."""
    flat = [o.name for o in moe_pass(model, shard(a2a="flat", ep_domains=2)).ops]
    assert "permute" in flat and "unpermute" in flat
    for domains in (1, 2):
        hier = [o.name for o in moe_pass(model, shard(a2a="hierarchical", ep_domains=domains)).ops]
        assert "permute" not in hier and "unpermute" not in hier
        assert "dispatch_sort" in hier and "combine_sort" in hier


def test_deepep_sends_each_token_once_per_rank(model):
    """Flat all-to-all sends one row per routed expert; DeepEP one per destination rank (a token's
    top-k experts on one rank share the row), so its intra-server bytes are tokens x ranks touched."""
    sh = shard(a2a="hierarchical", ep_domains=1)
    comms = {c.name: c for c in moe_pass(model, sh).comms}
    flat = {c.name: c for c in moe_pass(model, shard(a2a="flat", ep_domains=1)).comms}
    T = sh.tokens // sh.tp
    ranks = expected_domains_touched(model.experts, model.top_k, 8, model.expert_groups, model.groups_per_token)
    assert comms["ep_dispatch_intra"].bytes == pytest.approx(T * ranks * model.hidden * 2)
    assert flat["ep_dispatch"].bytes == pytest.approx(T * model.top_k * model.hidden * 2)
    assert ranks < model.top_k
    inter = {c.name for c in moe_pass(model, shard(a2a="hierarchical", ep_domains=2)).comms}
    assert {"ep_dispatch_inter", "ep_dispatch_intra"} <= inter
