"""A run trained at another precision is evaluated at that precision, against its exact labels.

``pase evaluate`` / ``predict`` / ``diagnose`` rebuild the model outside Lightning's loops. They
used to build it in float32 and run it without autocast, so a 64-true run's weights were rounded
and a bf16-mixed model was scored in float32 (Corr 0.364 against metrics.json's 0.367 on the run
below); and Lightning's true-half plugin cast the labels with the features, so a bf16-true run's
test metrics compared its predictions with labels rounded to 8 bits of mantissa.
"""

from __future__ import annotations

import csv

import pytest
import torch

from pase.config import Config, apply_overrides
from pase.data import create_data
from pase.evaluation.shapley_report import diagnose
from pase.metrics import MetricAccumulator
from pase.training import evaluate, train
from pase.training.precision import HalfPrecisionExactTargets, precision_plugin
from tiny import TINY


@pytest.mark.parametrize("precision", ["64-true", "bf16-mixed", "bf16-true"])
def test_evaluate_and_diagnose_reproduce_the_runs_own_test_metrics(tmp_path, precision):
    result = train(apply_overrides(Config(), TINY + ["method=pase", f"train.precision={precision}"]),
                   tmp_path / "run", quiet=True)
    ckpt = tmp_path / "run" / result["checkpoint"]
    assert evaluate(ckpt)["test"] == result["test"]
    diagnose(ckpt, tmp_path / "diag", noise_levels=(0.0,), probes=False)
    full = next(csv.DictReader(open(tmp_path / "diag" / "robustness.csv")))
    assert {k: float(full[k]) for k in result["test"]} == result["test"]
    # evaluate scores against the stored labels, so metrics.json's test metrics used them too

def test_true_half_precision_keeps_the_labels_exact():
    data = create_data("synthetic", sizes=[8, 8, 8]).splits["train"]
    batch = data.__getitems__(list(range(8)))
    converted = HalfPrecisionExactTargets("bf16-true").convert_input(batch)
    assert all(x.dtype == torch.bfloat16 for x in converted.inputs.values())
    assert converted.target.dtype == torch.float32 and torch.equal(converted.target, batch.target)
    assert not torch.equal(batch.target.bfloat16().float(), batch.target)  # rounding would have changed them
    assert isinstance(precision_plugin("bf16-true"), HalfPrecisionExactTargets)
    assert type(precision_plugin("16-mixed")).__name__ == "MixedPrecision"  # as Lightning runs it on a CPU
    assert type(precision_plugin("32-true")).__name__ == "Precision"


def test_metrics_of_rounded_labels_differ():
    """Why the targets matter: the same predictions scored against bf16-rounded labels give another MAE."""
    y = create_data("synthetic", sizes=[8, 8, 64]).splits["test"].target
    pred = (0.5 * y + 0.1)[:, None]
    exact, rounded = MetricAccumulator("mosi"), MetricAccumulator("mosi")
    exact.update(pred, y)
    rounded.update(pred, y.bfloat16().float())
    assert exact.compute()["MAE"] != rounded.compute()["MAE"]
