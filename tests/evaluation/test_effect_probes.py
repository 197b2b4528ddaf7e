"""Ground-truth effect probes on the built-in benchmark (pase.evaluation.probes)."""

import numpy as np
import pytest
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
    # R^2 of the prediction against the truth: about 0 for a blind probe (scored the other way round,
    # the truth against a nearly constant prediction, it is hugely negative)
    assert -0.05 < blind["effect_r2"] < 0.03 and abs(blind["effect_acc"] - 0.5) < 0.08


def test_the_effect_classes_are_split_at_the_train_median():
    """effect_acc asks whether f lies above its *train* median: test effects all above it are all
    class 1 (a perfect representation scores 1.0; split at the test median, half would be class 0)."""
    g = np.random.default_rng(0)
    f_tr = g.standard_normal(400)
    f_te = np.abs(g.standard_normal(200)) + 0.5  # every test effect above the train median (about 0)
    got = effect_probe(f_tr[:, None], f_tr, f_te[:, None], f_te)
    assert got["effect_acc"] == 1.0


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


def test_probe_model_scores_the_split_it_is_given():
    """``test_split`` (pase diagnose --split valid) is the split scored, not always test."""
    from pase.evaluation.probes import encoder_features, linear_probe

    bundle = create_data("synthetic", sizes=[200, 80, 100])
    model = EffectModel(bundle, {"text": 0, "audio": 1})
    tr, va = encoder_features(model, bundle, "train"), encoder_features(model, bundle, "valid")
    got = probe_model(model, bundle, test_split="valid")
    for m in ("text", "audio"):
        want = linear_probe(tr[m], bundle.splits["train"].target.numpy(), va[m], bundle.splits["valid"].target.numpy(),
                            "regression")
        assert {k: got[m][k] for k in want} == pytest.approx(want), m
    assert got != probe_model(model, bundle)


class ContextEffectModel(EffectModel):
    """``EffectModel`` as a context model (``model.context``): it reads each group whole, so a batch that
    splits a group is an error, as a real one would score that group's samples without their neighbours."""

    context = "whole groups"

    def encode(self, batch):
        sizes = self.sizes[self.where[batch.ids[0]]]
        for g in set(batch.groups.tolist()):
            assert int((batch.groups == g).sum()) == sizes[g], f"group {g} split across batches"
        return super().encode(batch)


def _with_groups(bundle, size=3):
    """The bundle with groups of ``size`` consecutive samples (effects kept)."""
    from pase.data.contract import DataBundle, MultimodalDataset

    splits = {}
    for s, ds in bundle.splits.items():
        n = len(ds)
        nd = MultimodalDataset({m: ds.features[m] for m in ds.modalities}, ds.target, ds.ids,
                               groups=torch.arange(n) // size, positions=torch.arange(n) % size, split=s)
        nd.effects = ds.effects
        splits[s] = nd
    return DataBundle(bundle.name, bundle.task, splits, dict(bundle.info))


def test_a_context_model_is_probed_on_whole_groups_with_labels_and_effects_matched_by_id():
    """Group batches deal the samples out of the split's order: the labels and ground-truth effects
    are looked up by id, and the probes equal those of the same representations in dataset order.
    600 training samples span two batches of 512, which would cut a group without group batches."""
    bundle = _with_groups(create_data("synthetic", sizes=[600, 30, 300]))
    cols = {"text": 0, "audio": 1, "vision": 2}
    model = ContextEffectModel(bundle, cols)
    model.where = {i: s for s, ds in bundle.splits.items() for i in ds.ids}
    model.sizes = {s: torch.bincount(ds.groups).tolist() for s, ds in bundle.splits.items()}
    got = probe_model(model, bundle)
    plain = probe_model(EffectModel(bundle, cols), bundle)  # no context: dataset order
    for m in cols:
        assert got[m]["effect_r2"] > 0.95, (m, got[m])  # the representation is its own effect
        assert got[m]["effect_r2"] == pytest.approx(plain[m]["effect_r2"], abs=1e-6)
        assert got[m]["corr"] == pytest.approx(plain[m]["corr"], abs=1e-6)  # float32 sums in another order
        assert got[m]["acc2"] == pytest.approx(plain[m]["acc2"], abs=0.02)


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


def test_a_zero_label_counts_as_non_negative_in_the_sign_probe():
    """The regression probe's Acc-2 is Has0's: y >= 0 is the positive class, so training labels of 0 and
    above are one class, and test labels of 0 are predicted right."""
    from pase.evaluation.probes import linear_probe

    rng = np.random.default_rng(0)
    x_tr, x_te = rng.normal(size=(40, 3)), rng.normal(size=(30, 3))
    y_tr = np.r_[np.abs(rng.normal(size=30)) + 0.1, np.zeros(10)]
    y_te = np.r_[np.zeros(15), np.abs(rng.normal(size=15))]
    assert linear_probe(x_tr, y_tr, x_te, y_te, "regression")["acc2"] == 1.0


def test_a_multilabel_probe_averages_every_label():
    """Label 0 follows the first feature (learnt); label 1 is 0 on every training sample and 1 on every
    test sample (always wrong): the mean accuracy is about (1 + 0) / 2."""
    from pase.evaluation.probes import linear_probe

    rng = np.random.default_rng(0)
    x_tr, x_te = rng.normal(size=(200, 3)), rng.normal(size=(100, 3))
    y_tr = np.c_[x_tr[:, 0] > 0, np.zeros(200)].astype(int)
    y_te = np.c_[x_te[:, 0] > 0, np.ones(100)].astype(int)
    assert linear_probe(x_tr, y_tr, x_te, y_te, "multilabel")["acc"] == pytest.approx(0.5, abs=0.03)
