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
    """Write ``src`` with the new calibration section to ``dest`` (atomically) once it is checked to load."""
    from npusim.config.errors import ConfigError
    from npusim.config.hardware import HardwareProfile
    from npusim.config.loader import validate
    from npusim.config.policy import load_yaml, read_text
    from npusim.outputs import write_text

    text = with_calibration(read_text(src), calibration)
    data = load_yaml(text, str(dest))
    if not isinstance(data, dict):
        raise ConfigError(str(dest), "<root>", type(data).__name__, "top level must be a mapping", "key: value pairs")
    validate(HardwareProfile, data, str(dest))
    write_text(dest, text)
