"""A run trained at another precision is evaluated at that precision, against its exact labels.

``pase evaluate`` / ``predict`` / ``diagnose`` rebuild the model outside Lightning's loops. They
used to build it in float32 and run it without autocast, so a 64-true run's weights were rounded
and a bf16-mixed model was scored in float32 (Corr 0.364 against metrics.json's 0.367 on the run
below); and Lightning's true-half plugin cast the labels with the features, so a bf16-true run's
test metrics compared its predictions with labels rounded to 8 bits of mantissa.
"""

from __future__ import annotations

import csv
import math

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


def test_true_half_precision_keeps_the_running_averages_in_float32():
    """A prototype EMA (momentum 0.98) stored in bf16 froze once 2 % of the gap fell under half a
    rounding step: from 1.0 towards class means of 1.5 it stopped at 1.375. Kept in float32 it
    follows the closed form 1.5 - 0.5 * 0.98^n."""
    from pase.prototypes import PrototypeBank

    kept = HalfPrecisionExactTargets("bf16-true").convert_module(PrototypeBank(num_classes=1, dim=1))
    rounded = PrototypeBank(num_classes=1, dim=1).to(torch.bfloat16)  # Lightning's plugin alone did this
    assert kept.prototypes.dtype == torch.float32 and kept.initialized.dtype == torch.bool
    for bank in (kept, rounded):
        bank.update(torch.ones(4, 1, dtype=torch.bfloat16), torch.zeros(4, dtype=torch.long))  # first mean: 1.0
        for _ in range(300):
            bank.update(torch.full((4, 1), 1.5, dtype=torch.bfloat16), torch.zeros(4, dtype=torch.long))
    assert abs(float(kept.prototypes) - (1.5 - 0.5 * 0.98 ** 300)) < 1e-5
    assert float(rounded.prototypes) < 1.4  # frozen far from 1.4988


@pytest.mark.parametrize("precision", ["bf16-true", "16-true"])
def test_converting_a_module_keeps_its_float32_running_averages_to_the_bit(precision):
    """Lightning loads a checkpoint (a resume, the final test from best.ckpt) before it converts the
    module, and the conversion cast the restored float32 averages to half and back: a prototype of
    1.3 came back 1.296875, and a resumed bf16-true run left the uninterrupted one (a review)."""
    from pase.prototypes import PrototypeBank

    bank = PrototypeBank(num_classes=2, dim=3)
    exact = torch.tensor([[1.3, -0.7001, 2.0 ** -20], [3.14159, 1e-3, -5.5]])
    bank.prototypes.copy_(exact)
    kept = HalfPrecisionExactTargets(precision).convert_module(bank)
    assert kept.prototypes.dtype == torch.float32 and torch.equal(kept.prototypes, exact)
    assert not torch.equal(exact.to(getattr(torch, "bfloat16" if precision == "bf16-true" else "float16")).float(),
                           exact)  # the values do not survive a round trip through half precision


@pytest.mark.parametrize("method, state", [("pase", ["banks.text.prototypes", "coeffs", "ot_log_u"]),
                                           ("agm", ["running"]), ("pmr", ["banks.text.prototypes"])])
def test_a_bf16_true_run_keeps_its_running_averages_in_float32_and_the_weights_in_bf16(tmp_path, method, state):
    result = train(apply_overrides(Config(), TINY + [f"method={method}", "train.precision=bf16-true",
                                                     "pase.switch_max_epoch=1", "train.max_epochs=2"]),
                   tmp_path / "run", quiet=True)
    sd = torch.load(tmp_path / "run" / result["checkpoint"], weights_only=True)["state_dict"]
    for name in state:
        key = next(k for k in sd if k.endswith(name))
        assert sd[key].dtype == torch.float32, key
    weights = [v for k, v in sd.items() if k.endswith(".weight")]
    assert weights and all(w.dtype == torch.bfloat16 for w in weights)
    assert evaluate(tmp_path / "run" / result["checkpoint"])["test"] == result["test"]


def test_float16_cosine_cost_and_prototype_logits_stay_finite_with_an_empty_prototype():
    """F.normalize's eps 1e-8 is 0 in float16: a prototype still at zero gave 0/0 = NaN in the
    forward pass and in the features' gradient, so train.precision=16-true PaSE stopped at its first
    step with 'non-finite gradient' (review). The floor is now one float16 can hold."""
    from pase.ot import cosine_cost

    x = torch.randn(4, 8, dtype=torch.float16, requires_grad=True)
    protos = torch.zeros(2, 8, dtype=torch.float16)
    protos[0] = 1.0  # class 1 never seen: its prototype is still zeros
    c = cosine_cost(x, protos)
    assert torch.isfinite(c).all() and torch.equal(c[:, 1], torch.ones(4, dtype=torch.float16))
    c.sum().backward()
    assert torch.isfinite(x.grad).all()
    ref = cosine_cost(x.detach().float(), protos.float())
    torch.testing.assert_close(c.float(), ref, atol=2e-3, rtol=0)


def test_float16_weights_with_adam_are_refused_with_the_fix():
    """Adam's eps 1e-8 is 0 in float16: one step gave [-inf, nan, ...] weights (review)."""
    from pase.config import ConfigError

    with pytest.raises(ConfigError, match=r"train.precision=16-true with train.optimizer=adam: Adam's eps \(1e-8\) is "
                                          r"0 in float16, .* use train.precision=16-mixed"):
        apply_overrides(Config(), ["train.precision=16-true"])
    assert apply_overrides(Config(), ["train.precision=16-true", "train.optimizer=sgd"]).train.optimizer == "sgd"


def test_a_float16_pase_run_with_sgd_trains_to_finite_metrics(tmp_path):
    """The end-to-end case of the review: 16-true PaSE (gate, PCL, OT on) stopped at step 0."""
    result = train(apply_overrides(Config(), TINY + ["method=pase", "train.precision=16-true", "train.optimizer=sgd",
                                                     "pase.switch_max_epoch=0", "train.max_epochs=2"]),
                   tmp_path / "run", quiet=True)
    assert math.isfinite(result["test"]["MAE"]) and math.isfinite(result["valid"]["MAE"]), result["test"]
    assert result["diagnostics"]["phase"] == 2  # SGM ran too
