"""npusim's measured error by kind of configuration: the score interval of every ranked sweep row.

Source: ``npusim/data/accuracy/groups.json``, which ``python benchmarks/accuracy.py`` writes beside
docs/accuracy.md (the validation benchmark on published runs): the MAPE of step time (serving:
TPOT/TTFT) of each group. ``tests/sweep/test_sweep_usability.py`` checks that it matches the doc.

Keys are (hardware family, kind): family ``ascend`` (Atlas / Ascend profiles), ``nvidia-a100``,
``nvidia`` (other NVIDIA GPUs); kind ``dense``, ``moe`` or ``serving``. The Ascend group mixes
dense and MoE runs, so both Ascend kinds take its MAPE; a missing pair falls back to ``ALL``.
"""
from __future__ import annotations

import json
from importlib import resources


def _load() -> tuple[dict[tuple[str, str], float], float]:
    data = json.loads(resources.files("npusim.data").joinpath("accuracy/groups.json").read_text())
    table = {(fam, kind): g["mape_pct"] / 100 for g in data["groups"] for fam, kind in g["keys"]}
    return table, data["all"]["mape_pct"] / 100


ERROR_FRACTION, ALL = _load()
"""(family, kind) -> MAPE / 100 of its validation group; ALL: every row (any other configuration)."""
SOURCE = "docs/accuracy.md (python benchmarks/accuracy.py)"


def family(profile_name: str, chip_name: str = "") -> str:
    """The hardware family of a profile: ascend, nvidia-a100 or nvidia ('' when neither)."""
    text = f"{profile_name} {chip_name}".lower()
    if "ascend" in text or "atlas" in text:
        return "ascend"
    if "a100" in text:
        return "nvidia-a100"
    if "nvidia" in text or any(g in text for g in ("h100", "h200", "h800", "b200", "a800", "gb200")):
        return "nvidia"
    return ""


def error_fraction(profile_name: str, chip_name: str, kind: str) -> float:
    """The measured error fraction (MAPE / 100) for one family and kind (dense, moe, serving)."""
    fam = family(profile_name, chip_name)
    if kind == "serving" and (fam, kind) not in ERROR_FRACTION:
        return ERROR_FRACTION[("ascend", "serving")]
    return ERROR_FRACTION.get((fam, kind), ALL)
