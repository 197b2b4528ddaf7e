"""Registry of data sources: each on-disk format (and the built-in benchmark) registers a loader.

A loader is ``load(**options) -> DataBundle``; ``create_data(name, **options)`` is the only way in.
A loader may carry attributes that answer from its options alone, reading no data: ``check_options``
(the argument errors it would raise) and ``task_kind`` (the kind of task it loads, a function of the options or
one string: ``source_task_kind``).
"""

from __future__ import annotations

from typing import Callable, Optional

from ..registry import Registry
from .contract import DataBundle

__all__ = ["DATA_SOURCES", "register_data", "create_data", "source_task_kind"]

DATA_SOURCES: Registry[Callable[..., DataBundle]] = Registry("data source")


def register_data(name: str):
    """Decorator: register a loader ``fn(**options) -> DataBundle`` under ``name``."""
    return DATA_SOURCES.register(name)


def create_data(name: str, **options) -> DataBundle:
    """Build the ``DataBundle`` of source ``name`` with its options."""
    return DATA_SOURCES.create(name, **options)


def source_task_kind(name: str, **options) -> Optional[str]:
    """The task kind ("regression", "classification", "multilabel") source ``name`` loads with ``options``,
    told without reading any data by the loader's ``task_kind(**options)``; None when it cannot tell (a
    loader without one, a dataset its file name does not give, an unknown source: loading names those).

    Example:
        >>> source_task_kind("synthetic")
        'regression'
    """
    tell = getattr(DATA_SOURCES.get(name), "task_kind", None) if name in DATA_SOURCES else None
    if tell is None or isinstance(tell, str):  # a string: the kind whatever the options
        return tell
    try:
        return tell(**options)
    except (ValueError, TypeError):  # DataFormatError is a ValueError; a missing argument a TypeError
        return None
