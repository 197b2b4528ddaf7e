"""Statistics of the comparison: t-quantiles, mean / sample SD / t-interval, paired differences."""

import math
import statistics

import numpy as np
import pytest

from pase.evaluation.compare import describe, main_metrics, paired_difference, parse_methods, parse_seeds, t_quantile


@pytest.mark.parametrize("df, expected", [(1, 12.706), (2, 4.303), (4, 2.776), (10, 2.228), (29, 2.045)])
def test_t_quantile_matches_the_printed_table(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=5e-4)  # tables print 3 decimals


@pytest.mark.parametrize("p", [0.9, 0.975, 0.995, 0.025])
@pytest.mark.parametrize("df", [1, 3, 7.5, 29])
def test_t_quantile_matches_scipy(p, df):
    stats = pytest.importorskip("scipy.stats")
    assert t_quantile(p, df) == pytest.approx(float(stats.t.ppf(p, df)), abs=1e-6)  # bisection + Simpson


@pytest.mark.parametrize("p", [0.999, 0.9995, 0.99999])
@pytest.mark.parametrize("df", [1, 2, 4, 1000])
def test_t_quantile_in_the_far_tail_matches_scipy(p, df):
    """High levels with 2 or 3 seeds put the quantile in the hundreds or thousands (df 1: 636.6 at
    0.9995), where integrating the density over t itself gave 5700 (a decreasing CDF)."""
    stats = pytest.importorskip("scipy.stats")
    assert t_quantile(p, df) == pytest.approx(float(stats.t.ppf(p, df)), rel=1e-7)


def test_t_quantile_rejects_bad_arguments():
    with pytest.raises(ValueError, match="0 < p < 1 and df > 0"):
        t_quantile(1.0, 3)


def test_describe_matches_numpy_and_statistics(gen):
    xs = np.random.default_rng(0).normal(0.7, 0.05, size=7)
    d = describe(xs.tolist())
    sd = statistics.stdev(xs.tolist())
    assert d["n"] == 7
    assert d["mean"] == pytest.approx(float(np.mean(xs)), abs=1e-12)
    assert d["sd"] == pytest.approx(float(np.std(xs, ddof=1)), abs=1e-12) and d["sd"] == pytest.approx(sd)
    half = 2.447 * sd / math.sqrt(7)  # t_{0.975, 6} = 2.447
    assert d["ci_low"] == pytest.approx(np.mean(xs) - half, abs=1e-4)
    assert d["ci_high"] == pytest.approx(np.mean(xs) + half, abs=1e-4)


def test_describe_edge_cases():
    one = describe([0.5])
    assert one["n"] == 1 and one["mean"] == 0.5 and math.isnan(one["sd"]) and math.isnan(one["ci_low"])
    assert math.isnan(describe([])["mean"])
    assert describe([1.0, float("nan"), 3.0])["n"] == 2  # non-finite values are left out


def test_paired_difference_matches_numpy():
    a = {1111: 0.80, 1112: 0.82, 1113: 0.79, 1114: 0.85}
    b = {1111: 0.78, 1112: 0.80, 1113: 0.78, 1114: 0.81, 1115: 0.5}  # 1115 has no partner
    d = paired_difference(a, b)
    diff = np.array([a[s] - b[s] for s in sorted(a)])
    assert d["n"] == 4
    assert d["mean"] == pytest.approx(diff.mean()) and d["sd"] == pytest.approx(diff.std(ddof=1))
    half = 3.182 * diff.std(ddof=1) / 2  # t_{0.975, 3} = 3.182, sqrt(4) = 2
    assert d["ci_low"] == pytest.approx(diff.mean() - half, abs=1e-4)
    assert d["excludes_zero"] is True
    assert paired_difference({1: 0.5, 2: 0.6}, {1: 0.6, 2: 0.5})["excludes_zero"] is False


def test_a_zero_spread_difference_is_no_evidence():
    """Every seed's difference the same (two tied seeds; -4/120 on both): the SD is 0 (or ~1e-17 from
    rounding), the t-interval a point, and it was called significant (review)."""
    d = paired_difference({1: 0.55, 2: 0.45}, {1: 0.50, 2: 0.40})
    assert d["sd"] < 1e-12 and d["excludes_zero"] is False and d["sd_zero"] is True
    same = paired_difference({1: 64 / 120, 2: 60 / 120, 3: 72 / 120}, {1: 68 / 120, 2: 64 / 120, 3: 76 / 120})
    assert same["excludes_zero"] is False and same["sd_zero"] is True
    spread = paired_difference({1: 0.55, 2: 0.46, 3: 0.50}, {1: 0.50, 2: 0.40, 3: 0.45})  # d = .05, .06, .05
    assert spread["excludes_zero"] is True and spread["sd_zero"] is False


def test_parse_seeds():
    assert parse_seeds("5") == [1111, 1112, 1113, 1114, 1115]
    assert parse_seeds(2) == [1111, 1112]
    assert parse_seeds("1111, 1113") == [1111, 1113]
    assert parse_seeds("7,") == [7]
    with pytest.raises(ValueError, match=r"--seeds 3,3,4 names seed 3 twice; a seed's run is deterministic"):
        parse_seeds([3, 3, 4])  # silently one run fewer than asked before
    with pytest.raises(ValueError, match="names seed 1111 twice"):
        parse_seeds("1112,1111, 1111")
    with pytest.raises(ValueError, match="write '1111,' for that one seed"):
        parse_seeds("1111")
    with pytest.raises(ValueError, match="neither a count"):
        parse_seeds("five")
    for spec in ("-1", "4294967296"):  # following the advice '-1,' was then refused as outside the range (review)
        with pytest.raises(ValueError) as e:
            parse_seeds(spec)
        assert str(e.value).endswith("...); a seed lies in 0 to 4294967295 (numpy's seed range)")
    # every run started and failed inside numpy before (review)
    with pytest.raises(ValueError, match=r"--seeds: seed -1 is outside 0 to 4294967295"):
        parse_seeds("-1,")
    with pytest.raises(ValueError, match=r"seed 4294967296 is outside"):
        parse_seeds([1, 2**32])


def test_parse_methods():
    assert parse_methods("late_fusion, pase") == ["late_fusion", "pase"]
    with pytest.raises(ValueError, match=r"--methods late_fusion,pase,late_fusion names late_fusion twice"):
        parse_methods("late_fusion, pase,late_fusion")
    with pytest.raises(ValueError, match="names a folder"):
        parse_methods("../x")
    with pytest.raises(ValueError, match="no method given"):
        parse_methods(",")


def test_main_metrics_per_protocol():
    assert main_metrics("mosi") == ["Has0_acc_2", "Non0_acc_2", "MAE", "Corr"]
    assert main_metrics("sims") == ["Mult_acc_2", "MAE", "Corr"]
    assert main_metrics("multiclass") == ["WF1"]


def test_paired_difference_flags_a_significant_negative_difference_too():
    """'excludes 0' is two-sided: a method clearly worse than the reference (every d_s < 0) is as
    significant as one clearly better. d = (-0.10, -0.12, -0.08): mean -0.1, SD 0.02, t_{0.975, 2}
    = 4.303, half-width 4.303 * 0.02 / sqrt(3) = 0.0497, so the interval is [-0.1497, -0.0503]."""
    d = paired_difference({1: 0.5, 2: 0.5, 3: 0.5}, {1: 0.6, 2: 0.62, 3: 0.58})
    assert d["mean"] == pytest.approx(-0.1) and d["sd"] == pytest.approx(0.02)
    assert d["ci_high"] == pytest.approx(-0.1 + 4.303 * 0.02 / math.sqrt(3), abs=1e-4)
    assert d["excludes_zero"] is True


def test_identical_runs_do_not_exclude_zero():
    """Two methods with the same figure on every seed (d_s = 0: SD 0, interval [0, 0]) differ by
    nothing: the degenerate interval touches 0 and is no evidence of a difference."""
    d = paired_difference({1: 0.75, 2: 0.5}, {1: 0.75, 2: 0.5})
    assert (d["mean"], d["sd"], d["ci_low"], d["ci_high"]) == (0.0, 0.0, 0.0, 0.0)
    assert d["excludes_zero"] is False


def test_paired_difference_uses_the_level_it_is_given():
    """The level reaches the paired interval: 90% uses t_{0.95, n-1} (SciPy), not the 95% quantile."""
    stats = pytest.importorskip("scipy.stats")
    a, b = {1: 0.9, 2: 0.7, 3: 0.8, 4: 0.6}, {1: 0.5, 2: 0.6, 3: 0.4, 4: 0.5}
    diff = np.array([a[s] - b[s] for s in (1, 2, 3, 4)])
    half = float(stats.t.ppf(0.95, 3)) * diff.std(ddof=1) / 2
    d = paired_difference(a, b, level=0.9)
    assert d["ci_low"] == pytest.approx(diff.mean() - half, abs=1e-9)
    assert d["ci_high"] == pytest.approx(diff.mean() + half, abs=1e-9)


def test_paired_difference_pairs_only_the_seeds_both_have():
    """A seed of the method that the reference lacks (its run failed) has no pair and is left out."""
    d = paired_difference({1: 0.8, 2: 0.9, 3: 0.1}, {1: 0.7, 2: 0.7})
    assert d["n"] == 2 and d["mean"] == pytest.approx(0.15)


def test_a_count_of_zero_seeds_is_refused():
    """'--seeds 0' is no comparison at all (no run, an empty summary)."""
    with pytest.raises(ValueError, match=r"--seeds 0: a single number is a count of MMSA seeds \(1 to 1000"):
        parse_seeds("0")


def test_main_metrics_of_the_multilabel_protocol_is_its_monitor():
    """IEMOCAP (multilabel) is not a regression protocol: its paired comparison is of its monitor."""
    assert main_metrics("iemocap_mult") == ["Mean_F1"]
