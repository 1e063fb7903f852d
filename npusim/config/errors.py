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
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        msg = f"{source}: {field} = {shown}: {problem}"
        if allowed:
            msg += f" (allowed: {allowed})"
        super().__init__(" ".join(msg.split()))


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
