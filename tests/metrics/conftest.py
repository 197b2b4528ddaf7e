"""Shared fixtures for the metric tests; makes ``tests/oracles`` importable as ``oracles``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)


@pytest.fixture
def gen() -> torch.Generator:
    """A seeded generator: every random test input is reproducible."""
    return torch.Generator().manual_seed(20240607)


def _regression(n: int, gen: torch.Generator, scale: float, step: float):
    """(N,) float32 predictions and labels on a grid of ``step`` in [-scale, scale], ~15% exactly 0."""
    preds = (torch.randn(n, generator=gen) * scale * 0.6).float()
    grid = torch.randint(-round(scale / step), round(scale / step) + 1, (n,), generator=gen)
    target = (grid * step).float()
    target[torch.rand(n, generator=gen) < 0.15] = 0.0
    return preds, target


def make_inputs(protocol: str, n: int, gen: torch.Generator):
    """Random (outputs, target) pairs shaped for ``protocol``; MOSI-like thirds, SIMS-like fifths."""
    if protocol in ("mosi", "mosei"):
        preds, target = _regression(n, gen, 3.0, 1.0 / 3.0)
        return preds.unsqueeze(1), target  # (N, 1) head output, (N,) labels
    if protocol == "sims":
        preds, target = _regression(n, gen, 1.0, 0.2)
        edges = torch.tensor([-0.7, -0.1, 0.1, 0.7, 0.0])
        hit = torch.rand(n, generator=gen) < 0.2  # ~20% of predictions exactly on a cut point
        preds[hit] = edges[torch.randint(0, 5, (int(hit.sum()),), generator=gen)]
        return preds, target
    if protocol == "iemocap_mult":
        return torch.randn(n, 4, generator=gen), torch.randint(0, 2, (n, 4), generator=gen)
    if protocol == "multiclass":
        return torch.randn(n, 6, generator=gen), torch.randint(0, 6, (n,), generator=gen)
    raise KeyError(protocol)


@pytest.fixture
def inputs():
    """``inputs(protocol, n, gen)`` -> random (outputs, target) for that protocol."""
    return make_inputs
