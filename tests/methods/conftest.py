"""Tiny fusion models and batches for the baseline-method tests, for every task kind."""

from typing import List

import pytest
import torch
from torch import nn

from pase.config import Config, apply_overrides
from pase.data.contract import Batch, TaskSpec
from pase.models.fusion_model import FusionModel, build_head

MODALITIES = ["text", "audio", "vision", "extra"]
TASKS = {
    "regression": TaskSpec("regression", 1, "mosi"),
    "classification": TaskSpec("classification", 3, "demo"),
    "multilabel": TaskSpec("multilabel", 4, "demo"),
}


class TinyEncoder(nn.Module):
    """(B, 1, D_in), lengths (B,) -> (B, D): a two-layer MLP owned by the tests (no dropout)."""

    def __init__(self, d_in: int, d_model: int, hidden: int = 16) -> None:
        super().__init__()
        self.hidden = nn.Linear(d_in, hidden)
        self.out = nn.Linear(hidden, d_model)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.out(torch.relu(self.hidden(x[:, 0]))))


class Case:
    """A model, a batch, a task and a config; ``fresh()`` rebuilds the identical model."""

    def __init__(self, kind: str, M: int, B: int, seed: int, overrides: List[str]) -> None:
        self.kind, self.M, self.seed = kind, M, seed
        self.task = TASKS[kind]
        self.mods = MODALITIES[:M]
        self.cfg = apply_overrides(Config(), overrides)
        g = torch.Generator().manual_seed(seed)
        dims = {m: 3 + i for i, m in enumerate(self.mods)}
        inputs = {m: 2.0 * torch.randn(B, 1, d, generator=g) for m, d in dims.items()}
        if kind == "regression":
            target = 3 * torch.rand(B, generator=g) * 2 - 3  # in [-3, 3)
        elif kind == "classification":
            target = torch.randint(0, 3, (B,), generator=g)
        else:
            target = (torch.rand(B, 4, generator=g) > 0.5).float()
        self.batch = Batch(inputs=inputs, lengths={m: torch.ones(B, dtype=torch.long) for m in dims},
                           target=target, ids=[str(i) for i in range(B)])
        self.dims = dims
        self.model = self.fresh()

    def fresh(self) -> FusionModel:
        torch.manual_seed(self.seed)
        d = 8
        encoders = {m: TinyEncoder(dim, d_model=d) for m, dim in self.dims.items()}
        head = build_head(self.M * d, self.task.output_dim, hidden=16, dropout=0.0)
        return FusionModel(encoders, head, d_model=d)


@pytest.fixture
def make_case():
    def _make(kind: str = "regression", M: int = 3, B: int = 24, seed: int = 0, overrides=()):
        return Case(kind, M, B, seed, list(overrides))
    return _make
