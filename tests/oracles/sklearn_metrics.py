"""Oracle adapters: the metric protocols written directly on scikit-learn and scipy.

Each ``reference_*`` turns tensors into numpy and spells the protocol out the way the reference
code does it (boolean masks, per-interval loops, ``sklearn.metrics`` calls), independently of
``pase.metrics.functional``, which implements the same numbers on confusion matrices.
"""

from __future__ import annotations

import warnings
from typing import Dict, Sequence

import numpy as np
import torch
from scipy.stats import pearsonr
from sklearn.metrics import accuracy_score, f1_score, recall_score

__all__ = [
    "to_numpy",
    "reference_pearson",
    "reference_mosi",
    "reference_sims",
    "reference_iemocap_mult",
    "reference_multiclass",
]

EMOTIONS = ("Neutral", "Happy", "Sad", "Angry")


def to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _flat(x) -> np.ndarray:
    return to_numpy(x).reshape(-1)


def reference_pearson(preds, target) -> float:
    """scipy's Pearson r in float64 (NaN for constant input, with scipy's own warning)."""
    if _flat(preds).size < 2:
        return float("nan")  # scipy raises; the metric returns NaN with a warning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(pearsonr(_flat(preds).astype(np.float64), _flat(target).astype(np.float64))[0])


def reference_mosi(preds, target) -> Dict[str, float]:
    p, t = _flat(preds), _flat(target)
    nz = np.array([i for i, e in enumerate(t) if e != 0], dtype=np.int64)
    a7 = np.round(np.clip(p, -3.0, 3.0)) == np.round(np.clip(t, -3.0, 3.0))
    a5 = np.round(np.clip(p, -2.0, 2.0)) == np.round(np.clip(t, -2.0, 2.0))
    return {
        "Has0_acc_2": accuracy_score(t >= 0, p >= 0),
        "Has0_F1_score": f1_score(t >= 0, p >= 0, average="weighted"),
        "Non0_acc_2": accuracy_score(t[nz] > 0, p[nz] > 0),
        "Non0_F1_score": f1_score(t[nz] > 0, p[nz] > 0, average="weighted"),
        "Mult_acc_5": float(np.sum(a5)) / len(t),
        "Mult_acc_7": float(np.sum(a7)) / len(t),
        "MAE": float(np.mean(np.abs(p.astype(np.float64) - t.astype(np.float64)))),
        "Corr": reference_pearson(p, t),
    }


def _interval_classes(x: np.ndarray, bounds: Sequence[float]) -> np.ndarray:
    """Class i where bounds[i] < x <= bounds[i + 1], one interval at a time."""
    out = x.copy()
    for i in range(len(bounds) - 1):
        out[np.logical_and(x > bounds[i], x <= bounds[i + 1])] = i
    return out


def reference_sims(preds, target) -> Dict[str, float]:
    p = np.clip(_flat(preds), -1.0, 1.0)
    t = np.clip(_flat(target), -1.0, 1.0)
    bounds = {2: [-1.01, 0.0, 1.01], 3: [-1.01, -0.1, 0.1, 1.01], 5: [-1.01, -0.7, -0.1, 0.1, 0.7, 1.01]}
    cls = {n: (_interval_classes(p, b), _interval_classes(t, b)) for n, b in bounds.items()}
    out = {f"Mult_acc_{n}": float(np.sum(cp == ct)) / len(t) for n, (cp, ct) in cls.items()}
    out["F1_score"] = f1_score(cls[2][1], cls[2][0], average="weighted")
    out["MAE"] = float(np.mean(np.abs(p.astype(np.float64) - t.astype(np.float64))))
    out["Corr"] = reference_pearson(p, t)
    return out


def reference_iemocap_mult(preds, target) -> Dict[str, float]:
    """MulT: reshape to (N, 4, 2), argmax per emotion; an (N, 4) logit l becomes scores (0, l)."""
    p, t = to_numpy(preds), to_numpy(target).reshape(-1, 4)
    if p.ndim == 2:
        p = np.stack([np.zeros_like(p), p], axis=-1)
    p = p.reshape(-1, 4, 2)
    out: Dict[str, float] = {}
    for e, name in enumerate(EMOTIONS):
        hard = np.argmax(p[:, e], axis=1)
        out[f"{name}_acc"] = accuracy_score(t[:, e], hard)
        out[f"{name}_F1"] = f1_score(t[:, e], hard, average="weighted")
    out["Mean_acc"] = float(np.mean([out[f"{n}_acc"] for n in EMOTIONS]))
    out["Mean_F1"] = float(np.mean([out[f"{n}_F1"] for n in EMOTIONS]))
    return out


def reference_multiclass(preds, target) -> Dict[str, float]:
    hard = np.argmax(to_numpy(preds), axis=1)
    t = _flat(target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # UndefinedMetricWarning for classes absent from target
        return {
            "WA": accuracy_score(t, hard),
            "UA": recall_score(t, hard, average="macro"),
            "WF1": f1_score(t, hard, average="weighted"),
            "Macro_F1": f1_score(t, hard, average="macro"),
        }
