"""The field's metric protocols as pure functions: MMSA (MOSI, MOSEI, SIMS), MulT IEMOCAP, GCNet.

Every public function takes ``preds`` and ``target`` as torch tensors (any device, any float
dtype) or numpy arrays, validates them in one helper (``check_inputs``) and returns plain Python
floats keyed by the names the reference code prints. Values are fractions in [0, 1] (MAE and Corr
aside) and are not rounded (MMSA rounds to 4 decimals when it prints; that is for the report).

Definitions follow ``thuiar/MMSA:src/MMSA/utils/metricsTop.py`` (regression branch) and
``yaohungt/Multimodal-Transformer:src/eval_metrics.py`` (``eval_iemocap``); the GCNet protocol
is WA (accuracy), UA (macro recall) and weighted F1. Labels for F1 and recall are those present
in target or prediction, as in scikit-learn; a class's F1 is 2 TP / (2 TP + FP + FN).

Discretisation (clip, round, SIMS cut points) runs in the input's own float dtype, as MMSA's
numpy does, so a float32 prediction of exactly 0.1 falls on the cut point, not above it;
MAE and Corr are computed in float64.
"""

from __future__ import annotations

import warnings
from typing import Dict, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = [
    "ArrayLike",
    "IEMOCAP_EMOTIONS",
    "TASK_KINDS",
    "check_inputs",
    "mean_absolute_error",
    "pearson_corr",
    "mosi_metrics",
    "sims_metrics",
    "iemocap_mult_metrics",
    "multiclass_metrics",
]

ArrayLike = Union[torch.Tensor, np.ndarray, Sequence[float]]

#: MulT's emotion order for IEMOCAP (one binary decision each)
IEMOCAP_EMOTIONS: Tuple[str, ...] = ("Neutral", "Happy", "Sad", "Angry")

#: the target kinds of ``pase.data.TaskSpec.kind``
TASK_KINDS: Tuple[str, ...] = ("regression", "classification", "multilabel")

# SIMS cut points inside [-1, 1]; class i holds edges[i-1] < x <= edges[i] (MMSA's `>` and `<=`)
_SIMS_EDGES: Dict[int, Tuple[float, ...]] = {2: (0.0,), 3: (-0.1, 0.1), 5: (-0.7, -0.1, 0.1, 0.7)}

# Corr: a standard deviation at float64 rounding level (below _CORR_ZERO * max|x|: the centred
# values are rounding noise) is zero and gives NaN; one below _corr_near(dtype) * max|x| is kept, as
# np.corrcoef (MMSA) and scipy keep it, with a warning that r rests on tiny differences: below
# sqrt(eps64), or, for an input of lower precision, below _CORR_NEAR_ULPS of its own eps (values that
# differ in their last 8 bits: a collapsed float32 model's predictions 1 ulp apart have a std of
# about 5e-8 of their size, above sqrt(eps64) = 1.5e-8, and went unwarned: a review)
_EPS64 = float(np.finfo(np.float64).eps)
_CORR_ZERO = 16 * _EPS64
_CORR_NEAR = _EPS64 ** 0.5
_CORR_NEAR_ULPS = 256


def _corr_near(dtype: np.dtype) -> float:
    """The relative standard deviation below which an input of ``dtype`` is nearly constant for Corr.
    A half-precision numpy input counts as float32, as half-precision tensors are converted to it
    (``_to_numpy``): float16's own 256 ulps were 25 % of the largest value, and a healthy model's
    float16 predictions were called collapsed (a review)."""
    return max(_CORR_NEAR, _CORR_NEAR_ULPS * float(np.finfo(np.promote_types(dtype, np.float32)).eps))


# ----------------------------------------------------------------------------- input checks
def _to_numpy(x: ArrayLike) -> np.ndarray:
    """Tensor (any device) or array-like -> numpy array; half precisions become float32."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _as_float(x: np.ndarray) -> np.ndarray:
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float64)


def _squeeze_col(x: np.ndarray) -> np.ndarray:
    """(N, 1) -> (N,); anything else unchanged."""
    return x[:, 0] if x.ndim == 2 and x.shape[1] == 1 else x


def _check_shapes(ok: bool, preds: np.ndarray, target: np.ndarray, expected: str) -> None:
    """The one shape check: its message names both shapes and what was expected."""
    if not ok:
        raise ValueError(
            f"preds has shape {tuple(preds.shape)} but target has {tuple(target.shape)}; expected {expected}"
        )


def _check_finite(name: str, x: np.ndarray) -> None:
    """NaN or inf anywhere is an error: the model diverged or a label is missing."""
    if not np.issubdtype(x.dtype, np.floating):
        return
    for what, bad in (("NaN", np.isnan(x)), ("infinite", np.isinf(x))):
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{name} contains {int(bad.sum())} {what} value(s) (first at index {first}); "
                f"metrics are undefined there, check the model for divergence or the data for missing labels"
            )


def _check_integral(name: str, x: np.ndarray, low: int, high: int, why: str) -> np.ndarray:
    """``x`` holds integers in [low, high); returns it as int64."""
    if np.issubdtype(x.dtype, np.floating) and not np.all(np.equal(np.mod(x, 1), 0)):
        raise ValueError(f"{name} must hold integer values ({why}), got non-integral floats")
    xi = x.astype(np.int64)
    if xi.size and (xi.min() < low or xi.max() >= high):
        raise ValueError(f"{name} values must lie in [{low}, {high - 1}] ({why}), got range [{xi.min()}, {xi.max()}]")
    return xi


def check_inputs(task_kind: str, preds: ArrayLike, target: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
    """Validate one (preds, target) pair and return them as numpy arrays.

    Args:
        task_kind: "regression" (preds, target (N,) or (N, 1)), "classification" (preds (N, K)
            logits, target (N,) class indices in [0, K)) or "multilabel" (preds (N, E) logits or
            (N, E, 2) scores, target (N, E) in {0, 1}).
        preds: model outputs, torch tensor or array-like.
        target: ground truth, torch tensor or array-like.

    Returns:
        ``(preds, target)``: regression (N,) floats in the input dtype; classification (N, K)
        floats and (N,) int64; multilabel (N, E) or (N, E, 2) floats and (N, E) int64.

    Raises:
        ValueError: on a shape mismatch (the message names both shapes), an empty batch, NaN or
            infinite values, or targets outside their range.

    >>> check_inputs("regression", [[0.5], [1.0]], [0.0, 2.0])[0].shape
    (2,)
    """
    p, t = _to_numpy(preds), _to_numpy(target)
    if task_kind == "regression":
        p2, t2 = _squeeze_col(p), _squeeze_col(t)
        _check_shapes(p2.ndim == 1 and p2.shape == t2.shape, p, t, "preds and target of shape (N,) or (N, 1)")
        p, t = _as_float(p2), _as_float(t2)
    elif task_kind == "classification":
        t2 = _squeeze_col(t)
        ok = p.ndim == 2 and p.shape[1] >= 2 and t2.ndim == 1 and p.shape[0] == t2.shape[0]
        _check_shapes(ok, p, t, "preds (N, K) logits with K >= 2 and target (N,) class indices")
        p, t = _as_float(p), t2
    elif task_kind == "multilabel":
        ok = t.ndim == 2 and p.shape[:2] == t.shape and (p.ndim == 2 or (p.ndim == 3 and p.shape[2] == 2))
        _check_shapes(ok, p, t, "preds (N, E) logits or (N, E, 2) scores and target (N, E) in {0, 1}")
        p = _as_float(p)
    else:
        raise ValueError(f"unknown task_kind {task_kind!r}; valid: {', '.join(TASK_KINDS)}")
    if p.shape[0] == 0:
        raise ValueError("preds and target are empty (N = 0); metrics need at least one sample")
    _check_finite("preds", p)
    _check_finite("target", t)
    if task_kind == "classification":
        t = _check_integral("target", t, 0, p.shape[1], f"class indices for K={p.shape[1]} logit columns")
    elif task_kind == "multilabel":
        t = _check_integral("target", t, 0, 2, "one binary label per emotion")
    return p, t


# ----------------------------------------------------------------------------- building blocks
def _accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(y_true == y_pred))


def _confusion(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """(L, L) counts, rows = truth, over the L labels present in either array (sorted)."""
    labels = np.union1d(y_true, y_pred)
    ti, pi = np.searchsorted(labels, y_true), np.searchsorted(labels, y_pred)
    n = labels.size
    return np.bincount(ti * n + pi, minlength=n * n).reshape(n, n)


def _f1_per_class(cm: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per-class F1 = 2 TP / (2 TP + FP + FN) and support (true count) from a confusion matrix."""
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    denom = (support + predicted).astype(np.float64)  # > 0: every label occurs somewhere
    return 2.0 * tp / denom, support


def _weighted_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """scikit-learn's ``f1_score(average="weighted")``: per-class F1 weighted by support."""
    f1, support = _f1_per_class(_confusion(y_true, y_pred))
    return float(np.sum(f1 * support) / np.sum(support))


def _round_acc(preds: np.ndarray, target: np.ndarray, bound: float) -> float:
    """Clip to [-bound, bound], round half to even, count exact matches (Acc-5: 2, Acc-7: 3)."""
    p = np.round(np.clip(preds, -bound, bound))
    t = np.round(np.clip(target, -bound, bound))
    return _accuracy(p, t)


def _mae(preds: np.ndarray, target: np.ndarray) -> float:
    return float(np.mean(np.abs(preds.astype(np.float64) - target.astype(np.float64))))


def _pearson(preds: np.ndarray, target: np.ndarray) -> float:
    """Pearson r in float64, as ``np.corrcoef``; NaN with a warning when a variance is zero (at
    float64 rounding level), a warning when it is nearly zero for the input's own dtype (r is still
    returned; ``_corr_near``)."""
    near = {"preds": _corr_near(preds.dtype), "target": _corr_near(target.dtype)}  # before the cast: the
    # input's own precision tells what "differ in the last bits" means
    x, y = preds.astype(np.float64), target.astype(np.float64)
    if x.size < 2:
        warnings.warn(f"Corr needs at least 2 samples, got {x.size}; returning NaN", RuntimeWarning, stacklevel=3)
        return float("nan")
    # scale each by a power of two near its largest magnitude: exact (r is bitwise unchanged), and the
    # sums of squares below neither overflow above ~1e154 nor underflow below ~1e-154 (r was 0 or NaN)
    ex, ey = (int(np.frexp(np.max(np.abs(v)))[1]) for v in (x, y))
    x, y = np.ldexp(x, -ex), np.ldexp(y, -ey)
    xc, y_c = x - x.mean(), y - y.mean()
    for name, v, c, e in (("preds", x, xc, ex), ("target", y, y_c, ey)):
        # the messages give the data's own std and magnitude (2^e back; they showed the scaled ones)
        std, scale = float(np.ldexp(np.sqrt(np.mean(c * c)), e)), float(np.ldexp(np.max(np.abs(v)), e))
        if std <= _CORR_ZERO * scale:
            warnings.warn(
                f"Corr: the variance of {name} is zero (std {std:.3g} over {v.size} samples); Pearson "
                f"correlation is undefined, returning NaN (constant predictions often mean the model "
                f"collapsed to the mean label)",
                RuntimeWarning,
                stacklevel=3,
            )
            return float("nan")
        if std <= near[name] * scale:
            warnings.warn(
                f"Corr: {name} are nearly constant (std {std:.3g} against values up to {scale:.3g}, "
                f"{v.size} samples); the correlation rests on tiny differences (a collapsed model?)",
                RuntimeWarning,
                stacklevel=3,
            )
    r = np.sum(xc * y_c) / (np.sqrt(np.sum(xc * xc)) * np.sqrt(np.sum(y_c * y_c)))
    return float(np.clip(r, -1.0, 1.0))


def _sims_classes(x: np.ndarray, n: int) -> np.ndarray:
    """SIMS class of each clipped score: edges[i-1] < x <= edges[i], compared in x's dtype."""
    return np.searchsorted(np.asarray(_SIMS_EDGES[n], dtype=x.dtype), x, side="left")


# ----------------------------------------------------------------------------- public metrics
def mean_absolute_error(preds: ArrayLike, target: ArrayLike) -> float:
    """Mean |preds - target| over all samples, unclipped, in float64.

    Args:
        preds: (N,) or (N, 1) predictions.
        target: (N,) or (N, 1) labels.

    >>> mean_absolute_error([0.5, -1.0], [0.0, 1.0])
    1.25
    """
    return _mae(*check_inputs("regression", preds, target))


def pearson_corr(preds: ArrayLike, target: ArrayLike) -> float:
    """Pearson correlation over all samples; NaN with a ``RuntimeWarning`` if a variance is ~0.

    Args:
        preds: (N,) or (N, 1) predictions.
        target: (N,) or (N, 1) labels.

    >>> round(pearson_corr([1.0, 2.0, 3.0], [2.0, 4.0, 7.0]), 4)
    0.9934
    """
    return _pearson(*check_inputs("regression", preds, target))


def mosi_metrics(preds: ArrayLike, target: ArrayLike) -> Dict[str, float]:
    """CMU-MOSI / CMU-MOSEI regression metrics, MMSA names and definitions.

    ``Has0_*``: truth and prediction binarised as (>= 0) vs (< 0). ``Non0_*``: samples whose
    label is exactly 0 are dropped, then (> 0) vs (<= 0). F1 is support-weighted.
    ``Mult_acc_5`` / ``Mult_acc_7``: both clipped to [-2, 2] / [-3, 3], rounded half to even,
    exact matches. ``MAE``: unclipped, all samples. ``Corr``: Pearson, all samples.

    Args:
        preds: (N,) or (N, 1) predicted sentiment scores.
        target: (N,) or (N, 1) labels in [-3, 3].

    Returns:
        Has0_acc_2, Has0_F1_score, Non0_acc_2, Non0_F1_score, Mult_acc_5, Mult_acc_7, MAE, Corr.
        The Non0 pair is NaN (with a warning) when every label is 0.

    >>> m = mosi_metrics([2.4, -0.4, 0.0, 1.5], [3.0, -1.0, 0.0, 2.0])
    >>> m["Has0_acc_2"], m["Non0_acc_2"], m["Mult_acc_7"], round(m["MAE"], 4)
    (1.0, 1.0, 0.5, 0.425)
    """
    p, t = check_inputs("regression", preds, target)
    out = {"Has0_acc_2": _accuracy(t >= 0, p >= 0), "Has0_F1_score": _weighted_f1(t >= 0, p >= 0)}
    keep = t != 0
    if keep.any():
        tn, pn = t[keep] > 0, p[keep] > 0
        out.update(Non0_acc_2=_accuracy(tn, pn), Non0_F1_score=_weighted_f1(tn, pn))
    else:
        warnings.warn("Non0_acc_2 / Non0_F1_score: every label is 0; returning NaN", RuntimeWarning, stacklevel=2)
        out.update(Non0_acc_2=float("nan"), Non0_F1_score=float("nan"))
    out["Mult_acc_5"] = _round_acc(p, t, 2.0)
    out["Mult_acc_7"] = _round_acc(p, t, 3.0)
    out["MAE"] = _mae(p, t)
    out["Corr"] = _pearson(p, t)
    return out


def sims_metrics(preds: ArrayLike, target: ArrayLike) -> Dict[str, float]:
    """CH-SIMS regression metrics, MMSA names and definitions.

    Predictions and labels are first clipped to [-1, 1] (MMSA computes MAE and Corr on the
    clipped values too). Classes are intervals closed on the right: ``Mult_acc_2``
    [-1, 0], (0, 1]; ``Mult_acc_3`` [-1, -0.1], (-0.1, 0.1], (0.1, 1]; ``Mult_acc_5``
    [-1, -0.7], (-0.7, -0.1], (-0.1, 0.1], (0.1, 0.7], (0.7, 1]. ``F1_score`` is the
    support-weighted F1 of the 2-class split.

    Args:
        preds: (N,) or (N, 1) predicted scores.
        target: (N,) or (N, 1) labels in [-1, 1].

    Returns:
        Mult_acc_2, Mult_acc_3, Mult_acc_5, F1_score, MAE, Corr.

    >>> m = sims_metrics([0.1, -0.7, 1.4], [0.0, -0.8, 0.6])
    >>> m["Mult_acc_3"], round(m["Mult_acc_5"], 4), round(m["MAE"], 4)
    (1.0, 0.6667, 0.2)
    """
    p, t = check_inputs("regression", preds, target)
    p, t = np.clip(p, -1.0, 1.0), np.clip(t, -1.0, 1.0)
    out = {f"Mult_acc_{n}": _accuracy(_sims_classes(t, n), _sims_classes(p, n)) for n in (2, 3, 5)}
    out["F1_score"] = _weighted_f1(_sims_classes(t, 2), _sims_classes(p, 2))
    out["MAE"] = _mae(p, t)
    out["Corr"] = _pearson(p, t)
    return out


def iemocap_mult_metrics(
    preds: ArrayLike, target: ArrayLike, emotions: Sequence[str] = IEMOCAP_EMOTIONS
) -> Dict[str, float]:
    """MulT's IEMOCAP protocol: one binary decision per emotion, accuracy and weighted F1 each.

    A (N, E) input holds one logit per emotion and predicts "present" where logit > 0; a
    (N, E, 2) input (MulT's own head) predicts the argmax over the last axis. The two agree
    with logit = score[..., 1] - score[..., 0], ties going to "absent" in both.

    Args:
        preds: (N, E) logits or (N, E, 2) scores.
        target: (N, E) labels in {0, 1}.
        emotions: the E names, in column order (MulT: Neutral, Happy, Sad, Angry).

    Returns:
        ``<Emotion>_acc`` and ``<Emotion>_F1`` per emotion, then ``Mean_acc`` and ``Mean_F1``.

    >>> m = iemocap_mult_metrics([[2.0, -1.0, 0.0, 3.0]], [[1, 0, 0, 1]])
    >>> m["Neutral_acc"], m["Mean_acc"], m["Mean_F1"]
    (1.0, 1.0, 1.0)
    """
    p, t = check_inputs("multilabel", preds, target)
    if t.shape[1] != len(emotions):
        raise ValueError(f"target has {t.shape[1]} emotion columns but {len(emotions)} emotion names were given")
    hard = p.argmax(axis=2) if p.ndim == 3 else (p > 0).astype(np.int64)  # (N, E)
    out: Dict[str, float] = {}
    for e, name in enumerate(emotions):
        out[f"{name}_acc"] = _accuracy(t[:, e], hard[:, e])
        out[f"{name}_F1"] = _weighted_f1(t[:, e], hard[:, e])
    out["Mean_acc"] = float(np.mean([out[f"{n}_acc"] for n in emotions]))
    out["Mean_F1"] = float(np.mean([out[f"{n}_F1"] for n in emotions]))
    return out


def multiclass_metrics(preds: ArrayLike, target: ArrayLike) -> Dict[str, float]:
    """Single-label classification, GCNet protocol (IEMOCAP-4 / IEMOCAP-6): WA, UA, WF1, Macro_F1.

    The prediction is the argmax of the logits (first index on ties). ``WA`` is accuracy,
    ``UA`` the unweighted mean of per-class recall (scikit-learn ``recall_score(average=
    "macro")``; equal to ``balanced_accuracy_score`` unless a class is predicted that never
    occurs in the target, which then counts with recall 0), ``WF1`` the support-weighted F1
    and ``Macro_F1`` the unweighted mean F1. UA and Macro_F1 average over the labels that occur in the
    target or the predictions (as scikit-learn does), not over all K (docs/evaluation.md, "multiclass").

    Args:
        preds: (N, K) logits (or probabilities).
        target: (N,) class indices in [0, K).

    Returns:
        WA, UA, WF1, Macro_F1.

    >>> m = multiclass_metrics([[2.0, 0.1], [0.3, 1.0], [1.0, 0.0]], [0, 1, 1])
    >>> round(m["WA"], 4), m["UA"]
    (0.6667, 0.75)
    """
    p, t = check_inputs("classification", preds, target)
    hard = p.argmax(axis=1)  # (N,)
    cm = _confusion(t, hard)
    f1, support = _f1_per_class(cm)
    recall = np.where(support > 0, np.diag(cm) / np.maximum(support, 1), 0.0)
    return {
        "WA": _accuracy(t, hard),
        "UA": float(np.mean(recall)),
        "WF1": float(np.sum(f1 * support) / np.sum(support)),
        "Macro_F1": float(np.mean(f1)),
    }
