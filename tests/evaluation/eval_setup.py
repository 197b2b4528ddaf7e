"""Constants and helpers shared by the evaluation-suite tests (imported as ``eval_setup``)."""

import contextlib

import torch

from tiny import TINY

#: two epochs of the tiny synthetic problem: enough for a selected epoch and a 2-row trajectory
OVERRIDES = TINY + ["train.max_epochs=2"]
METHODS = ["late_fusion", "agm", "nope"]  # "nope" is not a method: its runs fail, the others go on
OK_METHODS = ["late_fusion", "agm"]
SEEDS = [1111, 1112]
MODALITIES = ["text", "audio", "vision"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@contextlib.contextmanager
def one_thread():
    """Tiny models on loaded CPUs run many times faster on one thread than on several."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
