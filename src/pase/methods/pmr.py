"""PMR: prototypical modal rebalance.

Fan, Xu, Wang, Wang, Guo, "PMR: Prototypical Modal Rebalance for Multimodal Learning", CVPR 2023;
reference code github.com/fanyunfeng-bit/Modal-Imbalance-PMR (``main_Prototype_grad.py``) and its
M-modality port ``GeWu-Lab/BalanceBenchmark`` (``PMR_trainer.py``). Here (docs/baselines.md),
for M modalities and any task:

* each modality keeps class prototypes c_k^m, an EMA (``pmr_momentum``) of the class centroids
  of its representation h^m (``PrototypeBank`` buffers held by the method, so checkpointed);
  classes are the task's, the argmax label (multilabel) or binned regression labels
  (``pase.binning``); a class starts from its first observed centroid; a multilabel sample with no
  positive label has no class: it moves no prototype and enters neither the loss nor the confidence;
* prototype logits are negative Euclidean distances, -||h^m - c_k^m||; the prototype
  cross-entropy L_m (softmax over them, against the sample's class) is PMR's PCE loss, and the
  mean softmax probability of the true class is the modality's prototype confidence s_m;
* rebalancing: rho_m = clip(max_n s_n / s_m - 1, 0, 1), so the strongest modality gets 0; the
  loss is L_task + pmr_weight * sum_m rho_m L_m (our continuous form of PMR's beta / lambda).
  ``baselines.pmr_rule=original`` takes the released script's step instead: rho_m = 1 for every
  modality less confident than the most confident one (for M = 2 its beta / lambda: alpha on the
  weaker modality, 0 at a tie).

The prototypes are snapshots (clones) taken before the losses; the banks take their EMA step
after, so the in-place buffer update never touches a tensor saved for backward.

Letters: B batch, M modalities, K classes, D features.
"""

from __future__ import annotations

import logging
import math
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from ..data.contract import Batch, TaskSpec
from ..models.build import prototype_classes
from ..prototypes import PrototypeBank, update_banks
from .base import Method, RunningMean, register_method
from .pase import has_class, prototype_targets  # has_class: re-exported here

__all__ = ["PMR", "euclidean_logits", "prototype_ce", "pmr_rebalance", "has_class"]


def euclidean_logits(features: Tensor, prototypes: Tensor, initialized: Tensor) -> Tensor:
    r"""PMR's prototype logits :math:`-\lVert h_i - c_k \rVert_2` (B, K); -inf for uninitialised classes.

    The distance is :math:`\sqrt{\max(\lVert h - c \rVert^2, 10^{-12})}`, so its gradient stays
    finite when a feature sits on its prototype.

    Args:
        features: (B, D). prototypes: (K, D). initialized: (K,) bool.

    Example:
        >>> euclidean_logits(torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0], [0.0, 1.0]]),
        ...                  torch.tensor([True, False]))
        tensor([[-5., -inf]])
    """
    sq = (features.unsqueeze(1) - prototypes.unsqueeze(0)).pow(2).sum(-1)  # (B, K)
    logits = -sq.clamp_min(1e-12).sqrt()
    return logits.masked_fill(~initialized.unsqueeze(0), float("-inf"))


def prototype_ce(features: Tensor, classes: Tensor, prototypes: Tensor, initialized: Tensor,
                 keep: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    r"""PMR's prototype cross-entropy and the prototype confidence of one modality.

    .. math::
        L = \frac{1}{|V|} \sum_{i \in V} -\log p_{i, y_i}, \quad
        s = \frac{1}{|V|} \sum_{i \in V} p_{i, y_i}, \quad
        p_{i,k} = \mathrm{softmax}_k\big(-\lVert h_i - c_k \rVert\big)

    over the samples V whose class is initialised (softmax over the initialised classes) and, with
    ``keep``, that it keeps. The prototypes are detached: the gradient reaches ``features`` only.
    With no valid sample both are 0 (the loss still part of the graph).

    Args:
        features: (B, D). classes: (B,) long. prototypes: (K, D). initialized: (K,) bool.
        keep: (B,) bool, the samples that have a class (``has_class``); None: all.

    Returns:
        ``(loss, confidence)``, both 0-dim; the confidence is detached.

    Example:
        >>> h = torch.tensor([[0.0], [3.0]])
        >>> loss, conf = prototype_ce(h, torch.tensor([0, 1]), h, torch.tensor([True, True]))
        >>> round(float(loss), 4), round(float(conf), 4)
        (0.0486, 0.9526)
    """
    logits = euclidean_logits(features, prototypes.detach(), initialized)  # (B, K)
    valid = initialized[classes]  # (B,)
    if keep is not None:
        valid = valid & keep
    safe = torch.where(initialized.any(), logits, torch.zeros_like(logits))  # no all -inf rows
    logp = safe.log_softmax(-1).gather(1, classes.unsqueeze(1)).squeeze(1)  # (B,)
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    logp = torch.where(valid, logp, zero)
    n = valid.sum().clamp_min(1)
    conf = torch.where(valid, logp.detach().exp(), zero).sum() / n
    return -logp.sum() / n, conf


def pmr_rebalance(confidence: Tensor, rule: str = "continuous") -> Tensor:
    r"""PMR's weights (M,) of each modality's prototype cross-entropy, without alpha.

    ``continuous`` (our default): :math:`\rho_m = \mathrm{clip}(\max_n s_n / s_m - 1, 0, 1)`; the
    strongest modality gets 0, a modality half as confident as the strongest 1. ``original``
    (``main_Prototype_grad.py``): 1 for every modality with :math:`s_m < \max_n s_n`, else 0; for
    M = 2 the script's beta / lambda (the weaker modality, nobody at a tie). Confidences are
    floored at the dtype's ``tiny``; all-zero confidences (no initialised prototype yet) give all
    zeros under both rules.

    Example:
        >>> pmr_rebalance(torch.tensor([0.8, 0.6, 0.2]))
        tensor([0.0000, 0.3333, 1.0000])
        >>> pmr_rebalance(torch.tensor([0.8, 0.6, 0.8]), "original")
        tensor([0., 1., 0.])
    """
    s = confidence.clamp_min(torch.finfo(confidence.dtype).tiny)
    if rule == "original":
        return (s < s.max()).to(s.dtype)
    return (s.max() / s - 1.0).clamp(0.0, 1.0)


@register_method("pmr")
class PMR(Method):
    """PMR for M modalities; see the module docstring.

    Config: ``baselines.pmr_weight`` (alpha), ``baselines.pmr_momentum`` (prototype EMA),
    ``baselines.pmr_rule`` (the weights' rule, ``pmr_rebalance``), ``pase.binning`` (regression
    labels to classes).
    """

    def __init__(self, cfg, task: TaskSpec, model: nn.Module) -> None:
        super().__init__(cfg, task, model)
        self.weight = cfg.baselines.pmr_weight
        self.rule = cfg.baselines.pmr_rule  # checked in pase.config (PMR_RULES)
        self.binning = cfg.pase.binning
        if len(self.modalities) == 1:  # it ran as late fusion without a word (OGM-GE refuses, PaSE warns; a review)
            logging.getLogger("pase").warning(
                "method 'pmr' with one modality (%s): PMR rebalances between modalities (the prototype loss weighs "
                "those less confident than the strongest) and its weight is 0 here; it trains as late fusion",
                self.modalities[0])
        k = prototype_classes(task, self.binning)
        self.banks = nn.ModuleDict({m: PrototypeBank(k, model.d_model, momentum=cfg.baselines.pmr_momentum)
                                    for m in self.modalities})
        self._stats = {"rho": RunningMean(), "conf": RunningMean()}  # epoch sums: weighted values and weights (_track)

    def prototype_terms(self, out, classes: Tensor, keep: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """(M,) prototype losses L_m (with gradient) and (M,) confidences s_m, against snapshots, over
        the samples ``keep`` (B,) bool (``has_class``; None: all)."""
        losses, confs = [], []
        for m in self.modalities:
            protos, init = self.banks[m].prototypes.clone(), self.banks[m].initialized.clone()  # snapshots
            loss, conf = prototype_ce(out.reps[m], classes, protos, init, keep)
            losses.append(loss)
            confs.append(conf)
        return torch.stack(losses), torch.stack(confs)

    def _global_terms(self, losses: Tensor, confs: Tensor, n: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Under ``torch.distributed``, what one process with the global batch computes: each modality's
        confidence is its mean over every rank's samples whose class has a prototype (weighted by those
        counts; by batch size before, 5 % off one process when a class had none yet: a review), and each
        rank's prototype loss, a mean over its own such samples, is scaled by W n_rank / n_global, so the
        gradients DDP averages over the W ranks are those of the global mean. ``n`` (M,): this rank's counts
        (:meth:`_scored`); also returns the global counts (M,)."""
        n = n.to(confs.dtype)
        packed = torch.cat([confs * n, n])  # (2M,): one collective
        torch.distributed.all_reduce(packed, op=torch.distributed.ReduceOp.SUM)
        m = len(self.modalities)
        total = packed[m:].clamp_min(1)
        scale = torch.distributed.get_world_size() * n / total
        return losses * scale.to(losses.dtype), packed[:m] / total, packed[m:]

    def _scored(self, classes: Tensor, keep: Optional[Tensor] = None) -> Tensor:
        """(M,) how many of the batch's samples each modality's confidence is taken over: those whose class
        has a prototype (and ``keep``)."""
        valid = [self.banks[m].initialized[classes] for m in self.modalities]  # (B,) each
        return torch.stack([(v if keep is None else v & keep).sum() for v in valid])

    def _track(self, rho: Tensor, confs: Tensor, n: Tensor) -> None:
        """Add a training batch to the epoch's logged means, weighted by its scored samples ``n`` (M,): a batch
        with none to score (a multilabel batch without a positive label, no prototype yet) entered the logged
        confidence as 0, and one with a single class's prototype (a one-way softmax) as 1 (a review); such
        batches are left out, and rho's mean is over the batches that have a confidence."""
        one_class = torch.stack([self.banks[m].initialized.sum() < 2 for m in self.modalities])
        n = torch.where(one_class, torch.zeros_like(n), n).to(confs.dtype)
        scored = (n > 0).to(rho.dtype)
        self._stats["conf"].add(torch.cat([confs * n, n]))
        self._stats["rho"].add(torch.cat([rho * scored, scored]))

    def epoch_means(self) -> Dict[str, Tensor]:
        """The logged per-epoch means (``conf``, ``rho``: (M,) each; NaN for a modality with no scored sample
        in the epoch), popped: the weighted sums of :meth:`_track` over their weights."""
        out, m = {}, len(self.modalities)
        for key, acc in self._stats.items():
            v = acc.pop()
            if v is not None:
                out[key] = torch.where(v[m:] > 0, v[:m] / v[m:].clamp_min(1e-30), torch.full_like(v[:m], math.nan))
        return out

    def loss(self, model: nn.Module, batch: Batch, out) -> Tuple[Tensor, Dict[str, Tensor]]:
        task, logs = super().loss(model, batch, out)
        classes = prototype_targets(batch.target, self.task, self.binning)
        keep = has_class(batch.target, self.task)  # None but for multilabel targets
        losses, confs = self.prototype_terms(out, classes, keep)
        confs = confs.float()
        n = self._scored(classes, keep) if model.training else None  # before this batch's EMA step
        # the global batch's terms for training batches only: an eval-mode loss is this rank's measurement,
        # with no collective (a user's DDP evaluation loop over unequal shards hung in it)
        if model.training and torch.distributed.is_available() and torch.distributed.is_initialized():
            losses, confs, n = self._global_terms(losses, confs, n)
        rho = pmr_rebalance(confs, self.rule)  # (M,), no gradient
        extra = self.weight * (rho.to(losses.dtype) * losses).sum()
        if model.training:  # an eval-mode (validation) loss moves no prototype
            self._track(rho, confs, n)  # before the EMA step: the prototypes the confidences were taken against
            for m in self.modalities:  # EMA step after the losses (they hold clones)
                update_banks([self.banks[m]], out.reps[m].unsqueeze(0), classes, weights=keep)
        logs["pmr_loss"] = extra.detach()
        return task + extra, logs

    def end_validation_epoch(self, model: nn.Module, epoch: int, improved: bool) -> Dict[str, float]:
        logs = self.epoch_diagnostics(model)
        for key, mean in self.epoch_means().items():  # a modality with nothing scored this epoch is left out
            logs.update({f"pmr_{key}_{m}": v for m, v in zip(self.modalities, mean.tolist()) if not math.isnan(v)})
        return logs
