"""Shared helpers of the sweep tests: small specs written to a temporary folder."""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

from npusim.sweep.run import run_sweep

SMALL = {
    "name": "small",
    "hardware": "atlas-800t-a2",
    "devices": [16, 32],
    "workload": {"seq_len": 2048, "global_batch": 32},
    "model": {"base": "llama2-7b", "vary": {"num_layers": [24, 32]},
              "constraints": {"total_params_B": {"min": 5.5, "max": 8}}},
    "plan": {"auto": True, "cp": [1], "vpp": [1, 2], "recompute": ["none", "full"]},
    "objective": {"metric": "mfu", "memory_headroom": 0.05},
    "tiers": {"full_top": 12, "full_per_model": 1, "batch_size": 40},
}
"""About 300 points: 2 device counts x 2 dense shapes x auto plans; runs in well under a second."""

CHUNKED = {
    "name": "chunked",
    "hardware": "atlas-800t-a2",
    "devices": [64, 128],
    "workload": {"seq_len": 4096, "global_batch": 128},
    "model": {"base": "qwen3-30b-a3b", "vary": {"num_experts": [64, 128]}},
    "plan": {"auto": True, "cp": [1], "zero": [1], "micro_batch": [1]},
    "objective": {"metric": "tokens_per_s"},
    "tiers": {"full_top": 10, "batch_size": 40},
}
"""A MoE spec of many small chunks (batches of 40): long enough to interrupt, resume or lock."""

MOE = {
    "name": "moe",
    "hardware": "atlas-800t-a2",
    "devices": 64,
    "workload": {"seq_len": 4096, "global_batch": 64},
    "model": {"base": "qwen3-30b-a3b", "vary": {"num_experts": [64, 128]}},
    "plan": {"auto": True, "cp": [1], "zero": [1], "recompute": ["none"], "micro_batch": [1]},
    "objective": {"metric": "tokens_per_s"},
    "tiers": {"full_top": 10, "batch_size": 100},
}


def write_spec(tmp: Path, spec: dict, name: str = "spec.yaml") -> Path:
    """Write ``spec`` as YAML under ``tmp`` and return its path."""
    path = Path(tmp) / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def sweep_once(tmp: Path, spec: dict) -> tuple[dict, Path]:
    """(summary, output folder) of ``spec`` swept in one process under ``tmp``."""
    return run_sweep(write_spec(tmp, spec), tmp / "out", workers=1), tmp / "out"


def merged(base: dict, **changes) -> dict:
    """A copy of ``base`` with top-level keys replaced (None deletes)."""
    out = {k: v for k, v in base.items()}
    for k, v in changes.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def replaced(spec: dict, path: str, value) -> dict:
    """A deep copy of ``spec`` with one (dotted) key replaced."""
    out = copy.deepcopy(spec)
    *head, last = path.split(".")
    node = out
    for k in head:
        node = node[k]
    node[last] = value
    return out


def assert_spec_error(tmp_path: Path, spec: dict, field: str, needle: str) -> None:
    """Loading ``spec`` fails with one line that starts with the file and the field and contains ``needle``."""
    import pytest

    from npusim.config.errors import ConfigError
    from npusim.sweep.spec import load_spec

    path = write_spec(tmp_path, spec)
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{path}: {field} = "), msg
    assert needle in msg, msg


def chunk_rows(path: Path) -> list[dict]:
    """Rows of one Parquet chunk file."""
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def unfinished(done: Path, out: Path, spec: Path, size: int = 40) -> Path:
    """A copy of the finished sweep ``done`` (of ``spec``) as a sweep killed after its fast tier: the
    fast rows of results.parquet split back into chunk files, one per batch of about ``size``
    points cut as the sweep cuts them (never inside a block), no tables, the resolved spec kept."""
    import shutil

    from npusim.sweep.prune import cut_batches
    from npusim.sweep.run import prepare
    from npusim.sweep.store import SPEC_FILE, ChunkStore, committed_rows

    out.mkdir(parents=True)
    shutil.copy(done / SPEC_FILE, out / SPEC_FILE)
    rows = committed_rows(done, "fast")
    store = ChunkStore(out, "fast")
    for _, batch in cut_batches(prepare(spec)[3], size):
        store.write([rows[p["id"]] for p in batch])
    return out


def narrowed(path: Path, tmp: Path, vary: dict | None = None, plan: dict | None = None, **changes) -> Path:
    """A shipped spec narrowed to stay fast, written under ``tmp``: ``vary`` as the model's vary (default:
    the first value of every varied field), the first hardware and device count, ``plan`` merged
    into its plan, and top-level ``changes``."""
    spec = yaml.safe_load(Path(path).read_text())
    given = spec["model"].get("vary", {})
    spec["model"]["vary"] = vary or {k: (v if isinstance(v, list) else [v])[:1] for k, v in given.items()}
    hardware = spec["hardware"] if isinstance(spec["hardware"], list) else [spec["hardware"]]
    spec["hardware"] = hardware[:1]
    devices = spec["devices"]
    devices = devices[hardware[0]] if isinstance(devices, dict) else devices
    spec["devices"] = (devices if isinstance(devices, list) else [devices])[:1]
    if isinstance(spec.get("objective"), dict) and isinstance(spec["objective"].get("price_per_device_hour"), dict):
        spec["objective"]["price_per_device_hour"] = spec["objective"]["price_per_device_hour"][hardware[0]]
    if plan:
        spec["plan"] = {**({"auto": True} if spec["plan"] == "auto" else spec["plan"]), **plan}
    spec.update(changes)
    out = Path(tmp) / Path(path).name
    out.write_text(yaml.safe_dump(spec))
    return out
