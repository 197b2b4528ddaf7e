import math

import numpy as np
import pytest
import torch

from pase.data import create_data
from pase.data.synthetic import SyntheticSpec, make_synthetic


def test_seeded_and_sized():
    a, b = create_data("synthetic", seed=3), create_data("synthetic", seed=3)
    assert {s: len(d) for s, d in a.splits.items()} == {"train": 1284, "valid": 229, "test": 686}
    assert a.dims() == {"text": 100, "audio": 73, "vision": 100}
    torch.testing.assert_close(a.splits["test"].features["audio"], b.splits["test"].features["audio"])
    c = create_data("synthetic", seed=4)
    assert not torch.equal(a.splits["test"].target, c.splits["test"].target)


def test_label_is_the_documented_additive_model():
    """y = sigma_y (sum_m sqrt(s_m) f_m + sqrt(noise) eps) / sqrt(1 + noise), exactly."""
    spec = SyntheticSpec(sizes=(20000, 10, 10), label_noise=0.25, label_scale=1.5, shortcut=0.0)
    _, labels, effects = make_synthetic(spec, seed=0)
    f, y = effects["train"], labels["train"]
    # every effect has zero mean and unit variance (closed forms of linear, product and abs)
    torch.testing.assert_close(f.mean(0), torch.zeros(3), atol=0.03, rtol=0)
    torch.testing.assert_close(f.var(0), torch.ones(3), atol=0.05, rtol=0)
    # least squares of y on the effects recovers sigma_y sqrt(s_m) / sqrt(1 + noise)
    coef = torch.linalg.lstsq(f, y[:, None]).solution[:, 0]
    expected = 1.5 * torch.tensor(spec.shares).sqrt() / math.sqrt(1.25)
    torch.testing.assert_close(coef, expected, atol=0.02, rtol=0)
    # explained-variance shares are the ground-truth Shapley shares
    parts = (coef ** 2) * f.var(0)
    torch.testing.assert_close(parts / parts.sum(), torch.tensor(spec.shares), atol=0.02, rtol=0)
    assert abs(float(y.std()) - 1.5) < 0.03


@pytest.mark.parametrize("opts, match", [
    (dict(shares=(0.5, 0.5, 0.5)), "must be non-negative and sum to 1"),
    (dict(effects=("linear", "cubic", "abs")), "effect 'cubic' is not one of"),
    (dict(dims=(10, 5)), "'dims' has 2 entries for 3 modalities"),
    (dict(memorize_dim=200), r"memorize_dim.=200 must lie in \[0, dims\[0\]=100\)"),
    # these trained on silently, or stopped with 'math domain error' naming no option (review)
    (dict(label_noise=-1.0), r"'label_noise'=-1.0 must be a variance of at least 0"),
    (dict(label_scale=0.0), r"'label_scale'=0.0 must be a standard deviation above 0"),
    (dict(label_scale=-1.0), r"'label_scale'=-1.0 must be"),
    (dict(obs_noise=(-1.0, 0.2, 0.2)), r"'obs_noise' must be standard deviations of at least 0"),
    (dict(latent=(0, 2, 2)), r"'latent' must be widths of at least 1, got \[0, 2, 2\]"),
    # wrong types: raw Python / torch errors, or modalities=text read as t, e, x, t (review)
    (dict(sizes="abc"), r"'sizes' must be a list of whole numbers \(train, valid, test\), for example the default "
                        r"\[1284, 229, 686\]; got 'abc'"),
    (dict(sizes=[200.5, 100, 100]), r"'sizes' must be a list of whole numbers"),
    (dict(shares=["a", "b", "c"]), r"'shares' must be a list of numbers \(one per modality\)"),
    (dict(modalities="text"), r"'modalities' must be a list of names .* got 'text'"),
    (dict(memorize_dim=1.5), r"'memorize_dim' must be a whole number, got 1.5"),
    (dict(label_noise="x"), r"'label_noise' must be a number, got 'x'"),
    (dict(dims=[True, 73, 100]), r"'dims' must be a list of whole numbers"),
])
def test_bad_options(opts, match):
    with pytest.raises(ValueError, match=match):
        SyntheticSpec(**opts)


def test_ground_truth_recorded():
    b = create_data("synthetic")
    assert b.info["ground_truth_shares"] == {"text": 0.4, "audio": 0.35, "vision": 0.25}


def test_shortcut_exists_on_train_only():
    """The memorisation column carries the rest of the label on train (corr sqrt(s)), nothing on test."""
    spec = SyntheticSpec(sizes=(4000, 10, 4000), shortcut=0.81, scales=(2.0, 1.0, 1.0))
    feats, labels, effects = make_synthetic(spec, seed=1)
    for split, expected in (("train", 0.9), ("test", 0.0)):
        col = feats[split]["text"][:, -spec.memorize_dim]
        rest = labels[split] - effects[split][:, 0] * 1.5 * math.sqrt(0.4) / math.sqrt(1.1)
        r = torch.corrcoef(torch.stack([col, rest]))[0, 1]
        assert abs(float(r) - expected) < 0.04, (split, float(r))
        assert abs(float(col.std()) - 2.0) < 0.1  # same marginal scale on every split


@pytest.mark.parametrize("opts", [dict(sizes=np.array([96, 32, 32])), dict(sizes=[np.int64(96), 32, 32]),
                                  dict(latent=np.array([8, 2, 2])), dict(shares=[np.float32(0.4), 0.35, 0.25]),
                                  dict(label_noise=np.float32(0.1)), dict(memorize_dim=np.int64(3))])
def test_numpy_numbers_are_accepted_as_before_the_type_checks(opts):
    """The type checks refused numpy values the Python API took before them (review)."""
    SyntheticSpec(**{"sizes": (96, 32, 32), **opts})
