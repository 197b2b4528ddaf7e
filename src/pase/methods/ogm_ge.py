"""OGM-GE: on-the-fly gradient modulation with generalisation enhancement.

Peng, Wei, Deng, Wang, Hu, "Balanced Multimodal Learning via On-the-fly Gradient Modulation",
CVPR 2022; reference code github.com/GeWu-Lab/OGM-GE_CVPR2022 (``main.py``, ``train_epoch``).
The original scores each of two modalities by the softmax probability of the true class from its
split of a linear fusion head and damps the encoder of the dominant one. Here (docs/baselines.md)
it is generalised to M modalities and any task:

* confidence s_m: the fused head with only modality m present (``coalition_logits`` with the
  singleton mask, reusing the encoder outputs) minus (1 - 1/M) times the empty coalition's
  output (with a linear head: W_m h_m + b / M, the original's split of the head), scored on the
  batch (``ogm_scores``);
* ratio rho_m = s_m / min_n s_n (the weakest modality has rho = 1) and coefficient
  k_m = 1 - tanh(alpha * rho_m) for rho_m > 1, else 1 (the original), or the continuous
  1 - tanh(alpha * relu(rho_m - 1)) with ``baselines.ogm_rule=continuous`` (``ogm_coefficients``);
* after backward, before clipping and the optimiser step: the gradient of every parameter of
  modality m's declared group is multiplied by k_m (averaged over the micro-batches of the step),
  then, with GE, Gaussian noise of the unmodulated gradient's standard deviation is added, drawn
  from a ``torch.Generator`` seeded from ``train.seed`` by ``stream_seed`` (a stream of its own,
  not the one the global generator draws the initial weights from). Shared fusion / head parameters are
  left alone. Under ``torch.distributed`` the coefficients come from the global batch's scores (each
  rank's scores combined, weighted by its batch, before the coefficients are taken; averaging the ranks'
  coefficients damped both modalities when the ranks disagreed on the leader), so the all-reduced
  gradients are modulated (and noised, same seed) identically everywhere.

Letters: B batch, M modalities, O output width (K classes, E labels, 1 for regression).
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.nn import Parameter

from ..config import OGM_RULES
from ..data.contract import Batch, TaskSpec
from ..shapley import scale_gradients
from .base import Method, RunningMean, batch_weighted_mean, pop_means, register_method, stream_seed, task_loss

__all__ = ["OGMGE", "ogm_scores", "ogm_coefficients", "add_gradient_noise", "noise_spreads"]


def ogm_scores(logits: Tensor, target: Tensor, task: TaskSpec, loss_kind: str = "auto") -> Tensor:
    r"""Confidence :math:`s_m > 0` of each modality's unimodal predictions on one batch.

    * classification: :math:`s_m = \sum_b \mathrm{softmax}(z_{m,b})_{y_b}` (the original score);
    * multilabel: the mean over samples and labels of the probability of the true decision,
      :math:`\sigma(z)` where the label is 1 and :math:`1 - \sigma(z)` where it is 0;
    * regression: :math:`s_m = \frac{1}{B} \sum_b \exp(-\ell_{m,b})`, with :math:`\ell` the
      per-sample task loss (L1 by default, MSE with ``loss_kind="mse"``): 1 for a perfect fit.

    Only ratios of scores are used, so the sum (classification) and the means are equivalent.

    Args:
        logits: (M, B, O) unimodal logits (the fused head with one modality present).
        target: (B,) or (B, E) labels.
        task: the data's ``TaskSpec``.
        loss_kind: ``train.loss`` ("auto", "l1", "mse"), used for regression.

    Returns:
        (M,) scores.

    Example:
        >>> task = TaskSpec("classification", 2, "demo")
        >>> ogm_scores(torch.tensor([[[0.0, 0.0]], [[0.0, 100.0]]]), torch.tensor([1]), task)
        tensor([0.5000, 1.0000])
    """
    m, b = logits.shape[:2]
    if task.kind == "classification":
        prob = logits.softmax(-1)  # (M, B, K)
        return prob.gather(-1, target.long().expand(m, b).unsqueeze(-1)).squeeze(-1).sum(-1)
    if task.kind == "multilabel":
        prob = torch.sigmoid(logits)  # (M, B, E)
        y = target.to(prob.dtype).expand_as(prob)
        return (y * prob + (1 - y) * (1 - prob)).mean((-2, -1))
    per = task_loss(logits, target, task, loss_kind, reduce_batch=False)  # (M, B)
    return torch.exp(-per).mean(-1)


def ogm_coefficients(scores: Tensor, alpha: float, rule: str = "original") -> Tuple[Tensor, Tensor]:
    r"""OGM coefficients from the modalities' scores, generalised to M modalities.

    .. math::
        \rho_m = \frac{s_m}{\min_n s_n}, \qquad
        k_m = \begin{cases} 1 - \tanh(\alpha \rho_m) & \rho_m > 1 \\ 1 & \text{otherwise}
        \end{cases} \text{ (original)}, \qquad
        k_m = 1 - \tanh\big(\alpha \, \mathrm{relu}(\rho_m - 1)\big) \text{ (continuous)}

    ``original`` is the released code's rule (``main.py``: the dominant modality gets
    ``1 - tanh(alpha * ratio)``, at most 1 - tanh(alpha) however small its lead); ``continuous``
    is 1 at rho = 1 and damps in proportion to the lead. The weakest modality keeps k = 1 under
    both (and so does any tied with it). Scores are floored at the dtype's ``tiny`` so a zero
    score cannot produce NaN.

    Args:
        scores: (M,) positive scores (``ogm_scores``).
        alpha: modulation strength (``baselines.ogm_alpha``).
        rule: ``baselines.ogm_rule``, one of ``OGM_RULES``.

    Returns:
        ``(coefficients (M,), ratios (M,))``.

    Example:
        >>> k, rho = ogm_coefficients(torch.tensor([2.0, 1.0]), alpha=1.0, rule="continuous")
        >>> k, rho
        (tensor([0.2384, 1.0000]), tensor([2., 1.]))
    """
    s = scores.clamp_min(torch.finfo(scores.dtype).tiny)
    ratio = s / s.min()
    if rule == "original":
        return torch.where(ratio > 1, 1.0 - torch.tanh(alpha * ratio), torch.ones_like(ratio)), ratio
    if rule == "continuous":
        return 1.0 - torch.tanh(alpha * torch.relu(ratio - 1.0)), ratio
    raise ValueError(f"baselines.ogm_rule={rule!r} is not one of {', '.join(OGM_RULES)}")


def add_gradient_noise(params: Iterable[Parameter], generator: torch.Generator, eps: float = 1e-8,
                       stds: Optional[Sequence[Tensor]] = None) -> None:
    r"""OGM-GE's generalisation enhancement: ``grad += N(0, (sigma + eps)^2)``, in place.

    ``sigma`` is the standard deviation of the gradient *before* the modulation (``stds``, one
    0-dim tensor per parameter, taken before the gradients were scaled; default: the gradient as
    it is now), as in the original code (``parms.grad = parms.grad * coeff + zeros_like(parms.grad)
    .normal_(0, parms.grad.std().item() + 1e-8)``: the right-hand side is evaluated before the
    assignment), but without a host sync. Taken before the scaling, it holds however small the
    coefficient: recovering it as std(k g) / k lost it where k underflows to 0 in float32
    (1 - tanh(x) for x above about 9). Parameters without a gradient and single-element ones
    (no standard deviation) are skipped.

    Args:
        params: the parameters whose gradients receive noise.
        generator: seeded generator on the gradients' device.
        eps: added to the standard deviation (the original's 1e-8).
        stds: per parameter of ``params``, the spread to use (``noise_spreads``), or None.
    """
    params = list(params)
    for p, sd in zip(params, stds if stds is not None else [None] * len(params)):
        g = p.grad
        if g is None or g.numel() < 2:
            continue
        noise = torch.randn(g.shape, generator=generator, device=g.device, dtype=g.dtype)
        g.add_(noise * ((g.std() if sd is None else sd) + eps))


def noise_spreads(params: Sequence[Parameter]) -> List[Optional[Tensor]]:
    """The gradients' standard deviations (0-dim tensors, no host sync; None where there is no
    gradient or a single element), taken before modulation for ``add_gradient_noise``."""
    return [p.grad.std() if p.grad is not None and p.grad.numel() > 1 else None for p in params]


def check_modalities(modalities) -> None:
    """OGM-GE balances two or more modalities: with one, the coefficient is always 1 and GE would add
    noise alone, logged as no modulation. Checked when training starts (``pase train``) and at a
    training step (someone's own loop), not when the method is built, so old checkpoints still load."""
    if len(modalities) < 2:
        raise ValueError(f"method=ogm_ge balances two or more modalities; this data has one "
                         f"({', '.join(modalities)}): use method=late_fusion")


@register_method("ogm_ge")
class OGMGE(Method):
    """OGM-GE for M modalities; see the module docstring.

    Config: ``baselines.ogm_alpha`` (alpha), ``baselines.ogm_noise`` (GE on / off),
    ``train.seed`` (seeds the noise generator).
    """

    def __init__(self, cfg, task: TaskSpec, model: nn.Module) -> None:
        super().__init__(cfg, task, model)
        self.alpha = cfg.baselines.ogm_alpha
        self.noise = cfg.baselines.ogm_noise
        self.seed = cfg.train.seed
        m = len(self.modalities)
        self.rule = cfg.baselines.ogm_rule  # checked against OGM_RULES with the config
        # the M singletons and the empty coalition (M + 1, M)
        self.register_buffer("singletons", torch.cat([torch.eye(m, dtype=torch.bool), torch.zeros(1, m, dtype=torch.bool)]),
                             persistent=False)
        self.register_buffer("coeffs", torch.ones(m))  # the coefficients of the last optimiser step
        self._pending = RunningMean()  # k over the micro-batches of this step
        self._stats = {"coeff": RunningMean(), "ratio": RunningMean()}  # epoch means: per step, per batch
        self._generators: Dict[torch.device, torch.Generator] = {}
        # saved noise states by device type ("cuda", "cpu"), applied when that type's generator is made; a
        # type this machine lacks stays here, unused, and is saved again
        self._saved: Dict[str, Tensor] = {}
        # a checkpoint from before the generators' states were saved loads with them at the seed
        self._register_load_state_dict_pre_hook(lambda sd, prefix, *a: sd.setdefault(prefix + "_extra_state", None))

    @torch.no_grad()
    def modulation(self, model: nn.Module, batch: Batch, out) -> Tuple[Tensor, Tensor]:
        """(M,) coefficients and (M,) ratios of this batch, from the unimodal coalitions."""
        table = model.coalition_logits(out, self.singletons.to(batch.target.device)).float()  # (M + 1, B, O)
        m = table.shape[0] - 1
        # each modality's output with a 1/M share of the empty coalition's (with a linear head the
        # original's W_m h_m + b / 2 for two modalities; the full bias favoured no one but blurred
        # the scores' ratio)
        logits = table[:m] - (1.0 - 1.0 / m) * table[m]
        scores = ogm_scores(logits, batch.target, self.task, self.loss_kind)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # the scores of the global batch, as AGM and PMR combine theirs, so every rank decides as one
            # process would: averaging each rank's coefficients instead damped both modalities whenever the
            # ranks disagreed on the leader (a review: [0.85, 0.85] against one process's [1.0, 0.71])
            b = batch.target.shape[0]
            scores = batch_weighted_mean(scores / b if self.task.kind == "classification" else scores, b)
        return ogm_coefficients(scores, self.alpha, self.rule)

    def loss(self, model: nn.Module, batch: Batch, out) -> Tuple[Tensor, Dict[str, Tensor]]:
        total, logs = super().loss(model, batch, out)
        if model.training:  # an eval-mode (validation) loss queues no coefficient
            check_modalities(self.modalities)  # a plain loop got noise alone and no word (a review)
            coeffs, ratio = self.modulation(model, batch, out)
            self._pending.add(coeffs)
            self._stats["ratio"].add(ratio)
        return total, logs

    def _generator(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            gen = torch.Generator(device=device).manual_seed(stream_seed(self.seed, "ogm_ge_noise"))
            state = self._saved.pop(device.type, None)
            if state is not None:
                gen.set_state(state)
            self._generators[device] = gen
        return self._generators[device]

    def get_extra_state(self) -> Dict[str, Tensor]:
        """The noise generators' states by device type, so a resumed run draws the same gradient noise.
        By type, not index: under DDP every rank's generator (cuda:0, cuda:1, ...) draws the same stream
        from the same seed, so the noise added after the gradients' all-reduce keeps the replicas equal;
        a checkpoint (rank 0's) keyed 'cuda:0' restored rank 0's stream only, and the ranks diverged."""
        return {**self._saved, **{dev.type: g.get_state() for dev, g in self._generators.items()}}

    def set_extra_state(self, state: Optional[Dict[str, Tensor]]) -> None:
        # older checkpoints key by device ("cuda:0", "cpu"); a GPU run's state read on a machine without a GPU
        # is kept unused (torch.Generator(device="cuda") fails there)
        self._saved = {torch.device(dev).type: st for dev, st in (state or {}).items()}
        self._generators = {}

    def before_optimizer_step(self, model: nn.Module, optimizer=None) -> None:
        coeffs = self._pending.pop()  # mean over the micro-batches of this step
        if coeffs is None:
            return
        # every process scales its (all-reduced) gradients alike: the coefficients come from the global
        # batch's scores (modulation)
        coeffs = coeffs.to(self.coeffs.device)
        self.coeffs.copy_(coeffs)
        groups = model.modality_parameters()
        spreads = {m: noise_spreads(groups[m]) for m in self.modalities} if self.noise else {}
        scale_gradients(groups, {m: coeffs[i] for i, m in enumerate(self.modalities)})
        for m, sds in spreads.items():  # noise of the unmodulated gradient's spread
            for p, sd in zip(groups[m], sds):
                if sd is not None:
                    add_gradient_noise([p], self._generator(p.grad.device), stds=[sd])
        self._stats["coeff"].add(coeffs)

    def end_validation_epoch(self, model: nn.Module, epoch: int, improved: bool) -> Dict[str, float]:
        logs = self.epoch_diagnostics(model)
        logs.update(pop_means(self._stats, "ogm", self.modalities, default=1.0))  # 1: no modulation yet
        return logs

    def summary(self) -> Dict[str, object]:
        return {"ogm_coeffs": {m: float(self.coeffs[i]) for i, m in enumerate(self.modalities)}}
