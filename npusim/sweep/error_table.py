"""npusim's measured error by kind of configuration: the score interval of every ranked sweep row.

Source: ``docs/accuracy.md`` (the validation benchmark on published runs), the MAPE of step time
(serving: TPOT/TTFT) of each group. Regenerate that file with ``python benchmarks/accuracy.py`` and
copy the groups' ``MAPE=`` values here when they change (``tests/sweep/test_sweep_ties.py`` checks
that this table matches docs/accuracy.md).

Keys are (hardware family, kind): family ``ascend`` (Atlas / Ascend profiles), ``nvidia-a100``,
``nvidia`` (other NVIDIA GPUs); kind ``dense``, ``moe`` or ``serving``. The Ascend group mixes
dense and MoE runs, so both Ascend kinds take its MAPE; a missing pair falls back to ``ALL``.
"""
from __future__ import annotations

ERROR_FRACTION: dict[tuple[str, str], float] = {
    ("nvidia-a100", "dense"): 0.0295,   # "Dense A100 (Narayanan T1-2, Korthikanti T5)": n=24 MAPE=2.95%
    ("nvidia", "dense"): 0.092,         # "H100 dense (Megatron-Bridge, NeMo 24.12, AutoModel)": n=11 MAPE=9.2%
    ("nvidia", "moe"): 0.2017,          # "H100 MoE (balanced routing)": n=8 MAPE=20.17%
    ("ascend", "dense"): 0.2154,        # "Ascend 910B (MindSpeed-LLM)": n=6 MAPE=21.54%
    ("ascend", "moe"): 0.2154,          # the same group
    ("ascend", "serving"): 0.2106,      # "Inference (Pangu Pro MoE)": n=4 MAPE=21.06%
}
ALL = 0.1032
"""'All rows': n=53 MAPE=10.32% (any configuration without its own group)."""
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
