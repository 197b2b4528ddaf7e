"""Shared fixtures: seeded generators and tiny configurations that train in seconds."""

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # tests/oracles importable as `oracles`

# Tiny models run many times faster on one thread, and CI's 2 cores are shared by the process pool
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
MOSI_DIR = Path(os.environ.get("PASE_MOSI_BCLSTM", ROOT.parent / "shared" / "data" / "mosi-bclstm"))

@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.fixture
def mosi_dir() -> Path:
    if not (MOSI_DIR / "mosi_index.csv").is_file():
        pytest.skip(f"real MOSI bc-LSTM data not found at {MOSI_DIR} (set PASE_MOSI_BCLSTM to its folder)")
    return MOSI_DIR


@pytest.fixture
def flock_unsupported(monkeypatch):
    """``fcntl.flock`` failing as on a filesystem without locks (ENOLCK); ``monkeypatch.undo()`` restores it."""
    import errno
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    return monkeypatch
