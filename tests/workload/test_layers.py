"""Lowering helpers of npusim.workload.layers: expected remote domains of the hierarchical all-to-all."""
import random

import pytest

from npusim.workload.layers import expected_domains_touched, expected_remote_domains


def _monte_carlo(experts, top_k, domains, groups, groups_per_token, trials=20000, seed=0):
    """Average other domains a token reaches, by sampling group-limited top-k routing."""
    rng = random.Random(seed)
    per_domain = experts // domains
    per_group = experts // groups if groups else experts
    total = 0
    for _ in range(trials):
        if groups and groups_per_token:
            chosen = rng.sample(range(groups), groups_per_token)
            picks = [g * per_group + e for g in chosen for e in rng.sample(range(per_group), top_k // groups_per_token)]
        else:
            picks = rng.sample(range(experts), top_k)
        own = rng.randrange(domains)
        total += len({p // per_domain for p in picks} - {own})
    return total / trials


@pytest.mark.parametrize("experts,top_k,domains,groups,gpt", [
    (256, 8, 8, 0, 0),    # free top-8 of 256 over 8 servers
    (256, 8, 8, 8, 4),    # DeepSeek-V3 node-limited routing: groups = servers
    (256, 8, 16, 8, 4),   # each group spans two servers (EP over 16 servers)
    (256, 8, 4, 8, 4),    # two groups per server
    (64, 6, 8, 0, 0),
])
def test_expected_remote_domains_matches_sampling(experts, top_k, domains, groups, gpt):
    exact = expected_remote_domains(experts, top_k, domains, groups, gpt)
    assert exact == pytest.approx(_monte_carlo(experts, top_k, domains, groups, gpt), abs=0.05)


def test_node_limited_routing_reaches_fewer_servers_than_free_routing():
    assert expected_remote_domains(256, 8, 8, 8, 4) == pytest.approx(3.5)
    assert expected_remote_domains(256, 8, 8) > 4.6
    assert expected_remote_domains(256, 8, 1, 8, 4) == 0.0


@pytest.mark.parametrize("experts,top_k,ranks,groups,gpt", [
    (128, 8, 8, 0, 0),    # Qwen3-30B-A3B on one 8-GPU server: DeepEP intranode
    (256, 8, 64, 8, 4),   # DeepSeek-V3, EP 64: a group spans 8 ranks
    (64, 6, 8, 0, 0),
])
def test_expected_ranks_touched_matches_sampling(experts, top_k, ranks, groups, gpt):
    """Ranks a token's top-k experts sit on (what DeepEP sends the token to), against sampling."""
    rng = random.Random(1)
    per_rank, per_group = experts // ranks, experts // groups if groups else experts
    total = 0
    for _ in range(20000):
        if groups and gpt:
            picks = [g * per_group + e for g in rng.sample(range(groups), gpt)
                     for e in rng.sample(range(per_group), top_k // gpt)]
        else:
            picks = rng.sample(range(experts), top_k)
        total += len({p // per_rank for p in picks})
    exact = expected_domains_touched(experts, top_k, ranks, groups, gpt)
    assert exact == pytest.approx(total / 20000, abs=0.05)
    assert exact < top_k
