"""PMR: prototype cross-entropy against a hand computation, rebalancing of the weaker modalities only,
banks updated after the losses without breaking backward."""

import dataclasses
import math

import pytest
import torch
from torch.testing import assert_close

from pase.methods.base import task_loss
from pase.methods.pase import prototype_targets
from pase.methods.pmr import PMR, prototype_ce, pmr_rebalance

CLOSE = dict(atol=1e-6, rtol=1e-5)


def test_prototype_ce_matches_manual(gen):
    h = torch.randn(6, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    protos = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    init = torch.tensor([True, False, True])
    classes = torch.tensor([0, 2, 1, 2, 0, 1])  # class 1 is uninitialised: samples 2 and 5 drop out
    loss, conf = prototype_ce(h, classes, protos, init)
    nll, probs, hd = [], [], h.detach()
    for i in range(6):
        if not init[classes[i]]:
            continue
        d = {k: math.sqrt(sum((float(hd[i, j]) - float(protos[k, j])) ** 2 for j in range(4))) for k in (0, 2)}
        p = math.exp(-d[int(classes[i])]) / sum(math.exp(-v) for v in d.values())
        nll.append(-math.log(p))
        probs.append(p)
    assert_close(loss, torch.tensor(sum(nll) / 4, dtype=torch.float64), atol=1e-12, rtol=1e-12)
    assert_close(conf, torch.tensor(sum(probs) / 4, dtype=torch.float64), atol=1e-12, rtol=1e-12)
    loss.backward()
    assert torch.isfinite(h.grad).all() and h.grad[[2, 5]].abs().sum() == 0
    assert torch.autograd.gradcheck(lambda x: prototype_ce(x, classes, protos, init)[0], (h.detach().requires_grad_(),))
    # nothing initialised: zero loss and confidence, still differentiable
    z, c = prototype_ce(h, classes, protos, torch.zeros(3, dtype=torch.bool))
    assert float(z.detach()) == 0 and float(c) == 0 and z.requires_grad


def test_rebalance_closed_form():
    assert_close(pmr_rebalance(torch.tensor([0.9, 0.6, 0.3, 0.9])), torch.tensor([0.0, 0.5, 1.0, 0.0]))
    assert torch.equal(pmr_rebalance(torch.zeros(3)), torch.zeros(3))


def test_original_rule_is_the_released_step():
    """main_Prototype_grad.py: ratio = s_a / s_v; > 1: lambda (visual) = alpha, < 1: beta (audio)
    = alpha, a tie: neither. For M modalities every one below the most confident gets the step."""
    for s_a, s_v in ((0.7, 0.4), (0.4, 0.7), (0.5, 0.5), (0.51, 0.5)):
        ratio = s_a / s_v
        beta, lam = (0.0, 1.0) if ratio > 1 else (1.0, 0.0) if ratio < 1 else (0.0, 0.0)
        assert pmr_rebalance(torch.tensor([s_a, s_v]), "original").tolist() == [beta, lam]
    assert pmr_rebalance(torch.tensor([0.9, 0.6, 0.3, 0.9]), "original").tolist() == [0.0, 1.0, 1.0, 0.0]
    assert torch.equal(pmr_rebalance(torch.zeros(3), "original"), torch.zeros(3))


@pytest.mark.parametrize("kind,rule", [("regression", "continuous"), ("classification", "continuous"),
                                       ("multilabel", "continuous"), ("regression", "original")])
def test_extra_loss_reaches_weaker_modalities_only(make_case, kind, rule):
    case = make_case(kind, B=32, overrides=["baselines.pmr_weight=2.0", "baselines.pmr_momentum=0.5",
                                            f"baselines.pmr_rule={rule}"])
    method, model = PMR(case.cfg, case.task, case.model), case.model
    classes = prototype_targets(case.batch.target, case.task, case.cfg.pase.binning)
    with torch.no_grad():  # initialise the banks, then make text's prototypes its exact class means
        out0 = model(case.batch)
        for m in case.mods:
            method.banks[m].update(out0.reps[m], classes)
    out = model(case.batch)
    losses, confs = {}, {}
    for m in case.mods:
        losses[m], confs[m] = prototype_ce(out.reps[m], classes, method.banks[m].prototypes.clone(),
                                           method.banks[m].initialized.clone())
    best = max(confs.values())
    if rule == "continuous":
        rho = {m: min(max(float(best / confs[m]) - 1, 0.0), 1.0) for m in case.mods}
    else:  # the released step: alpha for every modality below the most confident
        rho = {m: float(confs[m] < best) for m in case.mods}
    strongest = max(confs, key=lambda m: float(confs[m]))
    assert rho[strongest] == 0 and any(r > 0 for r in rho.values())
    fused = task_loss(out.logits, case.batch.target, case.task)
    expected = fused + 2.0 * sum(rho[m] * losses[m] for m in case.mods)
    loss, logs = method.loss(model, case.batch, out)
    assert_close(loss, expected, **CLOSE)  # against the prototypes before this batch's EMA step
    assert_close(logs["pmr_loss"], (expected - fused).detach(), **CLOSE)
    # gradients: the strongest encoder sees the fused task loss alone, weaker ones get more
    loss.backward(retain_graph=True)  # fused shares the graph
    grads = {id(p): p.grad.clone() for p in model.parameters()}
    model.zero_grad()
    fused.backward()
    groups = model.modality_parameters()
    for m in case.mods:
        same = all(torch.allclose(grads[id(p)], p.grad, atol=1e-7) for p in groups[m])
        assert same == (rho[m] == 0), f"{m}: rho {rho[m]}"


def test_banks_update_after_losses_and_backward_works(make_case):
    case = make_case("classification")
    method, model = PMR(case.cfg, case.task, case.model), case.model
    for step in range(3):  # step 0: empty banks, no extra loss; later steps: both, then update
        snap = method.banks["audio"].prototypes.clone()
        out = model(case.batch)
        loss, logs = method.loss(model, case.batch, out)
        loss.backward()  # after the in-place EMA step of the banks
        assert not torch.equal(method.banks["audio"].prototypes, snap), "the EMA step ran"
        assert (logs["pmr_loss"] == 0) == (step == 0)
        model.zero_grad()
    seen = torch.zeros(3, dtype=torch.bool)
    seen[case.batch.target] = True
    assert torch.equal(method.banks["text"].initialized, seen)
    state = method.state_dict()
    assert {f"banks.{m}.prototypes" for m in case.mods} <= set(state), "banks are checkpointed"
    logs = method.end_validation_epoch(model, 0, True)
    assert set(f"pmr_rho_{m}" for m in case.mods) <= set(logs)


def test_under_ddp_the_confidences_are_the_global_batchs(make_case, monkeypatch):
    """Each rank weighted the modalities by its own half batch's confidences (AGM's and PaSE's
    statistics were all-reduced, PMR's not; review). A simulated second rank of 3 B samples whose
    confidences make audio the most confident must move rho to the global batch's."""
    case = make_case(B=16, overrides=["baselines.pmr_rule=original"])
    method, model = PMR(case.cfg, case.task, case.model), case.model
    classes = prototype_targets(case.batch.target, case.task, case.cfg.pase.binning)
    with torch.no_grad():
        out0 = model(case.batch)
        for m in case.mods:
            method.banks[m].update(out0.reps[m], classes)
    out = model(case.batch)
    _, local = method.prototype_terms(out, classes)
    B = case.batch.target.shape[0]
    other = torch.tensor([0.1, 0.99, 0.1])  # the other rank: audio far the most confident

    def all_reduce(packed, op=None):  # the confidences' weighted sums and counts (2M,); others: the rank adds none
        if packed.numel() == 2 * len(other):
            packed += torch.cat([other * 3 * B, torch.full((len(other),), 3.0 * B)])

    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.distributed, "all_reduce", all_reduce)
    global_conf = (local.float() * B + other * 3 * B) / (4 * B)
    method.loss(model, case.batch, out)
    assert_close(method.epoch_means()["conf"], global_conf)
    assert pmr_rebalance(global_conf, "original").tolist() == [1.0, 0.0, 1.0]


def test_under_ddp_confidences_and_losses_weigh_the_samples_with_a_prototype(make_case, monkeypatch):
    """PMR's confidence and prototype loss are means over the samples whose class has a prototype, but the
    ranks' confidences were weighted by batch size, and DDP averaged the ranks' losses equally: 5 % off one
    process when a class had no prototype yet (a review). This rank has n of B samples of an initialised
    class, the other rank 10 of its samples: the confidence is (n c + 10 c') / (n + 10) and this rank's
    loss is scaled by W n / (n + 10), so DDP's mean of the ranks' gradients is the global mean's."""
    case = make_case(B=16, overrides=["baselines.pmr_rule=original"])
    method, model = PMR(case.cfg, case.task, case.model), case.model
    classes = prototype_targets(case.batch.target, case.task, case.cfg.pase.binning)
    first = classes[0]
    with torch.no_grad():  # only the first sample's class gets a prototype
        out0 = model(case.batch)
        for m in case.mods:
            method.banks[m].update(out0.reps[m][classes == first], classes[classes == first])
    out = model(case.batch)
    losses, local = method.prototype_terms(out, classes)
    n = float((classes == first).sum())
    assert 0 < n < len(classes)
    other = torch.tensor([0.3, 0.9, 0.5])

    def all_reduce(packed, op=None):
        if packed.numel() == 2 * len(other):
            packed += torch.cat([other * 10, torch.full((len(other),), 10.0)])

    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.distributed, "all_reduce", all_reduce)
    model.train()
    _, logs = method.loss(model, case.batch, out)
    conf = (local.float() * n + other * 10) / (n + 10)
    # one class alone has a prototype: a one-way softmax, confidence 1 by construction, left out of the log
    assert torch.isnan(method.epoch_means()["conf"]).all()
    rho = pmr_rebalance(conf, "original")
    expected = method.weight * (rho * losses.detach() * (2 * n / (n + 10))).sum()
    assert_close(logs["pmr_loss"], expected.to(logs["pmr_loss"].dtype))


def test_eval_mode_loss_issues_no_collective_under_ddp(make_case, monkeypatch):
    """An eval-mode loss all-reduced PMR's confidences: a user's DDP evaluation loop over unequal
    shards would hang in it (a review). Under a simulated process group, an eval-mode loss calls no
    all_reduce and is this process's own loss (prototypes set, so the prototype term counts); a
    training-mode loss still reduces."""
    case = make_case("classification")
    method, model = PMR(case.cfg, case.task, case.model), case.model
    classes = prototype_targets(case.batch.target, case.task, case.cfg.pase.binning)
    with torch.no_grad():
        out0 = model(case.batch)
        for m in case.mods:
            method.banks[m].update(out0.reps[m], classes)
    model.eval()
    local, logs = method.loss(model, case.batch, model(case.batch))  # no process group: this process's loss
    assert float(logs["pmr_loss"]) > 0, "the prototype term is part of the loss"
    calls = []
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda packed, op=None: calls.append(packed.numel()))
    loss, _ = method.loss(model, case.batch, model(case.batch))
    assert calls == [], "eval mode: no collective"
    assert_close(loss, local)
    model.train()
    method.loss(model, case.batch, model(case.batch))
    assert 2 * len(case.mods) in calls, "a training batch still reduces its confidences"


def test_one_modality_warns_that_it_trains_as_late_fusion(make_case, caplog):
    """With one modality the strongest modality is the only one, its prototype weight is 0, so PMR
    ran as late fusion without a word (OGM-GE refuses one modality, PaSE warns; a review). It warns
    through the "pase" logger, naming the modality, and adds no prototype loss."""
    import logging

    case = make_case("classification", M=1)
    with caplog.at_level(logging.WARNING, logger="pase"):
        method = PMR(case.cfg, case.task, case.model)
    said = [r.getMessage() for r in caplog.records if r.name == "pase" and r.levelno == logging.WARNING]
    assert len(said) == 1 and said[0].startswith("method 'pmr' with one modality (text): PMR rebalances "
                                                 "between modalities"), said
    assert "trains as late fusion" in said[0]
    for _ in range(2):  # the second step has prototypes
        _, logs = method.loss(case.model, case.batch, case.model(case.batch))
        assert float(logs["pmr_loss"]) == 0.0
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pase"):
        PMR(case.cfg, case.task, make_case("classification", M=2).model)
    assert not [r for r in caplog.records if r.name == "pase"], "two modalities: no warning"


def test_multilabel_samples_without_a_positive_label_have_no_class(make_case, monkeypatch):
    """A multilabel sample with no positive label went to class 0 (the argmax of its all-zero row),
    moving class 0's prototype and entering the prototype loss and confidence as class 0 (a review).
    Such samples now count nowhere: the banks and the terms are those of the labelled samples alone."""
    from pase.prototypes import PrototypeBank

    case = make_case("multilabel")
    target = case.batch.target
    target[(target == 0).all(-1), 2] = 1.0  # every sample labelled but
    target[:4] = 0.0  # four samples without a positive label
    keep = torch.arange(len(target)) >= 4
    method, model = PMR(case.cfg, case.task, case.model), case.model
    classes = prototype_targets(case.batch.target, case.task, case.cfg.pase.binning)
    out = model(case.batch)
    method.loss(model, case.batch, out)  # the first step: the banks from the labelled samples alone
    for m in case.mods:
        ref = PrototypeBank(4, model.d_model, momentum=case.cfg.baselines.pmr_momentum)
        ref.update(out.reps[m][keep], classes[keep])
        assert torch.equal(method.banks[m].initialized, ref.initialized), m
        assert_close(method.banks[m].prototypes, ref.prototypes, **CLOSE)
    method.epoch_means()["conf"]
    out = model(case.batch)
    protos = {m: (method.banks[m].prototypes.clone(), method.banks[m].initialized.clone()) for m in case.mods}
    _, logs = method.loss(model, case.batch, out)
    terms = [prototype_ce(out.reps[m][keep], classes[keep], *protos[m]) for m in case.mods]  # labelled only
    conf = torch.stack([c for _, c in terms])
    assert_close(method.epoch_means()["conf"], conf.float())
    rho = pmr_rebalance(conf.float(), method.rule)
    expected = method.weight * (rho * torch.stack([loss.detach() for loss, _ in terms])).sum()
    assert_close(logs["pmr_loss"], expected, **CLOSE)
    # under DDP the sample counts that weigh the ranks' confidences leave them out too
    packed = []
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 1)
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda x, op=None: packed.append(x.clone()))
    init = {m: method.banks[m].initialized.clone() for m in case.mods}
    method.loss(model, case.batch, model(case.batch))
    counts = [x for x in packed if x.numel() == 2 * case.M][0][case.M:]
    assert counts.tolist() == [float((init[m][classes] & keep).sum()) for m in case.mods]


def test_the_logged_confidence_is_over_the_scored_samples(make_case):
    """The epoch's logged confidence was a mean over batches: a batch with no sample to score (multilabel rows
    without a positive label) entered it as 0 and halved a two-batch mean (a review). It is the mean over the
    scored samples: a label-less batch changes nothing, and batches weigh by their scored samples."""
    case = make_case("multilabel")
    target = case.batch.target
    target[(target == 0).all(-1), 2] = 1.0  # every sample labelled
    method, model = PMR(case.cfg, case.task, case.model), case.model
    classes = prototype_targets(target, case.task, case.cfg.pase.binning)
    with torch.no_grad():  # every class's prototype
        out0 = model(case.batch)
        for m in case.mods:
            method.banks[m].update(out0.reps[m], classes)
    model.eval()  # dropout off: the same batch gives the same confidences
    out = model(case.batch)
    _, conf_all = method.prototype_terms(out, classes)
    keep = torch.arange(len(target)) < 3
    _, conf_three = method.prototype_terms(out, classes, keep)
    model.train()
    for m in case.mods:
        method.banks[m].momentum = 1.0  # the EMA moves no prototype: both batches see the same ones
    method.loss(model, case.batch, out)
    empty = dataclasses.replace(case.batch, target=torch.zeros_like(target))  # no positive label anywhere
    method.loss(model, empty, out)
    assert_close(method.epoch_means()["conf"], conf_all.float())  # the label-less batch left out, not a 0
    three = target.clone()
    three[3:] = 0.0
    method.loss(model, case.batch, out)
    method.loss(model, dataclasses.replace(case.batch, target=three), out)
    B = len(target)
    assert_close(method.epoch_means()["conf"], (conf_all.float() * B + conf_three.float() * 3) / (B + 3))
