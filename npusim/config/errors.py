"""Typed input errors: one line naming the source, the field, the value and what is allowed."""
from __future__ import annotations


class ConfigError(ValueError):
    """A bad profile, model config, plan, run record, sweep spec or CLI flag.

    ``str(err)`` is one line: ``SOURCE: FIELD = VALUE: PROBLEM (allowed: ALLOWED)``.
    """

    def __init__(self, source: str, field: str, value: object, problem: str, allowed: str = ""):
        self.source = source
        self.field = field
        self.value = value
        self.problem = problem
        self.allowed = allowed
        msg = f"{_cap(source, 160)}: {_cap(field, 80)} = {shown(value)}: {_cap(problem, 300)}"
        if allowed:
            msg += f" (allowed: {_cap(allowed, 400)})"
        super().__init__(" ".join(msg.split()))


VALUE_CHARS = 60
"""Most characters of a value an error message quotes."""
PATH_CHARS = 200
"""Most characters of a file path (a name the user gave, not file contents) an error message quotes."""


class PathText(str):
    """A file path given by the user: quoted whole in errors (up to PATH_CHARS), unlike other values."""


def _cap(text: object, n: int) -> str:
    s = text if isinstance(text, str) else str(text)
    return s if len(s) <= n else s[:n - 3] + "..."


def shown(value: object, limit: int = VALUE_CHARS) -> str:
    """A short, safe rendering of ``value`` for an error message: at most ``limit`` characters,
    built without calling repr() on anything large (huge strings, integers of thousands of digits,
    long lists and mappings are cut before they are rendered)."""
    def short(v, depth: int) -> str:
        if isinstance(v, str):
            return repr(v[:limit + 1])
        if isinstance(v, (bytes, bytearray)):
            return repr(bytes(v[:limit + 1]))
        if isinstance(v, bool) or v is None or isinstance(v, float):
            return repr(v)
        if isinstance(v, int):
            bits = v.bit_length()
            return repr(v) if bits <= 200 else f"<integer of about {int(bits * 0.30103) + 1:,} digits>"
        if isinstance(v, (list, tuple, set, frozenset, dict)):
            if depth >= 2:
                return "[...]" if isinstance(v, list) else "{...}" if isinstance(v, dict) else "(...)"
            items = list(v.items())[:6] if isinstance(v, dict) else list(v)[:6] if not isinstance(v, (set, frozenset)) else []
            if isinstance(v, dict):
                inner = ", ".join(f"{short(k, depth + 1)}: {short(x, depth + 1)}" for k, x in items)
                body = "{" + inner + (", ..." if len(v) > 6 else "") + "}"
            elif isinstance(v, (set, frozenset)):
                body = f"<{type(v).__name__} of {len(v)}>"
            else:
                inner = ", ".join(short(x, depth + 1) for x in items)
                body = ("[" if isinstance(v, list) else "(") + inner + (", ..." if len(v) > 6 else "") + \
                    ("]" if isinstance(v, list) else ")")
            return body
        try:
            import reprlib

            r = reprlib.Repr()
            r.maxstring = r.maxother = limit
            return r.repr(v)
        except Exception:  # noqa: BLE001 - a broken __repr__ must not hide the error
            return f"<{type(v).__name__}>"

    if isinstance(value, PathText):
        s = repr(str(value)[:PATH_CHARS + 1])
        return s if len(s) <= PATH_CHARS + 2 else s[:PATH_CHARS - 3] + "..."
    s = short(value, 0)
    return s if len(s) <= limit else s[:limit - 3] + "..."


def did_you_mean(name: str, choices: list[str]) -> str:
    """Return ' — did you mean X?' for the closest choice, or '' when none is close."""
    import difflib

    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def from_pydantic(source: str, err) -> ConfigError:
    """Turn the first error of a pydantic ``ValidationError`` into a one-line ConfigError."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ())) or "<root>"
    kind = first.get("type", "")
    value = first.get("input")
    msg = first.get("msg", "invalid")
    if kind == "extra_forbidden":
        return ConfigError(source, loc, value, "unknown key", "see the documented fields")
    if kind == "missing":
        return ConfigError(source, loc, None, "required field is missing")
    if kind == "value_error":
        # Cross-field checks: the message names the fields; the whole mapping is not worth printing.
        text = msg.removeprefix("Value error, ")
        field = text.split(" ", 1)[0] if loc == "<root>" else loc
        return ConfigError(source, field, _field_value(value, field), text)
    ctx = first.get("ctx") or {}
    allowed = ", ".join(f"{k} {v}" for k, v in ctx.items() if k != "error")
    return ConfigError(source, loc, value, msg, allowed)


def _field_value(data, field: str):
    """The value of ``field`` in a mapping, or the mapping's summary when absent."""
    if isinstance(data, dict):
        return data.get(field, "<see file>")
    return data
