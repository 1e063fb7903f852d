"""MoE routing load: schemes, determinism, capacity, redundancy, and the imbalance score."""
import numpy as np
import pytest

from npusim.config.errors import ConfigError
from npusim.config.model import load_model
from npusim.workload.routing import (RoutingSpec, apply_capacity, device_loads, imbalance_score, load_stats,
                                     sample_expert_tokens)

PRO = load_model("pangu-pro-moe-72b")


def test_paper_imbalance_score_topk_vs_moge():
    top8 = imbalance_score("uniform", 64, 8, 8, 16, trials=2000)
    moge = imbalance_score("grouped", 64, 8, 8, 16, groups=8, trials=2000)
    assert top8["p_IS_gt_0"] > 0.99
    assert moge["mean_IS"] == 0.0 and moge["p_IS_gt_0"] == 0.0


def test_grouped_routing_is_exactly_balanced_when_groups_match_devices():
    st = load_stats(RoutingSpec("grouped"), PRO, 8, 4096)
    assert st.max_over_mean == pytest.approx(1.0) and st.imbalance_score == 0.0


@pytest.mark.parametrize("scheme,param", [("uniform", 1.0), ("zipf", 0.8), ("dirichlet", 2.0)])
def test_sampling_is_seeded_and_conserves_tokens(scheme, param):
    spec = RoutingSpec(scheme, param, seed=7)
    a = sample_expert_tokens(spec, 64, 8, 0, 1000, np.random.default_rng(7))
    b = sample_expert_tokens(spec, 64, 8, 0, 1000, np.random.default_rng(7))
    assert np.array_equal(a, b) and a.sum() == 8000


def test_skew_increases_imbalance_monotonically():
    ratios = [load_stats(RoutingSpec("zipf", s, samples=8), PRO, 8, 4096).max_over_mean for s in (0.0, 0.5, 1.0)]
    assert ratios[0] < ratios[1] < ratios[2]


def test_capacity_factor_drops_tokens_and_caps_load():
    counts = np.array([100.0, 10.0, 10.0, 0.0])
    kept, dropped = apply_capacity(counts, 1.0)
    assert kept.max() == pytest.approx(30.0) and dropped == pytest.approx(70 / 120)
    assert apply_capacity(counts, 0.0) == (counts, 0.0)


def test_redundant_experts_reduce_the_busiest_device():
    counts = np.array([400.0, 10, 10, 10, 10, 10, 10, 10])
    assert device_loads(counts, 4, redundant=2).max() < device_loads(counts, 4).max()
    assert device_loads(counts, 4, redundant=2).sum() == pytest.approx(counts.sum())


def test_histogram_routing_reads_a_file(tmp_path):
    f = tmp_path / "hist.csv"
    f.write_text("expert,tokens\n" + "\n".join(f"{e},{100 if e == 0 else 1}" for e in range(64)))
    st = load_stats(RoutingSpec("histogram", histogram=str(f)), PRO, 8, 4096)
    assert st.max_over_mean > 3
    bad = tmp_path / "bad.csv"
    bad.write_text("expert,tokens\n99,1\n")
    with pytest.raises(ConfigError) as e:
        load_stats(RoutingSpec("histogram", histogram=str(bad)), PRO, 8, 4096)
    assert "bad.csv:2" in str(e.value)


def test_learned_popularity_has_the_published_max_violation():
    from npusim.workload.routing import LEARNED_MAX_VIOLATION, learned_popularity

    for experts in (8, 64, 256):
        p = learned_popularity(experts, LEARNED_MAX_VIOLATION)
        assert p.sum() == pytest.approx(1.0)
        assert p.max() * experts == pytest.approx(1.0 + LEARNED_MAX_VIOLATION, rel=1e-6)


def test_learned_routing_is_more_skewed_than_random_topk():
    m = load_model("deepseek-v2-lite")
    uni = load_stats(RoutingSpec("uniform"), m, 8, 8192 * 8)
    learned = load_stats(RoutingSpec("learned"), m, 8, 8192 * 8)
    assert learned.max_over_mean > uni.max_over_mean + 0.05
    assert learned.expert_spread > uni.expert_spread > 0.0
    assert load_stats(RoutingSpec("balanced"), m, 8, 8192).expert_spread == 0.0


def test_redundant_experts_conserve_tokens_and_cut_the_peak():
    from npusim.workload.routing import device_experts

    counts = np.array([40.0, 1, 1, 1, 1, 1, 1, 1])
    per = device_experts(counts, 4, redundant=2)
    assert per.sum() == pytest.approx(counts.sum())
    assert per.sum(axis=1).max() < device_experts(counts, 4).sum(axis=1).max()


def test_dynamic_placement_leaves_less_imbalance_than_static():
    from npusim.workload.routing import balanced_placement

    m = load_model("deepseek-v2-lite")
    static = load_stats(RoutingSpec("learned"), m, 8, 8192 * 8)
    placed = load_stats(RoutingSpec("learned", placement_interval=10), m, 8, 8192 * 8)
    assert 1.0 < placed.max_over_mean < static.max_over_mean
    order = balanced_placement(np.array([8.0, 1, 1, 1, 4, 4, 2, 3]), 2)
    assert sorted(order.tolist()) == list(range(8))
    loads = np.array([8.0, 1, 1, 1, 4, 4, 2, 3])[order].reshape(2, 4).sum(axis=1)
    assert loads.max() - loads.min() <= 2.0
