"""The Ray executor on a real local Ray cluster (started here, shut down after): same points, same
ranked.csv as the in-process run."""
from __future__ import annotations

import pytest
from sweep_helpers import SMALL, write_spec

from npusim.sweep.run import run_sweep

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_ray_sweep_matches_the_local_run(cluster, tmp_path):
    spec = write_spec(tmp_path, SMALL)
    s = run_sweep(spec, tmp_path / "ray", executor="ray")
    assert s["executor"] == "ray" and s["workers"] == 2
    assert s["status"]["error"] == 0 and s["full"]["simulated"] > 0
    local = run_sweep(spec, tmp_path / "local", workers=1)
    assert s["points"] == local["points"]
    assert (tmp_path / "ray" / "ranked.csv").read_bytes() == (tmp_path / "local" / "ranked.csv").read_bytes()
    assert ray.is_initialized()  # the sweep joined the fixture's cluster and left it running


def _die_once(ctx: dict, batch: list) -> list:
    """A batch function whose first call kills its worker process (a marker file remembers it)."""
    import os
    from pathlib import Path

    marker = Path(ctx["marker"])
    if not marker.exists():
        marker.write_text("died")
        os._exit(1)
    return [x * 2 for x in batch]


def test_a_dead_ray_worker_has_its_batch_retried(cluster, tmp_path):
    import sys

    from npusim.sweep.executors import RayExecutor

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test file
    ex = RayExecutor()
    out = dict(ex.map(_die_once, {"marker": str(tmp_path / "died")}, [(0, [1, 2]), (1, [3])]))
    assert (tmp_path / "died").exists()  # the first attempt did die
    assert out == {0: [2, 4], 1: [6]}
