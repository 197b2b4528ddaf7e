"""Context batches (whole videos) come in the same number every epoch, so no epoch loses its validation.

Lightning reads a training loader's length once; an epoch with fewer batches than that never
reaches validation, logging or PaSE's phase switch. Greedy packing of shuffled videos gave 22 or
23 batches per epoch on real MOSI, and the 22-batch epochs repeated the previous epoch's row in
log.csv. These tests pin the fixed count and the end-to-end consequence.
"""

import csv

import lightning as L
import pytest
import torch

from pase.config import load_config
from pase.data import register_data
from pase.training import run as run_mod
from pase.training import train
from pase.training.datamodule import GroupBatchSampler

import tiny


def test_same_batch_count_every_epoch_whole_groups_every_sample_once():
    groups, sizes = tiny.ragged_groups()
    n, bs = len(groups), 16
    s = GroupBatchSampler(groups, bs, shuffle=True, seed=5)
    expected = -(-n // bs)
    orders = []
    for _ in range(30):
        length = len(s)
        batches = list(s)
        assert len(batches) == length == expected and all(batches)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(n))  # every sample exactly once
        for b in batches:  # whole groups: a group's members all sit in one batch
            for g in set(groups[b].tolist()):
                assert (groups[b] == g).sum().item() == sizes[g]
        assert max(map(len, batches)) <= n / expected + max(sizes)
        orders.append(tuple(map(tuple, batches)))
    assert len(set(orders)) == 30  # shuffled: a new composition every epoch


def test_few_large_groups_one_batch_each():
    groups = torch.tensor([0] * 50 + [1] * 40 + [2] * 30)
    batches = list(GroupBatchSampler(groups, 16, shuffle=False))
    assert sorted(map(len, batches)) == [30, 40, 50]


def test_context_training_validates_every_epoch(tmp_path):
    base = run_mod.load_bundle(load_config(None, tiny.TINY))
    register_data("test_grouped_synthetic")(lambda **_: tiny.grouped(base))
    # seed 1114: the former greedy packing gave 17, 16, 16, 15 batches in the first epochs here, so
    # epochs 1 to 3 ended before the length Lightning had read and skipped their validation
    cfg = load_config(None, tiny.TINY + ["data.source=test_grouped_synthetic", "model.context=true",
                                        "train.max_epochs=6", "train.early_stop_patience=10", "train.batch_size=16", "train.seed=1114"])
    seen = []

    class Count(L.Callback):
        def on_validation_epoch_end(self, trainer, pl_module):
            if not trainer.sanity_checking and trainer.state.fn == "fit":
                seen.append(trainer.current_epoch)

    orig = run_mod._trainer
    run_mod._trainer = lambda c, o, cbs, q: orig(c, o, list(cbs) + [Count()], q)
    try:
        result = train(cfg, tmp_path / "run", quiet=True)
    finally:
        run_mod._trainer = orig
    assert seen == list(range(6)) and result["epochs_run"] == 6
    with open(tmp_path / "run" / "log.csv", newline="") as f:
        losses = [r["train/loss"] for r in csv.DictReader(f)]
    assert len(losses) == 6 and len(set(losses)) == 6  # no epoch repeats the previous row


def test_an_epoch_without_validation_stops_the_run(tmp_path, monkeypatch):
    """A loader shorter than its length would skip validation; the run stops instead of logging stale rows."""
    base = run_mod.load_bundle(load_config(None, tiny.TINY))
    register_data("test_grouped_synthetic_short")(lambda **_: tiny.grouped(base))
    monkeypatch.setattr(GroupBatchSampler, "__len__", lambda self: self.n_batches + 1)
    cfg = load_config(None, tiny.TINY + ["data.source=test_grouped_synthetic_short", "model.context=true",
                                        "train.batch_size=16"])
    with pytest.raises(RuntimeError, match=r"epoch 0 ended without its validation pass: the training loader gave "
                                           r"\d+ batches, Lightning expected \d+"):
        train(cfg, tmp_path / "run", quiet=True)


def test_predict_of_a_context_model_keeps_the_splits_row_order(tmp_path):
    """Whole-video batches are dealt out of order; the CSV still follows the split's rows."""
    from pase.training import evaluate, predict

    base = run_mod.load_bundle(load_config(None, tiny.TINY))
    bundle = tiny.grouped(base)
    register_data("test_grouped_synthetic_predict")(lambda **_: bundle)
    cfg = load_config(None, tiny.TINY + ["data.source=test_grouped_synthetic_predict", "model.context=true",
                                        "train.max_epochs=1", "train.batch_size=16"])
    result = train(cfg, tmp_path / "run", quiet=True)
    ckpt = tmp_path / "run" / result["checkpoint"]
    assert predict(ckpt, tmp_path / "p.csv") == 64
    with open(tmp_path / "p.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == list(bundle.splits["test"].ids)
    assert all(abs(float(r["label"]) - v) < 1e-5 for r, v in zip(rows, bundle.splits["test"].target.tolist()))
    assert evaluate(ckpt, splits=("test",))["test"] == result["test"]


def test_evaluate_of_a_context_model_scores_in_the_training_loops_order(tmp_path, monkeypatch):
    """pase evaluate feeds the metrics the outputs in the test loop's (whole-video) batch order, not
    the split's row order: Pearson's r summed in another order differed in its last digit from
    metrics.json on MOSI-shaped data (review m2, D2)."""
    import numpy as np

    from pase.metrics.stateful import MetricAccumulator
    from pase.training import evaluate

    base = run_mod.load_bundle(load_config(None, tiny.TINY))
    bundle = tiny.grouped(base)
    register_data("test_grouped_synthetic_evaluate")(lambda **_: bundle)
    cfg = load_config(None, tiny.TINY + ["data.source=test_grouped_synthetic_evaluate", "model.context=true",
                                        "train.max_epochs=1", "train.batch_size=16"])
    scored = []
    compute = MetricAccumulator.compute

    def spy(self):
        scored.append((np.concatenate(self._preds), np.concatenate(self._target)))
        return compute(self)

    monkeypatch.setattr(MetricAccumulator, "compute", spy)
    result = train(cfg, tmp_path / "run", quiet=True)
    trained = list(scored)
    scored.clear()
    assert evaluate(tmp_path / "run" / result["checkpoint"], splits=("test",))["test"] == result["test"]
    (preds, target), = scored
    assert any(np.array_equal(target, t) and np.array_equal(preds, p) for p, t in trained)
    assert not np.array_equal(target, bundle.splits["test"].target.numpy())  # the test splits' rows are out of group order
