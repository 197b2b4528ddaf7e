"""Entropic optimal transport in the log domain and PaSE's cross-modal alignment loss.

Sinkhorn follows ``ot.bregman.sinkhorn_log`` of POT (Flamary et al., JMLR 2021; Cuturi, NeurIPS
2013): the dual potentials are updated with ``logsumexp`` over ``-M / reg`` plus the other
potential, and only the final plan is exponentiated, so small ``reg`` neither underflows nor
overflows. Every function is batched over arbitrary leading dimensions and differentiable by
unrolling the iterations (float32 and float64).

Letters: K1, K2 support sizes, K classes, D features, P modality pairs.
"""

from __future__ import annotations

import functools
import itertools
import warnings
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["sinkhorn_log", "sinkhorn_log_implicit", "sinkhorn_cost", "cosine_cost", "ot_alignment_loss",
           "ot_alignment_loss_stacked"]


def _check_ot_shapes(a: Tensor, b: Tensor, M: Tensor) -> None:
    if M.dim() < 2 or a.shape[-1:] != M.shape[-2:-1] or b.shape[-1:] != M.shape[-1:]:
        raise ValueError(
            f"sinkhorn_log: expected a (..., K1), b (..., K2), M (..., K1, K2); got a {tuple(a.shape)}, "
            f"b {tuple(b.shape)}, M {tuple(M.shape)}; the last dim of a must equal M.shape[-2] and "
            f"the last dim of b must equal M.shape[-1]"
        )


def _column_error(plan: Tensor, b: Tensor) -> Tensor:
    """Largest (over the batch) L2 norm of the column-marginal error, as a 0-dim tensor."""
    err = torch.linalg.vector_norm(plan.sum(-2) - b, dim=-1)  # (...,)
    return err.max() if err.dim() else err


def sinkhorn_log(
    a: Tensor,
    b: Tensor,
    M: Tensor,
    reg: float,
    max_iter: int = 1000,
    tol: float = 1e-9,
    log: bool = False,
    check_every: int = 10,
    grad_iters: Optional[int] = None,
    init: Optional[Tensor] = None,
) -> Union[Tensor, Tuple[Tensor, Dict[str, object]]]:
    r"""Entropic OT plan by log-domain Sinkhorn iterations, batched over leading dims.

    Solves :math:`\gamma = \arg\min_{\gamma \ge 0,\ \gamma 1 = a,\ \gamma^T 1 = b}
    \langle \gamma, M \rangle - \mathrm{reg} \cdot H(\gamma)` with
    :math:`H(\gamma) = -\sum_{ij} \gamma_{ij} (\log \gamma_{ij} - 1)`. With
    :math:`\tilde M = -M / \mathrm{reg}` the scaled log potentials are updated as

    .. math::
        \log v \leftarrow \log b - \mathrm{LSE}_i(\tilde M_{ij} + \log u_i), \qquad
        \log u \leftarrow \log a - \mathrm{LSE}_j(\tilde M_{ij} + \log v_j),

    and :math:`\gamma_{ij} = \exp(\tilde M_{ij} + \log u_i + \log v_j)`. After each ``u`` update
    the row marginals are exact; convergence is judged on the column marginals, every
    ``check_every`` iterations (one host sync per check). Entries of ``a`` or ``b`` equal to 0
    get potential ``-inf`` and an all-zero row or column in the plan (every batch element needs
    positive mass somewhere in both marginals).

    Args:
        a: source marginals (..., K1), nonnegative, each summing to the same mass as ``b``.
        b: target marginals (..., K2).
        M: cost matrices (..., K1, K2); leading dims of ``a``, ``b``, ``M`` broadcast together.
        reg: entropic regularisation (> 0).
        max_iter: number of iterations at most (raise it if the solver warns).
        tol: stop when the column-marginal error (max over the batch of its L2 norm) is below
            ``tol``. ``tol <= 0`` runs exactly ``max_iter`` iterations with no check, no host
            sync and no warning. The tolerance is floored at ``8 * finfo(dtype).eps`` (about
            1e-6 in float32), the smallest error that dtype can resolve.
        log: also return the diagnostics dict.
        check_every: iterations between checks; ``0`` disables checking like ``tol <= 0``.
        grad_iters: if set, the iterations before the last ``grad_iters`` run without autograd
            and the last ones restart from the detached potentials: the gradient of the
            (contractive) fixed point is then that of ``grad_iters`` unrolled steps, at a fraction
            of the memory and time of a full unroll (``None``: differentiate every iteration).
        init: optional starting log potential ``log u`` (..., K1), e.g. the ``log_u`` of an
            earlier solve of a nearby problem (a warm start: fewer iterations to the same fixed
            point). Detached; non-finite entries start at 0, zero-mass rows stay at -inf.

    Returns:
        plan (..., K1, K2); with ``log=True`` the tuple ``(plan, {"niter": int, "log_u":
        (..., K1), "log_v": (..., K2), "err": 0-dim tensor})``, ``err`` being the last measured
        column-marginal error (measured once at the end if checking was off).

    Raises:
        ValueError: if the shapes do not match, ``reg <= 0`` or ``max_iter < 1``.

    Warns:
        UserWarning: if checking is on and ``tol`` is not reached within ``max_iter``.

    Example:
        >>> a = b = torch.tensor([0.5, 0.5], dtype=torch.float64)
        >>> M = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
        >>> sinkhorn_log(a, b, M, reg=1.0)  # diagonal 1 / (2 (1 + e^-1))
        tensor([[0.3655, 0.1345],
                [0.1345, 0.3655]], dtype=torch.float64)
    """
    _check_ot_shapes(a, b, M)
    if not reg > 0:
        raise ValueError(f"sinkhorn_log: reg must be > 0, got {reg}")
    if max_iter < 1:
        raise ValueError(f"sinkhorn_log: max_iter must be >= 1, got {max_iter}")
    batch = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1], M.shape[:-2])
    K1, K2 = M.shape[-2:]
    M = M.expand(*batch, K1, K2)
    a, b = a.expand(*batch, K1), b.expand(*batch, K2)
    log_a, log_b = a.log(), b.log()  # (..., K1), (..., K2); zero mass -> -inf
    Mr = -M / reg  # (..., K1, K2)
    start = torch.zeros((), dtype=M.dtype, device=M.device)
    if init is not None:
        init = init.detach().to(M.device, M.dtype).expand(*batch, K1)
        start = torch.where(torch.isfinite(init), init, start)
    log_u = torch.where(a > 0, start, float("-inf")).to(M.dtype)  # (..., K1); zero-mass rows stay out
    log_v = torch.zeros_like(log_b)
    checking = tol > 0 and check_every > 0
    tol = max(tol, 8 * torch.finfo(M.dtype).eps)
    err, niter, converged = None, 0, False
    free = 0 if grad_iters is None else max(max_iter - grad_iters, 0)  # iterations run without autograd
    stop, it = max_iter, 0
    while it < stop:
        if it == free and free > 0:
            log_u = log_u.detach()  # restart the differentiable tail from the converged potentials
        with torch.set_grad_enabled(torch.is_grad_enabled() and it >= free):
            log_v = log_b - torch.logsumexp(Mr + log_u.unsqueeze(-1), dim=-2)  # (..., K2)
            log_u = log_a - torch.logsumexp(Mr + log_v.unsqueeze(-2), dim=-1)  # (..., K1)
        it = niter = it + 1
        if checking and it <= free and it % check_every == 0:
            with torch.no_grad():
                err = _column_error(torch.exp(Mr + log_u.unsqueeze(-1) + log_v.unsqueeze(-2)), b)
            if bool(err < tol):  # converged without autograd: run only the differentiable tail
                free, stop = it, min(it + grad_iters, max_iter)
        elif checking and it > free and (it == stop or ((grad_iters is None or free == 0) and it % check_every == 0)):
            # a differentiable tail after an autograd-free start runs whole (checked once, at its end); a
            # solve that is differentiable throughout (grad_iters >= max_iter) stops at convergence as before
            with torch.no_grad():
                err = _column_error(torch.exp(Mr + log_u.unsqueeze(-1) + log_v.unsqueeze(-2)), b)
            if bool(err < tol):  # host sync, once per check
                converged = True
                break
    converged = converged or (checking and err is not None and bool(err < tol))
    if checking and not converged:
        warnings.warn(
            f"sinkhorn_log did not converge: marginal error {float(err):.3g} > tol {tol:.3g} "
            f"after max_iter={max_iter} iterations; raise max_iter or reg (reg={reg})",
            UserWarning,
            stacklevel=2,
        )
    plan = torch.exp(Mr + log_u.unsqueeze(-1) + log_v.unsqueeze(-2))  # (..., K1, K2)
    if not log:
        return plan
    if err is None:
        with torch.no_grad():
            err = _column_error(plan.detach(), b)
    return plan, {"niter": niter, "log_u": log_u, "log_v": log_v, "err": err}


class _ImplicitSinkhorn(torch.autograd.Function):
    """The converged entropic plan with its exact gradient by implicit differentiation.

    Forward: ``sinkhorn_log`` without autograd. Backward: with P = exp((F_i + G_j - M_ij) / reg)
    and the marginal constraints held fixed, the adjoint system
    [[diag(P 1), P], [P^T, diag(P^T 1)]] [lam; mu] = [H 1; H^T 1], H = dL/dP * P, gives
    dL/dM_ij = (P_ij (lam_i + mu_j) - H_ij) / reg. The system is singular along the gauge
    (F + t, G - t) and for zero-mass rows / columns; both are pinned (a rank-one term on the
    gauge, a unit diagonal on empty rows), which leaves lam_i + mu_j unchanged. One batched
    ``torch.linalg.solve`` of size K1 + K2 replaces the unrolled iterations' backward.
    """

    @staticmethod
    def forward(ctx, M, a, b, reg, kwargs, out_log):
        with torch.no_grad():
            plan, log = sinkhorn_log(a, b, M, reg, log=True, **kwargs)
        out_log.update(log)
        ctx.reg = reg
        ctx.save_for_backward(M, log["log_u"], log["log_v"])
        return plan

    @staticmethod
    def backward(ctx, grad_plan):
        M, log_u, log_v = ctx.saved_tensors
        # In float64, the plan rebuilt there from the potentials: near a permutation plan the
        # off-plan entries are ~exp(-gap / reg) (1e-9 at 0.05, 1e-22 at 0.02), so the system has
        # K - 1 near-null directions below float32's precision; a solve on the float32 plan (even cast
        # to float64) turned its rounding into inf / NaN or 1e12-sized gradients (a review: 40 of 200
        # random 3 x 3 problems at reg 0.02). The system is (K1 + K2)^2: the cost is not measurable
        wide = torch.float32 if M.device.type == "mps" else torch.float64  # MPS has no float64
        P = torch.exp(-M.to(wide) / ctx.reg + log_u.to(wide).unsqueeze(-1) + log_v.to(wide).unsqueeze(-2))
        grad_plan = grad_plan.to(wide)
        K1, K2 = P.shape[-2:]
        H = grad_plan * P  # (..., K1, K2)
        r, c = P.sum(-1), P.sum(-2)  # (..., K1), (..., K2)
        top = torch.cat([torch.diag_embed(r), P], dim=-1)  # (..., K1, K1 + K2)
        bottom = torch.cat([P.transpose(-2, -1), torch.diag_embed(c)], dim=-1)
        A = torch.cat([top, bottom], dim=-2)  # (..., K1 + K2, K1 + K2)
        live = torch.cat([r > 0, c > 0], dim=-1)  # (..., K1 + K2)
        n = torch.cat([(r > 0).to(P.dtype), -(c > 0).to(P.dtype)], dim=-1)  # the gauge direction
        scale = A.diagonal(dim1=-2, dim2=-1).sum(-1, keepdim=True) / live.sum(-1, keepdim=True).clamp_min(1)
        A = A + (n.unsqueeze(-1) * n.unsqueeze(-2)) * (scale / (n * n).sum(-1, keepdim=True).clamp_min(1)).unsqueeze(-1)
        A = A + torch.diag_embed((~live).to(P.dtype))  # empty rows / columns: lam = mu = 0 there
        # A ridge at the solve's precision: where off-plan entries fall below float64's rounding too
        # (reg 0.02 and a cost gap of 1: exp(-50)), each matched pair's block [[r_i, P_ii], [P_ii,
        # c_i]] is singular after rounding. Along such a pair's direction (lam_i + t, mu_i - t) the
        # gradient moves only by P_ij t on off-plan entries, ~0 there, so the bounded t the ridge
        # picks is as good as the exact one; elsewhere it moves the gradient by about 1e-15 / reg.
        ridge = 8 * torch.finfo(wide).eps * scale  # (..., 1)
        A = A + torch.diag_embed(ridge.expand(A.shape[:-1]))
        rhs = torch.cat([H.sum(-1), H.sum(-2)], dim=-1)  # (..., K1 + K2)
        z = torch.linalg.solve_ex(A, rhs.unsqueeze(-1)).result.squeeze(-1)  # no error check: no host sync
        lam, mu = z[..., :K1], z[..., K1:]
        grad_M = (P * (lam.unsqueeze(-1) + mu.unsqueeze(-2)) - H) / ctx.reg
        return grad_M.to(M.dtype), None, None, None, None, None


def sinkhorn_log_implicit(
    a: Tensor, b: Tensor, M: Tensor, reg: float, **kwargs
) -> Tuple[Tensor, Dict[str, object]]:
    """:func:`sinkhorn_log` with the gradient of the converged plan by implicit differentiation.

    Every iteration runs without autograd; the gradient with respect to ``M`` is exact at the
    fixed point (to the solver's tolerance), whatever the number of iterations, and costs one
    batched linear solve. The marginals ``a`` and ``b`` get no gradient.

    Args:
        a, b, M, reg: as in :func:`sinkhorn_log`.
        **kwargs: ``max_iter``, ``tol``, ``check_every``, ``init`` for :func:`sinkhorn_log`.

    Returns:
        ``(plan, log)`` as :func:`sinkhorn_log` with ``log=True``.

    Example:
        >>> a = b = torch.tensor([0.5, 0.5], dtype=torch.float64)
        >>> M = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64, requires_grad=True)
        >>> plan, _ = sinkhorn_log_implicit(a, b, M, reg=1.0)
        >>> bool(torch.allclose(plan, sinkhorn_log(a, b, M.detach(), reg=1.0)))
        True
    """
    kwargs.pop("grad_iters", None)
    kwargs.pop("log", None)
    log: Dict[str, object] = {}
    plan = _ImplicitSinkhorn.apply(M, a.detach(), b.detach(), reg, kwargs, log)
    return plan, log


def sinkhorn_cost(
    a: Tensor, b: Tensor, M: Tensor, reg: float, log: bool = False, **kwargs
) -> Union[Tensor, Tuple[Tensor, Dict[str, object]]]:
    r"""Linear transport cost :math:`\langle \gamma, M \rangle` of the entropic plan (POT's ``sinkhorn2``).

    Args:
        a, b, M, reg: as in :func:`sinkhorn_log`.
        log: also return :func:`sinkhorn_log`'s diagnostics dict.
        **kwargs: ``max_iter``, ``tol``, ``check_every`` for :func:`sinkhorn_log`.

    Returns:
        cost (...,), the entropy term excluded; with ``log=True`` also the diagnostics dict.

    Example:
        >>> a = b = torch.tensor([0.5, 0.5], dtype=torch.float64)
        >>> M = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
        >>> round(float(sinkhorn_cost(a, b, M, reg=1.0)), 4)  # 2 * 0.1345
        0.2689
    """
    out = sinkhorn_log(a, b, M, reg, log=log, **kwargs)
    plan, diag = out if log else (out, None)
    cost = (plan * M).sum(dim=(-2, -1))  # (...,)
    return (cost, diag) if log else cost


def cosine_cost(x: Tensor, y: Tensor, eps: float = 1e-8) -> Tensor:
    r"""Cosine cost :math:`C_{ij} = 1 - \cos(x_i, y_j)`, in [0, 2].

    Rows are normalised by :math:`\max(\lVert x_i \rVert, \epsilon)`, so a zero vector has cost 1
    to everything and a finite gradient.

    Args:
        x: (..., K1, D). y: (..., K2, D); leading dims broadcast.
        eps: norm floor.

    Returns:
        (..., K1, K2).

    Example:
        >>> cosine_cost(torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
        tensor([[0., 2.],
                [1., 1.]])
    """
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"cosine_cost: feature dims differ: x {tuple(x.shape)}, y {tuple(y.shape)}")
    if y.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):
        y = y.to(x.dtype)  # float32 prototypes (kept so under bf16-true) against half-precision features
    # a floor the dtype can hold: 1e-8 is 0 in float16, where a zero prototype then gave 0/0 = NaN
    # (forward and gradient) under train.precision=16-true
    floor = max(eps, float(torch.finfo(x.dtype).tiny), float(torch.finfo(y.dtype).tiny))
    xn = F.normalize(x, dim=-1, eps=floor)
    yn = F.normalize(y, dim=-1, eps=floor)
    return 1.0 - xn @ yn.transpose(-2, -1)  # (..., K1, K2)


def _presence(present: Union[Tensor, Mapping[str, Tensor]], names, K: int) -> Tensor:
    """Per-modality presence masks as one (M, K) bool tensor in the order of ``names``."""
    if isinstance(present, Mapping):
        missing = [m for m in names if m not in present]
        if missing:
            raise KeyError(f"ot_alignment_loss: present has no mask for {missing} (found: {sorted(present)})")
        rows = [present[m] for m in names]
    else:
        rows = [present] * len(names)
    for m, r in zip(names, rows):
        if r.shape != (K,):
            raise ValueError(f"ot_alignment_loss: present[{m!r}] must have shape ({K},), got {tuple(r.shape)}")
    return torch.stack(rows).bool()  # (M, K)


def _two_class_p(cost: Tensor, reg: float) -> Tensor:
    r"""The diagonal entry p of the entropic OT plans of (P, 2, 2) problems with uniform marginals.

    With a = b = (1/2, 1/2) the plan is [[p, 1/2 - p], [1/2 - p, p]]: the marginals fix three
    entries given one, and every Sinkhorn scaling leaves P_11 P_22 / (P_12 P_21) =
    exp(-(C_11 + C_22 - C_12 - C_21) / reg), so p = sigmoid(-(C_11 + C_22 - C_12 - C_21) / (2 reg)) / 2,
    the exact fixed point (no iterations). Differentiable in ``cost``. cost (P, 2, 2) -> p (P,).
    """
    c = cost.flatten(-2)  # (P, 4): C_11, C_12, C_21, C_22
    return 0.5 * torch.sigmoid((c[..., 1] + c[..., 2] - c[..., 0] - c[..., 3]) / (2 * reg))


def _two_class_terms(cost: Tensor, common: Tensor, reverse: Tensor, reg: float) -> Tuple[Tensor, Tensor, Tensor]:
    """The three per-pair terms of the alignment loss for K = 2 in closed form: (P,) transport,
    structure and consistency, for cost (P, 2, 2), ``common`` (P, 2) the classes a pair shares and
    ``reverse`` (P,) the index of pair (n, m).

    Both classes shared: the plan [[p, q], [q, p]], q = 1/2 - p (:func:`_two_class_p`), so transport
    p (C_11 + C_22) + q (C_12 + C_21), structure ||plan - I/2||^2 = 4 q^2 and consistency
    ||plan_mn - plan_nm^T||^2 = 4 (p_mn - p_nm)^2 (the plans are symmetric). One class k shared:
    the plan is that class's unit mass, equal to its target, so transport C_kk and the other two 0.
    No class shared: the dummy uniform problem (the pair has weight 0 in the loss). These are the
    terms :func:`ot_alignment_loss_stacked` computes from a converged Sinkhorn plan (tested equal).
    """
    p = _two_class_p(cost, reg)  # (P,)
    q = 0.5 - p
    c = cost.flatten(-2)
    single = common.any(-1) & ~common.all(-1)  # (P,) exactly one shared class
    zero = torch.zeros((), dtype=cost.dtype, device=cost.device)
    transport = torch.where(single, torch.where(common[:, 0], c[:, 0], c[:, 3]),
                            p * (c[:, 0] + c[:, 3]) + q * (c[:, 1] + c[:, 2]))
    structure = torch.where(single, zero, 4 * q * q)
    consistency = torch.where(single, zero, 4 * (p - p.index_select(0, reverse)).pow(2))
    return transport, structure, consistency


def _pair_index(M: int, device: torch.device) -> Tuple[Tensor, Tensor, Tensor]:
    """(P,) source index m, target index n and index of the reverse pair (n, m) of every ordered
    pair (m, n), in ``itertools.permutations`` order; cached, so no host-to-device copy per step.
    Inside a ``torch.compile``d step (``train.compile``) made in the traced graph, as Dynamo did with
    the cached function anyway (it ignores an ``lru_cache`` wrapper): the same graph, without
    Dynamo's warning of "potential silent incorrectness" about calling the wrapper."""
    if torch.compiler.is_compiling():
        return _make_pair_index(M, device)
    return _cached_pair_index(M, device)


def _make_pair_index(M: int, device: torch.device) -> Tuple[Tensor, Tensor, Tensor]:
    pairs = list(itertools.permutations(range(M), 2))
    index = {p: q for q, p in enumerate(pairs)}
    src, dst = zip(*pairs)
    return (torch.tensor(src, device=device), torch.tensor(dst, device=device),
            torch.tensor([index[(j, i)] for i, j in pairs], device=device))


_cached_pair_index = functools.lru_cache(maxsize=None)(_make_pair_index)


def _check_alignment_inputs(centroids: Mapping[str, Tensor], prototypes: Mapping[str, Tensor]):
    names = sorted(centroids)
    if sorted(prototypes) != names:
        raise KeyError(
            f"ot_alignment_loss: centroids and prototypes must share modality keys; "
            f"got centroids {names}, prototypes {sorted(prototypes)}"
        )
    if len(names) < 2:
        raise ValueError(f"ot_alignment_loss needs at least 2 modalities, got {names}")
    shape = centroids[names[0]].shape
    for m in names:
        for kind, t in (("centroids", centroids[m]), ("prototypes", prototypes[m])):
            if t.dim() != 2 or t.shape != shape:
                raise ValueError(
                    f"ot_alignment_loss: {kind}[{m!r}] has shape {tuple(t.shape)}, expected "
                    f"{tuple(shape)} like centroids[{names[0]!r}]; every modality must be projected "
                    f"to the same (K, D) (a common width d_model)"
                )
    return names


def ot_alignment_loss(
    centroids: Mapping[str, Tensor],
    prototypes: Mapping[str, Tensor],
    present: Union[Tensor, Mapping[str, Tensor]],
    reg: float = 0.05,
    alpha: float = 0.1,
    beta: float = 0.05,
    max_iter: int = 100,
    tol: float = 0.0,
    grad_iters: Optional[int] = 10,
    init: Optional[Tensor] = None,
    gradient: str = "implicit",
) -> Tuple[Tensor, Dict[str, object]]:
    r"""Cross-modal alignment loss (CAL) by entropic OT, PASE_SPEC sections 2.3 and 4.

    For every ordered pair of modalities (m, n), m != n, the batch's differentiable class
    centroids :math:`\bar h^m_k` of m are transported onto n's EMA prototypes :math:`c^n_k`
    (detached), so pair (n, m) is the reverse direction. With cost
    :math:`C^{mn}_{kl} = 1 - \cos(\bar h^m_k, c^n_l)` and uniform marginals
    :math:`a = b = 1_S / |S|` over the classes S present for both modalities, the plan
    :math:`P^{mn}` is the log-domain Sinkhorn solution (all pairs in ONE batched call) and

    .. math::
        L = \frac{1}{|\Pi|} \sum_{(m,n) \in \Pi} \Big[ \langle P^{mn}, C^{mn} \rangle
            + \alpha \lVert P^{mn} - I_S / |S| \rVert_F^2 \Big]
            + \beta \frac{1}{|\Pi|} \sum_{(m,n) \in \Pi} \lVert P^{mn} - (P^{nm})^T \rVert_F^2 ,

    where :math:`\Pi` is the set of ordered pairs and :math:`I_S` the identity restricted to S.
    Interpretation (the paper's equations are not public): the transport cost is the
    bidirectional matching loss; alpha = 0.1 weights a *structure* term pulling the plan toward
    the class-to-class target of mass 1 (not the mass-K identity of the authors' release); beta =
    0.05 weights a *consistency* term between the two directions' plans, both indexed
    (class of m, class of n). It is not zero by symmetry, because one direction uses m's
    centroids and n's prototypes and the other n's centroids and m's prototypes. Gradients reach
    the centroids only (through the cost and the plan). The defaults of ``reg``, ``alpha``, ``beta``,
    ``max_iter`` and ``gradient`` are the toolkit's (``pase.ot_reg`` and so on).

    Args:
        centroids: modality -> (K, D) batch class centroids (absent classes: any finite row,
            e.g. zeros from :func:`pase.prototypes.class_centroids`).
        prototypes: modality -> (K, D) EMA prototypes; detached here.
        present: (K,) bool classes present in the batch, or modality -> (K,) bool. AND it with
            the prototype banks' ``initialized`` masks so no uninitialised prototype is matched.
        reg: Sinkhorn entropic regularisation (costs lie in [0, 2]).
        alpha, beta: weights of the structure and consistency terms.
        max_iter, tol: Sinkhorn knobs; the default ``tol=0`` runs ``max_iter`` iterations with no
            host sync (the final marginal error is in the diagnostics).
        grad_iters: only the last ``grad_iters`` Sinkhorn iterations are differentiated (the
            earlier ones run without autograd); ``None`` unrolls all of them.
        init: optional (P, K) warm start for the batched solve, the ``log_u`` of an earlier
            call's diagnostics (pairs in the order of ``itertools.permutations`` of the sorted
            modalities); ignored when its shape does not fit.
        gradient: "unroll" (the last ``grad_iters`` iterations) or "implicit" (exact gradient of
            the converged plan by implicit differentiation, :func:`sinkhorn_log_implicit`).

    Returns:
        ``(loss, diagnostics)``: loss a 0-dim tensor (0 with a graph if no pair shares a class);
        diagnostics (all detached) ``{"pair_cost": {"m->n": 0-dim}, "transport", "structure",
        "consistency", "marginal_err", "log_u" (P, K), "niter"}``.

    Raises:
        KeyError: if the modality keys of the inputs differ.
        ValueError: on fewer than 2 modalities or shapes that differ across modalities.

    Example:
        >>> c = {"text": torch.eye(2), "audio": torch.eye(2)}
        >>> loss, diag = ot_alignment_loss(c, c, torch.tensor([True, True]))
        >>> bool(loss < 0.01)  # identical, well-separated classes align at almost no cost
        True
    """
    names = _check_alignment_inputs(centroids, prototypes)
    K = centroids[names[0]].shape[0]
    mask = _presence(present, names, K).to(centroids[names[0]].device)  # (M, K)
    cents = torch.stack([centroids[m] for m in names])  # (M, K, D)
    protos = torch.stack([prototypes[m] for m in names])
    loss, diag = ot_alignment_loss_stacked(cents, protos, mask, reg=reg, alpha=alpha, beta=beta,
                                           max_iter=max_iter, tol=tol, grad_iters=grad_iters, init=init,
                                           gradient=gradient)
    pairs = itertools.permutations(names, 2)
    diag["pair_cost"] = {f"{m}->{n}": c for (m, n), c in zip(pairs, diag["pair_cost"].unbind(0))}
    return loss, diag


def ot_alignment_loss_stacked(
    centroids: Tensor,
    prototypes: Tensor,
    present: Tensor,
    reg: float = 0.05,
    alpha: float = 0.1,
    beta: float = 0.05,
    max_iter: int = 100,
    tol: float = 0.0,
    grad_iters: Optional[int] = 10,
    init: Optional[Tensor] = None,
    check_every: int = 5,
    gradient: str = "implicit",
    solver: str = "sinkhorn",
) -> Tuple[Tensor, Dict[str, object]]:
    """:func:`ot_alignment_loss` on stacked inputs, the form a training step already holds.

    Args:
        centroids: (M, K, D) batch class centroids, modality m in row m.
        prototypes: (M, K, D) prototypes (detached here).
        present: (M, K) bool, class k usable for modality m (present in the batch and initialised).
        reg, alpha, beta, max_iter, tol, grad_iters, init: as in :func:`ot_alignment_loss`; the
            ordered pairs (m, n) follow ``itertools.permutations(range(M), 2)``.
        check_every: Sinkhorn iterations between convergence checks (when ``tol > 0``).
        gradient: "implicit" (exact gradient of the converged plan, :func:`sinkhorn_log_implicit`)
            or "unroll" (differentiate the last ``grad_iters`` iterations).
        solver: "sinkhorn" (always iterate) or "auto": with K = 2 classes the plan in closed form
            (:func:`_two_class_terms`, the exact fixed point; no iterations, plain autograd).

    Returns:
        ``(loss, diagnostics)`` as :func:`ot_alignment_loss`, except ``"pair_cost"``: a (P,) tensor.
        Under autocast or with half-precision inputs the loss is computed in float32.
    """
    M, K = centroids.shape[:2]
    if M < 2 or prototypes.shape != centroids.shape or present.shape != (M, K):
        raise ValueError(
            f"ot_alignment_loss_stacked: expected centroids and prototypes (M >= 2, K, D) of one shape and "
            f"present (M, K); got {tuple(centroids.shape)}, {tuple(prototypes.shape)}, {tuple(present.shape)}"
        )
    if gradient not in ("implicit", "unroll"):
        raise ValueError(f"ot_alignment_loss: gradient={gradient!r} is not one of implicit, unroll")
    if solver not in ("sinkhorn", "auto"):
        raise ValueError(f"ot_alignment_loss: solver={solver!r} is not one of sinkhorn, auto")
    if torch.is_autocast_enabled(centroids.device.type) or centroids.dtype in (torch.float16, torch.bfloat16):
        # the log-domain solve needs float32 (eps 0.05 turns costs into exponents up to 40): no autocast
        with torch.autocast(centroids.device.type, enabled=False):
            return ot_alignment_loss_stacked(
                centroids.float(), prototypes.float(), present, reg=reg, alpha=alpha, beta=beta, max_iter=max_iter,
                tol=tol, grad_iters=grad_iters, init=init, check_every=check_every, gradient=gradient,
                solver=solver)
    src_idx, dst_idx, reverse = _pair_index(M, centroids.device)  # (P,) each, cached
    src = centroids.index_select(0, src_idx)  # (P, K, D)
    dst = prototypes.detach().to(src.dtype).index_select(0, dst_idx)  # (P, K, D)
    mask = present.bool()
    common = mask.index_select(0, src_idx) & mask.index_select(0, dst_idx)  # (P, K)
    valid = common.any(-1)  # (P,)
    if solver == "auto" and K == 2:  # the whole loss in closed form: no plan tensor, no iterations
        parts = torch.stack(_two_class_terms(cosine_cost(src, dst), common, reverse, reg))  # (3, P)
        log = {"log_u": init if init is not None and init.shape == (src.shape[0], K) else
               torch.zeros(src.shape[0], K, dtype=src.dtype, device=src.device),
               "niter": 0, "err": torch.zeros((), dtype=src.dtype, device=src.device)}
        return _alignment_loss(parts, valid, alpha, beta, log)
    # pairs sharing no class get dummy uniform marginals so the batched solve stays finite
    weights = torch.where(valid.unsqueeze(-1), common.to(src.dtype), torch.ones_like(src[..., 0]))
    marg = weights / weights.sum(-1, keepdim=True)  # (P, K)
    pair_mask = marg.unsqueeze(-1) * marg.unsqueeze(-2) > 0  # (P, K, K)
    cost = torch.where(pair_mask, cosine_cost(src, dst), torch.zeros((), dtype=src.dtype, device=src.device))
    if init is not None and init.shape != marg.shape:
        init = None
    with warnings.catch_warnings():  # non-convergence is reported in diag["marginal_err"], once per call
        warnings.simplefilter("ignore", UserWarning)
        if gradient == "implicit":
            plan, log = sinkhorn_log_implicit(marg, marg, cost, reg, max_iter=max_iter, tol=tol, init=init,
                                              check_every=check_every)  # (P, K, K)
        else:
            plan, log = sinkhorn_log(marg, marg, cost, reg, max_iter=max_iter, tol=tol, log=True,
                                     grad_iters=grad_iters, init=init, check_every=check_every)
    target = torch.diag_embed(marg)  # (P, K, K), I_S / |S|
    parts = torch.stack([(plan * cost).sum(dim=(-2, -1)),  # transport
                         (plan - target).pow(2).sum(dim=(-2, -1)),  # structure
                         (plan - plan[reverse].transpose(-2, -1)).pow(2).sum(dim=(-2, -1))])  # consistency (3, P)
    return _alignment_loss(parts, valid, alpha, beta, log)


def _alignment_loss(parts: Tensor, valid: Tensor, alpha: float, beta: float,
                    log: Dict[str, Any]) -> Tuple[Tensor, Dict[str, object]]:
    """The loss and diagnostics of :func:`ot_alignment_loss_stacked` from the (3, P) per-pair
    transport, structure and consistency terms (mean over the valid pairs)."""
    w = valid.to(parts.dtype) / valid.sum().clamp_min(1)  # (P,), mean over valid pairs
    means = parts @ w  # (3,)
    loss = means[0] + alpha * means[1] + beta * means[2]
    transport, structure, consistency = means.detach().unbind(0)
    diag: Dict[str, object] = {"transport": transport, "structure": structure, "consistency": consistency,
                               "pair_cost": parts[0].detach(), "marginal_err": log["err"],
                               "log_u": log["log_u"].detach(), "niter": log["niter"]}
    return loss, diag
