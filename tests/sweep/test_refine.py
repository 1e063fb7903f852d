"""search: refine (npusim.sweep.refine) finds exhaustive search's top 10 on every shipped training spec,
narrowed to stay fast (two values of the first model axis, one hardware and device count), while it
times only part of the space; and the dry run counts its coarse grid exactly."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from sweep_helpers import narrowed

from npusim.config.errors import ConfigError
from npusim.sweep.dryrun import dry_run
from npusim.sweep.refine import REFINE_AXES, coarse
from npusim.sweep.run import prepare, run_sweep

SWEEPS = Path(__file__).resolve().parents[2] / "sweeps"
TRAINING = sorted(p.name for p in SWEEPS.glob("*.yaml")
                  if yaml.safe_load(p.read_text())["workload"].get("kind", "train") == "train")
PLAN = {"pangu-ultra-shapes.yaml": {"cp": [1], "pp": {"min": 2, "max": 8}}}
"""Plan axes narrowed further where one shape still has many thousand plans."""
TIERS = {"full_top": 1, "batch_size": 256}
"""One point re-simulated: refinement still keeps the best max(10, full_top) = 10 (the fast tier's top 10)."""
VARY = {"pangu-pro-search.yaml": {"hidden_size": [5120], "num_attention_heads": [40], "num_key_value_heads": [8],
                                  "num_layers": [44, 48], "num_experts": [64]}}
"""Shapes inside the spec's parameter budget where the first values fall outside it."""


def _vary(name: str) -> dict | None:
    """The first two values of the first varied field, the first value of the others (or ``VARY``)."""
    vary = VARY.get(name) or yaml.safe_load((SWEEPS / name).read_text())["model"].get("vary") or {}
    return {k: (v if isinstance(v, list) else [v])[:2 if n == 0 else 1] for n, (k, v) in enumerate(vary.items())} or None


def _top(out: Path, n: int = 10) -> list[tuple]:
    """(id, fast score) of the ``n`` best feasible points of a finished sweep."""
    frame = pd.read_parquet(out / "results.parquet")
    ok = frame[frame["status"] == "ok"].sort_values(["score", "id"], ascending=[False, True], kind="mergesort")
    return list(zip(ok["id"].head(n), ok["score"].head(n)))


@pytest.fixture(scope="module", params=TRAINING)
def runs(request, tmp_path_factory):
    """(spec path, exhaustive summary, refine summary, their output folders) of one narrowed spec."""
    tmp = tmp_path_factory.mktemp("refine")
    out = {}
    for search in ("exhaustive", "refine"):
        (tmp / search).mkdir()
        spec = narrowed(SWEEPS / request.param, tmp / search, _vary(request.param), PLAN.get(request.param),
                        search=search, tiers=TIERS)
        out[search] = (spec, run_sweep(spec, tmp / f"{search}-out", workers=1, progress_every=0), tmp / f"{search}-out")
    return out


def test_the_top_10_equals_exhaustive_search(runs):
    (_, _, ex), (_, summary, ref) = runs["exhaustive"], runs["refine"]
    assert len(_top(ex)) == 10
    assert _top(ref) == _top(ex)
    ranked = [pd.read_csv(d / "ranked.csv")["id"].head(10).tolist() for d in (ex, ref)]
    assert ranked[0] == ranked[1]  # the full tier re-scores the same leader
    r = summary["refine"]
    assert r["skipped"] > 0 and r["timed"] + r["skipped"] <= summary["points"]  # it does skip


def test_points_never_timed_are_marked(runs):
    spec, summary, out = runs["refine"]
    frame = pd.read_parquet(out / "results.parquet")
    skipped = frame[frame["stage"] == "refine"]
    assert len(skipped) == summary["refine"]["skipped"]
    assert set(skipped["status"]) == {"pruned"} and skipped["step_time_s"].isna().all()
    assert {s["stage"]: s.get("removed") for s in summary["stages"]}["refine"] == len(skipped)


def test_dry_run_counts_the_coarse_grid(runs):
    spec, summary, _ = runs["refine"]
    d = dry_run(spec)
    assert d["refine"]["grid_points"] == summary["refine"]["grid"] - d["removed"].get("model", 0) \
        - d["removed"].get("constraint", 0)


def test_coarse_keeps_every_other_value_and_the_last():
    assert coarse({"pp": [1, 2, 3, 4, 6]}) == {"pp": {1, 3, 6}}
    assert coarse({"pp": [1, 2, 4, 8]}) == {"pp": {1, 4, 8}}
    assert coarse({"vpp": [1]}) == {"vpp": {1}}
    assert set(REFINE_AXES) <= {"tp", "cp", "pp", "vpp", "etp", "ep"}


def test_refine_on_a_serving_spec_is_refused(tmp_path):
    spec = tmp_path / "decode.yaml"
    spec.write_text(yaml.safe_dump({**yaml.safe_load((SWEEPS / "pangu-pro-decode.yaml").read_text()), "search": "refine"}))
    with pytest.raises(ConfigError, match="search = 'refine'"):
        prepare(spec)
