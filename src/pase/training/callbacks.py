"""Callbacks for optional, order-independent logic: the per-epoch CSV log, the finite guard and an
early stopping that stays stopped across a resume."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

import lightning as L
import torch

from ..io import atomic_write_text

__all__ = ["EpochCSVLog", "InterruptRecorder", "NonFiniteGuard", "NonFiniteError", "RelocatableCheckpoint",
           "ResumableEarlyStopping"]


class EpochCSVLog(L.Callback):
    """Writes ``log.csv`` (one row per finished epoch, every logged scalar), atomically each epoch.

    The rows live in the checkpoint (``state_dict``): the epoch-end checkpoint is saved after
    this callback has added its epoch's row, so a resumed run starts from exactly the rows of
    the epochs its checkpoint has finished and rewrites the file from them (a row written after
    that checkpoint, by a run killed before the next one, is dropped and its epoch re-run).
    Floats are written with ``repr``, so they read back bit for bit.

    Every row must follow a validation pass of its epoch: Lightning keeps the last logged values,
    so a row of an epoch that skipped validation (a training loader shorter than the length
    Lightning read) would silently repeat the previous epoch's metrics, and selection, early
    stopping and PaSE's phase switch would act on them. Such an epoch stops the run with an error.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows: List[Dict[str, float]] = []
        self._validated, self._batches = False, 0

    def state_dict(self) -> Dict[str, Any]:
        return {"rows": [dict(r) for r in self.rows]}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.rows = [dict(r) for r in state_dict.get("rows", [])]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.rows and trainer.is_global_zero:  # resumed: drop rows of epochs about to re-run
            self._write()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validated, self._batches = False, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._batches += 1

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated = True

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if not self._validated:
            raise RuntimeError(
                f"epoch {trainer.current_epoch} ended without its validation pass: the training loader gave "
                f"{self._batches} batches, Lightning expected {trainer.num_training_batches}; its metrics would "
                "repeat the previous epoch's. The training loader's length is wrong (a sampler whose batch "
                "count changes between epochs); the last finished epoch's checkpoint is kept")
        if not trainer.is_global_zero:
            return
        row = {"epoch": float(trainer.current_epoch)}
        for k, v in sorted(trainer.callback_metrics.items()):
            if isinstance(v, torch.Tensor) and v.numel() == 1:
                row[k] = float(v)
        self.rows.append(row)
        self._write()

    def _write(self) -> None:
        keys: List[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        for r in self.rows:
            w.writerow({k: (int(v) if k == "epoch" else repr(v)) for k, v in r.items()})
        atomic_write_text(self.path, buf.getvalue())


class RelocatableCheckpoint(L.pytorch.callbacks.ModelCheckpoint):
    """``ModelCheckpoint`` whose restored state follows a run folder that was moved or copied.

    Lightning keeps absolute paths in the state and, when the folder differs, drops the best
    score (a worse epoch then overwrites ``best.ckpt``) while keeping the old ``best_model_path``
    (a copied run would test the original's checkpoint). Paths under the saved folder are mapped
    to the same names under this one, so a resumed copy behaves as the original would.
    """

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        old, new = state_dict.get("dirpath"), self.dirpath
        if old and new and old != new:
            def move(path: Any) -> Any:
                if isinstance(path, str) and path.startswith(old + os.sep):
                    return new + path[len(old):]
                return path

            state_dict = {k: move(v) for k, v in state_dict.items()}
            state_dict["dirpath"] = new
            state_dict["best_k_models"] = {move(k): v for k, v in (state_dict.get("best_k_models") or {}).items()}
        super().load_state_dict(state_dict)


class InterruptRecorder(L.Callback):
    """Remembers the KeyboardInterrupt or SIGTERM that stopped ``fit`` (Lightning turns the first
    into ``sys.exit(1)`` and the second into a bare ``SystemExit``), so ``train`` can say so."""

    def __init__(self) -> None:
        self.signal: Optional[str] = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self.signal = "SIGINT"
        elif isinstance(exception, L.pytorch.utilities.exceptions.SIGTERMException):
            self.signal = "SIGTERM"


class ResumableEarlyStopping(L.pytorch.callbacks.EarlyStopping):
    """``EarlyStopping`` whose decision to stop is part of its checkpointed state.

    Lightning restores the counters but not ``trainer.should_stop``, so a run killed after its
    stopping epoch (during the final validation / test) would train one more epoch on resume.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.stopped = False

    def _note(self, trainer: L.Trainer) -> None:
        self.stopped = self.stopped or bool(trainer.should_stop)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._note(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self._note(trainer)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.stopped:  # resumed from the checkpoint of the stopping epoch
            trainer.should_stop = True

    def state_dict(self) -> Dict[str, Any]:
        return {**super().state_dict(), "stopped": self.stopped}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        configured = self.patience
        super().load_state_dict(state_dict)  # Lightning restores the checkpoint's patience too
        self.patience = configured  # train.early_stop_patience may change on resume (run.RESUMABLE)
        self.stopped = early_stopped(state_dict, configured)
        if not self.stopped and self.stopped_epoch:  # a raised patience lifted the saved stop: its record goes
            # too, or the resumed run's checkpoints said it had stopped at an epoch it trained past (a review)
            self.stopped_epoch = 0
            if hasattr(self, "stopping_reason"):  # Lightning 2.6; the project accepts older ones without it
                self.stopping_reason = type(self.stopping_reason).NOT_STOPPED
                self.stopping_reason_message = None


def early_stopped(state: Dict[str, Any], patience: int) -> bool:
    """Whether a ``ResumableEarlyStopping`` state (from a checkpoint) ends the run under ``patience``:
    its saved decision, unless the patience changed since, then whether its stale epochs reach the
    new one (as in one run with it; patience is this callback's only stopping rule)."""
    if state.get("patience", patience) != patience:
        # Lightning stops once a stale epoch brings the count to the patience, so 0 stops as 1 does
        return int(state.get("wait_count", 0)) >= max(patience, 1)
    return bool(state.get("stopped", False))


class NonFiniteError(FloatingPointError):
    """A loss, gradient or weight became NaN or infinite; the message names epoch, step and checkpoint."""


class NonFiniteGuard(L.Callback):
    """Stops the run on a non-finite loss, gradient or weight, naming epoch, step and the last good checkpoint.

    Cost: one host sync per optimiser step. The loss of every backward pass is folded into a
    device flag (no sync); before the optimiser step that flag and the max-norm of every
    gradient (``torch._foreach_norm``, one fused kernel per device) are reduced to one bool.
    The step never runs on a bad gradient. Under a loss scaler (``train.precision=16-mixed``)
    only the loss is checked before the step: overflowing gradients are the scaler's to skip.
    At the end of each training epoch (before its validation pass, and again before the
    checkpoint callbacks run), the weights are checked the same way (SGM scales gradients after
    this guard has seen them), so a checkpoint on disk always holds finite weights and the last
    good one is never touched.
    """

    def __init__(self, checkpoint_dir: str | Path) -> None:
        self.checkpoint_dir = Path(checkpoint_dir)
        self._loss_ok: Optional[torch.Tensor] = None

    def _fail(self, trainer: L.Trainer, what: str) -> None:
        last = self.checkpoint_dir / "last.ckpt"
        where = str(last) if last.is_file() else "none yet (the run stopped in its first epoch)"
        raise NonFiniteError(f"non-finite {what} at epoch {trainer.current_epoch}, step {trainer.global_step}; "
                             f"last good checkpoint: {where}. Lower train.lr, enable train.grad_clip, "
                             "or check the input data for NaN / inf (pase data inspect)")

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        ok = torch.isfinite(loss.detach()).all()
        self._loss_ok = ok if self._loss_ok is None else self._loss_ok & ok

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        loss_ok, self._loss_ok = self._loss_ok, None
        flags = [] if loss_ok is None else [loss_ok]
        # With a loss scaler (16-mixed) an infinite gradient is an overflow of the scaled loss:
        # the scaler skips that step and lowers its scale, so only the loss is checked here.
        if getattr(trainer.precision_plugin, "scaler", None) is None:
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            flags += [_all_finite(grads)] if grads else []
        if flags and not bool(torch.stack([f.to(flags[0].device) for f in flags]).all()):  # the one sync
            self._fail(trainer, "loss" if loss_ok is not None and not bool(loss_ok) else "gradient")

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit":  # the epoch's validation runs before on_train_epoch_end
            self._check_weights(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._check_weights(trainer, pl_module)

    def _check_weights(self, trainer, pl_module) -> None:
        weights = [p.detach() for p in pl_module.parameters()]
        if weights and not bool(_all_finite(weights)):
            self._fail(trainer, "weights (after the optimiser step)")


def _all_finite(tensors: List[torch.Tensor]) -> torch.Tensor:
    """0-dim bool: every element of every tensor is finite (NaN propagates through the max-norm)."""
    by_device: Dict[torch.device, List[torch.Tensor]] = {}
    for t in tensors:
        by_device.setdefault(t.device, []).append(t)
    flags = [torch.stack(torch._foreach_norm(ts, float("inf"))).isfinite().all() for ts in by_device.values()]
    return torch.stack([f.to(flags[0].device) for f in flags]).all()
