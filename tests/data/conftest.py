"""Fixtures for the data-format tests: a guard proving loaders never write next to the data."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from .writers import tree_digest


@pytest.fixture
def untouched() -> Callable[[Path], Callable[[], None]]:
    """``check = untouched(root)`` snapshots every file under ``root``; ``check()`` asserts that
    no file changed and none was added or removed."""

    def snapshot(root: Path) -> Callable[[], None]:
        before = tree_digest(root)

        def check() -> None:
            assert tree_digest(root) == before, f"files under {root} changed"
        return check
    return snapshot
