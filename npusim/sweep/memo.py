"""Memo tables of the fast tier, keyed by the inputs a function reads.

A key is built from two kinds of parts: ``value_key(obj)``, the value of a whole config object (a
digest of its pydantic fields, computed once per object and forgotten when the object is
collected, so a memo never keeps a model or profile alive and two equal objects share entries),
and ``Reads``, the named fields of a pydantic model (or properties derived from them) that a
function reads, declared once beside the function and checked against the model's fields when the
module loads, so a renamed or misspelt field fails at import instead of silently leaving the key.
Every table is registered, so ``clear_all`` empties them together.
"""
from __future__ import annotations

import hashlib
import json
import operator

from npusim.identity_cache import IdentityCache

_TABLES: list[dict] = []
_VALUES = IdentityCache()
"""Config object -> its value key, for as long as the object lives."""


def table() -> dict:
    """A new, registered memo table."""
    d: dict = {}
    _TABLES.append(d)
    return d


def cached(tab: dict, key, compute):
    """``tab[key]``, computed by ``compute()`` the first time ``key`` is asked for."""
    hit = tab.get(key)
    if hit is None:
        hit = tab[key] = compute()
    return hit


def clear_all() -> None:
    """Empty every registered memo table."""
    for d in _TABLES:
        d.clear()


def value_key(obj) -> str:
    """The value of a pydantic config object as a memo key (class name and a digest of its fields);
    computed once per live object, never keeping it alive."""
    hit = _VALUES.get(obj)
    if hit is not None:
        return hit
    body = json.dumps(obj.model_dump(mode="json"), sort_keys=True, default=str)
    return _VALUES.put(obj, f"{type(obj).__name__}:{hashlib.blake2b(body.encode(), digest_size=12).hexdigest()}")


class Reads:
    """The fields of one pydantic model class (or properties derived from them) that a memoised
    function reads; calling it on an instance gives those values as a key tuple."""

    def __init__(self, cls: type, names: str):
        self.cls, self.names = cls, tuple(names.split())
        unknown = [n for n in self.names if n not in cls.model_fields and not isinstance(getattr(cls, n, None), property)]
        if unknown or not self.names:
            raise TypeError(f"{cls.__name__} has no field {unknown[0] if unknown else '(none named)'}")
        self._get = operator.attrgetter(*self.names)

    def __call__(self, obj) -> tuple:
        """The read fields' values."""
        v = self._get(obj)
        return v if len(self.names) > 1 else (v,)

    def __add__(self, other: "Reads") -> "Reads":
        """The union of two declarations of the same class."""
        return Reads(self.cls, " ".join(dict.fromkeys(self.names + other.names)))
