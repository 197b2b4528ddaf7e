"""Unimodal linear probes on frozen encoders: how much each modality's encoder has learned.

A probe fits a linear model on the frozen representation h^m of the train split and scores the
test split. Regression tasks get a logistic probe on the sign (Has0 Acc-2, the field's headline
number) and a ridge probe on the value (Corr); classification tasks a multinomial logistic
probe (accuracy). Inputs are standardised on the train split. scikit-learn does the fitting.
"""

from __future__ import annotations

from typing import Dict

import numpy as np
import torch

from ..data.contract import DataBundle
from ..training.datamodule import make_loader

__all__ = ["encoder_features", "linear_probe", "probe_model"]


@torch.no_grad()
def encoder_features(model: torch.nn.Module, bundle: DataBundle, split: str, batch_size: int = 512,
                     by_group: bool = False) -> Dict[str, np.ndarray]:
    """modality -> (N, D) frozen representations of ``split`` (model in eval mode), in dataset order
    (or group order when ``by_group``; ids follow in key ``"__ids__"``)."""
    was = model.training
    model.eval()
    feats: Dict[str, list] = {m: [] for m in model.modalities}
    ids = []
    for batch in make_loader(bundle, split, batch_size, False, 0, by_group=by_group):
        reps = model.encode(batch)
        for m in feats:
            feats[m].append(reps[m].float().cpu().numpy())
        ids += batch.ids
    model.train(was)
    out = {m: np.concatenate(v) for m, v in feats.items()}
    out["__ids__"] = np.array(ids)
    return out


def linear_probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                 kind: str, c: float = 1.0) -> Dict[str, float]:
    """Fit a linear probe on (x_train, y_train), score on the test pair.

    Args:
        x_*: (N, D) features; y_*: (N,) labels (float for regression, int for classification).
        kind: "regression" or "classification".
        c: inverse regularisation strength of the logistic probe (ridge alpha = 1 / c).

    Returns:
        regression: {"acc2", "corr"}; classification: {"acc"}.
    """
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_train)
    a, b = scaler.transform(x_train), scaler.transform(x_test)
    if kind == "regression":
        clf = LogisticRegression(C=c, max_iter=2000).fit(a, (y_train >= 0).astype(int))
        acc2 = float((clf.predict(b) == (y_test >= 0).astype(int)).mean())
        pred = Ridge(alpha=1.0 / c).fit(a, y_train).predict(b)
        corr = float(np.corrcoef(pred, y_test)[0, 1]) if pred.std() > 1e-12 else float("nan")
        return {"acc2": acc2, "corr": corr}
    clf = LogisticRegression(C=c, max_iter=2000).fit(a, y_train.astype(int))
    return {"acc": float((clf.predict(b) == y_test.astype(int)).mean())}


def probe_model(model: torch.nn.Module, bundle: DataBundle, test_split: str = "test") -> Dict[str, Dict[str, float]]:
    """A linear probe per modality on ``model``'s frozen encoders (fit on train, scored on ``test_split``)."""
    by_group = getattr(model, "context", None) is not None
    tr = encoder_features(model, bundle, "train", by_group=by_group)
    te = encoder_features(model, bundle, test_split, by_group=by_group)
    kind = bundle.task.kind
    ytr, yte = _labels(bundle, "train", tr["__ids__"]), _labels(bundle, test_split, te["__ids__"])
    return {m: linear_probe(tr[m], ytr, te[m], yte, "regression" if kind == "regression" else "classification")
            for m in model.modalities}


def _labels(bundle: DataBundle, split: str, ids: np.ndarray) -> np.ndarray:
    ds = bundle.splits[split]
    pos = {i: k for k, i in enumerate(ds.ids)}
    t = ds.target[[pos[i] for i in ids.tolist()]]
    if bundle.task.kind == "multilabel":
        t = t.argmax(-1)
    return t.numpy()
