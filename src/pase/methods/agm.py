"""AGM: adaptive gradient modulation through Shapley logits.

Li, Li, Hu, Lei, Li, Zhou, "Boosting Multi-modal Model Performance with Adaptive Gradient
Modulation", ICCV 2023; reference code github.com/lihong2303/AGM_ICCV2023 (``run/MOSEI_main.py``
and the ``GradMod`` models; ``GeWu-Lab/BalanceBenchmark`` ``AGM_trainer.py`` generalises it to
M modalities). Here (docs/baselines.md), for M modalities and any task:

1. the fused head scores every coalition S of modalities, absent ones masked at the fusion input
   (``coalition_logits``, one batched pass over the encoder outputs, with gradient), giving the
   vector-valued game v(S) (B, O); its exact Shapley values are the Shapley logits
   phi_m (B, O), with sum_m phi_m = v(N) - v(empty) (efficiency);
2. the unimodal score s_m is the task loss of modality m's own prediction
   u_m = phi_m + v(empty) / M (its Shapley logit plus an equal share of the empty coalition, so
   sum_m u_m = v(N)), per sample floored at probability 1e-8 as in the original;
3. ratios r_m = exp(M / (M - 1) * (mean_n s_n - s_m)) (the mean score of the other modalities
   minus its own: large for a modality that fits better than the others), and r*_m the same
   from the running averages of the scores (EMA with ``agm_momentum``, or the original's
   cumulative mean); coefficients k_m = exp(alpha * min(r*_m - r_m, max_gap));
4. the training loss is the task loss of the modulated logits
   z = sum_m (k_m u_m + (1 - k_m) stopgrad(u_m)) (k detached), with the unimodal outputs u_m of
   step 2: the forward value is v(N) whatever k, and the gradient reaching each modality through
   its own output is scaled by k_m, as the original's backward hooks on its unimodal outputs do
   (so v(empty)'s path, the head's bias among it, gets the mean of k). With all k = 1, plain late
   fusion.
   Evaluation uses the model's ordinary fused logits.

Letters: B batch, M modalities, C = 2^M coalitions, O output width.
"""

from __future__ import annotations

import logging
import math
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from ..config import AGM_AVERAGES
from ..data.contract import Batch, TaskSpec
from ..shapley import exact_shapley
from .base import Method, RunningMean, batch_weighted_mean, pop_means, register_method, task_loss

__all__ = ["AGM", "shapley_logits", "agm_scores", "agm_ratios", "agm_coefficients", "AVERAGES"]

#: running averages of the unimodal scores
AVERAGES = AGM_AVERAGES  # the choices of baselines.agm_average (pase.config)

_MAX_LOSS = -math.log(1e-8)  # the original floors the true-class probability at 1e-8


def shapley_logits(coalition_logits: Tensor) -> Tuple[Tensor, Tensor]:
    r"""Shapley logits of the vector game v(S) = logits with only S present.

    .. math::
        \phi_m = \sum_{S \subseteq N \setminus \{m\}} \frac{|S|! (M - |S| - 1)!}{M!}
                 \big(v(S \cup \{m\}) - v(S)\big), \qquad
        \sum_m \phi_m = v(N) - v(\emptyset)

    Differentiable (one matrix product, ``exact_shapley``).

    Args:
        coalition_logits: (C, B, O) logits of all 2^M coalitions, bitmask order (row 0 empty).

    Returns:
        ``(phi (M, B, O), v_empty (B, O))``.

    Example:
        >>> v = torch.tensor([0.0, 1.0, 2.0, 4.0]).view(4, 1, 1)  # v(a)=1, v(b)=2, v(ab)=4
        >>> phi, empty = shapley_logits(v)
        >>> phi.flatten()
        tensor([1.5000, 2.5000])
    """
    return exact_shapley(coalition_logits), coalition_logits[0]


def agm_scores(phi: Tensor, empty: Tensor, target: Tensor, task: TaskSpec, loss_kind: str = "auto") -> Tensor:
    r"""Unimodal scores :math:`s_m` (M,): the mean task loss of :math:`u_m = \phi_m + v(\emptyset)/M`.

    Per-sample losses are capped at :math:`-\log 10^{-8}` (the original's probability floor).

    Args:
        phi: (M, B, O) Shapley logits. empty: (B, O) empty-coalition logits.
        target: (B,) or (B, E). task: the ``TaskSpec``. loss_kind: ``train.loss``.

    Returns:
        (M,) scores (lower: the modality fits better).

    Example:
        >>> task = TaskSpec("regression", 1, "demo")
        >>> agm_scores(torch.tensor([[[1.0]], [[0.0]]]), torch.tensor([[0.0]]), torch.tensor([1.0]), task)
        tensor([0., 1.])
    """
    u = phi + empty / phi.shape[0]  # (M, B, O)
    per = task_loss(u, target, task, loss_kind, reduce_batch=False)  # (M, B)
    return per.clamp_max(_MAX_LOSS).mean(-1)


def agm_ratios(scores: Tensor) -> Tensor:
    r"""AGM's ratios :math:`r_m = \exp\big(\frac{M}{M-1}(\bar s - s_m)\big)` (M,); all 1 for M = 1.

    :math:`\frac{M}{M-1}(\bar s - s_m)` is the mean score of the other modalities minus
    :math:`s_m`; for M = 2 it is the original's ``exp(score_a - score_t)`` for text.

    Example:
        >>> agm_ratios(torch.tensor([1.0, 0.0]))
        tensor([0.3679, 2.7183])
    """
    M = scores.shape[0]
    if M == 1:
        return torch.ones_like(scores)
    return torch.exp(M / (M - 1) * (scores.mean() - scores))


def agm_coefficients(scores: Tensor, running: Tensor, alpha: float, max_gap: float) -> Tensor:
    r"""AGM coefficients :math:`k_m = \exp\big(\alpha \min(r^*_m - r_m, g)\big)` (M,).

    :math:`r` are the ratios of this batch's scores and :math:`r^*` those of the running
    averages (``agm_ratios``); a modality doing better than its running balance
    (:math:`r_m > r^*_m`) is damped, one doing worse is boosted.

    Args:
        scores: (M,) this batch's scores. running: (M,) running averages of the scores.
        alpha: strength (``baselines.agm_alpha``). max_gap: cap g on :math:`r^* - r`.

    Example:
        >>> agm_coefficients(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0]), 1.0, 7.0)
        tensor([1.8816, 0.1794])
    """
    gap = (agm_ratios(running) - agm_ratios(scores)).clamp_max(max_gap)
    return torch.exp(alpha * gap)


@register_method("agm")
class AGM(Method):
    """AGM for M modalities; see the module docstring.

    Config: ``baselines.agm_alpha``, ``agm_momentum``, ``agm_average``, ``agm_max_gap``.
    The running scores are buffers (checkpointed).
    """

    #: a running average, kept in float32 under half precision (``training.precision.keep_float32_state``)
    FLOAT32_STATE = ("running",)

    @classmethod
    def check_config(cls, cfg, task_kind: Optional[str] = None) -> None:
        """``Method.check_config``, and AGM's running average: its kind and momentum."""
        super().check_config(cfg, task_kind)
        bc = cfg.baselines
        if bc.agm_average not in AVERAGES:
            raise ValueError(f"baselines.agm_average={bc.agm_average!r} is not one of {', '.join(AVERAGES)}")
        if not 0.0 <= bc.agm_momentum < 1.0:
            raise ValueError(f"baselines.agm_momentum must be in [0, 1), got {bc.agm_momentum}")

    def __init__(self, cfg, task: TaskSpec, model: nn.Module) -> None:
        super().__init__(cfg, task, model)
        bc = cfg.baselines
        self.alpha, self.momentum, self.average, self.max_gap = (bc.agm_alpha, bc.agm_momentum,
                                                                 bc.agm_average, bc.agm_max_gap)
        m = len(self.modalities)
        if m == 1:  # it ran as late fusion without a word (OGM-GE refuses one modality, PaSE warns; a review)
            logging.getLogger("pase").warning(
                "method 'agm' with one modality (%s): AGM modulates the gradients between modalities and every "
                "coefficient is 1 here; it trains as late fusion", self.modalities[0])
        self.register_buffer("running", torch.zeros(m))  # running average of the scores s_m
        self.register_buffer("steps", torch.tensor(0))  # training batches seen
        self._stats = {"coeff": RunningMean(), "score": RunningMean()}  # epoch means, per batch

    @torch.no_grad()
    def update_running(self, scores: Tensor) -> None:
        """One step of the running average; the first batch sets it (both averages)."""
        t = self.steps + 1
        if self.average == "cumulative":
            new = self.running * (t - 1) / t + scores / t  # the original's mean over all steps
        else:
            new = torch.where(t == 1, scores, self.momentum * self.running + (1 - self.momentum) * scores)
        self.running.copy_(new)
        self.steps.add_(1)

    def loss(self, model: nn.Module, batch: Batch, out) -> Tuple[Tensor, Dict[str, Tensor]]:
        table = model.coalition_logits(out, self.masks.to(batch.target.device), head_dropout=True)  # (C, B, O)
        phi, empty = shapley_logits(table)  # (M, B, O), (B, O)
        with torch.no_grad():
            scores = agm_scores(phi.float(), empty.float(), batch.target, self.task, self.loss_kind)
            if model.training:
                # the global batch's scores under DDP: every rank takes the same coefficients and running
                # averages (each rank's half batch gave opposite decisions on one step before). Training
                # batches only: an eval-mode loss is this rank's measurement, with no collective (a user's
                # DDP evaluation loop over unequal shards hung in it)
                scores = batch_weighted_mean(scores, batch.target.shape[0])
            running = self.running.to(scores.device)
            coeffs = agm_coefficients(scores, running, self.alpha, self.max_gap)  # r* from before this batch
            if model.training:  # an eval-mode (validation) loss moves no running score
                self.update_running(scores.to(self.running.device))
        # the original's backward hooks: the forward value stays v(N) = sum_m u_m with the unimodal
        # outputs u_m = phi_m + v(empty) / M (the original's m_t, m_a), the gradient through u_m is
        # scaled by k_m, so v(empty)'s path gets the mean of k (scaling u_m itself moved the logits
        # and the point where the loss's gradient is taken: a saturated loss killed the boosted
        # gradient)
        k = coeffs.to(phi.dtype)[:, None, None]
        u = phi + empty / phi.shape[0]  # (M, B, O)
        z = (k * u + (1 - k) * u.detach()).sum(0)  # (B, O)
        task = task_loss(z, batch.target, self.task, self.loss_kind)
        if model.training:
            self.track(model, batch, out)
            self._stats["coeff"].add(coeffs)
            self._stats["score"].add(scores)
        return task, {"task_loss": task.detach()}

    def end_validation_epoch(self, model: nn.Module, epoch: int, improved: bool) -> Dict[str, float]:
        logs = self.epoch_diagnostics(model)
        logs.update(pop_means(self._stats, "agm", self.modalities))
        return logs

    def summary(self) -> Dict[str, object]:
        return {"agm_running_scores": {m: float(self.running[i]) for i, m in enumerate(self.modalities)},
                "agm_steps": int(self.steps)}
