"""pase.metrics.stateful: per batch and accumulated against the oracles, pickling, reset."""

from __future__ import annotations

import pickle

import pytest
import torch
from oracles.sklearn_metrics import reference_iemocap_mult, reference_mosi, reference_multiclass, reference_sims

from pase.metrics import MetricAccumulator, compute_metrics, get_protocol

REFS = {"mosi": reference_mosi, "mosei": reference_mosi, "sims": reference_sims,
        "iemocap_mult": reference_iemocap_mult, "multiclass": reference_multiclass}
DATA = {"mosei": "mosi"}  # mosei scores MOSI-shaped data


def _close(got, ref):
    """Accuracies are exact count ratios; F1 / MAE / Corr differ only in float64 summation order."""
    assert list(got) == list(ref)
    for k in got:
        as64 = lambda v: torch.tensor(float(v), dtype=torch.float64)  # noqa: E731
        torch.testing.assert_close(as64(got[k]), as64(ref[k]), rtol=1e-9, atol=1e-12, equal_nan=True, msg=k)


@pytest.mark.parametrize("name", list(REFS))
def test_per_batch_and_accumulated_match_oracle(name, gen, inputs):
    outputs, target = inputs(DATA.get(name, name), 301, gen)
    acc = MetricAccumulator(name)
    bounds = [0, 64, 128, 200, 301]  # uneven batches, last one partial
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        _close(compute_metrics(name, outputs[lo:hi], target[lo:hi]), REFS[name](outputs[lo:hi], target[lo:hi]))
        acc.update(outputs[lo:hi], target[lo:hi])
    assert len(acc) == 301
    _close(acc.compute(), REFS[name](outputs, target))


def test_pickle_mid_accumulation_and_reset(gen, inputs):
    outputs, target = inputs("sims", 90, gen)
    acc = MetricAccumulator(get_protocol("sims"))
    acc.update(outputs[:40], target[:40])
    clone = pickle.loads(pickle.dumps(acc))
    for a in (acc, clone):
        a.update(outputs[40:], target[40:])
    assert clone.compute() == acc.compute() == compute_metrics("sims", outputs, target)
    acc.reset()
    assert len(acc) == 0
    with pytest.raises(RuntimeError, match=r"MetricAccumulator\('sims'\)\.compute\(\) called before any update"):
        acc.compute()


def test_update_copies_the_batch(gen, inputs):
    outputs, target = inputs("multiclass", 50, gen)
    acc = MetricAccumulator("multiclass")
    acc.update(outputs, target)
    expected = acc.compute()
    outputs.zero_()  # a training loop reusing its buffer must not change what was accumulated
    assert acc.compute() == expected


def test_update_validates_each_batch():
    acc = MetricAccumulator("mosi")
    with pytest.raises(ValueError, match=r"preds has shape \(8, 1\) but target has \(7,\)"):
        acc.update(torch.zeros(8, 1), torch.zeros(7))
    cls = MetricAccumulator("multiclass")
    cls.update(torch.zeros(4, 6), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"shape \(4, 4\) but earlier batches had \('B', 6\)"):
        cls.update(torch.zeros(4, 4), torch.zeros(4, dtype=torch.long))


def test_metadata_passthrough():
    acc = MetricAccumulator("iemocap_mult")
    assert acc.monitor == "Mean_F1" and acc.higher_is_better["Mean_F1"] is True
    assert repr(acc) == "MetricAccumulator(protocol='iemocap_mult', samples=0)"


def test_after_reset_only_the_new_batches_are_scored(gen, inputs):
    """reset() forgets the targets with the outputs: the next split is scored on its own batches
    (against the oracle), not against the previous split's targets."""
    outputs, target = inputs("multiclass", 60, gen)
    acc = MetricAccumulator("multiclass")
    acc.update(outputs[:40], target[:40])
    acc.reset()
    acc.update(outputs[40:], target[40:])
    _close(acc.compute(), reference_multiclass(outputs[40:], target[40:]))
