"""The same seed twice gives the same run, bit for bit on CPU, for late fusion and for PaSE.

``metrics.json`` (all but the elapsed time), ``log.csv`` and the final weights, prototype banks
and SGM buffers are compared exactly.
"""

from __future__ import annotations

import json

import pytest
import torch

from pase.config import Config, apply_overrides
from pase.training import train
from tiny import TINY


@pytest.mark.parametrize("method", ["pase", "late_fusion"])
def test_same_seed_same_run(tmp_path, method):
    cfg = apply_overrides(Config(), TINY + [f"method={method}", "train.max_epochs=2", "pase.switch_max_epoch=1"])
    for name in ("a", "b"):
        train(cfg, tmp_path / name, quiet=True)
    a, b = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("a", "b"))
    a.pop("elapsed_s"), b.pop("elapsed_s")
    assert a == b
    assert (tmp_path / "a" / "log.csv").read_text() == (tmp_path / "b" / "log.csv").read_text()
    sa, sb = (torch.load(tmp_path / n / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
              for n in ("a", "b"))
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    if method == "pase":
        assert int(sa["method.phase"]) == 2 and bool(sa["method.coeffs_started"])
