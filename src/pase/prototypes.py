"""Class prototypes per modality: label binning, EMA memory bank, prototype-softmax calibration.

PASE_SPEC sections 2.2 and 4 (Prototype-guided Calibration Learning, PCL): each modality keeps a
bank of class prototypes c_k (EMA of class means, momentum gamma = 0.98). Classes absent from a
batch are left untouched and a class starts from its first observed mean, never from zeros. The
PCL loss is the cross-entropy of softmax(cos(h, c_k) / tau) against the sample's class, with the
prototypes as fixed targets, so the gradient shapes the encoder.

Letters: B batch, K classes, D features.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from pase.ot import cosine_cost

__all__ = [
    "BINNINGS",
    "num_bins",
    "labels_to_classes",
    "class_means",
    "class_centroids",
    "centroids_from_sums",
    "ema_update",
    "prototype_logits",
    "pcl_loss",
    "pcl_from_logits",
    "update_banks",
    "PrototypeBank",
]

#: label binnings and their number of classes ("classes": the task's own class ids)
BINNINGS = {"sign": 2, "polarity": 3, "round7": 7, "classes": None}


def num_bins(binning: str, num_classes: Optional[int] = None) -> int:
    """Number of prototype classes of a binning; ``"classes"`` returns ``num_classes``.

    Example:
        >>> num_bins("round7")
        7
    """
    if binning not in BINNINGS:
        raise ValueError(f"unknown binning {binning!r}; valid: {', '.join(BINNINGS)}")
    if binning == "classes":
        if num_classes is None:
            raise ValueError("num_bins('classes') needs num_classes (the task's number of classes)")
        return num_classes
    return BINNINGS[binning]


def labels_to_classes(target: Tensor, binning: str) -> Tensor:
    r"""Map labels to prototype class ids (long, same shape as ``target``).

    Regression labels in [-3, 3] (MOSI/MOSEI), rounding half to even (``torch.round``):

    * ``"sign"``: 0 if y < 0 else 1 (the Has0 Acc-2 convention; 0 counts as non-negative).
    * ``"polarity"``: sign of round(y) plus 1, i.e. negative 0 (y < -0.5), neutral 1
      (-0.5 <= y <= 0.5: both halves round to 0), positive 2 (y > 0.5).
    * ``"round7"``: round(clip(y, -3, 3)) + 3, in 0..6 (the Acc-7 convention).

    ``"classes"`` passes integer class ids through (classification tasks).

    Args:
        target: float labels for the regression binnings, integer ids for ``"classes"``.
        binning: one of ``BINNINGS``.

    Returns:
        long class ids, same shape.

    Raises:
        ValueError: on an unknown binning. TypeError: on a dtype that does not fit it.

    Example:
        >>> labels_to_classes(torch.tensor([-2.5, -0.5, 0.0, 0.5, 1.5]), "round7")
        tensor([1, 3, 3, 3, 5])
    """
    num_bins(binning, num_classes=0)  # validates the name
    if binning == "classes":
        if target.is_floating_point() or target.is_complex():
            raise TypeError(f"labels_to_classes(binning='classes') expects integer ids, got {target.dtype}")
        return target.long()
    if not target.is_floating_point():
        raise TypeError(
            f"labels_to_classes(binning={binning!r}) expects float regression labels, got {target.dtype}; "
            f"use binning='classes' for class ids"
        )
    if binning == "sign":
        return (target >= 0).long()
    if binning == "polarity":
        return torch.sign(torch.round(target)).long() + 1
    return torch.round(target.clamp(-3.0, 3.0)).long() + 3


def check_classes(classes: Tensor, B: int, K: int, where: str) -> None:
    """One error for class ids that do not fit: not (B,), not integers, or (on the CPU, where the
    check costs no device sync) outside [0, K). A (1,) tensor against B > 1 samples broadcast to all
    of them and gave a loss B times too large; ids outside the bank an IndexError without a name."""
    if classes.dim() != 1 or classes.shape[0] != B:
        raise ValueError(f"{where}: classes must be (B,) = ({B},), one class id per sample; got "
                         f"{tuple(classes.shape)}")
    if classes.dtype.is_floating_point or classes.dtype.is_complex or classes.dtype == torch.bool:
        raise TypeError(f"{where}: classes must be integer class ids (torch.long), got {classes.dtype}; map labels "
                        "to classes with prototype_targets")
    if classes.device.type != "cpu" or not B or torch.compiler.is_compiling():  # no sync, no graph break
        return
    lo, hi = (int(v) for v in classes.aminmax())
    if lo < 0 or hi >= K:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{where}: class id {bad} is outside [0, {K}): the prototypes have {K} classes; build "
                         f"them with the binning's number of classes (num_bins)")


def class_means(features: Tensor, classes: Tensor, K: int,
                weights: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    r"""Per-class sums and counts, :math:`s_k = \sum_{i: y_i = k} h_i`, :math:`n_k = |\{i: y_i = k\}|`.

    Differentiable in ``features`` (``index_add``). Class ids must lie in [0, K). Batched over
    leading dims of ``features`` (e.g. M modalities sharing the labels: (M, B, D) -> (M, K, D)),
    one ``index_add`` for all of them. With ``weights`` w, :math:`s_k = \sum_{i: y_i = k} w_i h_i` and
    :math:`n_k = \sum_{i: y_i = k} w_i`: a weight 0 leaves a sample out of every class with no
    boolean index (no host sync).

    Args:
        features: (..., B, D). classes: (B,) long. K: number of classes.
        weights: (B,) per-sample weights (bool or float, e.g. ``has_class``'s mask); None: all 1.

    Returns:
        ``(sums (..., K, D), counts (K,))``, counts in the dtype of ``features``.

    Example:
        >>> s, n = class_means(torch.tensor([[1.0], [3.0], [5.0]]), torch.tensor([0, 0, 2]), 3)
        >>> s.flatten(), n
        (tensor([4., 0., 5.]), tensor([2., 0., 1.]))
    """
    if features.dim() < 2 or classes.dim() != 1 or classes.shape[0] != features.shape[-2]:
        raise ValueError(
            f"class_means: expected features (..., B, D) and classes (B,), got {tuple(features.shape)} "
            f"and {tuple(classes.shape)}"
        )
    check_classes(classes, features.shape[-2], K, "class_means")
    lead = features.shape[:-2]
    if weights is None:
        w = features.new_ones(classes.shape[0])  # (B,)
    else:
        if weights.shape != classes.shape:
            raise ValueError(f"class_means: weights must be (B,) = ({classes.shape[0]},), one per sample; got "
                             f"{tuple(weights.shape)}")
        w = weights.to(features.dtype)  # (B,)
        features = features * w.unsqueeze(-1)  # (..., B, D)
    sums = features.new_zeros(*lead, K, features.shape[-1]).index_add(features.dim() - 2, classes, features)
    counts = features.new_zeros(K).index_add(0, classes, w)  # (K,)
    return sums, counts


def class_centroids(features: Tensor, classes: Tensor, K: int) -> Tuple[Tensor, Tensor]:
    """Differentiable batch class centroids (zeros for absent classes) and the (K,) bool presence.

    features (..., B, D) -> centroids (..., K, D); batched like :func:`class_means`.

    Example:
        >>> c, present = class_centroids(torch.tensor([[1.0], [3.0]]), torch.tensor([0, 0]), 2)
        >>> c.flatten(), present
        (tensor([2., 0.]), tensor([ True, False]))
    """
    return centroids_from_sums(*class_means(features, classes, K))


def centroids_from_sums(sums: Tensor, counts: Tensor) -> Tuple[Tensor, Tensor]:
    """:func:`class_centroids` from the ``(sums (..., K, D), counts (K,))`` of :func:`class_means`,
    for a caller that also needs the sums (PaSE's prototype EMA)."""
    return sums / counts.clamp_min(1).unsqueeze(-1), counts > 0  # (..., K, D), (K,)


def ema_update(
    prototypes: Tensor, initialized: Tensor, sums: Tensor, counts: Tensor, momentum: float = 0.98
) -> Tuple[Tensor, Tensor]:
    r"""One EMA step of a prototype bank (pure: returns new tensors).

    With batch mean :math:`\mu_k = s_k / n_k`:
    :math:`c_k \leftarrow \gamma c_k + (1 - \gamma) \mu_k` if class k was initialised,
    :math:`c_k \leftarrow \mu_k` on its first observation, unchanged if :math:`n_k = 0`.

    Args:
        prototypes: (..., K, D). initialized: (..., K) bool. sums: (..., K, D). counts: (K,)
            or (..., K).
        momentum: gamma (0.98, PASE_SPEC 2.2).

    Returns:
        ``(prototypes (..., K, D), initialized (..., K))``.

    Example:
        >>> p, init = ema_update(torch.zeros(2, 1), torch.tensor([False, False]),
        ...                      torch.tensor([[4.0], [0.0]]), torch.tensor([2.0, 0.0]))
        >>> p.flatten(), init
        (tensor([2., 0.]), tensor([ True, False]))
    """
    seen = counts > 0  # (K,)
    mean = sums / counts.clamp_min(1).unsqueeze(-1)  # (K, D)
    blended = momentum * prototypes + (1.0 - momentum) * mean  # (K, D)
    new = torch.where(initialized.unsqueeze(-1), blended, mean)
    return torch.where(seen.unsqueeze(-1), new, prototypes), initialized | seen


def prototype_logits(
    features: Tensor, prototypes: Tensor, tau: float = 0.1, initialized: Optional[Tensor] = None
) -> Tensor:
    r"""Prototype logits :math:`\cos(h_i, c_k) / \tau` (B, K); uninitialised prototypes get -inf.

    If no prototype is initialised the logits are all zero (a uniform softmax), never all -inf.
    Batched over leading dims: features (..., B, D) against prototypes (..., K, D) with
    ``initialized`` (..., K), e.g. all M modalities in one call.

    Args:
        features: (..., B, D). prototypes: (..., K, D). tau: temperature (> 0).
        initialized: (..., K) bool, or None for all initialised.

    Returns:
        (..., B, K).

    Example:
        >>> prototype_logits(torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0], [0.0, 1.0]]), tau=0.5)
        tensor([[2., 0.]])
    """
    if features.shape[-1] != prototypes.shape[-1]:
        raise ValueError(f"prototype_logits: features of width {features.shape[-1]} against prototypes of width "
                         f"{prototypes.shape[-1]} ({tuple(features.shape)} and {tuple(prototypes.shape)}); build "
                         "the prototype bank with the encoder's output width")
    logits = (1.0 - cosine_cost(features, prototypes)) / tau  # (..., B, K)
    if initialized is None:
        return logits
    init = initialized.unsqueeze(-2)  # (..., 1, K)
    neg_inf = torch.full((), float("-inf"), dtype=logits.dtype, device=logits.device)
    masked = torch.where(init, logits, neg_inf)  # (..., B, K)
    return torch.where(init.any(-1, keepdim=True), masked, torch.zeros_like(logits))


def pcl_loss(
    features: Tensor, classes: Tensor, prototypes: Tensor, initialized: Tensor, tau: float = 0.1,
    keep: Optional[Tensor] = None,
) -> Tensor:
    r"""Prototype-softmax calibration loss (PCL), PASE_SPEC section 4.

    .. math::
        L = \frac{1}{|V|} \sum_{i \in V} -\log
            \frac{\exp(\cos(h_i, c_{y_i}) / \tau)}{\sum_{k \in I} \exp(\cos(h_i, c_k) / \tau)}

    over the initialised classes I and the samples V whose own class is initialised (and, with
    ``keep``, that it keeps). The prototypes are detached (EMA targets); the gradient reaches
    ``features`` only. With no valid sample the loss is 0 and still part of the graph. Batched over
    leading dims (one loss per modality from (M, B, D) features and (M, K, D) banks sharing the labels).

    Args:
        features: (..., B, D). classes: (B,) long. prototypes: (..., K, D). initialized: (..., K) bool.
        tau: temperature.
        keep: (B,) bool, the samples that have a class (``has_class``); None: all.

    Returns:
        the loss, shape (...) (0-dim for unbatched inputs).

    Example:
        >>> h = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> round(float(pcl_loss(h, torch.tensor([0, 1]), h, torch.tensor([True, True]), tau=1.0)), 4)
        0.3133
    """
    return pcl_from_logits(prototype_logits(features, prototypes.detach(), tau, initialized), classes, initialized,
                           keep)


def pcl_from_logits(logits: Tensor, classes: Tensor, initialized: Tensor, keep: Optional[Tensor] = None) -> Tensor:
    """:func:`pcl_loss` from prototype logits already computed (:func:`prototype_logits` against
    prototypes without gradient, e.g. the forward pass's): logits (..., B, K) -> loss (...), over
    the samples ``keep`` (B,) bool (None: all)."""
    check_classes(classes, logits.shape[-2], logits.shape[-1], "pcl_loss")
    valid = initialized.index_select(-1, classes)  # (..., B)
    if keep is not None:
        valid = valid & keep  # (..., B): a mask, no host sync
    index = classes.expand(logits.shape[:-1]).unsqueeze(-1)  # (..., B, 1)
    target = logits.gather(-1, index).squeeze(-1)  # (..., B)
    zero = torch.zeros((), dtype=logits.dtype, device=logits.device)
    nll = torch.logsumexp(logits, dim=-1) - torch.where(valid, target, zero)  # (..., B)
    nll = torch.where(valid, nll, zero)
    return nll.sum(-1) / valid.sum(-1).clamp_min(1)


def update_banks(banks: Sequence["PrototypeBank"], features: Tensor, classes: Tensor,
                 stats: Optional[Tuple[Tensor, Tensor]] = None, weights: Optional[Tensor] = None) -> None:
    """EMA-update several banks sharing labels in one batched step: features (N, B, D), one row per bank.

    The banks must have the same (K, D) and momentum. Under ``torch.distributed`` the class sums
    and counts of all banks are all-reduced (SUM) in one collective first, so every process holds
    the same prototypes. ``stats``: this batch's ``class_means(features, classes, K, weights)`` when
    the caller has them already (e.g. for the OT centroids), summed in float32; used detached (and
    ``weights`` then unused). ``weights``: (B,) per-sample weights of :func:`class_means` (0: a sample
    that moves no prototype); None: all 1.
    """
    first = banks[0]
    K, D = first.prototypes.shape
    if features.dim() != 3 or features.shape[-1] != D:
        raise ValueError(f"update_banks: features must be (banks, B, D) with D = {D}, the banks' width; got "
                         f"{tuple(features.shape)}")
    if features.shape[0] != len(banks) or any(b.prototypes.shape != (K, D) or b.momentum != first.momentum
                                               for b in banks):
        raise ValueError(
            f"update_banks: need one feature row per bank and banks of one shape and momentum; got "
            f"features {tuple(features.shape)} for {len(banks)} banks of shapes "
            f"{[tuple(b.prototypes.shape) for b in banks]}"
        )
    with torch.no_grad():
        if stats is None:  # summed in the banks' dtype (float32), not in a half-precision feature dtype
            stats = class_means(features.detach().to(first.prototypes.dtype), classes, K, weights)
        sums, counts = (t.detach().to(first.prototypes.dtype) for t in stats)  # (N, K, D), (K,)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            packed = torch.cat([sums.flatten(), counts])  # one collective for all banks
            torch.distributed.all_reduce(packed, op=torch.distributed.ReduceOp.SUM)
            sums, counts = packed[:-K].view_as(sums), packed[-K:]
        if len(banks) == 1:
            protos, init = first.prototypes.unsqueeze(0), first.initialized.unsqueeze(0)
        else:
            protos = torch.stack([b.prototypes for b in banks])  # (N, K, D)
            init = torch.stack([b.initialized for b in banks])  # (N, K)
        protos, init = ema_update(protos, init, sums, counts, first.momentum)
        for i, b in enumerate(banks):
            b.prototypes.copy_(protos[i])
            b.initialized.copy_(init[i])


class PrototypeBank(nn.Module):
    """EMA class prototypes of one modality: buffers ``prototypes`` (K, D) and ``initialized`` (K,).

    Under ``torch.distributed`` the per-class sums and counts are all-reduced (SUM) before the
    EMA, so every process holds the same prototypes.

    Example:
        >>> bank = PrototypeBank(num_classes=2, dim=2)
        >>> bank.update(torch.tensor([[1.0, 0.0], [3.0, 0.0]]), torch.tensor([0, 0]))
        >>> bank.prototypes, bank.initialized
        (tensor([[2., 0.],
                [0., 0.]]), tensor([ True, False]))
    """

    #: an EMA: kept in float32 under half precision (``training.precision.keep_float32_state``)
    FLOAT32_STATE = ("prototypes",)

    def __init__(self, num_classes: int, dim: int, momentum: float = 0.98) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"PrototypeBank: momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.register_buffer("prototypes", torch.zeros(num_classes, dim))
        self.register_buffer("initialized", torch.zeros(num_classes, dtype=torch.bool))

    def update(self, features: Tensor, classes: Tensor) -> None:
        """EMA-update the bank with a batch: features (B, D) (detached here), classes (B,) long."""
        update_banks([self], features.unsqueeze(0), classes)

    def logits(self, features: Tensor, tau: float = 0.1) -> Tensor:
        """:func:`prototype_logits` against this bank: (B, D) -> (B, K)."""
        return prototype_logits(features, self.prototypes, tau, self.initialized)

    @torch.no_grad()
    def separation(self) -> Tensor:
        """Mean pairwise cosine distance between initialised prototypes (0-dim; NaN if fewer than 2)."""
        pair = self.initialized.unsqueeze(0) & self.initialized.unsqueeze(1)  # (K, K)
        pair &= ~torch.eye(len(pair), dtype=torch.bool, device=pair.device)
        dist = cosine_cost(self.prototypes, self.prototypes)  # (K, K)
        return (dist * pair).sum() / pair.sum()
