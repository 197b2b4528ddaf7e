"""pase.metrics.functional: oracles (scikit-learn, scipy), hand-made cases, edge cases, errors."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from oracles.sklearn_metrics import (
    reference_iemocap_mult,
    reference_mosi,
    reference_multiclass,
    reference_pearson,
    reference_sims,
)
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from pase.metrics.functional import (
    _sims_classes,
    check_inputs,
    iemocap_mult_metrics,
    mean_absolute_error,
    mosi_metrics,
    multiclass_metrics,
    pearson_corr,
    sims_metrics,
)

FUNCS = {"mosi": mosi_metrics, "sims": sims_metrics, "iemocap_mult": iemocap_mult_metrics,
         "multiclass": multiclass_metrics}
REFS = {"mosi": reference_mosi, "sims": reference_sims, "iemocap_mult": reference_iemocap_mult,
        "multiclass": reference_multiclass}


def assert_metrics_close(got, ref):
    """Same names in the same order; values equal up to float64 summation order.

    Accuracies are ratios of counts (exact); F1, MAE and Pearson differ from the oracle only in
    the order of float64 operations, hence rtol 1e-9 / atol 1e-12.
    """
    assert list(got) == list(ref)
    for k in got:
        assert isinstance(got[k], float), k
        torch.testing.assert_close(torch.tensor(got[k], dtype=torch.float64),
                                   torch.tensor(float(ref[k]), dtype=torch.float64),
                                   rtol=1e-9, atol=1e-12, equal_nan=True, msg=k)


# ------------------------------------------------------------------ oracles on seeded random data
@pytest.mark.parametrize("protocol", list(FUNCS))
@pytest.mark.parametrize("n", [7, 64, 500])
def test_matches_oracle(protocol, n, gen, inputs):
    preds, target = inputs(protocol, n, gen)
    assert_metrics_close(FUNCS[protocol](preds, target), REFS[protocol](preds, target))


@pytest.mark.parametrize("protocol", list(FUNCS))
def test_numpy_float64_and_torch_agree(protocol, gen, inputs):
    preds, target = inputs(protocol, 200, gen)
    got_np = FUNCS[protocol](preds.double().numpy(), target.numpy())
    assert_metrics_close(got_np, REFS[protocol](preds.double().numpy(), target.numpy()))


def test_pearson_and_mae_match_scipy_numpy(gen):
    x, y = torch.randn(300, generator=gen), torch.randn(300, generator=gen)
    y = 0.5 * x + y
    torch.testing.assert_close(pearson_corr(x, y), reference_pearson(x, y), rtol=1e-9, atol=1e-12)
    mae = float(np.mean(np.abs(x.double().numpy() - y.double().numpy())))
    torch.testing.assert_close(mean_absolute_error(x, y), mae, rtol=1e-12, atol=0.0)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), n=st.integers(1, 40))
def test_property_mosi_binary_matches_sklearn(data, n):
    """Has0/Non0 accuracy equal sklearn's on arbitrary floats, exact zeros and -0.0 included."""
    elems = st.one_of(st.sampled_from([0.0, -0.0, 0.5, -0.5, 2.5, -3.5]),
                      st.floats(-10, 10, allow_nan=False, allow_subnormal=False))
    p = data.draw(arrays(np.float64, n, elements=elems))
    t = data.draw(arrays(np.float64, n, elements=elems))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = mosi_metrics(p, t)
    assert got["Has0_acc_2"] == accuracy_score(t >= 0, p >= 0)
    assume(np.any(t != 0))
    nz = t != 0
    assert got["Non0_acc_2"] == accuracy_score(t[nz] > 0, p[nz] > 0)
    ref = reference_mosi(p, t)
    for k in ("Has0_F1_score", "Non0_F1_score", "Mult_acc_5", "Mult_acc_7", "MAE"):
        assert math.isclose(got[k], ref[k], rel_tol=1e-9, abs_tol=1e-12), k


# ------------------------------------------------------------------ hand-computed numbers
def test_mosi_hand_computed_example():
    preds = torch.tensor([2.4, -0.4, 0.0, 1.5, -2.5, 0.3], dtype=torch.float64)
    target = torch.tensor([3.0, -1.0, 0.0, 2.0, -2.0, -0.2], dtype=torch.float64)
    m = mosi_metrics(preds, target)
    # Has0: truth >= 0 [T F T T F F], pred >= 0 [T F T T F T]: 5/6; F1(T) = 6/7, F1(F) = 4/5
    assert m["Has0_acc_2"] == pytest.approx(5 / 6, abs=1e-15)
    assert m["Has0_F1_score"] == pytest.approx(29 / 35, abs=1e-15)
    # Non0 drops the label 0: truth [T F T F F], pred [T F T F T]: 4/5; F1(T) = F1(F) = 4/5
    assert m["Non0_acc_2"] == pytest.approx(4 / 5, abs=1e-15)
    assert m["Non0_F1_score"] == pytest.approx(4 / 5, abs=1e-15)
    # Acc-7 rounds 2.4 -> 2 (truth 3) and -0.4 -> 0 (truth -1): 4/6; Acc-5 clips truth 3 -> 2: 5/6
    assert m["Mult_acc_7"] == pytest.approx(4 / 6, abs=1e-15)
    assert m["Mult_acc_5"] == pytest.approx(5 / 6, abs=1e-15)
    assert m["MAE"] == pytest.approx(2.7 / 6, abs=1e-12)  # 0.6 + 0.6 + 0 + 0.5 + 0.5 + 0.5
    assert m["Corr"] == pytest.approx(float(np.corrcoef(preds, target)[0, 1]), abs=1e-12)


def test_has0_non0_ties_at_zero():
    # label 0 is non-negative for Has0 and dropped for Non0; a prediction of 0 is positive for
    # Has0 (>= 0) and negative for Non0 (> 0)
    target = [0.0, 0.0, 1.0, -1.0, -1.0]
    preds = [0.0, -0.1, 0.0, -2.0, 0.0]
    m = mosi_metrics(preds, target)
    assert m["Has0_acc_2"] == 3 / 5  # hits: (0, 0), (1, 0), (-1, -2)
    assert m["Non0_acc_2"] == 2 / 3  # kept: (1, 0) miss, (-1, -2) hit, (-1, 0) hit


def test_rounding_half_to_even_and_clipping():
    half = [0.5, 1.5, 2.5, -0.5, -1.5, -2.5]
    assert mosi_metrics(half, [0.0, 2.0, 2.0, 0.0, -2.0, -2.0])["Mult_acc_7"] == 1.0
    assert mosi_metrics(half, [1.0, 1.0, 3.0, -1.0, -1.0, -3.0])["Mult_acc_7"] == 0.0
    # 2.7 clips to 2 for Acc-5 (match) but rounds to 3 for Acc-7 (miss); 3.6 clips to 3 for Acc-7
    m = mosi_metrics([2.7, -2.6, 3.6, 0.2], [2.0, -2.0, 3.0, 1.0])
    assert m["Mult_acc_5"] == 3 / 4
    assert m["Mult_acc_7"] == 1 / 4


def test_mae_is_unclipped():
    assert mosi_metrics([5.0, 0.0], [3.0, 0.0])["MAE"] == 1.0  # clipped it would be 0
    assert mean_absolute_error([10.0], [-3.0]) == 13.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "value, c2, c3, c5",
    [(-1.0, 0, 0, 0), (-0.7, 0, 0, 0), (-0.69, 0, 0, 1), (-0.1, 0, 0, 1), (-0.09, 0, 1, 2),
     (0.0, 0, 1, 2), (0.01, 1, 1, 2), (0.1, 1, 1, 2), (0.11, 1, 2, 3), (0.7, 1, 2, 3),
     (0.71, 1, 2, 4), (1.0, 1, 2, 4)],
)
def test_sims_cut_points(value, c2, c3, c5, dtype):
    x = torch.tensor([value], dtype=dtype).numpy()
    assert [int(_sims_classes(x, n)[0]) for n in (2, 3, 5)] == [c2, c3, c5]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sims_boundaries_end_to_end(dtype):
    # predictions exactly on the cut points, labels inside the class each should fall in
    preds = torch.tensor([-1.3, -0.7, -0.1, 0.0, 0.1, 0.7, 1.0], dtype=dtype)
    target = torch.tensor([-0.9, -0.8, -0.4, -0.05, 0.05, 0.4, 0.9], dtype=dtype)
    m = sims_metrics(preds, target)
    assert (m["Mult_acc_2"], m["Mult_acc_3"], m["Mult_acc_5"]) == (1.0, 1.0, 1.0)
    nudged = sims_metrics(preds + 1e-3, target)  # just above each cut point: every class moves up
    # classes [0, 1, 2, 2, 3, 4, 4] vs truth [0, 0, 1, 2, 2, 3, 4]: -1.3 (clipped to -1), 0.0 (not
    # a 5-class cut point) and 1.0 (clipped back to 1) keep their class
    assert nudged["Mult_acc_5"] == 3 / 7
    assert_metrics_close(m, reference_sims(preds, target))
    assert m["MAE"] == pytest.approx(float(np.mean(np.abs(np.clip(preds.double().numpy(), -1, 1)
                                                          - target.double().numpy()))), abs=1e-6)


def test_iemocap_three_way_input_matches_logits_and_ties_are_absent(gen):
    scores = torch.randn(50, 4, 2, generator=gen)
    scores[:5, :, 1] = scores[:5, :, 0]  # ties: argmax picks index 0, logit 0 is not > 0
    target = torch.randint(0, 2, (50, 4), generator=gen)
    logits = scores[..., 1] - scores[..., 0]
    assert_metrics_close(iemocap_mult_metrics(scores, target), iemocap_mult_metrics(logits, target))
    assert_metrics_close(iemocap_mult_metrics(scores, target), reference_iemocap_mult(scores, target))


def test_multiclass_hand_computed_with_class_absent_from_target():
    preds = torch.eye(3)[[0, 2, 1, 1]]  # argmax [0, 2, 1, 1]; class 2 never in the target
    target = torch.tensor([0, 0, 1, 1])
    m = multiclass_metrics(preds, target)
    assert m["WA"] == 3 / 4
    assert m["UA"] == pytest.approx(0.5, abs=1e-15)  # recall 1/2, 1, 0 (as recall_score macro)
    with pytest.warns(UserWarning, match="y_pred contains classes not in y_true"):
        assert balanced_accuracy_score(target, preds.argmax(1)) == 0.75  # differs only in this case
    assert m["WF1"] == pytest.approx(5 / 6, abs=1e-15)  # F1 2/3 and 1 weighted by support 2, 2
    assert m["Macro_F1"] == pytest.approx(5 / 9, abs=1e-15)
    assert_metrics_close(m, reference_multiclass(preds, target))


def test_ua_equals_balanced_accuracy_when_all_classes_occur(gen, inputs):
    preds, target = inputs("multiclass", 300, gen)
    ua = multiclass_metrics(preds, target)["UA"]
    assert ua == pytest.approx(balanced_accuracy_score(target, preds.argmax(1)), abs=1e-12)


# ------------------------------------------------------------------ edge cases
@pytest.mark.parametrize("which", ["preds", "target"])
def test_constant_input_gives_nan_corr_with_warning(which):
    const, varying = [0.7] * 6, [0.1, 0.5, -1.0, 2.0, 0.3, 1.1]
    p, t = (const, varying) if which == "preds" else (varying, const)
    with pytest.warns(RuntimeWarning, match=f"variance of {which} is zero"):
        m = mosi_metrics(p, t)
    assert math.isnan(m["Corr"])


def test_nearly_constant_preds_give_nan_not_noise():
    p = np.full(100, 1.3) + np.linspace(0.0, 1e-15, 100)
    with pytest.warns(RuntimeWarning, match="Pearson correlation is undefined"):
        assert math.isnan(pearson_corr(p, np.linspace(-1, 1, 100)))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_nearly_constant_preds_keep_np_corrcoef_with_warning(dtype):
    # MMSA computes Corr with np.corrcoef: real (if tiny) differences give its r, with a warning
    rng = np.random.default_rng(0)
    t = rng.uniform(-3, 3, 686)
    if dtype == np.float64:
        p = 1000.0 + 1e-6 * rng.standard_normal(686)
    else:  # a collapsed float32 model: every prediction 0.8, one of them one ulp higher
        p = np.full(686, 0.8, np.float32)
        p[np.argmax(t)] = np.nextafter(np.float32(0.8), np.float32(1))
    with pytest.warns(RuntimeWarning, match="preds are nearly constant"):
        r = pearson_corr(p, t)
    assert r == pytest.approx(np.corrcoef(p.astype(np.float64), t)[0, 1], abs=1e-9)
    assert abs(r) > 0.01  # a value, not NaN or 0


def test_float32_preds_that_differ_in_the_last_bit_warn():
    """docs/evaluation.md's example: a collapsed float32 model whose predictions are two adjacent float32
    values. Their std (about 5e-8 of their size) lay above the float64 threshold sqrt(eps64) = 1.5e-8, so
    Corr came back without the warning (a review); the threshold now follows the input's own dtype."""
    rng = np.random.default_rng(0)
    t = rng.uniform(-3, 3, 686)
    b = np.float32(0.3)
    p = np.where(rng.random(686) < 0.5, np.nextafter(b, np.float32(1)), b).astype(np.float32)
    with pytest.warns(RuntimeWarning, match="Corr: preds are nearly constant"):
        r = mosi_metrics(torch.from_numpy(p), t)["Corr"]
    assert r == pytest.approx(np.corrcoef(p.astype(np.float64), t)[0, 1], abs=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # float32 predictions with a real spread, and labels, stay quiet
        pearson_corr(b + np.float32(1e-3) * rng.standard_normal(686).astype(np.float32), t.astype(np.float32))
        # numpy float16 predictions of a healthy model (r about 0.96, spread 0.18) were called collapsed: the
        # threshold took float16's own 256 ulps, 25 % of the largest value (a review)
        healthy = (0.5 + 0.18 * t / t.std() + 0.05 * rng.standard_normal(686)).astype(np.float16)
        assert pearson_corr(healthy, t) > 0.9


def test_all_zero_labels_give_nan_non0_with_warning():
    with pytest.warns(RuntimeWarning) as record:
        m = mosi_metrics([0.5, -0.5, 1.0], [0.0, 0.0, 0.0])
    messages = [str(w.message) for w in record]
    assert any("every label is 0" in s for s in messages)
    assert any("variance of target is zero" in s for s in messages)
    assert math.isnan(m["Non0_acc_2"]) and math.isnan(m["Non0_F1_score"])
    assert m["Has0_acc_2"] == 2 / 3


def test_accepts_half_precision_and_column_shapes(gen):
    p, t = torch.randn(20, 1, generator=gen), torch.randn(20, 1, generator=gen)
    for dt in (torch.float16, torch.bfloat16):
        m = mosi_metrics(p.to(dt), t.to(dt))
        assert set(m) >= {"MAE", "Corr"}
    assert_metrics_close(mosi_metrics(p, t), mosi_metrics(p.squeeze(1), t.squeeze(1)))


# ------------------------------------------------------------------ input errors
def test_regression_shape_mismatch_message():
    with pytest.raises(ValueError, match=r"preds has shape \(5,\) but target has \(4,\)"):
        mosi_metrics(torch.zeros(5), torch.zeros(4))
    with pytest.raises(ValueError, match=r"preds has shape \(5, 2\) but target has \(5,\)"):
        sims_metrics(np.zeros((5, 2)), np.zeros(5))
    # (N, 2) against (N, 2) is not N scores flattened into 2N: only a (N, 1) column is squeezed
    with pytest.raises(ValueError, match=r"preds has shape \(5, 2\) but target has \(5, 2\); expected preds and "
                                         r"target of shape \(N,\) or \(N, 1\)"):
        mosi_metrics(np.zeros((5, 2)), np.zeros((5, 2)))


def test_classification_and_multilabel_shape_messages():
    with pytest.raises(ValueError, match=r"preds has shape \(5, 3\) but target has \(4,\); expected preds \(N, K\)"):
        multiclass_metrics(torch.zeros(5, 3), torch.zeros(4, dtype=torch.long))
    # one logit column: its argmax is always class 0 (WA = UA = WF1 = 1 for all-zero targets), so it is refused
    with pytest.raises(ValueError, match=r"preds has shape \(4, 1\) but target has \(4,\); expected preds \(N, K\) "
                                         r"logits with K >= 2"):
        multiclass_metrics(np.zeros((4, 1)), [0, 0, 0, 0])
    with pytest.raises(ValueError, match=r"preds has shape \(5, 4\) but target has \(5, 3\)"):
        iemocap_mult_metrics(torch.zeros(5, 4), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="3 emotion columns but 4 emotion names"):
        iemocap_mult_metrics(torch.zeros(5, 3), torch.zeros(5, 3))


def test_nan_and_range_errors():
    with pytest.raises(ValueError, match=r"preds contains 1 NaN value\(s\) \(first at index \(1,\)\)"):
        mosi_metrics([0.1, float("nan"), 0.3], [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match=r"target contains 2 NaN value\(s\) \(first at index \(0, 2\)\)"):
        iemocap_mult_metrics(torch.zeros(2, 4), torch.tensor([[0, 0, float("nan"), 1], [float("nan"), 0, 0, 1]]))
    with pytest.raises(ValueError, match=r"preds contains 1 infinite value\(s\)"):
        multiclass_metrics(torch.tensor([[0.0, float("inf")], [1.0, 0.0]]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"target values must lie in \[0, 2\]"):
        multiclass_metrics(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="non-integral"):
        multiclass_metrics(torch.zeros(2, 3), torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match=r"target values must lie in \[0, 1\]"):
        iemocap_mult_metrics(torch.zeros(2, 4), torch.full((2, 4), 2))
    with pytest.raises(ValueError, match="empty"):
        mosi_metrics(torch.zeros(0), torch.zeros(0))
    with pytest.raises(ValueError, match="unknown task_kind 'regresion'"):
        check_inputs("regresion", [0.0], [0.0])


@pytest.mark.parametrize("scale", [1e-300, 1e-160, 1e-3, 1.0, 1e160, 1e300])
def test_pearson_holds_at_any_float64_scale(scale):
    """Sums of squares of values above ~1e154 overflowed (r = 0.0) and below ~1e-154 underflowed (NaN,
    'variance of preds is zero') for data that is not constant (a review); scipy gives 0.9833."""
    from scipy import stats

    x, y = np.array([1.0, -1.0, 3.0, 2.0]), np.array([1.0, -1.0, 2.0, 1.5])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow, no 'zero variance'
        got = pearson_corr(scale * x, y)
        assert pearson_corr(y, scale * x) == got
    assert got == pytest.approx(stats.pearsonr(x, y)[0], rel=1e-12)


def test_pearson_is_bitwise_unchanged_by_the_power_of_two_scaling():
    """The scaling is by powers of two, so an ordinary r is the same float as the plain formula's."""
    rng = np.random.default_rng(3)
    for _ in range(20):
        x, y = rng.normal(size=50) * rng.uniform(0.01, 30), rng.normal(size=50) * rng.uniform(0.01, 30)
        xc, yc = x - x.mean(), y - y.mean()
        plain = float(np.clip(np.sum(xc * yc) / (np.sqrt(np.sum(xc * xc)) * np.sqrt(np.sum(yc * yc))), -1, 1))
        assert pearson_corr(x, y) == plain


def test_the_nearly_constant_warning_gives_the_datas_own_numbers():
    """After the power-of-two scaling the message printed the scaled std and maximum (9.33e-13 against
    0.977 for predictions of 1000 with a spread of 1e-9; a review), not the data's."""
    rng = np.random.default_rng(0)
    p = 1000.0 + 1e-9 * rng.standard_normal(100)
    with pytest.warns(RuntimeWarning) as record:
        pearson_corr(p, rng.standard_normal(100))
    msg = str(record[0].message)
    std = float(np.std(p))
    assert f"std {std:.3g} against values up to {np.max(np.abs(p)):.3g}" in msg, msg
