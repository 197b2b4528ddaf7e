"""Unimodal linear probes on frozen encoders: how much each modality's encoder has learned.

A probe fits a linear model on the frozen representation h^m of the train split and scores the
test split. Regression tasks get a logistic probe on the sign (Has0 Acc-2, the field's headline
number) and a ridge probe on the value (Corr); classification tasks a multinomial logistic
probe (accuracy); multi-label tasks (MulT's IEMOCAP) a binary logistic probe per label, scored
by the mean per-label accuracy (MulT's per-emotion accuracy, averaged). Inputs are standardised
on the train split, and test inputs clipped to the standardised range seen on train
(``standardise``): a ReLU unit that fired on one training sample has a tiny train spread, so an
activation of it at test time would otherwise be hundreds of standard deviations out and swing
the probe's prediction (an effect R^2 of -17 on a 1-epoch model). scikit-learn does the fitting.

Where the data carry ground truth (the built-in benchmark's ``effects``: each modality's own
unit-variance effect f_m on the label), each encoder also gets an *effect probe*: a ridge probe
of f_m (``effect_r2``, R^2 on the test split) and a logistic probe of f_m above its train median
(``effect_acc``). The label probe mixes in what the other modalities explain (a perfect vision
encoder reaches only about 0.66 label Acc-2 when vision explains a quarter of the label); the
effect probe asks directly how much of its own signal the encoder has learned.
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
import torch

from ..data.contract import DataBundle
from ..training.datamodule import make_loader
from ..training.precision import inference

__all__ = ["encoder_features", "standardise", "linear_probe", "effect_probe", "probe_model"]


@torch.no_grad()
def encoder_features(model: torch.nn.Module, bundle: DataBundle, split: str, batch_size: int = 512,
                     by_group: bool = False) -> Dict[str, np.ndarray]:
    """modality -> (N, D) frozen representations of ``split`` (model in eval mode), in dataset order
    (or group order when ``by_group``; ids follow in key ``"__ids__"``)."""
    was = model.training
    model.eval()
    feats: Dict[str, list] = {m: [] for m in model.modalities}
    ids = []
    with inference(model) as convert:
        for batch in make_loader(bundle, split, batch_size, False, 0, by_group=by_group):
            reps = model.encode(convert(batch))
            for m in feats:
                feats[m].append(reps[m].float().cpu().numpy())
            ids += batch.ids
    model.train(was)
    out = {m: np.concatenate(v) for m, v in feats.items()}
    out["__ids__"] = np.array(ids)
    return out


def standardise(x_train: np.ndarray, x_test: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Both inputs standardised with the train split's mean and SD (scikit-learn's StandardScaler),
    the test input then clipped per column to the range the train split spans, so a probe is never
    asked to extrapolate beyond the values it was fit on."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_train)
    a, b = scaler.transform(x_train), scaler.transform(x_test)
    return a, np.clip(b, a.min(0), a.max(0))


def linear_probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                 kind: str, c: float = 1.0) -> Dict[str, float]:
    """Fit a linear probe on (x_train, y_train), score on the test pair.

    Args:
        x_*: (N, D) features; y_*: (N,) labels (float for regression, int for classification),
            (N, L) 0/1 labels for multilabel.
        kind: "regression", "classification" or "multilabel".
        c: inverse regularisation strength of the logistic probe (ridge alpha = 1 / c).

    Returns:
        regression: {"acc2", "corr"}; classification: {"acc"}; multilabel: {"acc"}, the mean
        over labels of each label's binary accuracy. A class (a sign, a label) constant on the
        train split is predicted as that constant.
    """
    from sklearn.linear_model import LogisticRegression, Ridge

    a, b = standardise(x_train, x_test)

    def classify(y: np.ndarray) -> np.ndarray:  # a class constant on train is predicted as that constant
        # (scikit-learn's "needs samples of at least 2 classes" named neither probe nor modality)
        return (np.full(len(b), y[0]) if np.all(y == y[0])
                else LogisticRegression(C=c, max_iter=2000).fit(a, y).predict(b))

    if kind == "regression":
        acc2 = float((classify((y_train >= 0).astype(int)) == (y_test >= 0).astype(int)).mean())
        pred = Ridge(alpha=1.0 / c).fit(a, y_train).predict(b)
        corr = float(np.corrcoef(pred, y_test)[0, 1]) if pred.std() > 1e-12 else float("nan")
        return {"acc2": acc2, "corr": corr}
    if kind == "multilabel":
        accs = []
        for j in range(y_train.shape[1]):
            accs.append(float((classify(y_train[:, j].astype(int)) == y_test[:, j].astype(int)).mean()))
        return {"acc": float(np.mean(accs))}
    return {"acc": float((classify(y_train.astype(int)) == y_test.astype(int)).mean())}


def effect_probe(x_train: np.ndarray, f_train: np.ndarray, x_test: np.ndarray, f_test: np.ndarray,
                 c: float = 1.0) -> Dict[str, float]:
    """Probe of a modality's own ground-truth effect f (N,): {"effect_r2", "effect_acc"}.

    ``effect_r2``: R^2 of a ridge probe (alpha = 1 / c) on the test pair; ``effect_acc``:
    accuracy of a logistic probe (C = c) of f above its train median.
    """
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.metrics import r2_score

    a, b = standardise(x_train, x_test)
    r2 = float(r2_score(f_test, Ridge(alpha=1.0 / c).fit(a, f_train).predict(b)))
    med = float(np.median(f_train))
    clf = LogisticRegression(C=c, max_iter=2000).fit(a, (f_train > med).astype(int))
    return {"effect_r2": r2, "effect_acc": float((clf.predict(b) == (f_test > med).astype(int)).mean())}


def probe_model(model: torch.nn.Module, bundle: DataBundle, test_split: str = "test") -> Dict[str, Dict[str, float]]:
    """A linear probe per modality on ``model``'s frozen encoders (fit on train, scored on ``test_split``),
    plus the effect probes where the splits carry ground-truth ``effects`` (N, M_all) in the
    order of ``bundle.info["effects"]``."""
    by_group = getattr(model, "context", None) is not None
    tr = encoder_features(model, bundle, "train", by_group=by_group)
    te = encoder_features(model, bundle, test_split, by_group=by_group)
    kind = bundle.task.kind
    ytr, yte = _labels(bundle, "train", tr["__ids__"]), _labels(bundle, test_split, te["__ids__"])
    out = {m: linear_probe(tr[m], ytr, te[m], yte, kind) for m in model.modalities}
    order = list(bundle.info.get("effects", {}))
    if all(getattr(bundle.splits[s], "effects", None) is not None for s in ("train", test_split)) and order:
        for m in model.modalities:
            if m in order:
                j = order.index(m)
                out[m].update(effect_probe(tr[m], _rows(bundle, "train", tr["__ids__"], j), te[m],
                                           _rows(bundle, test_split, te["__ids__"], j)))
    return out


def _rows(bundle: DataBundle, split: str, ids: np.ndarray, j: int) -> np.ndarray:
    """Column j of the split's ground-truth effects, in the order of ``ids``."""
    ds = bundle.splits[split]
    pos = {i: k for k, i in enumerate(ds.ids)}
    return ds.effects[[pos[i] for i in ids.tolist()], j].numpy()


def _labels(bundle: DataBundle, split: str, ids: np.ndarray) -> np.ndarray:
    """The probe targets of ``ids``: (N,) values or classes, (N, L) 0/1 labels for multilabel."""
    ds = bundle.splits[split]
    pos = {i: k for k, i in enumerate(ds.ids)}
    return ds.target[[pos[i] for i in ids.tolist()]].numpy()
