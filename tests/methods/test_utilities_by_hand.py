"""Coalition utilities, task losses, class targets, probes and the Monte-Carlo standard error,
each against a hand computation or a reference library (mutation testing found these unchecked:
the earlier tests compared the functions with themselves)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pase.data.contract import TaskSpec
from pase.methods.base import coalition_utility, task_loss
from pase.methods.pase import prototype_targets

REG = TaskSpec(kind="regression", num_classes=1, protocol="mosi", label_range=(-3.0, 3.0))
MULTI = TaskSpec(kind="multilabel", num_classes=4, protocol="iemocap_mult")


def test_neg_loss_utility_is_minus_the_l1_error_by_default():
    logits = torch.tensor([[[0.5], [-1.0]], [[2.0], [0.0]]])  # (C=2, B=2, 1)
    y = torch.tensor([1.0, 0.0])
    got = coalition_utility(logits, y, REG, "neg_loss", "auto")
    assert got.tolist() == pytest.approx([-(0.5 + 1.0) / 2, -(1.0 + 0.0) / 2])  # L1, MMSA's MOSI loss
    mse = coalition_utility(logits, y, REG, "neg_loss", "mse")
    assert mse.tolist() == pytest.approx([-(0.25 + 1.0) / 2, -(1.0 + 0.0) / 2])


def test_accuracy_utility_counts_a_zero_label_and_prediction_as_non_negative():
    logits = torch.tensor([[[0.0], [-0.5], [0.2]]])  # one coalition, three samples
    y = torch.tensor([0.0, 0.0, -1.0])  # Has0: 0 is non-negative
    assert coalition_utility(logits, y, REG, "accuracy", "auto").tolist() == pytest.approx([1 / 3])


def test_multilabel_accuracy_is_the_mean_per_label_hit():
    logits = torch.tensor([[[1.0, -1.0, 1.0, -1.0], [1.0, 1.0, 1.0, 1.0]]])  # (1, B=2, E=4)
    y = torch.tensor([[1, 0, 0, 0], [0, 0, 0, 1]])
    # sample 1: 3 of 4 labels right; sample 2: 1 of 4
    assert coalition_utility(logits, y, MULTI, "accuracy", "auto").tolist() == pytest.approx([(0.75 + 0.25) / 2])


def test_multilabel_task_loss_is_torchs_mean_binary_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=g)
    y = (torch.rand(6, 4, generator=g) > 0.5).long()
    want = F.binary_cross_entropy_with_logits(logits, y.float())
    assert float(task_loss(logits, y, MULTI)) == pytest.approx(float(want), rel=1e-6)


def test_a_multilabel_targets_class_is_its_positive_label():
    y = torch.tensor([[0, 1, 0, 0], [0, 0, 0, 1], [1, 0, 0, 0]])
    assert prototype_targets(y, MULTI, "sign").tolist() == [1, 3, 0]


def test_label_probe_scores_on_constructed_features():
    """acc2 with a label of exactly 0 counted as positive (Has0), corr as Pearson's r (not r^2, and
    negative for an anti-correlated probe), classification accuracy on the test split."""
    from pase.evaluation.probes import linear_probe

    rng = np.random.default_rng(0)
    y_tr = rng.normal(size=400)
    y_tr[:40] = 0.0
    x_tr = np.stack([y_tr, rng.normal(size=400)], 1)
    y_te = np.array([0.0, 0.0, 1.0, -1.0, 2.0, -2.0])
    x_te = np.stack([np.array([0.05, 0.02, 1.0, -1.0, 2.0, -2.0]), np.zeros(6)], 1)
    got = linear_probe(x_tr, y_tr, x_te, y_te, "regression")
    assert got["acc2"] == 1.0  # both zero labels predicted non-negative
    assert got["corr"] == pytest.approx(float(np.corrcoef(x_te[:, 0], y_te)[0, 1]), abs=1e-3)
    flipped = linear_probe(x_tr, y_tr, -x_te, y_te, "regression")
    assert flipped["corr"] < -0.99  # Pearson's r keeps its sign
    # classification: three separable classes; a probe scored on the test split, not the train split
    c_tr = np.repeat([0, 1, 2], 50)
    f_tr = np.eye(3)[c_tr] + 0.05 * rng.normal(size=(150, 3))
    c_te = np.array([0, 1, 2, 2])
    f_te = np.eye(3)[[0, 1, 2, 0]]  # the last test sample looks like class 0
    assert linear_probe(f_tr, c_tr, f_te, c_te, "classification") == {"acc": 0.75}


def test_multilabel_probe_scores_each_label_on_its_own():
    """Multi-label targets (MulT's IEMOCAP) get one binary probe per label and the mean per-label
    accuracy: a sample with no positive label is right on every label the probe calls negative
    (not class 0 of a multinomial probe), and a label constant on train is predicted constant."""
    from pase.evaluation.probes import linear_probe

    rng = np.random.default_rng(1)
    x_tr = rng.normal(size=(300, 2))
    y_tr = np.stack([x_tr[:, 0] > 0, x_tr[:, 1] > 0, np.zeros(300, bool)], 1).astype(int)
    x_te = np.array([[2.0, 2.0], [-2.0, -2.0], [2.0, -2.0], [-2.0, 2.0]])
    y_te = np.array([[1, 1, 0], [0, 0, 0], [1, 0, 0], [0, 1, 1]])
    # labels 0 and 1 right on all four samples, label 2 (never on in train) wrong on the last one
    assert linear_probe(x_tr, y_tr, x_te, y_te, "multilabel")["acc"] == pytest.approx((1 + 1 + 0.75) / 3)


def test_permutation_standard_error_is_the_sd_over_sqrt_r():
    """A 2-player game with v({0}) = 1, v({1}) = 0, v({0, 1}) = 4: player 0's marginal contribution is
    1 (first) or 4 (second) with probability 1/2 each, sd 1.5, so se = 1.5 / sqrt(R)."""
    from pase.shapley import permutation_shapley

    v = torch.tensor([0.0, 1.0, 0.0, 4.0])  # bitmask order: {}, {0}, {1}, {0, 1}
    R = 4000
    values, se = permutation_shapley(v, 2, R, generator=torch.Generator().manual_seed(0))
    assert float(values[0]) == pytest.approx(2.5, abs=0.1)
    assert float(se[0]) == pytest.approx(1.5 / math.sqrt(R), rel=0.05)
