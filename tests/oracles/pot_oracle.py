"""Reference adapter for POT (test-only): torch tensors in, numpy through POT, torch tensors out."""

from __future__ import annotations

import numpy as np
import ot
import torch
from torch import Tensor

__all__ = ["reference_sinkhorn_log", "reference_emd_cost"]


def _np(x: Tensor) -> np.ndarray:
    return x.detach().cpu().double().numpy()


def reference_sinkhorn_log(a: Tensor, b: Tensor, M: Tensor, reg: float, max_iter: int = 100000,
                           tol: float = 1e-13) -> Tensor:
    """POT's ``ot.bregman.sinkhorn_log`` plan (K1, K2) for one problem, as a float64 tensor."""
    plan = ot.bregman.sinkhorn_log(_np(a), _np(b), _np(M), reg, numItermax=max_iter, stopThr=tol)
    return torch.from_numpy(np.asarray(plan))


def reference_emd_cost(a: Tensor, b: Tensor, M: Tensor) -> float:
    """Exact (unregularised) OT cost <P*, M> from ``ot.emd``."""
    a_np, b_np = _np(a), _np(b)
    plan = ot.emd(a_np / a_np.sum(), b_np / b_np.sum(), _np(M))
    return float((plan * _np(M)).sum())
