"""Tests for pase.prototypes: label binning, class means, EMA bank, PCL loss (house rule 12)."""

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from pase.prototypes import (
    PrototypeBank,
    class_centroids,
    class_means,
    ema_update,
    labels_to_classes,
    num_bins,
    pcl_loss,
    prototype_logits,
    update_banks,
)

# float64 arithmetic of a few terms: equal up to rounding
EXACT = dict(atol=1e-12, rtol=1e-12)


def test_labels_to_classes_hand_cases():
    y = torch.tensor([-3.0, -2.5, -1.5, -0.51, -0.5, -0.0, 0.0, 0.5, 0.51, 1.5, 2.5, 3.4])
    assert labels_to_classes(y, "sign").tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1]
    # round half to even: -0.5, 0.5 -> 0 (neutral); -1.5 -> -2, 1.5 -> 2, 2.5 -> 2, -2.5 -> -2
    assert labels_to_classes(y, "polarity").tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert labels_to_classes(y, "round7").tolist() == [0, 1, 1, 2, 3, 3, 3, 3, 4, 5, 5, 6]
    assert labels_to_classes(torch.tensor([-7.0, 9.0]), "round7").tolist() == [0, 6]  # clipped
    ids = torch.tensor([3, 0, 2], dtype=torch.int32)
    assert labels_to_classes(ids, "classes").dtype == torch.long
    assert labels_to_classes(ids, "classes").tolist() == [3, 0, 2]


def test_binning_errors_and_sizes():
    assert [num_bins(b) for b in ("sign", "polarity", "round7")] == [2, 3, 7]
    assert num_bins("classes", num_classes=4) == 4
    with pytest.raises(ValueError, match="unknown binning 'round5'; valid: sign, polarity, round7"):
        labels_to_classes(torch.zeros(2), "round5")
    with pytest.raises(ValueError, match="needs num_classes"):
        num_bins("classes")
    with pytest.raises(TypeError, match="use binning='classes'"):
        labels_to_classes(torch.tensor([1, 2]), "sign")
    with pytest.raises(TypeError, match="expects integer ids"):
        labels_to_classes(torch.tensor([1.0]), "classes")


def test_class_means_equals_loop():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(20, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (20,), generator=g)
    y[y == 2] = 1  # class 2 absent
    sums, counts = class_means(h, y, 4)
    for k in range(4):
        assert_close(sums[k], h[y == k].sum(0), **EXACT)
        assert counts[k] == (y == k).sum()
    assert counts[2] == 0 and (sums[2] == 0).all()
    cent, present = class_centroids(h, y, 4)
    assert present.tolist() == [bool((y == k).any()) for k in range(4)]
    assert_close(cent[0], h[y == 0].mean(0), **EXACT)
    with pytest.raises(ValueError, match=r"features \(\.\.\., B, D\) and classes \(B,\)"):
        class_means(h, y[:3], 4)


def test_weights_and_keep_leave_samples_out_as_the_subset_does():
    """class_means' weights (0/1: has_class) and pcl_loss's keep give what the kept samples alone give,
    with no gradient to the others."""
    g = torch.Generator().manual_seed(5)
    h = torch.randn(12, 5, generator=g, dtype=torch.float64, requires_grad=True)
    c = torch.randn(3, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (12,), generator=g)
    keep = torch.arange(12) % 3 != 0
    sums, counts = class_means(h, y, 3, keep)
    ref_sums, ref_counts = class_means(h[keep], y[keep], 3)
    assert_close(sums, ref_sums, **EXACT)
    assert_close(counts, ref_counts, **EXACT)
    init = torch.ones(3, dtype=torch.bool)
    loss = pcl_loss(h, y, c, init, tau=0.5, keep=keep)
    assert_close(loss, pcl_loss(h[keep], y[keep], c, init, tau=0.5), **EXACT)
    (grad,) = torch.autograd.grad(loss + sums.sum(), h)
    assert (grad[~keep] == 0).all() and (grad[keep] != 0).any()
    with pytest.raises(ValueError, match=r"class_means: weights must be \(B,\) = \(12,\)"):
        class_means(h, y, 3, keep[:4])


def test_ema_two_steps_closed_form():
    gamma = 0.9
    p = torch.zeros(3, 2, dtype=torch.float64)
    init = torch.zeros(3, dtype=torch.bool)
    # step 1: class 0 seen with mean (1, 2) -> starts there; classes 1, 2 unseen
    s1 = torch.tensor([[2.0, 4.0], [0.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    p, init = ema_update(p, init, s1, torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64), gamma)
    assert_close(p, torch.tensor([[1.0, 2.0], [0.0, 0.0], [0.0, 0.0]], dtype=torch.float64), **EXACT)
    assert init.tolist() == [True, False, False]
    # step 2: class 0 mean (3, 0) -> 0.9 (1, 2) + 0.1 (3, 0); class 1 first seen at (-1, 5)
    s2 = torch.tensor([[3.0, 0.0], [-3.0, 15.0], [0.0, 0.0]], dtype=torch.float64)
    p, init = ema_update(p, init, s2, torch.tensor([1.0, 3.0, 0.0], dtype=torch.float64), gamma)
    expected = torch.tensor([[0.9 * 1 + 0.1 * 3, 0.9 * 2], [-1.0, 5.0], [0.0, 0.0]], dtype=torch.float64)
    assert_close(p, expected, **EXACT)
    assert init.tolist() == [True, True, False]


def test_library_defaults_are_the_spec_constants():
    """The public API's defaults are PASE_SPEC's gamma = 0.98 (bank and ema_update) and tau = 0.1
    (prototype_logits, pcl_loss, PrototypeBank.logits), checked as numbers, not only through the
    config path; a momentum of 1 (a bank that never moves) is refused."""
    bank = PrototypeBank(2, 2)
    assert bank.momentum == 0.98
    bank.update(torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 1]))
    bank.update(torch.tensor([[3.0, 0.0], [0.0, 4.0]]), torch.tensor([0, 1]))
    assert_close(bank.prototypes, torch.tensor([[0.98 * 1 + 0.02 * 3, 0.0], [0.0, 0.98 * 2 + 0.02 * 4]]))
    p, _ = ema_update(torch.tensor([[1.0, 2.0]], dtype=torch.float64), torch.tensor([True]),
                      torch.tensor([[6.0, 0.0]], dtype=torch.float64), torch.tensor([2.0], dtype=torch.float64))
    assert_close(p, torch.tensor([[0.98 * 1 + 0.02 * 3, 0.98 * 2]], dtype=torch.float64), **EXACT)
    h = torch.tensor([[1.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    c = torch.tensor([[2.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    s = 2.0**-0.5
    expected = torch.tensor([[1.0, s], [0.0, s]], dtype=torch.float64) / 0.1
    assert_close(prototype_logits(h, c), expected, **EXACT)
    y = torch.tensor([1, 0])
    assert_close(pcl_loss(h, y, c, torch.tensor([True, True])), F.cross_entropy(expected, y), **EXACT)
    assert_close(bank.logits(h.float()), prototype_logits(h.float(), bank.prototypes, tau=0.1))
    for bad in (1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=rf"PrototypeBank: momentum must be in \[0, 1\), got {bad}"):
            PrototypeBank(2, 4, momentum=bad)
    assert PrototypeBank(2, 4, momentum=0.0).momentum == 0.0  # 0: the batch mean itself, allowed


def test_ema_absent_class_untouched_and_inputs_not_mutated():
    p = torch.tensor([[1.0, 1.0], [2.0, 2.0]])
    init = torch.tensor([True, True])
    p_copy = p.clone()
    new, _ = ema_update(p, init, torch.tensor([[4.0, 4.0], [0.0, 0.0]]), torch.tensor([1.0, 0.0]), 0.5)
    assert_close(new, torch.tensor([[2.5, 2.5], [2.0, 2.0]]))
    assert_close(p, p_copy)  # pure function


def test_bank_never_zero_for_unseen_then_seen_class():
    g = torch.Generator().manual_seed(1)
    bank = PrototypeBank(num_classes=3, dim=4, momentum=0.98)
    for step in range(5):  # class 2 unseen for five steps, class 1 from step 3 on
        h = torch.randn(8, 4, generator=g) + 3.0
        y = torch.zeros(8, dtype=torch.long) if step < 3 else torch.tensor([0, 1] * 4)
        bank.update(h, y)
        assert bank.initialized.tolist() == [True, step >= 3, False]
        assert (bank.prototypes[2] == 0).all()
    h = torch.randn(8, 4, generator=g) + 3.0
    bank.update(h, torch.full((8,), 2, dtype=torch.long))
    assert_close(bank.prototypes[2], h.mean(0))  # first observation: the mean itself
    assert (bank.prototypes.norm(dim=-1) > 1.0).all()  # nothing blended with the zero init


def test_bank_update_has_no_grad_and_separation():
    bank = PrototypeBank(num_classes=3, dim=2)
    h = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    assert torch.isnan(bank.separation())  # undefined with < 2 prototypes
    bank.update(h, torch.tensor([0, 1]))
    assert not bank.prototypes.requires_grad
    assert_close(bank.separation(), torch.tensor(1.0))  # orthogonal: cosine distance 1
    assert set(dict(bank.named_buffers())) == {"prototypes", "initialized"}


def test_bank_update_from_half_precision_features_sums_in_float32():
    """bf16 features (bf16-mixed training) update the float32 banks as their float32 values would,
    within bf16's rounding of the inputs: the class sums are taken in float32 (in bf16 an
    index_add over 1,024 samples lost whole units)."""
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(3, 1024, 4, generator=g) + 1.0
    classes = (torch.arange(1024) % 3 == 0).long()
    rounded = feats.bfloat16()

    def run(f):
        banks = [PrototypeBank(num_classes=2, dim=4) for _ in range(3)]
        update_banks(banks, f, classes)
        return torch.stack([b.prototypes for b in banks])

    assert_close(run(rounded), run(rounded.float()), atol=1e-6, rtol=1e-6)  # the same sums
    assert (run(rounded) - run(feats)).abs().max() < 1e-2  # only the inputs' rounding


def test_prototype_logits_masking():
    h = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    c = torch.tensor([[2.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    init = torch.tensor([True, False, True])
    logits = prototype_logits(h, c, tau=0.5, initialized=init)
    s = 2.0**-0.5
    assert_close(logits, torch.tensor([[2.0, float("-inf"), 2 * s], [0.0, float("-inf"), 2 * s]]))
    none = prototype_logits(h, c, tau=0.5, initialized=torch.zeros(3, dtype=torch.bool))
    assert_close(none, torch.zeros(2, 3))


def test_pcl_equals_manual_cross_entropy():
    g = torch.Generator().manual_seed(2)
    h = torch.randn(10, 6, generator=g, dtype=torch.float64)
    c = torch.randn(4, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (10,), generator=g)
    y[:3] = 3  # class 3 is not initialised: its samples are skipped and it leaves the softmax
    init = torch.tensor([True, True, True, False])
    loss = pcl_loss(h, y, c, init, tau=0.2)
    cos = F.normalize(h, dim=-1) @ F.normalize(c[:3], dim=-1).T / 0.2  # (B, 3)
    keep = y < 3
    manual = F.cross_entropy(cos[keep], y[keep])
    assert_close(loss, manual, **EXACT)


def test_pcl_gradient_reaches_features_only():
    g = torch.Generator().manual_seed(3)
    h = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    c = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    pcl_loss(h, y, c, torch.ones(3, dtype=torch.bool)).backward()
    assert h.grad is not None and h.grad.abs().sum() > 0 and torch.isfinite(h.grad).all()
    assert c.grad is None


def test_pcl_no_valid_sample_is_zero_with_graph():
    h = torch.randn(4, 3, requires_grad=True)
    y = torch.tensor([1, 1, 2, 2])
    for init in (torch.tensor([True, False, False]), torch.zeros(3, dtype=torch.bool)):
        loss = pcl_loss(h, y, torch.randn(3, 3), init)
        assert loss.item() == 0.0 and loss.requires_grad
        (grad,) = torch.autograd.grad(loss, h)
        assert_close(grad, torch.zeros_like(h))


def test_pcl_zero_features_finite():
    h = torch.zeros(3, 4, requires_grad=True)
    loss = pcl_loss(h, torch.tensor([0, 1, 1]), torch.zeros(2, 4), torch.ones(2, dtype=torch.bool))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(h.grad).all()


def test_batched_forms_equal_per_modality_calls():
    """(M, B, D) features against (M, K, D) banks: one call equals M separate ones."""
    g = torch.Generator().manual_seed(3)
    M, B, K, D = 3, 16, 4, 5
    h = torch.randn(M, B, D, generator=g, dtype=torch.float64)
    y = torch.randint(0, K, (B,), generator=g)
    protos = torch.randn(M, K, D, generator=g, dtype=torch.float64)
    init = torch.tensor([[True, True, False, True], [True, False, False, False], [False] * 4])
    sums, counts = class_means(h, y, K)
    logits = prototype_logits(h, protos, 0.2, init)
    losses = pcl_loss(h, y, protos, init, 0.2)
    assert losses.shape == (M,)
    for m in range(M):
        s_m, c_m = class_means(h[m], y, K)
        assert_close(sums[m], s_m, **EXACT)
        assert_close(counts, c_m, **EXACT)
        assert_close(logits[m], prototype_logits(h[m], protos[m], 0.2, init[m]), **EXACT)
        assert_close(losses[m], pcl_loss(h[m], y, protos[m], init[m], 0.2), **EXACT)
    assert (logits[2] == 0).all()  # a bank with no initialised prototype: uniform, not -inf


def test_update_banks_equals_one_update_per_bank():
    g = torch.Generator().manual_seed(4)
    together = [PrototypeBank(3, 4) for _ in range(3)]
    alone = [PrototypeBank(3, 4) for _ in range(3)]
    for step in range(3):
        h = torch.randn(3, 10, 4, generator=g)
        y = torch.randint(0, 2 if step == 0 else 3, (10,), generator=g)  # class 2 first seen at step 1
        update_banks(together, h, y)
        for b, hm in zip(alone, h):
            b.update(hm, y)
    for b1, b2 in zip(together, alone):
        assert_close(b1.prototypes, b2.prototypes, atol=1e-6, rtol=1e-6)
        assert b1.initialized.tolist() == b2.initialized.tolist() == [True, True, True]
    with pytest.raises(ValueError, match="one feature row per bank"):
        update_banks(together, torch.randn(2, 10, 4), y)
    with pytest.raises(ValueError, match="one shape and momentum"):
        update_banks([PrototypeBank(3, 4), PrototypeBank(3, 5)], torch.randn(2, 10, 4), y)


def test_class_ids_and_widths_that_do_not_fit_get_one_named_error():
    """A (1,) classes tensor against 6 features broadcast to every sample (PCL six times the mean);
    7-way ids into a 2-class bank, float labels and a wrong feature width gave raw torch errors."""
    from pase.prototypes import PrototypeBank, labels_to_classes, pcl_loss

    torch.manual_seed(0)
    bank = PrototypeBank(2, 4)
    h = torch.randn(6, 4)
    bank.update(h, torch.tensor([0, 1, 0, 1, 0, 1]))
    y = torch.tensor([2.4, -1.2, 0.3, 1.8, -2.9, 0.0])
    with pytest.raises(ValueError, match=r"pcl_loss: classes must be \(B,\) = \(6,\), one class id per sample; got \(1,\)"):
        pcl_loss(h, torch.tensor([1]), bank.prototypes, bank.initialized)
    with pytest.raises(ValueError, match=r"class_means: class id 5 is outside \[0, 2\): the prototypes have 2 classes"):
        bank.update(h, labels_to_classes(y, "round7"))
    with pytest.raises(ValueError, match=r"pcl_loss: class id 5 is outside \[0, 2\)"):
        pcl_loss(h, labels_to_classes(y, "round7"), bank.prototypes, bank.initialized)
    with pytest.raises(ValueError, match=r"class id -1 is outside"):
        bank.update(h, torch.tensor([0, 1, -1, 1, 0, 1]))
    # id K itself (the off-by-one: polarity id 2 into a 2-class bank) is outside too, and the bank is left alone
    kept = bank.prototypes.clone()
    with pytest.raises(ValueError, match=r"class_means: class id 2 is outside \[0, 2\)"):
        bank.update(h, torch.tensor([0, 1, 2, 1, 0, 1]))
    assert torch.equal(bank.prototypes, kept)
    with pytest.raises(ValueError, match=r"pcl_loss: class id 2 is outside \[0, 2\)"):
        pcl_loss(h, torch.tensor([0, 1, 2, 1, 0, 1]), bank.prototypes, bank.initialized)
    with pytest.raises(TypeError, match=r"classes must be integer class ids \(torch.long\), got torch.float32"):
        bank.update(h, y)
    with pytest.raises(ValueError, match=r"update_banks: features must be \(banks, B, D\) with D = 4, the banks' width; "
                                         r"got \(1, 6, 5\)"):
        bank.update(torch.randn(6, 5), labels_to_classes(y, "sign"))
    with pytest.raises(ValueError, match=r"prototype_logits: features of width 5 against prototypes of width 4"):
        pcl_loss(torch.randn(6, 5), labels_to_classes(y, "sign"), bank.prototypes, bank.initialized)
    before = bank.prototypes.clone()
    bank.update(h, labels_to_classes(y, "sign"))  # what fits still updates
    assert not torch.equal(before, bank.prototypes)
