import math

import pytest
import torch

from pase.config import Config, apply_overrides
from pase.data import create_data
from pase.methods import create_method
from pase.methods.pase import prototype_targets
from pase.models import build_model
from pase.prototypes import pcl_loss
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
    cfg, model, method = _setup(bundle, "pase.sgm_smoothing=0.0")
    method.phase.fill_(2)
    batch = bundle.splits["train"].__getitems__(list(range(32)))
    out = model(batch)
    loss, _ = method.loss(model, batch, out)
    loss.backward()
    before = {id(p): p.grad.clone() for p in model.parameters() if p.grad is not None}
    # expected coefficients from the batch's Shapley values, by the closed form
    values = exact_shapley(method.coalition_utilities(model, out, batch.target))
    phi = sgm_coefficients(shapley_shares(values))
    method.before_optimizer_step(model)
    for i, m in enumerate(model.modalities):
        for p in model.modality_parameters()[m]:
            torch.testing.assert_close(p.grad, before[id(p)] * phi[i])
    for p in model.shared_parameters():
        if p.grad is not None:
            torch.testing.assert_close(p.grad, before[id(p)])
    assert float(phi.max()) == 1.0 or math.isclose(float(phi.max()), 1.0)
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
        loss = method._ot_loss(out.stacked.transpose(0, 1), classes, *out.banks)
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
