"""Property tests (hypothesis): invariants of metrics, Shapley values, Sinkhorn and collation.

Each property holds for every input the strategies draw; examples are few (30 to 50) and
deadlines off, so the file runs in seconds.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pase.data.contract import Batch, collate_batches
from pase.metrics.functional import mean_absolute_error, mosi_metrics
from pase.ot import sinkhorn_log
from pase.shapley import coalition_masks, exact_shapley

FAST = settings(max_examples=40, deadline=None)
_scores = st.floats(-3, 3, allow_nan=False, width=32)


@st.composite
def _pairs(draw, min_size=2):
    n = draw(st.integers(min_size, 40))
    preds = draw(arrays(np.float32, n, elements=_scores))
    target = draw(arrays(np.float32, n, elements=st.sampled_from(np.arange(-3, 3.2, 0.2, dtype=np.float32))))
    return preds, target


# ---------------------------------------------------------------------- metrics
@FAST
@given(pair=_pairs(), seed=st.integers(0, 2**16))
def test_mosi_metrics_are_bounded_and_permutation_invariant(pair, seed):
    preds, target = pair
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # Corr / Non0 of degenerate draws are NaN by design
        m = mosi_metrics(preds, target)
        perm = np.random.default_rng(seed).permutation(len(preds))
        mp = mosi_metrics(preds[perm], target[perm])
    for k in ("Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score", "Mult_acc_5", "Mult_acc_7"):
        assert math.isnan(m[k]) or 0.0 <= m[k] <= 1.0, (k, m[k])
    assert m["MAE"] >= 0 and (math.isnan(m["Corr"]) or -1.0 <= m["Corr"] <= 1.0)
    for k, v in m.items():  # the order of the samples never matters (sums reassociate: isclose)
        assert (math.isnan(v) and math.isnan(mp[k])) or math.isclose(v, mp[k], rel_tol=1e-9, abs_tol=1e-12), k


@FAST
@given(pair=_pairs(min_size=1))
def test_mae_is_zero_exactly_on_equal_inputs(pair):
    preds, target = pair
    assert mean_absolute_error(target, target) == 0.0
    assert (mean_absolute_error(preds, target) == 0.0) == bool(np.array_equal(preds, target))


# ---------------------------------------------------------------------- Shapley values
_utilities = st.integers(1, 5).flatmap(
    lambda m: arrays(np.float64, 2**m, elements=st.floats(-10, 10, allow_nan=False)))


@FAST
@given(u=_utilities)
def test_shapley_efficiency(u):
    v = torch.from_numpy(u)
    torch.testing.assert_close(exact_shapley(v).sum(), v[-1] - v[0], atol=1e-9, rtol=1e-9)


@FAST
@given(u=_utilities, data=st.data())
def test_shapley_symmetry_under_relabelling_players(u, data):
    """Renaming the players permutes their values: phi(v o pi)[i] = phi(v)[pi(i)]."""
    v = torch.from_numpy(u)
    m = v.shape[0].bit_length() - 1
    pi = torch.tensor(data.draw(st.permutations(range(m))))
    masks = coalition_masks(m)  # (C, M)
    bits = 2 ** torch.arange(m)
    image = masks[:, torch.argsort(pi)]  # (C, M): row S holds pi(S), player pi(i) in iff i in S
    relabelled = v[(image.long() * bits).sum(-1)]  # w(S) = v(pi(S))
    torch.testing.assert_close(exact_shapley(relabelled), exact_shapley(v)[pi], atol=1e-9, rtol=1e-9)


@FAST
@given(u=_utilities, data=st.data(), a=st.floats(-3, 3), b=st.floats(-3, 3))
def test_shapley_linearity(u, data, a, b):
    v = torch.from_numpy(u)
    w = torch.from_numpy(data.draw(arrays(np.float64, v.shape[0], elements=st.floats(-10, 10))))
    torch.testing.assert_close(exact_shapley(a * v + b * w), a * exact_shapley(v) + b * exact_shapley(w),
                               atol=1e-8, rtol=1e-8)


# ---------------------------------------------------------------------- Sinkhorn
@FAST
@given(k1=st.integers(1, 6), k2=st.integers(1, 6), reg=st.floats(0.05, 2.0), data=st.data())
def test_sinkhorn_marginals_match(k1, k2, reg, data):
    """Random positive marginals and costs in [0, 1]: rows sum to a exactly (after the last
    update), columns to b within the solver's tolerance."""
    pos = st.floats(0.05, 1.0)
    a = torch.tensor(data.draw(st.lists(pos, min_size=k1, max_size=k1)), dtype=torch.float64)
    b = torch.tensor(data.draw(st.lists(pos, min_size=k2, max_size=k2)), dtype=torch.float64)
    a, b = a / a.sum(), b / b.sum()
    M = torch.from_numpy(data.draw(arrays(np.float64, (k1, k2), elements=st.floats(0, 1))))
    plan = sinkhorn_log(a, b, M, reg, max_iter=5000, tol=1e-10)
    assert torch.isfinite(plan).all() and (plan >= 0).all()
    torch.testing.assert_close(plan.sum(-1), a, atol=1e-9, rtol=0)
    torch.testing.assert_close(plan.sum(-2), b, atol=1e-8, rtol=0)


# ---------------------------------------------------------------------- collation
def _batch(rng: np.random.Generator, n: int, steps: int, start: int) -> Batch:
    lengths = torch.from_numpy(rng.integers(1, steps + 1, size=n))
    x = torch.from_numpy(rng.standard_normal((n, steps, 3)).astype(np.float32))
    x[torch.arange(steps)[None, :] >= lengths[:, None]] = 0.0
    return Batch(inputs={"audio": x}, lengths={"audio": lengths}, target=torch.arange(start, start + n).float(),
                 ids=[f"s{start + i}" for i in range(n)])


@FAST
@given(sizes=st.lists(st.tuples(st.integers(1, 5), st.integers(1, 7)), min_size=1, max_size=5),
       seed=st.integers(0, 2**16))
def test_collation_preserves_lengths_order_and_zero_padding(sizes, seed):
    rng = np.random.default_rng(seed)
    parts, start = [], 0
    for n, steps in sizes:
        parts.append(_batch(rng, n, steps, start))
        start += n
    out = collate_batches(parts)
    t_max = max(steps for _, steps in sizes)
    assert out.inputs["audio"].shape == (start, t_max, 3)
    assert out.ids == [f"s{i}" for i in range(start)]  # order preserved
    assert torch.equal(out.target, torch.arange(start).float())
    assert torch.equal(out.lengths["audio"], torch.cat([p.lengths["audio"] for p in parts]))
    assert not out.inputs["audio"][~out.mask("audio")].any(), "padding must be zero"
    row = 0
    for p in parts:  # every real step is copied unchanged
        t = p.inputs["audio"].shape[1]
        assert torch.equal(out.inputs["audio"][row:row + len(p), :t], p.inputs["audio"])
        row += len(p)
    assert collate_batches(parts[0]) is parts[0]  # a Batch from __getitems__ passes through

