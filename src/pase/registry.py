"""Named registries: a decorator fills a dict, ``create(name, **kwargs)`` is the only way in.

An unknown name raises ``KeyError`` listing the registered names and the closest match.
"""

from __future__ import annotations

import difflib
import warnings
from typing import Callable, Dict, Generic, List, TypeVar

__all__ = ["Registry", "unknown_name_message"]

T = TypeVar("T")


def unknown_name_message(kind: str, name: str, valid: List[str]) -> str:
    """``unknown <kind> 'nme'; did you mean 'name'? valid: a, b, c`` (``...; valid: ...`` without a close name)."""
    # case first (method=PaSE got no hint: 'PaSE' and 'pase' share too few characters for difflib)
    close = [v for v in valid if v.lower() == str(name).lower()] or difflib.get_close_matches(name, valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {kind} {name!r}{hint}{';' if not hint else ''} valid: {', '.join(sorted(valid))}"


class Registry(Generic[T]):
    """A named collection of factories of one kind ("encoder", "data format", "method")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: Dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                warnings.warn(f"{self.kind} {name!r} registered twice; the later one wins", stacklevel=2)
            self._items[name] = obj
            return obj
        return deco

    def get(self, name: str) -> T:
        if name not in self._items:
            raise KeyError(unknown_name_message(self.kind, name, list(self._items)))
        return self._items[name]

    def create(self, name: str, *args, **kwargs):
        return self.get(name)(*args, **kwargs)

    def names(self) -> List[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
