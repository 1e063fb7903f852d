"""Read YAML/JSON files strictly and validate them into typed configs."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

from npusim.config.errors import ConfigError, from_pydantic

T = TypeVar("T")


def read_mapping(path: str | Path) -> dict[str, Any]:
    """Return the top-level mapping of a YAML or JSON file, or raise ConfigError."""
    p = Path(path)
    src = str(p)
    if not p.is_file():
        raise ConfigError(src, "<file>", src, "file not found")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(src, "<file>", f"byte {e.start}", "not valid UTF-8 text", "UTF-8 YAML or JSON") from None
    if not text.strip():
        raise ConfigError(src, "<file>", "", "file is empty", "a YAML or JSON mapping")
    try:
        if p.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:  # yaml.YAMLError, json.JSONDecodeError
        where = getattr(e, "problem_mark", None)
        line = f"line {where.line + 1}" if where is not None else getattr(e, "lineno", "?")
        raise ConfigError(src, "<syntax>", line, f"cannot parse: {str(e).splitlines()[0]}") from None
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


def find_preset(name_or_path: str, dirs: list[Path], field: str) -> Path:
    """The file of a preset ``NAME`` (``NAME.yaml`` in ``dirs``) or of an explicit path; an unknown
    name raises a one-line ConfigError listing the presets (with a 'did you mean')."""
    from npusim.config.errors import did_you_mean

    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml", ".json") or path.exists():
        return path
    for d in dirs:
        if (d / f"{name_or_path}.yaml").is_file():
            return d / f"{name_or_path}.yaml"
    names = sorted({p.stem for d in dirs for p in d.glob("*.yaml")})
    raise ConfigError(f"--{field}", field, name_or_path, f"unknown {field} preset" + did_you_mean(name_or_path, names),
                      ", ".join(names))
