"""Nothing the training run chooses depends on the test split.

The run is trained twice, the second time with every test feature replaced by noise and every
test label changed: the selected epoch, the validation metrics, the per-epoch log, PaSE's phase
switch and the selected weights must be identical; only the test metrics may move. The
z-scoring statistics come from the train split alone.
"""

from __future__ import annotations

import json

import torch

import pase.training.run as run_module
from pase.config import Config, apply_overrides
from pase.data import create_data
from pase.data.contract import DataBundle, MultimodalDataset, standardize
from tiny import TINY

SETS = TINY + ["method=pase", "train.max_epochs=4", "pase.switch_patience=1", "pase.switch_max_epoch=2",
               "data.standardize=true"]


def _scramble_test(bundle: DataBundle) -> DataBundle:
    te = bundle.splits["test"]
    g = torch.Generator().manual_seed(7)
    noisy = {m: 10 * torch.randn(x.shape, generator=g) for m, x in te.features.items()}
    flipped = MultimodalDataset(noisy, -3 * te.target + 1, te.ids, split="test")
    return DataBundle(bundle.name, bundle.task, dict(bundle.splits, test=flipped), bundle.info)


def test_training_choices_ignore_the_test_split(tmp_path, monkeypatch):
    cfg = apply_overrides(Config(), SETS)
    a = run_module.train(cfg, tmp_path / "a", quiet=True)
    real_load = run_module.load_bundle
    monkeypatch.setattr(run_module, "load_bundle", lambda c: _scramble_test(real_load(c)))
    b = run_module.train(cfg, tmp_path / "b", quiet=True)
    assert a["diagnostics"]["switch_epoch"] == 2  # the phase switch really happened inside the run
    assert a["best_epoch"] == b["best_epoch"]
    assert a["valid"] == b["valid"]
    assert a["diagnostics"] == b["diagnostics"]
    assert (tmp_path / "a" / "log.csv").read_text() == (tmp_path / "b" / "log.csv").read_text()
    wa = torch.load(tmp_path / "a" / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    wb = torch.load(tmp_path / "b" / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a["test"] != b["test"]  # the scrambled test split was really used, and only for the test metrics
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["test"] == b["test"]


def test_standardize_uses_the_train_split_only():
    bundle = create_data("synthetic", sizes=[96, 32, 32])
    z, z_scrambled = standardize(bundle), standardize(_scramble_test(bundle))
    for m in bundle.modalities:
        for s in ("train", "valid"):
            assert torch.equal(z.splits[s].features[m], z_scrambled.splits[s].features[m])
        x = z.splits["train"].features[m].double().flatten(0, -2)  # (N * T, D)
        torch.testing.assert_close(x.mean(0), torch.zeros(x.shape[1], dtype=torch.float64), atol=1e-5, rtol=0)
        torch.testing.assert_close(x.std(0, unbiased=False), torch.ones(x.shape[1], dtype=torch.float64),
                                   atol=1e-4, rtol=0)
        raw = bundle.splits["train"].features[m].double().flatten(0, -2)
        expect = (bundle.splits["valid"].features[m].double() - raw.mean(0)) / raw.std(0, unbiased=False)
        torch.testing.assert_close(z.splits["valid"].features[m].double(), expect, atol=1e-4, rtol=1e-4)
