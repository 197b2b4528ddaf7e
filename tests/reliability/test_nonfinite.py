"""Numerical guards: a non-finite loss stops the run cleanly; degenerate inputs give no NaN.

* ``NonFiniteGuard``: the CLI prints one line naming the epoch, the step and the last good
  checkpoint, exits non-zero, and that checkpoint is byte for byte what it was before the
  NaN appeared (no ``metrics.json`` is written);
* Sinkhorn, the OT alignment loss, Shapley values and SGM coefficients stay finite for
  identical prototypes, classes absent from every batch and an all-zero modality, unit by unit
  and through a whole PaSE run.
"""

from __future__ import annotations

import csv
import math
import re

import numpy as np
import pytest
import torch

from data.writers import sha256, write_mmsa
from pase.cli import main
from pase.config import Config, apply_overrides
from pase.fusion import prototype_confidence
from pase.ot import ot_alignment_loss, sinkhorn_log
from pase.shapley import exact_shapley, sgm_coefficients, shapley_shares
from pase.training import train
from pase.training.callbacks import NonFiniteError
from pase.training.lightning_module import PaseModule
from tiny import TINY


def _args(out, sets):
    return ["train", "--quiet", "--out", str(out)] + [x for s in TINY + sets for x in ("--set", s)]


def test_nan_loss_stops_with_one_line_and_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    """NaN from epoch 2 on: the run stops there and last.ckpt (epoch 1) is left intact."""
    out = tmp_path / "run"
    last = out / "checkpoints" / "last.ckpt"
    seen = {}
    step = PaseModule.training_step

    def poisoned(self, batch, batch_idx):
        loss = step(self, batch, batch_idx)
        if self.current_epoch < 2:
            return loss
        seen.setdefault("hash", sha256(last))  # the checkpoint as the NaN appears
        return loss * float("nan")

    monkeypatch.setattr(PaseModule, "training_step", poisoned)
    assert main(_args(out, ["train.max_epochs=4", "method=pase"])) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in captured.out + captured.err, captured.err
    assert re.fullmatch(rf"pase: error: non-finite loss at epoch 2, step \d+; last good checkpoint: "
                        rf"{re.escape(str(last))}\. Lower train\.lr.*", err[0]), err[0]
    assert sha256(last) == seen["hash"]
    assert not (out / "metrics.json").exists()
    assert [r["epoch"] for r in csv.DictReader(open(out / "log.csv"))] == ["0", "1"]


def test_huge_learning_rate_stops_in_the_first_epoch(tmp_path, capsys):
    assert main(_args(tmp_path / "run", ["train.lr=1.0e+30", "train.max_epochs=2"])) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.match(r"pase: error: non-finite (loss|gradient|weights).* at epoch 0, step \d+; "
                                      r"last good checkpoint: none yet", err[0]), err


def test_weights_that_diverge_in_an_epochs_last_step_stop_before_its_validation(tmp_path, capsys, monkeypatch):
    """The step's gradient was finite, the weights after it are not: the guard names it before the
    validation pass scores NaN predictions (which stopped with a metrics error naming no epoch)."""
    real_step = torch.optim.Adam.step

    def diverging(self, *args, **kwargs):
        out = real_step(self, *args, **kwargs)
        with torch.no_grad():
            self.param_groups[0]["params"][0].fill_(float("nan"))
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", diverging)
    assert main(_args(tmp_path / "run", ["train.max_epochs=2", "train.batch_size=100000"])) == 2  # 1 step / epoch
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.match(r"pase: error: non-finite weights \(after the optimiser step\) at epoch 0, "
                                      r"step 1; last good checkpoint: none yet", err[0]), err


# ---------------------------------------------------------------------- degenerate inputs, unit by unit
def _loss_scaled_trainer(monkeypatch, init_scale):
    """Lightning's 16-mixed plugin with a CPU GradScaler (on a CPU Lightning maps 16-mixed to bf16
    without a scaler; this is the GPU's loss-scaled setting, run on the CPU)."""
    import lightning as L
    from lightning.pytorch.plugins.precision import MixedPrecision

    from pase.training import run as run_mod

    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    real = L.Trainer

    def trainer(*args, **kw):
        kw.pop("precision")
        kw["plugins"] = list(kw["plugins"]) + [MixedPrecision("16-mixed", "cpu", scaler=scaler)]
        return real(*args, **kw)

    monkeypatch.setattr(run_mod.L, "Trainer", trainer)
    return scaler


def test_loss_scaler_overflows_are_skipped_steps_not_errors(tmp_path, monkeypatch):
    """At a high loss scale the first fp16 gradients overflow: the scaler skips those steps and lowers
    its scale; the guard must not call that a non-finite gradient (it stopped at step 0 before)."""
    scaler = _loss_scaled_trainer(monkeypatch, 2.0 ** 24)
    result = train(apply_overrides(Config(), TINY + ["train.max_epochs=2"]), tmp_path / "run", quiet=True)
    assert result["epochs_run"] == 2 and math.isfinite(result["test"]["MAE"])
    assert scaler.get_scale() < 2.0 ** 24  # steps really overflowed and were skipped


def test_a_nan_loss_still_stops_a_loss_scaled_run(tmp_path, monkeypatch):
    _loss_scaled_trainer(monkeypatch, 2.0 ** 10)
    step = PaseModule.training_step
    monkeypatch.setattr(PaseModule, "training_step",
                        lambda self, batch, i: step(self, batch, i) * (float("nan") if self.current_epoch else 1.0))
    with pytest.raises(NonFiniteError, match=r"non-finite loss at epoch 1, step \d+"):
        train(apply_overrides(Config(), TINY + ["train.max_epochs=2"]), tmp_path / "run", quiet=True)


def test_sinkhorn_identical_prototypes_and_zero_features_are_finite():
    """Identical points give a constant cost: the plan is a b^T, finite (also with zero vectors)."""
    a = b = torch.full((3,), 1 / 3)
    for M in (torch.zeros(3, 3), torch.ones(3, 3)):
        plan = sinkhorn_log(a, b, M, reg=0.05)
        torch.testing.assert_close(plan, torch.outer(a, b))  # closed form for a constant cost


@pytest.mark.parametrize("case", ["identical prototypes", "one class present", "no class present",
                                  "zero modality"])
def test_ot_alignment_loss_is_finite_in_degenerate_cases(case):
    g = torch.Generator().manual_seed(0)
    K, D = 3, 4
    cents = {m: torch.randn(K, D, generator=g, requires_grad=True) for m in ("text", "audio")}
    protos = {m: torch.randn(K, D, generator=g) for m in ("text", "audio")}
    present = torch.ones(K, dtype=torch.bool)
    if case == "identical prototypes":
        protos = {m: torch.ones(K, D) for m in protos}
    elif case == "one class present":
        present = torch.tensor([False, True, False])
    elif case == "no class present":
        present = torch.zeros(K, dtype=torch.bool)
    else:
        cents["audio"] = torch.zeros(K, D, requires_grad=True)
        protos["audio"] = torch.zeros(K, D)
    loss, _ = ot_alignment_loss(cents, protos, present)
    loss.backward()
    assert torch.isfinite(loss), f"{case}: loss {loss}"
    for m, c in cents.items():
        assert c.grad is None or torch.isfinite(c.grad).all(), f"{case}: gradient of {m} is not finite"


@pytest.mark.parametrize("utilities", [torch.zeros(8), torch.full((8,), 3.0), torch.tensor([0.0] * 7 + [1e-30]),
                                       torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0])])
def test_shapley_shares_and_sgm_coefficients_are_finite(utilities):
    """No contribution, equal utilities, a tiny one, and a null player (modality 2 and 3 useless)."""
    phi = exact_shapley(utilities)
    coeffs = sgm_coefficients(shapley_shares(phi))
    assert torch.isfinite(phi).all() and torch.isfinite(coeffs).all()
    assert ((coeffs > 0) & (coeffs <= 1)).all(), coeffs


# ---------------------------------------------------------------------- degenerate inputs, end to end
def _zero_audio_all_positive(d):
    for split in d.values():
        split["audio"][:] = 0.0  # an absent modality: all zeros
        split["regression_labels"][:] = np.abs(split["regression_labels"]) + 0.2  # no negative class


def test_pase_end_to_end_with_a_zero_modality_and_one_sign_class(tmp_path):
    path = write_mmsa(tmp_path / "data", "mosi", sizes=(24, 8, 8), mutate=_zero_audio_all_positive)
    cfg = apply_overrides(Config(), ["method=pase", "pase.switch_max_epoch=1", "data.source=mmsa",
                                     f"data.path={path}", "train.max_epochs=2", "train.batch_size=8",
                                     "train.progress_bar=false", "model.d_model=8", "model.hidden=16",
                                     "model.head_hidden=8"])
    result = train(cfg, tmp_path / "run", quiet=True)
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert [float(r["diag/phase"]) for r in rows] == [1.0, 2.0]
    watched = [k for k in rows[0] if k.startswith(("train/", "diag/shapley", "diag/share", "diag/sgm_coeff",
                                                   "diag/ot_cost", "diag/weight"))]
    assert {"train/ot_loss", "train/pcl_loss", "diag/ot_cost", "diag/sgm_coeff_audio"} <= set(watched)
    for r in rows:
        bad = {k: r[k] for k in watched if not math.isfinite(float(r[k]))}
        assert not bad, f"epoch {r['epoch']}: non-finite {bad}"
    assert all(math.isfinite(v) for v in result["diagnostics"]["sgm_coeffs"].values())
    assert math.isfinite(result["test"]["MAE"])


def test_gate_confidence_with_uninitialised_prototypes_is_finite():
    """An uninitialised prototype has logit -inf: 0 log 0 = 0 in value and gradient (this was NaN,
    which zeroed every gate weight through ``nan_to_num`` and sent NaN gradients to the encoders)."""
    z = torch.tensor([[float("-inf"), 1.0, 2.0], [float("-inf"), float("-inf"), 5.0]], requires_grad=True)
    c = prototype_confidence(z)
    c.sum().backward()
    p = torch.softmax(torch.tensor([1.0, 2.0]), -1)
    expected = 1 + (p * p.log()).sum() / math.log(3)  # the two finite classes only
    torch.testing.assert_close(c, torch.stack([expected, torch.tensor(1.0)]))
    assert torch.isfinite(z.grad).all(), z.grad


def test_weights_made_non_finite_after_validation_stop_the_epoch_before_its_checkpoint(tmp_path):
    """The guard checks the weights again at the end of the training epoch, after the validation pass
    (whose hooks may change them) and before the checkpoint callbacks save them."""
    import types

    from pase.training.callbacks import NonFiniteGuard

    guard = NonFiniteGuard(tmp_path / "checkpoints")
    module = torch.nn.Linear(2, 1)
    trainer = types.SimpleNamespace(current_epoch=3, global_step=12)
    guard.on_train_epoch_end(trainer, module)  # finite: nothing to say
    with torch.no_grad():
        module.weight[0, 1] = float("nan")
    with pytest.raises(NonFiniteError, match=r"non-finite weights \(after the optimiser step\) at epoch 3, step 12; "
                                             r"last good checkpoint: none yet"):
        guard.on_train_epoch_end(trainer, module)
