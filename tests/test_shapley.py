"""Tests for pase.shapley: brute force, axioms, closed forms, Monte-Carlo error, SGM (house rule 12)."""

import itertools
import math

import pytest
import torch
from torch.nn import Parameter
from torch.testing import assert_close

from pase.shapley import (
    coalition_masks,
    ema,
    exact_shapley,
    permutation_shapley,
    scale_gradients,
    sgm_coefficients,
    shapley_shares,
)

# float64 sums of at most 4! terms: agreement to 1e-12 is exact up to rounding
EXACT = dict(atol=1e-12, rtol=1e-12)


def _index(members):
    return sum(1 << i for i in members)


def _brute_force(v, M):
    """Average marginal contribution over all M! orderings."""
    phi = torch.zeros(M, *v.shape[1:], dtype=v.dtype)
    for order in itertools.permutations(range(M)):
        before = []
        for i in order:
            phi[i] += v[_index(before + [i])] - v[_index(before)]
            before.append(i)
    return phi / math.factorial(M)


def test_coalition_masks_bits():
    masks = coalition_masks(3)
    assert masks.shape == (8, 3) and masks.dtype == torch.bool
    assert not masks[0].any() and masks[7].all()
    for c in range(8):
        assert [bool(masks[c, i]) for i in range(3)] == [bool(c >> i & 1) for i in range(3)]


@pytest.mark.parametrize("M", [1, 2, 3, 4])
def test_exact_matches_brute_force(M):
    g = torch.Generator().manual_seed(M)
    v = torch.randn(2**M, generator=g, dtype=torch.float64)
    assert_close(exact_shapley(v), _brute_force(v, M), **EXACT)
    batched = torch.randn(2**M, 5, 2, generator=g, dtype=torch.float64)  # trailing dims ride along
    assert_close(exact_shapley(batched), _brute_force(batched, M), **EXACT)


@pytest.mark.parametrize("M", [2, 3, 5])
def test_efficiency(M):
    g = torch.Generator().manual_seed(10 + M)
    v = torch.randn(2**M, generator=g, dtype=torch.float64)
    assert_close(exact_shapley(v).sum(), v[-1] - v[0], **EXACT)


def test_symmetry_and_null_player():
    # v depends on players 0 and 1 symmetrically; player 2 adds nothing to any coalition
    masks = coalition_masks(3)
    n01 = masks[:, 0].double() + masks[:, 1].double()
    v = n01**2 + 0.5  # superadditive, symmetric in 0 and 1
    phi = exact_shapley(v)
    assert_close(phi[0], phi[1], **EXACT)
    assert_close(phi[2], torch.tensor(0.0, dtype=torch.float64), **EXACT)
    assert_close(phi.sum(), v[-1] - v[0], **EXACT)


def test_additive_game_closed_form():
    w = torch.tensor([0.3, -1.2, 2.0, 0.7], dtype=torch.float64)
    v = coalition_masks(4).double() @ w + 3.0  # v(S) = c + sum_{i in S} w_i
    assert_close(exact_shapley(v), w, **EXACT)


def test_exact_rejects_non_power_of_two_and_casts_ints():
    with pytest.raises(ValueError, match="2\\^M rows"):
        exact_shapley(torch.zeros(6))
    assert_close(exact_shapley(torch.tensor([0, 1, 2, 3])), torch.tensor([1.0, 2.0]))


def test_permutation_mc_within_standard_error():
    M = 6
    g = torch.Generator().manual_seed(0)
    v = torch.randn(2**M, generator=g, dtype=torch.float64)
    exact = exact_shapley(v)
    est, se = permutation_shapley(v, M, num_permutations=4000, generator=torch.Generator().manual_seed(1))
    assert se.shape == (M,) and (se > 0).all()
    # a CLT 4-sigma band per modality; the seed is fixed, so this is deterministic
    assert ((est - exact).abs() <= 4 * se).all(), f"{est} vs {exact} (se {se})"
    assert_close(est.sum(), v[-1] - v[0], atol=1e-10, rtol=0)  # each ordering telescopes to v(N)-v(0)


def test_permutation_accepts_callable_and_matches_table():
    M = 4
    g = torch.Generator().manual_seed(2)
    v = torch.randn(2**M, generator=g, dtype=torch.float64)
    bits = 2 ** torch.arange(M)
    fn = lambda masks: v[(masks.long() * bits).sum(-1)]  # noqa: E731
    a = permutation_shapley(v, M, 50, generator=torch.Generator().manual_seed(3))
    b = permutation_shapley(fn, M, 50, generator=torch.Generator().manual_seed(3))
    assert_close(a, b, **EXACT)
    with pytest.raises(ValueError, match="num_permutations"):
        permutation_shapley(v, M, 1)


def test_permutation_masks_are_made_on_the_utilitys_device():
    """A callable utility (the model's coalition pass) gets its masks on ``device`` and the estimate
    stays there: two host-to-device copies per step were made before (a sync on CUDA). The 'meta'
    device stands in for an accelerator; the same orderings are drawn as on the CPU."""
    M, seen = 3, []

    def fn(masks):
        seen.append(masks.device.type)
        return masks.float().sum(-1) * 2.0  # additive game: every player's value is 2

    v, se = permutation_shapley(fn, M, 8, generator=torch.Generator().manual_seed(0), device=torch.device("meta"))
    assert seen == ["meta"] and v.device.type == "meta" and se.device.type == "meta"
    cpu, _ = permutation_shapley(fn, M, 8, generator=torch.Generator().manual_seed(0))
    assert_close(cpu, torch.full((M,), 2.0), **EXACT)


def test_shares_closed_form_negative_and_zero():
    v = torch.tensor([3.0, 1.0, -1.0], dtype=torch.float64)
    f = 1e-3 * 5.0  # floor = eps * sum |v|
    expected = torch.tensor([3.0, 1.0, f], dtype=torch.float64) / (4.0 + f)
    psi = shapley_shares(v, eps=1e-3)
    assert_close(psi, expected, **EXACT)
    assert psi.argmin() == 2  # the hurting modality gets the smallest share
    for values in (torch.zeros(3), torch.full((3,), 1e-44), -torch.ones(3)):
        assert_close(shapley_shares(values), torch.full((3,), 1 / 3))
    batched = shapley_shares(torch.tensor([[1.0, 0.0], [3.0, 0.0]]))
    assert_close(batched, torch.tensor([[0.25, 0.5], [0.75, 0.5]]))
    assert torch.isfinite(shapley_shares(torch.tensor([1e30, -1e30, 0.0]))).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_constant_table_gives_zero_values_uniform_shares_and_no_modulation(dtype):
    """Every player is null when every coalition scores the same (an accuracy utility often is, early
    in training): the values are exactly 0, the shares uniform and the SGM coefficients 1. The weight
    matrix's rounding left about 1e-8 in float32, which the relative floor made into shares of
    [0.001, 0.25, 0.75] and coefficients of 0.37 (review); a table differing anywhere is unchanged."""
    for M in (2, 3, 4, 5):
        for c in (0.5, 0.578125, 37 / 64, -2.0, 1e-3, 0.0):
            table = torch.full((2**M,), c, dtype=dtype)
            values = exact_shapley(table)
            assert torch.equal(values, torch.zeros(M, dtype=dtype)), (M, c, values)
            assert_close(sgm_coefficients(shapley_shares(values)), torch.ones(M, dtype=dtype), rtol=0, atol=0)
    table = torch.full((8,), 0.5, dtype=dtype)
    table[5] += 1 / 64  # one coalition differs: the values are W's product as before
    W = torch.stack([torch.tensor([1.0 if (c >> i) & 1 else 0.0 for c in range(8)]) for i in range(3)])
    assert torch.equal(exact_shapley(table), exact_shapley(table + 0))  # deterministic
    assert exact_shapley(table)[W[:, 5] == 0].abs().max() > 0  # the non-members of coalition 5 lose by it
    batched = torch.stack([torch.full((8,), 0.25, dtype=dtype), table], -1)  # (C, 2): one constant column
    out = exact_shapley(batched)
    assert torch.equal(out[:, 0], torch.zeros(3, dtype=dtype)) and torch.equal(out[:, 1], exact_shapley(table))


def test_a_constant_tables_differentiable_values_keep_their_gradient():
    """AGM differentiates the values: for a constant table they are 0, and their gradient is still the
    weight matrix's (the values are linear in the utilities)."""
    r = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    grads = []
    for table in (torch.full((8, 2), 0.7, dtype=torch.float64), torch.rand(8, 2, dtype=torch.float64)):
        table.requires_grad_(True)
        values = exact_shapley(table)
        if table[0, 0] == 0.7:
            assert torch.equal(values.detach(), torch.zeros(3, 2, dtype=torch.float64))
        (values * r[:, None]).sum().backward()
        grads.append(table.grad)
    assert_close(grads[0], grads[1], rtol=0, atol=1e-15)  # the same W^T r, constant table or not
    assert grads[0].abs().sum() > 0


def test_sgm_coefficients():
    psi = torch.tensor([0.67, 0.18, 0.15], dtype=torch.float64)  # shares after SGM on MOSI
    phi = sgm_coefficients(psi)
    expected = torch.exp(0.15 / psi - 1.0)
    assert_close(phi, expected, **EXACT)
    assert phi[2] == 1.0 and ((phi[:2] > math.exp(-1)) & (phi[:2] < 1)).all()
    assert torch.isfinite(sgm_coefficients(torch.tensor([1.0, 0.0]))).all()
    assert_close(sgm_coefficients(torch.full((3,), 1 / 3)), torch.ones(3))


def test_ema_helper():
    assert ema(None, 2.0, 0.9) == 2.0
    assert_close(ema(torch.tensor(1.0), torch.tensor(3.0), 0.75), torch.tensor(1.5))


def test_scale_gradients_only_touches_its_group():
    g = torch.Generator().manual_seed(4)
    params = {m: [Parameter(torch.randn(3, generator=g)), Parameter(torch.randn(2, 2, generator=g))]
              for m in ("audio", "text", "vision")}
    shared = Parameter(torch.randn(4, generator=g))
    no_grad = Parameter(torch.randn(2, generator=g))
    for p in [*itertools.chain(*params.values()), shared]:
        p.grad = torch.randn(p.shape, generator=g)
    before = {id(p): p.grad.clone() for p in [*itertools.chain(*params.values()), shared]}
    groups = {m: ps + ([no_grad] if m == "audio" else []) for m, ps in params.items()}
    coeffs = {"audio": 1.0, "text": torch.tensor(0.5), "vision": 0.25}
    scale_gradients(groups, coeffs)
    for m, ps in params.items():
        for p in ps:
            assert_close(p.grad, before[id(p)] * float(coeffs[m]), atol=0, rtol=0)
    assert_close(shared.grad, before[id(shared)], atol=0, rtol=0)
    assert no_grad.grad is None
    with pytest.raises(KeyError, match="same modality keys"):
        scale_gradients(groups, {"audio": 1.0})
    # A stray extra key (a typo, or a modality the model does not have) is refused too, before any
    # gradient is scaled: the docstring asks for exactly the keys of groups, not a superset.
    scaled = {id(p): p.grad.clone() for p in itertools.chain(*params.values())}
    with pytest.raises(KeyError, match=r"coeffs \['audio', 'extra', 'text', 'vision'\]"):
        scale_gradients(groups, {**coeffs, "extra": 3.0})
    for p in itertools.chain(*params.values()):
        assert_close(p.grad, scaled[id(p)], atol=0, rtol=0)
    with pytest.raises(ValueError, match="both groups"):
        scale_gradients({"a": [shared], "b": [shared]}, {"a": 1.0, "b": 1.0})
