"""Values derived from a live object, keyed by the object's identity and forgotten when it is
collected: a cache that never keeps a profile or model alive, and never answers for a new object
that happens to reuse a collected one's id."""
from __future__ import annotations

import weakref
from typing import Any


class IdentityCache:
    """``obj -> value`` for objects that need not be hashable (pydantic configs with dict fields)."""

    def __init__(self) -> None:
        self._entries: dict[int, tuple[weakref.ref, Any]] = {}

    def get(self, obj: object) -> Any:
        """The value stored for this very object, or None."""
        hit = self._entries.get(id(obj))
        return hit[1] if hit is not None and hit[0]() is obj else None

    def put(self, obj: object, value: Any) -> Any:
        """Store ``value`` for ``obj`` until ``obj`` is collected; return ``value``."""
        i = id(obj)

        def gone(ref: weakref.ref, i: int = i) -> None:
            cur = self._entries.get(i)
            if cur is not None and cur[0] is ref:
                del self._entries[i]

        self._entries[i] = (weakref.ref(obj, gone), value)
        return value

    def __len__(self) -> int:
        return len(self._entries)
