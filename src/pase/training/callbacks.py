"""Callbacks for optional, order-independent logic: the per-epoch CSV log and guards."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Dict, List

import lightning as L
import torch

from ..io import atomic_write_text

__all__ = ["EpochCSVLog", "NonFiniteGuard", "NonFiniteError"]


class EpochCSVLog(L.Callback):
    """Writes ``log.csv`` (one row per finished epoch, every logged scalar), atomically each epoch.

    Rows of earlier epochs are kept when a run resumes (they are read back from the file).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows: List[Dict[str, float]] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.path.is_file() and not self.rows:
            with open(self.path, newline="") as fh:
                self.rows = [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(fh)]
            start = trainer.current_epoch
            self.rows = [r for r in self.rows if r["epoch"] < start]

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        row = {"epoch": float(trainer.current_epoch)}
        for k, v in sorted(trainer.callback_metrics.items()):
            if isinstance(v, torch.Tensor) and v.numel() == 1:
                row[k] = float(v)
        self.rows.append(row)
        keys: List[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        for r in self.rows:
            w.writerow({k: (int(v) if k == "epoch" else v) for k, v in r.items()})
        atomic_write_text(self.path, buf.getvalue())


class NonFiniteError(FloatingPointError):
    """A loss or gradient became NaN or infinite; the message names epoch, step and checkpoint."""


class NonFiniteGuard(L.Callback):
    """Stops the run on a non-finite loss or gradient, naming epoch, step and the last good checkpoint.

    The check is one fused reduction per step (``torch.isfinite`` over the loss and the total
    gradient norm); the last good checkpoint on disk is never touched.
    """

    def __init__(self, checkpoint_dir: str | Path) -> None:
        self.checkpoint_dir = Path(checkpoint_dir)

    def _fail(self, trainer: L.Trainer, what: str) -> None:
        last = self.checkpoint_dir / "last.ckpt"
        where = str(last) if last.is_file() else "none yet (the run stopped in its first epoch)"
        raise NonFiniteError(f"non-finite {what} at epoch {trainer.current_epoch}, step {trainer.global_step}; "
                             f"last good checkpoint: {where}. Lower train.lr, enable train.grad_clip, "
                             "or check the input data for NaN / inf (pase data inspect)")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not math.isfinite(float(loss)):
            self._fail(trainer, "loss")

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if grads and not torch.isfinite(torch.stack([g.norm() for g in grads]).sum()):
            self._fail(trainer, "gradient")
