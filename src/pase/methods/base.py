"""Training methods as plug-ins: the task loss, extra losses and gradient modulation.

A ``Method`` is a pure-PyTorch ``nn.Module`` (its buffers are checkpointed with the model) that
any training loop can drive:

1. ``loss(model, batch, out) -> (loss, logs)`` inside the training step (logs: name -> tensor);
2. ``before_optimizer_step(model, optimizer)`` after backward, before clipping and the optimiser
   step (gradient modulation happens here, on unscaled, accumulated gradients; ``optimizer``
   may be None for methods that only touch gradients);
3. ``end_validation_epoch(epoch, improved) -> logs`` after each validation epoch (phase schedules).

``late_fusion`` is the reference: the task loss of the fused head, nothing else.
"""

from __future__ import annotations

import zlib
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.contract import Batch, TaskSpec
from ..registry import Registry
from ..shapley import coalition_masks, exact_shapley, permutation_shapley, shapley_shares

__all__ = ["Method", "METHODS", "register_method", "create_method", "task_loss", "coalition_utility",
           "LateFusion", "RunningMean", "pop_means", "seed_from", "stream_seed"]

METHODS: Registry = Registry("method")


def register_method(name: str):
    return METHODS.register(name)


def create_method(name: str, cfg, task: TaskSpec, model: nn.Module) -> "Method":
    """Build the training method ``name`` (late_fusion, pase, ogm_ge, agm, pmr)."""
    try:
        factory = METHODS.get(name)
    except KeyError as e:  # the registry's message, naming the config key that held the name
        raise KeyError(f"config key 'method': {e.args[0]}") from None
    return factory(cfg, task, model)


def batch_weighted_mean(x: Tensor, n: int) -> Tensor:
    """``x``, a mean over this process's ``n`` samples; under ``torch.distributed``, the mean over
    every process's samples (sums weighted by each process's count, all-reduced), so methods that
    decide from batch statistics (PaSE's coalition utilities, AGM's scores) decide the same on
    every rank, as one process with the global batch would."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # the weighted sums and the count (new_full fills on the device; new_tensor copied from the host,
        # one blocking copy per step on a GPU: a review)
        packed = torch.cat([x.reshape(-1) * n, x.new_full((1,), float(n))])
        torch.distributed.all_reduce(packed, op=torch.distributed.ReduceOp.SUM)
        return (packed[:-1] / packed[-1]).reshape(x.shape)
    return x


def task_loss(logits: Tensor, target: Tensor, task: TaskSpec, kind: str = "auto",
              reduce_batch: bool = True) -> Tensor:
    """The task loss of ``logits`` (..., B, O) against ``target`` (B,) or (B, E).

    ``kind`` "auto" is L1 for regression (MMSA's choice for MOSI / MOSEI), cross-entropy for
    classification and binary cross-entropy for multilabel targets; "mse" and "l1" force a
    regression loss. With ``reduce_batch`` the mean over B (and E) is returned with the leading
    dims kept: (...,); otherwise the per-sample loss (..., B).
    """
    lead = logits.shape[:-2]
    if task.kind == "regression":
        # in float32 at least: half-precision targets are rounded (bf16 changed 446 of 686 MOSI labels),
        # so the loss, and the test-split Shapley utilities, differed from the MAE of exact labels
        pred = logits[..., 0]  # (..., B)
        if pred.dtype in (torch.float16, torch.bfloat16):
            pred = pred.float()
        tgt = target.to(pred.dtype).expand_as(pred)
        per = (pred - tgt).pow(2) if kind == "mse" else (pred - tgt).abs()
    elif task.kind == "classification":
        flat = logits.reshape(-1, logits.shape[-1])  # (...*B, K)
        per = F.cross_entropy(flat, target.expand(*lead, target.shape[0]).reshape(-1), reduction="none")
        per = per.reshape(*lead, target.shape[0])
    else:
        per = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype).expand_as(logits),
                                                 reduction="none").mean(-1)
    return per.mean(-1) if reduce_batch else per


#: the coalition utilities of ``pase.shapley_utility``
UTILITIES = ("neg_loss", "accuracy")
#: choices of ``train.loss`` ("auto": l1 for regression, as MMSA; cross-entropy / BCE otherwise)
LOSSES = ("auto", "l1", "mse")


def coalition_utility(logits: Tensor, target: Tensor, task: TaskSpec, utility: str, loss_kind: str) -> Tensor:
    """Utility of each coalition's predictions: logits (C, B, O) -> (C,).

    "neg_loss": minus the task loss; "accuracy": Has0 sign accuracy for regression, accuracy
    for classification, mean per-label accuracy for multilabel targets.
    """
    if utility == "neg_loss":
        return -task_loss(logits, target, task, loss_kind)
    if utility != "accuracy":
        raise ValueError(f"pase.shapley_utility={utility!r} is not one of {', '.join(UTILITIES)}")
    if task.kind == "regression":
        hit = (logits[..., 0] >= 0) == (target >= 0)
    elif task.kind == "classification":
        hit = logits.argmax(-1) == target
    else:
        hit = ((logits > 0) == (target > 0.5)).to(torch.promote_types(logits.dtype, torch.float32)).mean(-1)
    return hit.to(torch.promote_types(logits.dtype, torch.float32)).mean(-1)  # float32, a float64 model's float64


def stream_seed(seed: int, stream: str) -> int:
    """The seed of the random stream named ``stream`` of a run with ``train.seed`` ``seed``: numpy's
    ``SeedSequence`` of the pair (seed, CRC-32 of the name), in [0, 2^63).

    ``seed_everything(seed)`` seeds torch's global generator (weight initialisation, dropout) with the
    seed itself; a private generator seeded with the same number replays that sequence (on the CPU
    both are the same Mersenne Twister): OGM-GE's gradient noise drew the numbers the initial
    weights were drawn from (a review). A named stream is unrelated to it and to every other name.

    Example:
        >>> stream_seed(1111, "ogm_ge_noise") == stream_seed(1111, "shapley_permutations")
        False
    """
    return seed_from(seed, zlib.crc32(stream.encode()))


def seed_from(*keys: int) -> int:
    """A seed in [0, 2^63) drawn from the non-negative integers ``keys`` by numpy's ``SeedSequence``:
    unrelated seeds for different keys (``stream_seed``; the data order's ``epoch_seed``)."""
    # the shift on a Python int: numpy 1.x (pyproject allows >= 1.24) has no right_shift of uint64 by a
    # Python int (it promotes the pair to float64 and raises TypeError), so every run stopped there
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0]) >> 1


class PermutationGenerator(nn.Module):
    """The generator of the Monte-Carlo permutations, with its state in the checkpoint so a resumed
    run draws the permutations an uninterrupted one draws (a checkpoint written before this state
    existed loads with the generator at its seed)."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.generator = torch.Generator().manual_seed(stream_seed(seed, "shapley_permutations"))
        self._register_load_state_dict_pre_hook(self._default_state)

    @staticmethod
    def _default_state(state_dict, prefix, *args) -> None:
        state_dict.setdefault(prefix + "_extra_state", None)

    def get_extra_state(self) -> Tensor:
        return self.generator.get_state()

    def set_extra_state(self, state: Optional[Tensor]) -> None:
        if state is not None:
            self.generator.set_state(state)


class RunningMean:
    """Sum of same-shaped tensors until :meth:`pop` returns their mean (None if nothing was
    added) and resets: the micro-batches of one optimiser step, the batches of one epoch.

    A plain object, so the per-batch updates skip ``nn.Module.__setattr__`` (tens of
    microseconds per training step when a method keeps such state as module attributes). The
    added tensors are never modified (they may be saved for a backward pass).
    """

    __slots__ = ("total", "n")

    def __init__(self) -> None:
        self.total: Optional[Tensor] = None
        self.n = 0

    def add(self, x: Tensor, weight: int = 1) -> None:
        """Add ``x`` counted ``weight`` times (a batch's mean with its sample count: the mean of
        :meth:`pop` is then over samples)."""
        if weight != 1:
            x = x * weight
        self.total = x if self.n == 0 else self.total + x.to(self.total.device)
        self.n += weight

    def pop(self) -> Optional[Tensor]:
        if self.n == 0:
            return None
        mean = self.total / self.n
        self.n = 0  # the next add replaces total; keeping its type spares train.compile a recompile
        return mean


def pop_means(stats: Dict[str, RunningMean], prefix: str, modalities: List[str],
              default: Optional[float] = None) -> Dict[str, float]:
    """Epoch log entries ``<prefix>_<key>_<modality>`` from per-key (M,) running means, which are
    reset; a key with nothing added is left out, or logged as ``default`` for every modality."""
    logs: Dict[str, float] = {}
    for key, acc in stats.items():
        mean = acc.pop()
        if mean is None and default is None:
            continue
        vals = mean.tolist() if mean is not None else [default] * len(modalities)
        logs.update({f"{prefix}_{key}_{m}": vals[i] for i, m in enumerate(modalities)})
    return logs


#: the rows of a method's per-epoch tracking sums, in order (``shapley_se`` only when sampled)
_TRACKED = ("shapley", "share", "weight", "shapley_se")


class Method(nn.Module):
    """Base class: the fused task loss, no modulation, no schedule.

    Every method tracks each modality's exact Shapley value on its training batches (utility
    ``pase.shapley_utility`` of the fused head over all 2^M coalitions, one batched head pass
    reusing the encoder outputs), the shares and the mean fusion weights, and reports their
    epoch means in the per-epoch log: the contribution trajectories of any method.

    ``loss`` belongs in the training step: there (the model in train mode) it also updates the
    method's state (prototype banks, running scores, queued coefficients, the tracked values). With
    the model in eval mode it returns the same loss and changes nothing, so it can measure a
    validation loss in one's own loop; it then issues no ``torch.distributed`` collective either (a
    DDP evaluation loop over unequal shards would hang in one), so under DDP the eval-mode losses of
    the methods that take global-batch statistics in training (AGM's scores, PMR's confidences) are
    each rank's own measurement.
    """

    def __init__(self, cfg, task: TaskSpec, model: nn.Module) -> None:
        super().__init__()
        self.check_config(cfg, task.kind)  # the subclass's checks too, before anything is built
        self.cfg = cfg
        self.task = task
        self.loss_kind = cfg.train.loss
        self.utility = cfg.pase.shapley_utility
        self.modalities = list(model.modalities)
        self.register_buffer("masks", coalition_masks(len(self.modalities)), persistent=False)
        # above shapley_exact_max_m modalities: Monte-Carlo permutation sampling (same permutations
        # on every DDP rank: one generator per method, seeded from the training seed by stream_seed)
        self.exact = len(self.modalities) <= cfg.pase.shapley_exact_max_m
        if not self.exact and cfg.pase.shapley_permutations < 2:
            raise ValueError(f"pase.shapley_permutations={cfg.pase.shapley_permutations} must be >= 2 "
                             f"(it sets the permutations sampled per batch above {cfg.pase.shapley_exact_max_m} "
                             f"modalities; {len(self.modalities)} here)")
        if not self.exact:  # a child module only then, so exact runs keep their checkpoint keys
            self.permutations = PermutationGenerator(int(cfg.train.seed))
        self._epoch = RunningMean()  # (rows of _TRACKED, M) over this epoch's batches

    @classmethod
    def check_config(cls, cfg, task_kind: Optional[str] = None) -> None:
        """The settings this method is built with that the configuration alone tells are wrong (and the
        data's task kind, "regression", "classification" or "multilabel", where known; None: not yet):
        a ValueError naming the key, the value and what it may be. ``__init__`` runs it with the data's
        kind; ``pase compare`` and ``pase crossval`` run it for every requested method before anything is
        written, with the kind the source tells (``check_methods_can_start``): every run failed at its
        build after config.yaml was saved (a review). A subclass adds its own checks and calls this one."""
        loss = cfg.train.loss
        if loss not in LOSSES:
            raise ValueError(f"train.loss={loss!r} is not one of {', '.join(LOSSES)}")
        if loss != "auto" and task_kind is not None and task_kind != "regression":
            auto = "binary cross-entropy" if task_kind == "multilabel" else "cross-entropy"  # as task_loss
            raise ValueError(f"train.loss={loss!r} is a regression loss, but this data's targets are "
                             f"{task_kind}: use train.loss=auto ({auto})")
        if cfg.pase.shapley_utility not in UTILITIES:  # before a run folder is written, not at the first step
            raise ValueError(f"pase.shapley_utility={cfg.pase.shapley_utility!r} is not one of {', '.join(UTILITIES)}")

    def loss(self, model: nn.Module, batch: Batch, out) -> Tuple[Tensor, Dict[str, Tensor]]:
        task = task_loss(out.logits, batch.target, self.task, self.loss_kind)
        if model.training:  # an eval-mode loss (a validation loss) is a measurement: nothing is tracked
            self.track(model, batch, out)
        return task, {"task_loss": task.detach()}

    def before_optimizer_step(self, model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None) -> None:
        """Modulate gradients in place; the base method leaves them alone."""

    def end_validation_epoch(self, model: nn.Module, epoch: int, improved: bool) -> Dict[str, float]:
        """React to the end of a validation epoch; returns values for the epoch log."""
        return self.epoch_diagnostics(model)

    # ------------------------------------------------------------------ contribution tracking
    @torch.no_grad()
    def coalition_utilities(self, model: nn.Module, out, target: Tensor, masks: Optional[Tensor] = None) -> Tensor:
        """(C,) utility of each coalition of ``masks`` (C, M) (default: all 2^M) on this batch
        (absent modalities masked at fusion); under ``torch.distributed`` those of the global batch
        (one all-reduce per call, one call per tracked batch), so the Shapley values, their shares and
        PaSE's SGM coefficients are the global batch's, as one process with it computes them: shares
        normalise the values, so a mean of each rank's half-batch shares was not the global batch's share
        (a review: late fusion's text share 0.604 against 0.454 in one process; only PaSE reduced here)."""
        masks = self.masks if masks is None else masks
        logits = model.coalition_logits(out, masks.to(target.device))  # (C, B, O)
        u = coalition_utility(logits, target, self.task, self.utility, self.loss_kind)
        u = u.to(torch.promote_types(u.dtype, torch.float32))  # float32 at least; a float64 model's stay float64
        return batch_weighted_mean(u, target.shape[0])  # unchanged in one process

    @torch.no_grad()
    def shapley_values(self, model: nn.Module, out, target: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        """(M,) Shapley values of this batch and their standard error (None when exact): all 2^M
        coalitions up to ``pase.shapley_exact_max_m`` modalities, else ``pase.shapley_permutations``
        random orderings (their R (M + 1) prefix coalitions scored in one batched head pass)."""
        if self.exact:
            return exact_shapley(self.coalition_utilities(model, out, target)), None
        return permutation_shapley(lambda m: self.coalition_utilities(model, out, target, m), len(self.modalities),
                                   self.cfg.pase.shapley_permutations, self.permutations.generator, target.device)

    @torch.no_grad()
    def track(self, model: nn.Module, batch: Batch, out) -> Tensor:
        """Accumulate this batch's Shapley values, shares and mean weights; returns the (M,) shares.
        The epoch log holds their means over the epoch's training samples."""
        values, se = self.shapley_values(model, out, batch.target)
        shares = shapley_shares(values)
        rows = [values, shares, out.weights.detach().mean(0, dtype=values.dtype)] + ([se] if se is not None else [])
        # (3 or 4, M): one accumulator, one add per batch, weighted by its samples (a last batch of one
        # sample counted as much as a full one)
        self._epoch.add(torch.stack(rows), batch.target.shape[0])
        return shares

    def epoch_diagnostics(self, model: nn.Module) -> Dict[str, float]:
        """Epoch means of the tracked values over the epoch's training samples (one host sync per
        epoch); under ``torch.distributed`` over every rank's samples (rank 0's half of the data was
        logged before). The values and shares are already the global batches' (``coalition_utilities``),
        so this weights each global batch by its samples; the fusion weights are each rank's. Resets
        the sums."""
        logs: Dict[str, float] = {}
        n = self._epoch.n
        mean = self._epoch.pop()
        if mean is not None:
            mean = batch_weighted_mean(mean, n)
        for key, vals in zip(_TRACKED, mean.tolist() if mean is not None else []):
            logs.update({f"{key}_{m}": vals[i] for i, m in enumerate(self.modalities)})
        return logs

    def summary(self) -> Dict[str, object]:
        """Method state recorded in metrics.json."""
        return {}


@register_method("late_fusion")
class LateFusion(Method):
    """Plain late fusion: concatenation, joint training, no balancing."""
