"""Read YAML/JSON files strictly and validate them into typed configs."""
from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from npusim.config.errors import ConfigError, from_pydantic

T = TypeVar("T")


def read_mapping(path: str | Path) -> dict[str, Any]:
    """Return the top-level mapping of a YAML or JSON file, or raise ConfigError (input policy:
    npusim/config/policy.py -- size cap, strict YAML/JSON, finite numbers, sane integers)."""
    from npusim.config.policy import load_yaml, loads_json, read_text

    p = Path(path)
    src = str(p)
    text = read_text(p, src)
    if not text.strip():
        raise ConfigError(src, "<file>", "", "file is empty", "a YAML or JSON mapping")
    data = loads_json(text, src) if p.suffix == ".json" else load_yaml(text, src)
    if not isinstance(data, dict):
        raise ConfigError(src, "<root>", type(data).__name__, "top level must be a mapping", "key: value pairs")
    return data


def validate(model_cls: type[T], data: dict[str, Any], source: str) -> T:
    """Validate ``data`` into ``model_cls`` (a pydantic model), raising a one-line ConfigError."""
    from pydantic import ValidationError

    try:
        return model_cls.model_validate(data)  # type: ignore[attr-defined]
    except ValidationError as e:
        raise from_pydantic(source, e) from None


PATH_SUFFIXES = (".yaml", ".yml", ".json")


def is_path(name_or_path: str) -> bool:
    """True when an argument names a file: it holds a path separator or ends in .yaml/.yml/.json.
    Anything else is a preset name, even when a file or folder of that name is in the current folder."""
    import os

    text = str(name_or_path)
    seps = {os.sep, "/"} | ({os.altsep} if os.altsep else set())
    return any(sep in text for sep in seps) or text.lower().endswith(PATH_SUFFIXES)


def find_preset(name_or_path: str, dirs: list[Path], field: str) -> Path:
    """The file of a preset ``NAME`` (``NAME.yaml`` in ``dirs``) or of an explicit path (see
    :func:`is_path`); an unknown name raises a one-line ConfigError listing the presets (with a
    'did you mean')."""
    from npusim.config.errors import did_you_mean

    if is_path(name_or_path):
        return Path(name_or_path)
    for d in dirs:
        if (d / f"{name_or_path}.yaml").is_file():
            return d / f"{name_or_path}.yaml"
    names = sorted({p.stem for d in dirs for p in d.glob("*.yaml")})
    raise ConfigError(f"--{field}", field, name_or_path, f"unknown {field} preset" + did_you_mean(name_or_path, names),
                      ", ".join(names))
