"""Ground-truth effect probes on the built-in benchmark (pase.evaluation.probes)."""

import numpy as np
import torch

from pase.data import create_data
from pase.data.contract import select_modalities
from pase.evaluation.probes import effect_probe, probe_model


class EffectModel(torch.nn.Module):
    """A stand-in model whose 'encoder' for modality m returns column ``cols[m]`` of the
    ground-truth effects (looked up by sample id) plus Gaussian noise of scale ``noise``."""

    def __init__(self, bundle, cols, noise=0.0):
        super().__init__()
        self.modalities = list(cols)
        self.cols, self.noise = cols, noise
        self.table = {i: ds.effects[k] for ds in bundle.splits.values() for k, i in enumerate(ds.ids)}
        self.gen = torch.Generator().manual_seed(0)

    def encode(self, batch):
        eff = torch.stack([self.table[i] for i in batch.ids])  # (B, M_all)
        return {m: eff[:, [j]] + self.noise * torch.randn(len(batch.ids), 1, generator=self.gen)
                for m, j in self.cols.items()}


def test_effect_probe_closed_cases():
    g = np.random.default_rng(0)
    f_tr, f_te = g.standard_normal(800), g.standard_normal(400)
    noise_tr, noise_te = g.standard_normal((800, 5)), g.standard_normal((400, 5))
    exact = effect_probe(np.c_[f_tr, noise_tr], f_tr, np.c_[f_te, noise_te], f_te)
    assert exact["effect_r2"] > 0.99 and exact["effect_acc"] > 0.97
    blind = effect_probe(noise_tr, f_tr, noise_te, f_te)
    assert blind["effect_r2"] < 0.03 and abs(blind["effect_acc"] - 0.5) < 0.08


def test_a_unit_that_fired_once_on_train_does_not_swing_the_probe():
    """A near-dead ReLU unit: active on one training sample with a tiny value, so its train SD is
    tiny and a test activation of it lies hundreds of SDs out. Standardising without clipping
    (a StandardScaler + Ridge pipeline) gives a large negative R^2 here; the probe clips test
    inputs to the standardised train range, so the informative column decides. Both probes use
    the same standardisation (``standardise``), checked against scikit-learn's scaler."""
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from pase.evaluation.probes import linear_probe, standardise

    g = np.random.default_rng(0)
    f_tr, f_te = g.standard_normal(300), g.standard_normal(100)
    dead_tr, dead_te = np.zeros(300), np.zeros(100)
    dead_tr[0], dead_te[:5] = 1e-5, 1e-2  # fired once on train; on five test samples, 1000 x larger
    x_tr = np.c_[f_tr + 0.5 * g.standard_normal(300), dead_tr]
    x_te = np.c_[f_te + 0.5 * g.standard_normal(100), dead_te]
    unclipped = r2_score(f_te, make_pipeline(StandardScaler(), Ridge(alpha=1.0)).fit(x_tr, f_tr).predict(x_te))
    assert unclipped < -1  # the failure this guards against
    assert effect_probe(x_tr, f_tr, x_te, f_te)["effect_r2"] > 0.6  # 1 / 1.25 for the informative column
    a, b = standardise(x_tr, x_te)
    scaler = StandardScaler().fit(x_tr)
    np.testing.assert_allclose(a, scaler.transform(x_tr))
    np.testing.assert_allclose(b[:, 0], np.clip(scaler.transform(x_te)[:, 0], a[:, 0].min(), a[:, 0].max()))
    assert b[:5, 1].max() == a[:, 1].max()  # the far-out activations sit at the train maximum
    assert linear_probe(x_tr, f_tr, x_te, f_te, "regression")["corr"] > 0.8


def test_probe_model_uses_each_modalitys_own_effect_column():
    bundle = create_data("synthetic", sizes=[400, 50, 300])
    right = probe_model(EffectModel(bundle, {"text": 0, "audio": 1, "vision": 2}, noise=0.1), bundle)
    for m in ("text", "audio", "vision"):
        assert right[m]["effect_r2"] > 0.95, (m, right[m])  # the representation is its own effect
    swapped = probe_model(EffectModel(bundle, {"text": 1, "audio": 2, "vision": 0}, noise=0.1), bundle)
    assert all(swapped[m]["effect_r2"] < 0.05 for m in ("text", "audio", "vision"))  # effects are independent
    # a unimodal view keeps the full effects table: vision is still column 2
    solo = select_modalities(bundle, ["vision"])
    got = probe_model(EffectModel(solo, {"vision": 2}, noise=0.1), solo)
    assert got["vision"]["effect_r2"] > 0.95 and set(got["vision"]) == {"acc2", "corr", "effect_r2", "effect_acc"}


def test_no_effect_keys_without_ground_truth():
    bundle = create_data("synthetic", sizes=[200, 50, 100])
    model = EffectModel(bundle, {"text": 0, "audio": 1, "vision": 2})
    for ds in bundle.splits.values():
        ds.effects = None
    assert all(set(v) == {"acc2", "corr"} for v in probe_model(model, bundle).values())


def test_a_label_probe_of_one_class_on_train_predicts_that_class():
    """Labels of one sign (regression) or one class on the train split stopped the diagnosis with
    scikit-learn's 'needs samples of at least 2 classes', naming neither probe nor modality (a
    review); the probe predicts the constant, as it did for a multilabel column."""
    from pase.evaluation.probes import linear_probe

    rng = np.random.default_rng(0)
    x_tr, x_te = rng.normal(size=(40, 3)), rng.normal(size=(30, 3))
    y_te = rng.normal(size=30)
    got = linear_probe(x_tr, np.abs(rng.normal(size=40)), x_te, y_te, "regression")
    assert got["acc2"] == float(np.mean(y_te >= 0))
    cls_te = rng.integers(0, 3, size=30)
    assert linear_probe(x_tr, np.full(40, 2), x_te, cls_te, "classification")["acc"] == float(np.mean(cls_te == 2))
