"""Shared fixtures: seeded generators and tiny configurations that train in seconds."""

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # tests/oracles importable as `oracles`

ROOT = Path(__file__).resolve().parents[1]
MOSI_DIR = Path(os.environ.get("PASE_MOSI_BCLSTM", ROOT.parent / "shared" / "data" / "mosi-bclstm"))

#: a synthetic problem small enough to train for a few epochs in a couple of seconds
TINY = ["data.options.sizes=[192,64,64]", "train.max_epochs=3", "train.progress_bar=false",
        "model.d_model=16", "model.hidden=32", "model.head_hidden=16"]


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.fixture
def mosi_dir() -> Path:
    if not (MOSI_DIR / "mosi_index.csv").is_file():
        pytest.skip(f"real MOSI bc-LSTM data not found at {MOSI_DIR} (set PASE_MOSI_BCLSTM to its folder)")
    return MOSI_DIR
