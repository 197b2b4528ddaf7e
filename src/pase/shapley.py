"""Shapley values over modality coalitions and Shapley-based gradient modulation (SGM).

PASE_SPEC sections 2.5 and 4: the utility of every coalition of the M modalities is evaluated
(exactly, 2^M coalitions, or by Monte-Carlo permutations when 2^M is too large), the Shapley
values are turned into shares psi_m, and the gradient of modality m's parameters is multiplied
by phi_m = exp(psi_min / psi_m - 1).

Coalitions are indexed by bitmask: coalition c contains modality i iff bit i of c is set, so
row 0 is the empty coalition and row 2^M - 1 the grand coalition. Modality i is the i-th name
in the caller's (sorted) modality order.

Letters: M modalities, C = 2^M coalitions, R permutations.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch.nn import Parameter

__all__ = [
    "coalition_masks",
    "exact_shapley",
    "permutation_shapley",
    "shapley_shares",
    "sgm_coefficients",
    "ema",
    "scale_gradients",
]


def coalition_masks(M: int, device: Optional[torch.device] = None) -> Tensor:
    """All 2^M coalitions of M players as a (2^M, M) bool tensor; row c holds bit i of c in column i.

    Example:
        >>> coalition_masks(2).int()
        tensor([[0, 0],
                [1, 0],
                [0, 1],
                [1, 1]], dtype=torch.int32)
    """
    if M < 1:
        raise ValueError(f"coalition_masks: need M >= 1 players, got {M}")
    c = torch.arange(2**M, device=device)  # (C,)
    return (c.unsqueeze(-1) >> torch.arange(M, device=device)) & 1 == 1  # (C, M)


def _shapley_weights(M: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(M, 2^M) matrix W with phi = W @ v: W[i, c] = w(|c|-1) if i in c else -w(|c|); cached.
    Inside a ``torch.compile``d step (``train.compile``) made in the traced graph, as Dynamo did with
    the cached function anyway (it ignores an ``lru_cache`` wrapper): the same graph, without
    Dynamo's warning of "potential silent incorrectness" about calling the wrapper."""
    if torch.compiler.is_compiling():
        return _make_shapley_weights(M, device, dtype)
    return _cached_shapley_weights(M, device, dtype)


def _make_shapley_weights(M: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    w = torch.tensor(
        [math.factorial(s) * math.factorial(M - s - 1) / math.factorial(M) for s in range(M)] + [0.0],
        dtype=torch.float64,
    )  # (M + 1,), w(s) = s! (M - s - 1)! / M!; w(M) unused
    masks = coalition_masks(M)  # (C, M)
    size = masks.sum(-1)  # (C,)
    with_i = w[(size - 1).clamp_min(0)]  # (C,) weight when i joined to c \ {i}
    without_i = -w[size]  # (C,)
    W = torch.where(masks.T, with_i, without_i)  # (M, C)
    return W.to(device=device, dtype=dtype)


_cached_shapley_weights = functools.lru_cache(maxsize=32)(_make_shapley_weights)


def _num_players(n: int) -> int:
    M = n.bit_length() - 1
    if n < 2 or 2**M != n:
        raise ValueError(f"utilities must have 2^M rows (one per coalition, M >= 1), got {n}")
    return M


def exact_shapley(utilities: Tensor) -> Tensor:
    r"""Exact Shapley values from the utilities of all 2^M coalitions.

    .. math::
        \phi_i = \sum_{S \subseteq N \setminus \{i\}} \frac{|S|! (M - |S| - 1)!}{M!}
                 \big(v(S \cup \{i\}) - v(S)\big)

    computed as one matrix product with a cached (M, 2^M) weight matrix.

    Args:
        utilities: (2^M,) or (2^M, ...) utilities indexed by coalition bitmask (see module doc).

    Returns:
        (M,) or (M, ...) Shapley values, floating dtype of ``utilities``; exactly 0 where the table
        is constant (every player null), not the weights' rounding residue.

    Raises:
        ValueError: if the first dim is not a power of two >= 2.

    Example:
        >>> exact_shapley(torch.tensor([0.0, 1.0, 2.0, 4.0]))  # v(a)=1, v(b)=2, v(ab)=4
        tensor([1.5000, 2.5000])
    """
    M = _num_players(utilities.shape[0])
    if not utilities.is_floating_point():
        utilities = utilities.to(torch.get_default_dtype())
    W = _shapley_weights(M, utilities.device, utilities.dtype)  # (M, C)
    # a constant table (no player changes anything) gives exactly 0: W's rounding left about 1e-8 in float32,
    # which shapley_shares's relative floor turned into lopsided shares and SGM into coefficients of 0.37
    const = (utilities == utilities[:1]).all(0)  # () or (...)
    if utilities.dim() == 1:
        values = torch.mv(W, utilities)  # (M,): the per-batch case
    else:
        flat = utilities.reshape(utilities.shape[0], -1)  # (C, X)
        values = (W @ flat).reshape(M, *utilities.shape[1:])  # (M, ...)
    if values.requires_grad:  # (AGM's differentiable values) value 0, gradient W as before
        return values - torch.where(const, values.detach(), 0.0)
    return values.masked_fill(const, 0.0)


def permutation_shapley(
    utility: Union[Tensor, Callable[[Tensor], Tensor]],
    M: int,
    num_permutations: int,
    generator: Optional[torch.Generator] = None,
    device: Optional[torch.device] = None,
) -> Tuple[Tensor, Tensor]:
    r"""Monte-Carlo Shapley values from random orderings of the M players.

    For R uniform random permutations, the marginal contribution of player i in ordering r is
    :math:`v(\mathrm{Pre}_r(i) \cup \{i\}) - v(\mathrm{Pre}_r(i))`; the estimate is its mean and
    the standard error its sample standard deviation over :math:`\sqrt{R}`. All R (M + 1) prefix
    coalitions are evaluated in one call.

    Args:
        utility: a (2^M,) table indexed by coalition bitmask, or a function mapping a (N, M) bool
            mask batch to (N,) utilities.
        M: number of players.
        num_permutations: R >= 2.
        generator: seeded generator for reproducibility (CPU).
        device: for a function ``utility``, where its masks are made (the model's device): the
            orderings, drawn on the CPU, go there once, without a host sync on CUDA (pinned,
            non-blocking), where two blocking copies per training step were made before.

    Returns:
        ``(values, standard_error)``, both (M,).

    Raises:
        ValueError: if R < 2, or the table does not have 2^M entries.

    Example:
        >>> v, se = permutation_shapley(torch.tensor([0.0, 1.0, 2.0, 3.0]), 2, 8)  # additive game
        >>> v, se
        (tensor([1., 2.]), tensor([0., 0.]))
    """
    if num_permutations < 2:
        raise ValueError(f"permutation_shapley: num_permutations must be >= 2, got {num_permutations}")
    if isinstance(utility, Tensor):
        if utility.shape != (2**M,):
            raise ValueError(
                f"permutation_shapley: utility table must have shape ({2**M},), got {tuple(utility.shape)}"
            )
        table = utility if utility.is_floating_point() else utility.to(torch.get_default_dtype())
        bits = 2 ** torch.arange(M, device=table.device)  # (M,)
        fn = lambda masks: table[(masks.long() * bits).sum(-1)]  # noqa: E731
        device = table.device
    else:
        fn = utility
    R = num_permutations
    perms = torch.argsort(torch.rand(R, M, generator=generator), dim=-1)  # (R, M), on the CPU
    if device is not None and torch.device(device).type == "cuda":
        perms = perms.pin_memory().to(device, non_blocking=True)
    elif device is not None:
        perms = perms.to(device)
    rank = torch.argsort(perms, dim=-1)  # (R, M), position of player i in ordering r
    steps = torch.arange(M + 1, device=perms.device)  # (M + 1,)
    prefix = rank.unsqueeze(1) < steps.view(1, -1, 1)  # (R, M + 1, M): first k players in
    v = fn(prefix.reshape(R * (M + 1), M)).reshape(R, M + 1)  # (R, M + 1)
    gains = v[:, 1:] - v[:, :-1]  # (R, M), gain of the player at position k
    contrib = torch.gather(gains, 1, rank.to(gains.device))  # (R, M), gain of player i
    values = contrib.mean(0)  # (M,)
    se = contrib.std(0, unbiased=True) / math.sqrt(R)  # (M,)
    return values, se


def shapley_shares(values: Tensor, eps: float = 1e-3) -> Tensor:
    r"""Contribution shares :math:`\psi_m` (positive, summing to 1 over dim 0) from Shapley values.

    .. math::
        \psi_m = \frac{\max(\phi_m, f)}{\sum_n \max(\phi_n, f)}, \qquad
        f = \epsilon \sum_n |\phi_n|

    A modality with a non-positive value (it does not help or it hurts) is raised to the small
    floor f, so it gets the smallest share and, under SGM, its full gradient. If all values are
    (numerically) zero, the shares are uniform. The result is never NaN for finite input whose
    absolute sum is finite in its dtype (float32: below about 3e38).

    Args:
        values: (M,) or (M, ...) Shapley values.
        eps: relative floor (> 0).

    Returns:
        shares, same shape as ``values``.

    Example:
        >>> shapley_shares(torch.tensor([3.0, 1.0, -1.0]))  # floor 1e-3 * 5 for the hurting one
        tensor([0.7491, 0.2497, 0.0012])
    """
    if not eps > 0:
        raise ValueError(f"shapley_shares: eps must be > 0, got {eps}")
    tiny = torch.finfo(values.dtype).tiny
    floor = (values.abs().sum(0, keepdim=True) * eps).clamp_min_(tiny)  # (1, ...), f > 0
    clamped = torch.maximum(values, floor)  # (M, ...); all equal to f (uniform shares) when every value is ~0
    return clamped / clamped.sum(0, keepdim=True)


def sgm_coefficients(shares: Tensor) -> Tensor:
    r"""SGM gradient coefficients :math:`\varphi_m = \exp(\psi_{\min} / \psi_m - 1)` over dim 0.

    The weakest modality gets 1, stronger ones lie in (1/e, 1). Shares are floored at the
    dtype's ``tiny`` so a zero share cannot produce NaN (use :func:`shapley_shares` first).

    Args:
        shares: (M,) or (M, ...) positive shares.

    Returns:
        coefficients, same shape.

    Example:
        >>> sgm_coefficients(torch.tensor([0.5, 0.25, 0.25]))
        tensor([0.6065, 1.0000, 1.0000])
    """
    s = shares.clamp_min(torch.finfo(shares.dtype).tiny)
    return torch.div(s.amin(0, keepdim=True), s).sub_(1.0).exp_()


def ema(prev: Optional[Union[Tensor, float]], new: Union[Tensor, float], momentum: float):
    """Exponential moving average ``momentum * prev + (1 - momentum) * new``; ``new`` if ``prev`` is None.

    Example:
        >>> ema(1.0, 0.0, momentum=0.9)
        0.9
    """
    if prev is None:
        return new
    return momentum * prev + (1.0 - momentum) * new


def scale_gradients(
    groups: Mapping[str, Sequence[Parameter]], coeffs: Mapping[str, Union[float, Tensor]], check: bool = True
) -> None:
    """Multiply, in place, the ``.grad`` of every parameter in group m by ``coeffs[m]``.

    Parameters without a gradient are skipped; parameters outside ``groups`` (shared fusion and
    head) are untouched. Uses ``torch._foreach_mul_`` per group and device; a 0-dim tensor
    coefficient avoids any host sync.

    Args:
        groups: modality -> parameters (the model's ``modality_parameters()``).
        coeffs: modality -> float or 0-dim tensor; exactly the keys of ``groups``.
        check: validate the keys and that the groups are disjoint (a caller passing the same
            groups every step validates once and then skips it).

    Raises:
        KeyError: if the keys of ``groups`` and ``coeffs`` differ.
        ValueError: if a parameter belongs to two groups.

    Example:
        >>> p = Parameter(torch.ones(2)); p.grad = torch.ones(2)
        >>> scale_gradients({"audio": [p]}, {"audio": 0.5}); p.grad
        tensor([0.5000, 0.5000])
    """
    if check and set(groups) != set(coeffs):
        raise KeyError(
            f"scale_gradients: groups and coeffs need the same modality keys; "
            f"groups {sorted(groups)}, coeffs {sorted(coeffs)}"
        )
    seen: Dict[int, str] = {}
    for m, params in groups.items() if check else ():
        for p in params:
            if seen.setdefault(id(p), m) != m:
                raise ValueError(f"scale_gradients: a parameter is in both groups {seen[id(p)]!r} and {m!r}")
    for m in sorted(groups):
        by_device: Dict[torch.device, List[Tensor]] = {}
        for p in groups[m]:
            if p.grad is not None:
                by_device.setdefault(p.grad.device, []).append(p.grad)
        c = coeffs[m]
        for device, grads in by_device.items():
            torch._foreach_mul_(grads, c.to(device) if isinstance(c, Tensor) else float(c))
