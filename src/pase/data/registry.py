"""Registry of data sources: each on-disk format (and the built-in benchmark) registers a loader.

A loader is ``load(**options) -> DataBundle``; ``create_data(name, **options)`` is the only way in.
"""

from __future__ import annotations

from typing import Callable

from ..registry import Registry
from .contract import DataBundle

__all__ = ["DATA_SOURCES", "register_data", "create_data"]

DATA_SOURCES: Registry[Callable[..., DataBundle]] = Registry("data source")


def register_data(name: str):
    """Decorator: register a loader ``fn(**options) -> DataBundle`` under ``name``."""
    return DATA_SOURCES.register(name)


def create_data(name: str, **options) -> DataBundle:
    """Build the ``DataBundle`` of source ``name`` with its options."""
    return DATA_SOURCES.create(name, **options)
