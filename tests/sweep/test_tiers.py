"""The sweep's two tiers agree (issue 13): on every shipped training spec the fast tier's ranking
tracks the event engine's (Kendall tau >= 0.9) and >= 8 of the engine's top 10 are in the fast
tier's top 20. CI checks every 8th point of each spec (``benchmarks/engine.py --quick``; the full
specs are in ``python benchmarks/engine.py``, docs/engine.md)."""
from __future__ import annotations

from pathlib import Path

import pytest

from npusim.sweep.tiers import tier_agreement

SWEEPS = Path(__file__).resolve().parents[2] / "sweeps"
TRAINING_SPECS = ["llama3-70b-cost.yaml", "pangu-pro-search.yaml", "pangu-ultra-search.yaml"]
SCALE_SPECS = ["pangu-ultra-shapes.yaml"]
"""Search-speed specs (issue 17: 545k points, the plan space of pangu-ultra-search over more shapes)."""


def test_every_shipped_training_spec_is_checked():
    import yaml

    train = sorted(p.name for p in SWEEPS.glob("*.yaml")
                   if yaml.safe_load(p.read_text()).get("workload", {}).get("kind", "train") == "train")
    assert train == sorted(TRAINING_SPECS + SCALE_SPECS)


@pytest.mark.parametrize("spec", TRAINING_SPECS)
def test_fast_tier_ranks_like_the_event_engine(spec, capsys):
    a = tier_agreement(SWEEPS / spec, stride=8)
    with capsys.disabled():
        print(f"\n{spec}: tau {a['kendall_tau']:.3f}, engine top 10 in fast top 20: {a['top10_in_fast_top20']}/10, "
              f"median |score error| {a['median_score_error_pct']:.2f} % over {a['compared']} points")
    assert a["compared"] >= 60
    assert a["kendall_tau"] >= 0.9
    assert a["top10_in_fast_top20"] >= 8
