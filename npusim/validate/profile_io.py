"""Write a calibration section into a profile YAML, keeping the datasheet sections and comments."""
from __future__ import annotations

from pathlib import Path


def with_calibration(profile_text: str, calibration: dict) -> str:
    """Return the profile YAML text with its ``calibration:`` block replaced by ``calibration``."""
    import yaml

    lines = profile_text.rstrip("\n").splitlines()
    out, skipping = [], False
    for line in lines:
        top_level = line[:1] not in ("", " ", "#", "-")
        if top_level:
            skipping = line.startswith("calibration:")
        if not skipping:
            out.append(line)
    block = yaml.safe_dump({"calibration": calibration}, sort_keys=False, width=100)
    return "\n".join(out) + "\n" + block


def write_calibrated_profile(src: Path, calibration: dict, dest: Path) -> None:
    """Write ``src`` with the new calibration section to ``dest`` and check that it still loads."""
    from npusim.config.hardware import HardwareProfile
    from npusim.config.loader import read_mapping, validate

    dest.write_text(with_calibration(src.read_text(encoding="utf-8"), calibration), encoding="utf-8")
    validate(HardwareProfile, read_mapping(dest), str(dest))
