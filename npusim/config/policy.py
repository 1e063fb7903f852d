"""The input policy: one set of rules for every file and flag npusim reads.

- Files: at most ``MAX_FILE_BYTES``; unreadable files (permissions, folders) give one line.
- YAML (``SafeLoader`` subclass :class:`StrictYAMLLoader`, used by every YAML load): repeated keys in
  a mapping are refused; alias expansion is capped (``MAX_YAML_NODES`` values after expanding
  aliases, counted while composing, before anything is built), so an alias bomb is refused at once.
- JSON (:func:`loads_json`): repeated keys, ``NaN``/``Infinity`` and over-long integers are refused;
  nesting deeper than Python's stack gives one line.
- Values (:func:`check_values`): finite numbers only, integers of at most ``MAX_INT_DIGITS`` digits,
  nesting at most ``MAX_NESTING`` levels.
- Typed configs (:class:`StrictModel`): unknown keys forbidden, NaN/inf refused, booleans never
  accepted where a number is expected; each size has an upper bound (the constants below) that the
  error message names.

Every refusal is a :class:`~npusim.config.errors.ConfigError`: one line naming the source, the
field, a short prefix of the value and what is allowed (exit code 2 from the CLI).
"""
from __future__ import annotations

import math
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError

from npusim.config.errors import ConfigError, PathText

MAX_FILE_BYTES = 10 * 1024 * 1024
"""Largest YAML/JSON config file read (10 MiB)."""
MAX_INT_DIGITS = 18
"""Longest integer literal accepted in a config file or flag (|n| < 10**18)."""
MAX_NESTING = 64
"""Deepest nesting of mappings/lists in a config file."""
MAX_YAML_NODES = 1_000_000
"""Most YAML values one file may expand to (aliases counted at their expanded size)."""

# Upper bounds of sizes (each named in the error message by pydantic's "less than or equal to").
MAX_DEVICES = 1_000_000
MAX_LAYERS = 10_000
MAX_WIDTH = 16_777_216
"""hidden, ffn_hidden, expert_ffn_hidden, head_dim, MLA ranks, vocab (2**24)."""
MAX_HEADS = 65_536
MAX_EXPERTS = 65_536
MAX_SEQ_LEN = 10_000_000
MAX_BATCH = 1_000_000_000
MAX_REDUNDANT_EXPERTS = 256
MAX_SEED = 2**63 - 1
MAX_TOKENS = 1e18
"""Largest training-token budget `npusim plan` accepts."""
MAX_EXPR_CHARS = 200
"""Longest ``derive`` expression of a sweep spec."""


# ---- files ------------------------------------------------------------------------------------
def read_text(path, source: str | None = None, max_bytes: int | None = MAX_FILE_BYTES) -> str:
    """The UTF-8 text of ``path``; one-line ConfigError when missing, a folder, too large, unreadable
    or not UTF-8."""
    from pathlib import Path

    p = Path(path)
    src = source or str(p)
    try:
        if p.is_dir():
            raise ConfigError(src, "<file>", PathText(p), "is a folder, not a file", "a file")
        if not p.is_file():
            raise ConfigError(src, "<file>", PathText(p), "file not found")
        size = p.stat().st_size
        if max_bytes is not None and size > max_bytes:
            raise ConfigError(src, "<file>", f"{size:,} bytes", "file too large",
                              f"at most {max_bytes:,} bytes")
        data = p.read_bytes()
    except OSError as e:
        raise ConfigError(src, "<file>", PathText(p), f"cannot read: {e.strerror or type(e).__name__}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(src, "<file>", f"byte {e.start}", "not valid UTF-8 text", "UTF-8 YAML or JSON") from None


# ---- refused scalars: parsed into a marker, reported by check_values with their path ---------------
class Refused:
    """A scalar the parser refused (an over-long integer, NaN/Infinity in JSON), kept until
    :func:`check_values` reports it with its field path."""

    __slots__ = ("text", "problem", "allowed")

    def __init__(self, text: str, problem: str, allowed: str):
        self.text, self.problem, self.allowed = text, problem, allowed


def _long_int(text: str) -> Refused | None:
    digits = sum(c.isdigit() for c in text)
    if digits > MAX_INT_DIGITS:
        return Refused(text[:40], f"integer of {digits:,} digits", f"at most {MAX_INT_DIGITS} digits")
    return None


# ---- YAML -------------------------------------------------------------------------------------
def _yaml_loader():
    """The StrictYAMLLoader class (built lazily: PyYAML is imported on first use)."""
    global _LOADER
    if _LOADER is not None:
        return _LOADER
    import yaml
    from yaml.events import AliasEvent

    class StrictYAMLLoader(yaml.SafeLoader):
        """SafeLoader that refuses repeated mapping keys, caps alias expansion and over-long integers."""

        def __init__(self, stream):
            super().__init__(stream)
            self._nodes = 0
            self._depth = 0
            self._anchor_sizes: dict[str, int] = {}

        def compose_node(self, parent, index):
            if self.check_event(AliasEvent):
                anchor = self.peek_event().anchor
                node = super().compose_node(parent, index)
                self._count(self._anchor_sizes.get(anchor, 1), node)
                return node
            event = self.peek_event()
            anchor = getattr(event, "anchor", None)
            start = self._nodes
            self._count(1, event)
            self._depth += 1
            if self._depth > MAX_NESTING:
                raise _YAMLRefused("<document>", f"line {event.start_mark.line + 1}", "nested too deeply",
                                   f"at most {MAX_NESTING} levels")
            try:
                node = super().compose_node(parent, index)
            finally:
                self._depth -= 1
            if anchor is not None:
                self._anchor_sizes[anchor] = self._nodes - start
            return node

        def _count(self, n: int, where) -> None:
            self._nodes += n
            if self._nodes > MAX_YAML_NODES:
                mark = getattr(where, "start_mark", None)
                raise _YAMLRefused("<document>", f"line {mark.line + 1}" if mark else "?",
                                   "the document expands to too many values (YAML alias expansion)",
                                   f"at most {MAX_YAML_NODES:,} values after expanding aliases")

        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                seen: dict = {}
                for key_node, value_node in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=True)
                    try:
                        first = seen.get(key)
                    except TypeError:  # unhashable key: SafeConstructor reports it
                        continue
                    line = key_node.start_mark.line + 1
                    if first is not None:
                        value = value_node.value if isinstance(value_node, yaml.ScalarNode) else "..."
                        raise _YAMLRefused(str(key)[:60], value, f"repeated key (first at line {first}, again at "
                                           f"line {line})", "each key once per mapping")
                    seen[key] = line
            return super().construct_mapping(node, deep=deep)

        def construct_yaml_int(self, node):
            bad = _long_int(str(self.construct_scalar(node)))
            return bad if bad is not None else super().construct_yaml_int(node)

    StrictYAMLLoader.add_constructor("tag:yaml.org,2002:int", StrictYAMLLoader.construct_yaml_int)
    # YAML 1.2 / JSON exponent floats without a dot (1e9, 2E-3) are numbers, as in JSON, so size
    # bounds apply to them (YAML 1.1 would read them as strings).
    import re

    StrictYAMLLoader.add_implicit_resolver("tag:yaml.org,2002:float",
                                           re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                                           list("-+0123456789"))
    _LOADER = StrictYAMLLoader
    return _LOADER


_LOADER = None


class _YAMLRefused(Exception):
    """Raised inside the YAML loader; turned into a ConfigError naming the file."""

    def __init__(self, field: str, value: str, problem: str, allowed: str):
        super().__init__(problem)
        self.field, self.value, self.problem, self.allowed = field, value, problem, allowed


class _JSONRefused(_YAMLRefused):
    """Raised inside the JSON decoder (repeated key)."""


def load_yaml(text: str, source: str) -> Any:
    """Parse YAML text with :class:`StrictYAMLLoader`; one-line ConfigError on any defect."""
    import yaml

    loader = None
    try:
        loader = _yaml_loader()(text)  # the reader refuses control characters here
        data = loader.get_single_data()
    except _YAMLRefused as e:
        raise ConfigError(source, e.field, e.value, e.problem, e.allowed) from None
    except RecursionError:
        raise ConfigError(source, "<syntax>", "?", "nested too deeply to parse",
                          f"at most {MAX_NESTING} levels") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f"line {where.line + 1}" if where is not None else "?"
        raise ConfigError(source, "<syntax>", line, f"cannot parse: {str(e).splitlines()[0]}") from None
    except (ValueError, TypeError, OverflowError) as e:  # a scalar PyYAML's constructors cannot convert
        raise ConfigError(source, "<syntax>", "?", f"cannot parse: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    finally:
        if loader is not None:
            loader.dispose()
    return check_values(data, source)


def yaml_load(text: str, source: str = "<yaml>") -> Any:
    """Drop-in for ``yaml.safe_load`` with the strict loader and the value checks."""
    return load_yaml(text, source)


# ---- JSON -------------------------------------------------------------------------------------
def _json_pairs(pairs: list) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise _JSONRefused(str(k)[:60], v, "repeated key", "each key once per object")
        out[k] = v
    return out


def loads_json(text: str, source: str, check: bool = True) -> Any:
    """Parse JSON text strictly: repeated keys, NaN/Infinity and over-long integers refused."""
    import json

    try:
        data = json.loads(text, object_pairs_hook=_json_pairs,
                          parse_constant=lambda c: Refused(c, "not a finite number", "finite numbers"),
                          parse_int=lambda s: _long_int(s) or int(s))
    except _JSONRefused as e:
        raise ConfigError(source, e.field, e.value, e.problem, e.allowed) from None
    except RecursionError:
        raise ConfigError(source, "<syntax>", "?", "nested too deeply to parse",
                          f"at most {MAX_NESTING} levels" if check else "less deeply nested JSON") from None
    except json.JSONDecodeError as e:
        raise ConfigError(source, "<syntax>", f"line {e.lineno}", f"cannot parse: {e.msg}") from None
    except ValueError as e:
        raise ConfigError(source, "<syntax>", "?", f"cannot parse: {str(e).splitlines()[0]}") from None
    return check_values(data, source) if check else data


# ---- values -----------------------------------------------------------------------------------
def check_values(data: Any, source: str, max_depth: int = MAX_NESTING) -> Any:
    """Walk a parsed document (iteratively) and refuse non-finite floats, over-long integers,
    :class:`Refused` markers and nesting deeper than ``max_depth``; return ``data``."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        field = path or "<root>"
        if isinstance(value, Refused):
            raise ConfigError(source, field, value.text, value.problem, value.allowed)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(source, field, value, "not a finite number", "finite numbers (no .inf, .nan)")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**MAX_INT_DIGITS:
            raise ConfigError(source, field, value, "integer too long", f"at most {MAX_INT_DIGITS} digits")
        if isinstance(value, (dict, list)):
            if depth >= max_depth:
                raise ConfigError(source, field, "...", "nested too deeply", f"at most {max_depth} levels")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for k, v in items:
                stack.append((v, f"{path}.{k}" if path else str(k), depth + 1))
    return data


# ---- typed configs ------------------------------------------------------------------------------
def bool_for_number(tp: Any, value: Any) -> bool:
    """True when ``value`` holds a boolean where ``tp`` expects a number (int or float)."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return bool_for_number(typing.get_args(tp)[0], value)
    if tp in (int, float):
        return isinstance(value, bool)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        if bool in members or typing.Any in members:
            return False
        return any(bool_for_number(a, value) for a in members)
    if origin in (list, tuple, set, frozenset) and isinstance(value, (list, tuple, set, frozenset)):
        items = typing.get_args(tp)
        return bool(items) and any(bool_for_number(items[0], v) for v in value)
    if origin is dict and isinstance(value, dict):
        kv = typing.get_args(tp)
        return len(kv) == 2 and any(bool_for_number(kv[1], v) for v in value.values())
    return False


def no_bool(value: Any) -> Any:
    """A BeforeValidator for numeric types: refuse ``true``/``false``."""
    if isinstance(value, bool):
        raise PydanticCustomError("bool_not_number", "a boolean is not a number",
                                  {"expected": "a number, not true/false"})
    return value


class BoolNotNumber:
    """A boolean found where a number is expected: no number validator accepts it, so pydantic
    reports the field (with its full path) and this value."""

    __slots__ = ("value",)

    def __init__(self, value: bool):
        self.value = value

    def __repr__(self) -> str:
        return f"{self.value} (a boolean, not a number)"


def _mark_bools(value: Any) -> Any:
    if isinstance(value, bool):
        return BoolNotNumber(value)
    if isinstance(value, (list, tuple)):
        return [_mark_bools(v) for v in value]
    if isinstance(value, dict):
        return {k: _mark_bools(v) for k, v in value.items()}
    return value


_NUMERIC_FIELDS: dict[type, dict[str, Any]] = {}


def _numeric_fields(cls) -> dict[str, Any]:
    """Field name -> annotation of the fields of ``cls`` that hold numbers (directly or in containers)."""
    got = _NUMERIC_FIELDS.get(cls)
    if got is None:
        probe = (True, [True], {"k": True})
        got = _NUMERIC_FIELDS[cls] = {name: f.annotation for name, f in cls.model_fields.items()
                                      if any(bool_for_number(f.annotation, p) for p in probe)}
    return got


class StrictModel(BaseModel):
    """Base of every typed config: unknown keys forbidden, finite floats only, no booleans as numbers
    (one model-level check per validation, so plans stay cheap to build in sweeps)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_numbers(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out = None
        for key, value in data.items():
            if isinstance(value, (bool, list, tuple, dict)):
                ann = _numeric_fields(cls).get(key)
                if ann is not None and bool_for_number(ann, value):
                    out = dict(data) if out is None else out
                    out[key] = _mark_bools(value)
        return data if out is None else out


def int_text(text: str, flag: str, field: str, lo: int | None = None, hi: int | None = None) -> int:
    """Parse a flag's integer text: at most MAX_INT_DIGITS digits, within [lo, hi]; ConfigError otherwise."""
    s = str(text).strip()
    bad = _long_int(s)
    if bad is not None:
        raise ConfigError(flag, field, s, bad.problem, bad.allowed)
    try:
        v = int(s)
    except ValueError:
        raise ConfigError(flag, field, s, "not an integer", _range(lo, hi)) from None
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ConfigError(flag, field, v, "out of range", _range(lo, hi))
    return v


def _range(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f"{lo:,}..{hi:,}"
    if lo is not None:
        return f">= {lo:,}"
    return f"<= {hi:,}" if hi is not None else "an integer"
