import math

import pytest
import torch

from pase.config import Config, apply_overrides
from pase.data import create_data
from pase.methods import create_method
from pase.methods.pase import prototype_targets
from pase.models import build_model
from pase.prototypes import class_means, pcl_loss
from pase.shapley import exact_shapley, sgm_coefficients, shapley_shares


@pytest.fixture(scope="module")
def bundle():
    return create_data("synthetic", sizes=[64, 16, 16])


def _setup(bundle, *sets):
    torch.manual_seed(0)
    cfg = apply_overrides(Config(), ["method=pase", "model.dropout=0.0", *sets])
    model = build_model(cfg, bundle)
    return cfg, model, create_method("pase", cfg, bundle.task, model)


def test_sgm_scales_exactly_each_modality_group(bundle):
    cfg, model, method = _setup(bundle, "pase.sgm_smoothing=0.0", "pase.switch_max_epoch=0")
    assert method._phase2
    batch = bundle.splits["train"].__getitems__(list(range(32)))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):  # fit the batch a little, so the Shapley values are positive and unequal
        opt.zero_grad()
        method.loss(model, batch, model(batch))[0].backward()
        opt.step()
    method._pending.pop()  # drop the 30 fitting steps' coefficients (no optimiser step took them)
    opt.zero_grad()
    out = model(batch)
    loss, _ = method.loss(model, batch, out)
    loss.backward()
    before = {id(p): p.grad.clone() for p in model.parameters() if p.grad is not None}
    # expected coefficients from the batch's Shapley values, by the closed form
    values = exact_shapley(method.coalition_utilities(model, out, batch.target))
    phi = sgm_coefficients(shapley_shares(values))
    assert float(phi.min()) < 0.9, phi  # a real modulation, or the test could not fail
    method.before_optimizer_step(model)
    for i, m in enumerate(model.modalities):
        for p in model.modality_parameters()[m]:
            torch.testing.assert_close(p.grad, before[id(p)] * phi[i])
    for p in model.shared_parameters():
        if p.grad is not None:
            torch.testing.assert_close(p.grad, before[id(p)])
    assert math.isclose(float(phi.max()), 1.0, rel_tol=1e-6)
    assert float(phi.min()) >= math.exp(-1)


def test_phase_one_leaves_gradients_alone(bundle):
    cfg, model, method = _setup(bundle)
    batch = bundle.splits["train"].__getitems__(list(range(32)))
    loss, _ = method.loss(model, batch, model(batch))
    loss.backward()
    before = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    method.before_optimizer_step(model)
    after = [p.grad for p in model.parameters() if p.grad is not None]
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b)


def test_non_finite_coalition_utilities_modulate_nothing(bundle, monkeypatch):
    """A batch whose coalition utilities are NaN (a diverging coalition) leaves the gradients
    alone in phase 2 instead of scaling them by NaN coefficients."""
    cfg, model, method = _setup(bundle, "pase.sgm_smoothing=0.0", "pase.switch_max_epoch=0")
    batch = bundle.splits["train"].__getitems__(list(range(32)))
    monkeypatch.setattr(type(method), "coalition_utilities",
                        lambda self, *a, **k: torch.full((8,), float("nan")))
    loss, _ = method.loss(model, batch, model(batch))
    loss.backward()
    before = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    method.before_optimizer_step(model)
    for a, p in zip(before, [p for p in model.parameters() if p.grad is not None]):
        torch.testing.assert_close(p.grad, a)
    torch.testing.assert_close(method.coeffs, torch.ones(3))


@pytest.mark.parametrize("term", ["pcl", "ot"])
def test_pcl_and_ot_gradients_reach_the_encoders(bundle, term):
    cfg, model, method = _setup(bundle, "pase.gate=false")
    batch = bundle.splits["train"].__getitems__(list(range(32)))
    method.loss(model, batch, model(batch))  # the first batch initialises the prototypes
    out = model(batch)
    classes = prototype_targets(batch.target, bundle.task, "sign")
    snap = {m: (model.banks[m].prototypes.clone(), model.banks[m].initialized.clone()) for m in model.modalities}
    if term == "pcl":
        loss = sum(pcl_loss(out.reps[m], classes, *snap[m]) for m in model.modalities)
    else:
        loss = method._ot_loss(class_means(out.stacked.transpose(0, 1), classes, 2), *out.banks)
    assert float(loss.detach()) > 0
    loss.backward()
    for m in model.modalities:
        g = sum(float(p.grad.abs().sum()) for p in model.encoders[m].parameters() if p.grad is not None)
        assert g > 0, f"{term} gradient does not reach the {m} encoder"
    assert all(not b.prototypes.requires_grad for b in model.banks.values())


def test_phase_switch_on_plateau_and_at_max_epoch(bundle):
    cfg, model, method = _setup(bundle, "pase.switch_patience=2", "pase.switch_max_epoch=10")
    method.end_validation_epoch(model, 0, True)
    method.end_validation_epoch(model, 1, False)
    assert int(method.phase) == 1
    logs = method.end_validation_epoch(model, 2, False)
    assert int(method.phase) == 2 and int(method.switch_epoch) == 3 and logs["switch_epoch"] == 3
    cfg, model, method = _setup(bundle, "pase.switch_patience=100", "pase.switch_max_epoch=2")
    method.end_validation_epoch(model, 0, True)
    assert int(method.phase) == 1
    method.end_validation_epoch(model, 1, True)
    assert int(method.phase) == 2
    cfg, model, method = _setup(bundle, "pase.sgm=false", "pase.switch_max_epoch=1")
    method.end_validation_epoch(model, 5, False)
    assert int(method.phase) == 1  # no SGM: never switches


def test_ablation_switches_build_what_they_say(bundle):
    _, model, _ = _setup(bundle, "pase.gate=false", "pase.pcl=false", "pase.ot=false")
    assert model.gate is None and model.banks is None
    _, model, method = _setup(bundle, "pase.gate=true", "pase.pcl=false", "pase.ot=false")
    batch = bundle.splits["train"].__getitems__(list(range(8)))
    _, logs = method.loss(model, batch, model(batch))
    assert model.gate is not None and "pcl_loss" not in logs and "ot_loss" not in logs


def test_loaded_phase_reaches_the_host_side_flag(bundle):
    """A checkpoint in phase 2 restores SGM: the step reads a host flag refreshed on load."""
    _, model, a = _setup(bundle, "pase.switch_max_epoch=1")
    a.end_validation_epoch(model, 0, True)
    assert int(a.phase) == 2 and a._phase2
    _, model_b, b = _setup(bundle)
    assert not b._phase2
    b.load_state_dict(a.state_dict())
    assert b._phase2 and int(b.switch_epoch) == 1


def _sgd_step(bundle, target, steps=12):
    torch.manual_seed(0)
    cfg, model, method = _setup(bundle, "pase.sgm_smoothing=0.0", f"pase.sgm_target={target}",
                                "pase.switch_max_epoch=0")
    groups = [{"params": ps} for ps in model.modality_parameters().values()] + [{"params": model.shared_parameters()}]
    opt = torch.optim.SGD(groups, lr=0.1)
    for k in range(steps):
        batch = bundle.splits["train"].__getitems__(list(range(32 * (k % 2), 32 * (k % 2 + 1))))
        opt.zero_grad()
        loss, _ = method.loss(model, batch, model(batch))
        loss.backward()
        method.before_optimizer_step(model, opt)
        opt.step()
    return model, method, opt


def test_sgm_on_the_step_equals_sgm_on_the_gradient_under_sgd(bundle):
    """sgm_target=step scales modality m's learning rate by phi_m (from its base rate, never
    compounding); under plain SGD that is the same update as scaling its gradients."""
    m_grad, _, _ = _sgd_step(bundle, "grad")
    m_step, method, opt = _sgd_step(bundle, "step")
    for (n, a), (_, b) in zip(m_grad.named_parameters(), m_step.named_parameters()):
        torch.testing.assert_close(a, b, msg=lambda s: f"{n}: {s}")
    phi = method.coeffs.tolist()
    for i, group in enumerate(opt.param_groups[:-1]):
        assert group["pase_base_lr"] == 0.1 and math.isclose(group["lr"], 0.1 * phi[i], rel_tol=1e-6)
    assert opt.param_groups[-1]["lr"] == 0.1 and min(phi) < 1  # shared group untouched; a damped modality


def test_sgm_step_target_needs_the_optimizer_and_a_valid_name(bundle):
    cfg, model, method = _setup(bundle, "pase.sgm_target=step", "pase.switch_max_epoch=0")
    batch = bundle.splits["train"].__getitems__(list(range(32)))
    method.loss(model, batch, model(batch))[0].backward()
    with pytest.raises(ValueError, match="needs the optimiser"):
        method.before_optimizer_step(model)
    with pytest.raises(ValueError, match="sgm_target='lr' is not one of grad, step"):
        _setup(bundle, "pase.sgm_target=lr")


def test_sgm_step_target_refuses_an_optimizer_without_modality_groups_and_follows_a_scheduler(bundle):
    """With the usual one-group optimiser sgm_target=step modulated nothing, silently; with one group
    per modality and StepLR, the modality groups stayed at 0.1 phi while the scheduler halved the
    rate every step (the first rate seen was pinned as the base)."""
    cfg, model, method = _setup(bundle, "pase.sgm_target=step", "pase.switch_max_epoch=0", "pase.sgm_smoothing=0.0")
    batch = bundle.splits["train"].__getitems__(list(range(32)))
    method.loss(model, batch, model(batch))[0].backward()
    with pytest.raises(ValueError, match=r"sgm_target=step scales the learning rate of optimiser groups that hold one "
                                         r"modality's parameters only, and this optimiser has none"):
        method.before_optimizer_step(model, torch.optim.SGD(model.parameters(), lr=0.1))
    cfg, model, method = _setup(bundle, "pase.sgm_target=step", "pase.switch_max_epoch=0", "pase.sgm_smoothing=0.0")
    groups = [{"params": ps} for ps in model.modality_parameters().values()] + [{"params": model.shared_parameters()}]
    opt = torch.optim.SGD(groups, lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for k in range(4):
        batch = bundle.splits["train"].__getitems__(list(range(32 * (k % 2), 32 * (k % 2 + 1))))
        opt.zero_grad()
        method.loss(model, batch, model(batch))[0].backward()
        method.before_optimizer_step(model, opt)
        phi = method.applied_coeffs().tolist()
        for i, group in enumerate(opt.param_groups[:-1]):
            assert math.isclose(group["lr"], 0.1 * 0.5 ** k * phi[i], rel_tol=1e-6), (k, i)
        assert math.isclose(opt.param_groups[-1]["lr"], 0.1 * 0.5 ** k)  # the shared group: the scheduler's
        opt.step()
        sched.step()
    assert min(phi) < 1


def test_sgm_step_target_leaves_a_group_mixing_two_modalities_at_its_rate(bundle):
    """An optimiser group holding two modalities' parameters has no one phi: it keeps its rate, as the
    shared group does, while a one-modality group gets base * phi_m. Step 1's phi (0.5, 0.25, 1) puts
    the mixed group's two modalities below 1, so scaling it by either one's phi is caught; step 2's
    (1, 1, 0.5) damps the vision group alone."""
    _, model, method = _setup(bundle, "pase.sgm_target=step", "pase.switch_max_epoch=0", "pase.sgm_smoothing=0.0")
    assert sorted(method.modalities) == ["audio", "text", "vision"]
    ps = model.modality_parameters()
    opt = torch.optim.SGD([{"params": [*ps["audio"], *ps["text"]]}, {"params": ps["vision"]},
                           {"params": model.shared_parameters()}], lr=0.1)
    steps = ({"audio": 0.5, "text": 0.25, "vision": 1.0}, 1.0), ({"audio": 1.0, "text": 1.0, "vision": 0.5}, 0.5)
    for phi, vision in steps:
        method._pending.add(torch.tensor([phi[m] for m in method.modalities]))
        method.before_optimizer_step(model, opt)
        assert opt.param_groups[0]["lr"] == 0.1 and "pase_base_lr" not in opt.param_groups[0]  # mixed: untouched
        assert math.isclose(opt.param_groups[1]["lr"], 0.1 * vision, rel_tol=1e-6)
        assert opt.param_groups[2]["lr"] == 0.1  # shared


def test_a_float64_models_shapley_values_are_float64(bundle):
    """The coalition pass and the utilities were cast to float32: a float64 model's Shapley values
    came back float32, off by about 1e-8 from a float64 computation (review)."""
    from pase.shapley import exact_shapley

    cfg, model, method = _setup(bundle)
    model = model.double()
    batch = bundle.splits["train"].__getitems__(list(range(32)))
    batch = batch.__class__(**{**batch.__dict__, "inputs": {m: x.double() for m, x in batch.inputs.items()},
                               "target": batch.target.double()})
    method.loss(model, batch, model(batch))  # the prototypes, for the gate
    out = model(batch)
    u = method.coalition_utilities(model, out, batch.target)
    assert u.dtype == torch.float64
    model.eval()  # the same forward, without touching the banks
    with torch.no_grad():
        ref = torch.stack([-(model(batch, present=mask).logits.squeeze(-1) - batch.target).abs().mean()
                           for mask in method.masks])  # each coalition by a masked forward pass, float64
    torch.testing.assert_close(u, ref, rtol=0, atol=1e-12)  # float32 arithmetic was off by ~1e-8
    values = exact_shapley(u)
    assert values.dtype == torch.float64 and torch.isfinite(values).all()


def test_a_float64_models_ot_and_prototypes_are_float64(bundle):
    """The OT loss and the banks' EMA took class sums of h.float(): a float64 model's OT loss came back
    float32 and a first prototype was off from its float64 class mean by about 1e-8 (review)."""
    cfg, model, method = _setup(bundle)
    model = model.double()
    method = method.double()
    batch = bundle.splits["train"].__getitems__(list(range(32)))
    batch = batch.__class__(**{**batch.__dict__, "inputs": {m: x.double() for m, x in batch.inputs.items()},
                               "target": batch.target.double()})
    out = model(batch)
    _, logs = method.loss(model, batch, out)
    assert logs["ot_loss"].dtype == torch.float64
    classes = prototype_targets(batch.target, bundle.task, cfg.pase.binning)
    h = out.reps["audio"].detach()
    for k in classes.unique().tolist():  # each class seen for the first time: its prototype is its mean
        torch.testing.assert_close(model.banks["audio"].prototypes[k], h[classes == k].mean(0), rtol=0, atol=1e-13)


def test_accuracy_utility_of_a_fresh_model_modulates_nothing_when_no_coalition_differs(bundle):
    """A fresh model's accuracy utility is often the same for every coalition (masking flips no sign):
    the first step's SGM coefficients must then be 1, not the 0.37 the rounding residue gave (review)."""
    cfg, model, method = _setup(bundle, "pase.shapley_utility=accuracy", "pase.switch_max_epoch=0",
                                "pase.sgm_smoothing=0.0")
    batch = bundle.splits["train"].__getitems__(list(range(32)))
    with torch.no_grad():
        for p in model.head.parameters():  # the head's output is its bias: one sign whatever is masked
            if p.dim() > 1:
                p.zero_()
    out = model(batch)
    u = method.coalition_utilities(model, out, batch.target)
    assert torch.equal(u, u[:1].expand_as(u))  # the constant table this test is about
    loss, _ = method.loss(model, batch, out)
    phi = method._pending.pop()
    assert torch.equal(phi, torch.ones(len(method.modalities))), phi


def test_pcl_from_the_forward_similarities_equals_pcl_loss(bundle):
    """PaSE takes PCL from the forward pass's prototype similarities: same value and gradient as
    pcl_loss on the representations."""
    from pase.prototypes import pcl_from_logits

    cfg, model, method = _setup(bundle, "pase.tau=0.2")
    batch = bundle.splits["train"].__getitems__(list(range(32)))
    method.loss(model, batch, model(batch))  # initialise the banks
    out = model(batch)
    classes = prototype_targets(batch.target, bundle.task, "sign")
    protos, init = out.banks
    mine = pcl_from_logits(out.proto_stacked, classes, init).mean()
    ref = pcl_loss(out.stacked.transpose(0, 1), classes, protos, init, 0.2).mean()
    torch.testing.assert_close(mine, ref)
    params = list(model.encoders.parameters())
    for a, b in zip(torch.autograd.grad(mine, params, retain_graph=True), torch.autograd.grad(ref, params)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("method_name", ["late_fusion", "pase"])
def test_permutation_sampling_above_the_exact_limit(bundle, method_name):
    """Above pase.shapley_exact_max_m the methods sample permutations: the estimate agrees with
    the exact values within its reported standard error, and its SE reaches the epoch log."""
    torch.manual_seed(0)
    exact_cfg = apply_overrides(Config(), [f"method={method_name}", "model.dropout=0.0"])
    model = build_model(exact_cfg, bundle)
    exact = create_method(method_name, exact_cfg, bundle.task, model)
    cfg = apply_overrides(exact_cfg, ["pase.shapley_exact_max_m=2", "pase.shapley_permutations=400"])
    sampled = create_method(method_name, cfg, bundle.task, model)
    assert exact.exact and not sampled.exact
    batch = bundle.splits["train"].__getitems__(list(range(32)))
    with torch.no_grad():
        out = model(batch)
    want, none = exact.shapley_values(model, out, batch.target)
    got, se = sampled.shapley_values(model, out, batch.target)
    assert none is None and se.shape == (3,) and (se >= 0).all() and se.max() > 0
    assert ((got - want).abs() <= 4 * se + 1e-6).all(), (got, want, se)
    assert torch.allclose(got.sum(), want.sum(), atol=1e-5)  # every ordering telescopes to v(all) - v(empty)
    sampled.track(model, batch, out)
    logs = sampled.epoch_diagnostics(model)
    assert all(f"shapley_se_{m}" in logs for m in model.modalities)


def test_too_few_permutations_names_the_key(bundle):
    with pytest.raises(ValueError, match=r"pase.shapley_permutations=1 must be >= 2"):
        _setup(bundle, "pase.shapley_exact_max_m=2", "pase.shapley_permutations=1")


@pytest.mark.parametrize("binning, iterative", [("sign", False), ("round7", True)])
def test_epoch_log_has_the_largest_ot_marginal_error(bundle, binning, iterative, monkeypatch):
    """``diag/ot_marginal_err`` is the epoch's largest Sinkhorn column-marginal error (0 for the
    two-class closed form); an unconverged solve (3 iterations) shows up there. Four batches, so the
    largest error (batch 3's, 4e-6) is not the last one (2e-7): with three the last solve was also
    the largest, and logging the last error passed."""
    import pase.methods.pase as P
    cfg, model, method = _setup(bundle, f"pase.binning={binning}", "pase.ot_max_iter=3", "pase.ot_warm_start=false")
    seen = []
    real = P.ot_alignment_loss_stacked

    def spy(*a, **k):
        loss, diag = real(*a, **k)
        seen.append(float(diag["marginal_err"]))
        return loss, diag
    monkeypatch.setattr(P, "ot_alignment_loss_stacked", spy)
    for i in range(4):
        batch = bundle.splits["train"].__getitems__(list(range(16 * i, 16 * i + 16)))
        method.loss(model, batch, model(batch))
    logs = method.end_validation_epoch(model, 0, True)
    assert len(seen) >= 2  # the first step initialises the banks; OT runs once they exist
    assert not iterative or seen[-1] < max(seen) / 2, seen  # else "largest" and "last" are the same number
    assert logs["ot_marginal_err"] == pytest.approx(max(seen), rel=1e-6)
    assert (logs["ot_marginal_err"] > 1e-6) == iterative, seen
    assert "ot_marginal_err" not in method.end_validation_epoch(model, 1, True)  # reset each epoch


def test_an_eval_mode_loss_leaves_the_banks_warm_start_and_sgm_alone(bundle):
    """A loss in eval mode is a measurement: with round7 (Sinkhorn, so a warm start is kept) in phase 2,
    it leaves the banks, the OT warm start, the epoch's OT cost and largest marginal error (a
    non-persistent buffer, outside the state dict tests/methods/test_base.py compares) and SGM's queued
    coefficients as the training step left them; back in train mode the same batch moves them all."""
    _, model, method = _setup(bundle, "pase.binning=round7", "pase.switch_max_epoch=0")
    batches = [bundle.splits["train"].__getitems__(list(range(16 * i, 16 * i + 16))) for i in range(3)]
    for batch in batches[:2]:  # the first initialises the banks, the second runs OT against them
        method.loss(model, batch, model(batch))
    def snap():
        state = {f"{k}.{m}": getattr(b, k).clone() for m, b in model.banks.items()
                 for k in ("prototypes", "initialized")}
        state.update(ot_log_u=method.ot_log_u.clone(), ot_err_max=method.ot_err_max.clone(),
                     ot_cost=method._ot_cost.total.clone(), pending=method._pending.total.clone())
        return state, (method._ot_cost.n, method._pending.n)

    before, counts = snap()
    assert before["ot_log_u"].abs().sum() > 0 and counts == (2, 2)  # a warm start kept, two steps queued
    model.eval()
    with torch.no_grad():
        method.loss(model, batches[2], model(batches[2]))
    after, counts_after = snap()
    assert [k for k in before if not torch.equal(before[k], after[k])] == [] and counts_after == (2, 2)
    model.train()
    with torch.no_grad():
        method.loss(model, batches[2], model(batches[2]))
    moved, counts_moved = snap()
    changed = {k for k in before if not torch.equal(before[k], moved[k])}
    assert {"prototypes.audio", "ot_log_u", "ot_cost", "pending"} <= changed, changed
    assert counts_moved == (3, 3)


@pytest.mark.parametrize("warm", [True, False])
def test_each_sinkhorn_solve_starts_from_the_previous_ones_potentials(bundle, warm, monkeypatch):
    """With round7 (K = 7: Sinkhorn, not the two-class closed form) every solve's warm start is the
    previous solve's log_u (-inf of empty rows as 0), kept in the ``ot_log_u`` buffer; on an
    accelerator the solve runs a fixed ot_fixed_iter, and the warm start is what converges it.
    pase.ot_warm_start=false starts every solve cold and leaves the buffer at zero."""
    import pase.methods.pase as P
    _, model, method = _setup(bundle, "pase.binning=round7", f"pase.ot_warm_start={str(warm).lower()}")
    inits, log_us = [], []
    real = P.ot_alignment_loss_stacked

    def spy(*a, **k):
        inits.append(None if k["init"] is None else k["init"].clone())
        loss, diag = real(*a, **k)
        log_us.append(diag["log_u"].detach().clone())
        return loss, diag
    monkeypatch.setattr(P, "ot_alignment_loss_stacked", spy)
    for i in range(3):
        batch = bundle.splits["train"].__getitems__(list(range(16 * i, 16 * i + 16)))
        method.loss(model, batch, model(batch))
    assert len(inits) == 3
    if not warm:
        assert inits == [None] * 3 and not method.ot_log_u.any()
        return
    assert not inits[0].any()  # the first solve starts cold
    for k in (1, 2):
        assert inits[k].abs().sum() > 0
        torch.testing.assert_close(inits[k], torch.nan_to_num(log_us[k - 1], neginf=0.0), rtol=0, atol=0)
    torch.testing.assert_close(method.ot_log_u, torch.nan_to_num(log_us[-1], neginf=0.0), rtol=0, atol=0)


def test_a_schedule_without_an_sgm_epoch_is_named(tmp_path, caplog):
    """switch_patience >= early_stop_patience: the run would stop when the switch comes."""
    from tiny import TINY

    from pase.methods.pase import schedule_warning
    from pase.training import train

    assert schedule_warning(Config(method="pase")) is None  # defaults: 3 < 10
    assert schedule_warning(apply_overrides(Config(), ["method=late_fusion", "train.early_stop_patience=2"])) is None
    assert schedule_warning(apply_overrides(Config(), ["method=pase", "pase.sgm=false", "train.early_stop_patience=3"])) is None
    msg = schedule_warning(apply_overrides(Config(), ["method=pase", "train.early_stop_patience=3"]))
    assert "pase.switch_patience=3 >= train.early_stop_patience=3" in msg and "only at pase.switch_max_epoch=30" in msg
    msg = schedule_warning(apply_overrides(Config(), ["method=pase", "train.early_stop_patience=2",
                                                      "train.max_epochs=30"]))
    assert "never (pase.switch_max_epoch=30 >= train.max_epochs=30)" in msg
    # early stopping with patience 0 stops as 1 does, while switch_patience 0 switches after epoch 0:
    # SGM trains from epoch 1, no warning (it said "set pase.switch_patience below 0")
    assert schedule_warning(apply_overrides(Config(), ["method=pase", "train.early_stop_patience=0",
                                                      "pase.switch_patience=0"])) is None
    # a run too short for the earliest SGM epoch (switch_patience + 1, or switch_max_epoch) trained silently
    msg = schedule_warning(apply_overrides(Config(), ["method=pase", "train.max_epochs=4"]))
    assert msg.startswith("train.max_epochs=4 ends the run before its first SGM epoch could come (epoch 4 at the "
                          "earliest")
    assert schedule_warning(apply_overrides(Config(), ["method=pase", "train.max_epochs=5"])) is None
    # early stopping that cannot end the run early (patience >= max_epochs - 1) was blamed all the same
    assert schedule_warning(apply_overrides(Config(), ["method=pase", "train.max_epochs=8", "pase.switch_max_epoch=1",
                                                      "train.early_stop_patience=100",
                                                      "pase.switch_patience=100"])) is None
    assert "(epoch 2 at the earliest" in schedule_warning(
        apply_overrides(Config(), ["method=pase", "train.max_epochs=2", "pase.switch_max_epoch=2"]))
    cfg = apply_overrides(Config(), ["method=pase", *TINY, "train.max_epochs=3", "train.early_stop_patience=1",
                                     "pase.switch_patience=1"])
    with caplog.at_level("WARNING", logger="pase"):
        train(cfg, tmp_path / "run", quiet=True)
    assert any("pase.switch_patience=1 >= train.early_stop_patience=1" in r.getMessage() for r in caplog.records)


def test_the_regression_loss_of_half_precision_logits_uses_exact_labels():
    """bf16 logits (autocast, bf16-true) against labels: the labels were cast to bf16 (8 bits of mantissa),
    so v(all) of the test-split Shapley report was not minus the run's MAE."""
    from pase.data.contract import TaskSpec
    from pase.methods.base import task_loss

    task = TaskSpec(kind="regression", num_classes=1, protocol="mosi", label_range=(-3.0, 3.0))
    y = torch.tensor([0.2, -1.4, 2.6, 1.8])
    logits = torch.tensor([[0.5], [-1.0], [2.0], [1.0]], dtype=torch.bfloat16)
    exact = (logits.float()[:, 0] - y).abs().mean()
    assert task_loss(logits, y, task).dtype == torch.float32
    assert float(task_loss(logits, y, task)) == float(exact)
    assert float((logits[:, 0] - y.bfloat16()).abs().mean()) != float(exact)  # what it computed before


def test_each_loss_weight_goes_with_its_own_term(bundle):
    """From mutation testing: swapping lambda_pcl and lambda_ot in the total survived every test."""
    _, model, method = _setup(bundle, "pase.lambda_pcl=0.3", "pase.lambda_ot=0.7")
    batch = bundle.splits["train"].__getitems__(list(range(32)))
    first, logs = method.loss(model, batch, model(batch))
    # before the banks hold a prototype, no class is usable for OT: its loss is 0, not a match to zeros
    assert float(logs["ot_loss"]) == 0.0
    total, logs = method.loss(model, batch, model(batch))
    assert float(logs["pcl_loss"]) > 0 and float(logs["ot_loss"]) > 0
    want = logs["task_loss"] + 0.3 * logs["pcl_loss"] + 0.7 * logs["ot_loss"]
    assert float(total) == pytest.approx(float(want), rel=1e-6)


def test_an_improving_epoch_resets_the_stale_count(bundle):
    """The switch needs switch_patience stale epochs in a row: improved, stale, improved, stale
    stays in phase 1 (a count that was not reset survived every test)."""
    _, model, method = _setup(bundle, "pase.switch_patience=2", "pase.switch_max_epoch=10")
    for epoch, improved in enumerate([True, False, True, False]):
        method.end_validation_epoch(model, epoch, improved)
    assert int(method.phase) == 1 and int(method.stale_epochs) == 1
    method.end_validation_epoch(model, 4, False)
    assert int(method.phase) == 2 and int(method.switch_epoch) == 5


def test_sgm_coefficients_smooth_from_the_first_steps_value_and_respect_the_floor(bundle):
    """Every SGM test ran with sgm_smoothing=0; at the default 0.9 the EMA must start from the first
    step's phi (not from ones) and then move by 1 - 0.9 per step; what scales is the EMA divided by
    its largest (after the weakest modality changed, step 2's EMA [0.28, 0.96, 0.76] left no
    modality at its full gradient: a review), floored by sgm_min_coeff."""
    _, model, method = _setup(bundle, "pase.sgm_smoothing=0.9", "pase.switch_max_epoch=0", "pase.sgm_min_coeff=0.5")
    groups = model.modality_parameters()
    phi1, phi2 = torch.tensor([0.2, 1.0, 0.8]), torch.tensor([1.0, 0.6, 0.4])
    expected = [phi1, 0.9 * phi1 + 0.1 * phi2]
    for phi, want in zip((phi1, phi2), expected):
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        method._pending.add(phi)
        method.before_optimizer_step(model)
        torch.testing.assert_close(method.coeffs, want)
        applied = want / want.max()
        assert float(applied.max()) == 1.0
        for i, m in enumerate(method.modalities):
            scale = max(float(applied[i]), 0.5)
            assert all(torch.allclose(p.grad, torch.full_like(p, scale)) for p in groups[m]), m
    # the epoch log's sgm_coeff_<m> is what scaled the gradients (divided by the largest, floored),
    # not the raw EMA [0.28, 0.96, 0.76]
    logs = method.end_validation_epoch(model, 0, True)
    for i, m in enumerate(method.modalities):
        assert logs[f"sgm_coeff_{m}"] == pytest.approx(max(float(applied[i]), 0.5), rel=1e-6), m
    assert sorted(logs[f"sgm_coeff_{m}"] for m in method.modalities) == pytest.approx([0.5, 0.76 / 0.96, 1.0])


def test_set_phase_turns_sgm_on_in_the_step_where_writing_the_buffer_did_not():
    """method.phase.fill_(2) left the step's host-side mirror in phase 1 (SGM off, coefficients 1)
    while summary() said phase 2; the benchmarks claimed it forced phase 2 (a review). set_phase
    moves both; a phase other than 1 or 2 is refused."""
    from pase.config import Config, apply_overrides
    from pase.data.registry import create_data
    from pase.methods.base import create_method
    from pase.models.build import build_model

    bundle = create_data("synthetic", sizes=[64, 8, 8])
    cfg = apply_overrides(Config(), ["method=pase", "pase.switch_max_epoch=30"])  # phase 1 until epoch 30
    torch.manual_seed(0)
    model = build_model(cfg, bundle)
    method = create_method("pase", cfg, bundle.task, model)
    batch = bundle.splits["train"].__getitems__(list(range(64)))
    for phase_set in (False, True):
        if phase_set:
            method.set_phase(2, 0)
        loss, _ = method.loss(model, batch, model(batch))
        loss.backward()
        method.before_optimizer_step(model)
        model.zero_grad()
        started = bool(method.coeffs_started)
        assert started is phase_set and (method.summary()["phase"] == 2) is phase_set
    assert method.summary()["switch_epoch"] == 0
    with pytest.raises(ValueError, match="phase must be 1 or 2, got 3"):
        method.set_phase(3)


def test_pase_on_one_modality_says_so_and_never_switches_to_sgm(tmp_path, caplog):
    """With one modality OT, the gate and SGM do nothing, yet the run switched to phase 2 and
    metrics.json reported 5 SGM epochs whose every coefficient was 1, without a word (a review)."""
    import logging

    from tiny import TINY

    from pase.config import Config, apply_overrides
    from pase.training import train

    cfg = apply_overrides(Config(), TINY + ["method=pase", "data.modalities=[text]", "pase.switch_patience=0",
                                            "train.max_epochs=3"])
    with caplog.at_level(logging.WARNING, logger="pase"):
        result = train(cfg, tmp_path / "r", quiet=True)
    assert any("method 'pase' with one modality (text)" in r.getMessage() for r in caplog.records)
    diag = result["diagnostics"]
    assert diag["phase"] == 1 and diag["switch_epoch"] == -1 and diag["sgm_epochs"] == 0, diag


def test_pase_on_one_modality_gets_no_schedule_advice(tmp_path, caplog):
    """With one modality PaSE stays in phase 1, yet a schedule too short for an SGM epoch also
    advised raising train.max_epochs or lowering pase.switch_*, which cannot start phase 2: following
    it (switch_max_epoch=1) still trained no SGM epoch (a review). Only the one-modality warning is given."""
    import logging

    from tiny import TINY

    from pase.methods.pase import schedule_warning
    from pase.training import train

    cfg = apply_overrides(Config(), TINY + ["method=pase", "data.modalities=[text]", "train.max_epochs=3"])
    with caplog.at_level(logging.WARNING, logger="pase"):
        result = train(cfg, tmp_path / "r", quiet=True)
    said = [r.getMessage() for r in caplog.records if r.name == "pase" and r.levelno == logging.WARNING]
    assert len(said) == 1 and said[0].startswith("method 'pase' with one modality (text): OT alignment, the "
                                                 "prototype gate and SGM act between modalities"), said
    assert result["diagnostics"]["sgm_epochs"] == 0
    assert schedule_warning(cfg, ("text",)) is None  # and with more modalities it advises as before
    assert schedule_warning(cfg, ("text", "audio")).startswith("train.max_epochs=3 ends the run before its first "
                                                               "SGM epoch could come (epoch 4 at the earliest")


def test_multilabel_samples_without_a_positive_label_move_no_prototype_and_enter_neither_pcl_nor_ot(bundle):
    """A multilabel sample with no positive label went to class 0 (the argmax of its all-zero row): it
    moved class 0's prototypes and entered PCL and the OT centroids as class 0 (a review). Such samples
    now count nowhere: banks, PCL and OT are those of the labelled samples alone."""
    from pase.data.contract import DataBundle, MultimodalDataset, TaskSpec
    from pase.prototypes import PrototypeBank, update_banks

    g = torch.Generator().manual_seed(0)
    splits = {}
    for name, ds in bundle.splits.items():
        y = (torch.rand(len(ds.ids), 4, generator=g) > 0.5).float()  # (N, 4)
        y[(y == 0).all(-1), 1] = 1.0  # every sample labelled but
        y[:6] = 0.0  # six without a positive label
        splits[name] = MultimodalDataset({m: ds.features[m] for m in ds.modalities}, y, ds.ids, split=name)
    multi = DataBundle("multi", TaskSpec("multilabel", 4, "demo"), splits, dict(bundle.info))
    cfg, model, method = _setup(multi)
    batch = multi.splits["train"].__getitems__(list(range(32)))
    keep = torch.arange(32) >= 6
    classes = prototype_targets(batch.target, multi.task, cfg.pase.binning)
    assert (classes[:6] == 0).all() and (classes[keep] == 0).any()  # class 0 has labelled samples too
    out = model(batch)
    method.loss(model, batch, out)  # the first step: the banks from the labelled samples alone
    h = model.stacked_reps(out).transpose(0, 1).detach()  # (M, B, D)
    refs = [PrototypeBank(4, model.d_model, momentum=cfg.pase.momentum) for _ in method.modalities]
    update_banks(refs, h[:, keep], classes[keep])
    for m, ref in zip(method.modalities, refs):
        assert torch.equal(model.banks[m].initialized, ref.initialized), m
        torch.testing.assert_close(model.banks[m].prototypes, ref.prototypes)
    # the second step: PCL and OT against the banks, over the labelled samples alone
    out = model(batch)
    protos, init = out.banks
    h = model.stacked_reps(out).transpose(0, 1)  # (M, B, D)
    pcl = pcl_loss(h[:, keep], classes[keep], protos, init, cfg.pase.tau).mean()
    stats = class_means(h[:, keep].float(), classes[keep], 4)
    ot = method._ot_loss(stats, protos, init, learn=False)  # from the same warm start, which it leaves alone
    _, logs = method.loss(model, batch, out)
    torch.testing.assert_close(logs["pcl_loss"], pcl.detach())
    torch.testing.assert_close(logs["ot_loss"], ot.detach())
    update_banks(refs, h[:, keep].detach(), classes[keep])
    for m, ref in zip(method.modalities, refs):
        torch.testing.assert_close(model.banks[m].prototypes, ref.prototypes)
