"""AGM: late fusion at unit coefficients, Shapley-logit efficiency, hand-computed coefficients."""

import math

import pytest
import torch
from torch.testing import assert_close

from pase.methods.agm import AGM, agm_coefficients, agm_ratios, agm_scores, shapley_logits
from pase.methods.base import LateFusion, task_loss
from pase.shapley import coalition_masks

# float32: Sum_m phi_m + v(empty) re-adds 2^M head outputs, exact up to a few roundings
CLOSE = dict(atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kind", ["regression", "classification", "multilabel"])
def test_unit_coefficients_are_late_fusion(make_case, kind):
    case = make_case(kind, overrides=["baselines.agm_alpha=0.0"])  # k = exp(0) = 1 exactly
    agm_model, lf_model = case.fresh(), case.fresh()
    agm = AGM(case.cfg, case.task, agm_model)
    lf = LateFusion(case.cfg, case.task, lf_model)
    l_agm, _ = agm.loss(agm_model, case.batch, agm_model(case.batch))
    l_lf, _ = lf.loss(lf_model, case.batch, lf_model(case.batch))
    assert_close(l_agm, l_lf, **CLOSE)
    l_agm.backward()
    l_lf.backward()
    for (name, p), q in zip(agm_model.named_parameters(), lf_model.parameters()):
        assert p.grad is not None, f"No gradient for {name}"
        assert_close(p.grad, q.grad, **CLOSE, msg=lambda s: f"{name}: {s}")


@pytest.mark.parametrize("M", [2, 3, 4])
def test_shapley_logits_are_efficient_per_sample(make_case, M):
    case = make_case("classification", M=M)
    out = case.model(case.batch)
    table = case.model.coalition_logits(out, coalition_masks(M))  # (C, B, O)
    phi, empty = shapley_logits(table)
    assert phi.shape == (M, len(case.batch), case.task.output_dim)
    assert_close(phi.sum(0) + empty, out.logits, **CLOSE)  # v(N), per sample and class
    # a modality whose representation is zero is a null player: its Shapley logit vanishes
    out.reps["audio"] = torch.zeros_like(out.reps["audio"])
    out.stacked = None  # coalition_logits re-stacks the edited representations
    phi0, _ = shapley_logits(case.model.coalition_logits(out, coalition_masks(M)))
    assert_close(phi0[case.mods.index("audio")], torch.zeros_like(phi0[0]), atol=1e-6, rtol=0)


def test_coefficients_hand_example():
    scores, running, alpha = [0.5, 1.0, 2.0], [1.0, 0.8, 1.5], 0.5
    mean, mean_run = sum(scores) / 3, sum(running) / 3
    r = [math.exp(1.5 * (mean - s)) for s in scores]  # M / (M - 1) = 3 / 2
    r_star = [math.exp(1.5 * (mean_run - s)) for s in running]
    expected = [math.exp(alpha * (a - b)) for a, b in zip(r_star, r)]
    got = agm_coefficients(torch.tensor(scores, dtype=torch.float64), torch.tensor(running, dtype=torch.float64),
                           alpha, max_gap=7.0)
    assert_close(got, torch.tensor(expected, dtype=torch.float64))
    assert got[0] < 1 < got[2], "the best-fitting modality is damped, the worst boosted"
    # two modalities: the original's exp(score_other - score_own)
    assert_close(agm_ratios(torch.tensor([1.0, 3.0])), torch.tensor([math.exp(2.0), math.exp(-2.0)]))
    assert_close(agm_ratios(torch.tensor([4.0])), torch.tensor([1.0]))  # one modality: no modulation
    capped = agm_coefficients(torch.tensor([0.0, 50.0]), torch.tensor([50.0, 0.0]), 1.0, max_gap=7.0)
    assert torch.isfinite(capped).all() and float(capped.max()) == pytest.approx(math.exp(7.0))


def test_scores_floor_the_true_class_probability_at_1e_8_as_the_original():
    """The original scores -log(max(p_true, 1e-8)) per sample: a per-sample loss above
    -log 1e-8 = 18.42 counts as 18.42, a smaller one as itself; u_m = phi_m + v(empty) / M."""
    from pase.data.contract import TaskSpec

    task = TaskSpec("classification", 3, "demo")
    phi = torch.tensor([[[40.0, 0.0, 0.0], [0.0, 2.0, 0.0]],      # modality 0: sample 0 very wrong, 1 right
                        [[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]], dtype=torch.float64)
    empty = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    target = torch.tensor([2, 1])
    u = phi + empty / 2
    p_true = torch.softmax(u, -1)[:, torch.arange(2), target]  # (M, B)
    expected = (-torch.log(p_true.clamp_min(1e-8))).mean(-1)
    got = agm_scores(phi, empty, target, task)
    assert_close(got, expected)
    assert float(-torch.log(p_true[0, 0])) > 30  # the cap is in play for modality 0's first sample
    assert float(got[0]) == pytest.approx((-math.log(1e-8) - math.log(float(p_true[0, 1]))) / 2)


@pytest.mark.parametrize("kind", ["regression", "classification"])
def test_loss_value_is_the_fused_loss_and_gradients_follow_the_originals_hooks(make_case, kind):
    case = make_case(kind, overrides=["baselines.agm_alpha=2.0", "baselines.agm_momentum=0.5"])
    agm, model = AGM(case.cfg, case.task, case.model), case.model
    agm.running.copy_(torch.tensor([0.3, 1.2, 0.9]))
    agm.steps.fill_(5)
    out = model(case.batch)
    phi, empty = shapley_logits(model.coalition_logits(out, coalition_masks(3)))
    u = (phi + empty / 3).detach()  # unimodal predictions
    y = case.batch.target
    if kind == "regression":
        s = [sum(abs(float(u[m, b, 0]) - float(y[b])) for b in range(len(y))) / len(y) for m in range(3)]
    else:
        s = [sum(-math.log(math.exp(u[m, b, y[b]]) / float(u[m, b].exp().sum())) for b in range(len(y))) / len(y)
             for m in range(3)]
    k = agm_coefficients(torch.tensor(s), torch.tensor([0.3, 1.2, 0.9]), 2.0, 7.0)
    loss, _ = agm.loss(model, case.batch, out)
    # the value is the fused prediction's loss (the original's hooks act on the backward pass only)
    assert_close(loss, task_loss(out.logits, y, case.task), **CLOSE)
    loss.backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    # the original (MOSEI_net.py): the loss of sum_m u_m, u_m = phi_m + v(empty) / M (its m_t, m_a),
    # with u_m's gradient multiplied by k_m in a backward hook: v(empty)'s path (with an MLP head
    # more than a bias) is scaled too
    ref = case.fresh()
    phi2, empty2 = shapley_logits(ref.coalition_logits(ref(case.batch), coalition_masks(3)))
    u2 = phi2 + empty2 / 3
    u2.register_hook(lambda g: g * k[:, None, None].to(g.dtype))
    task_loss(u2.sum(0), y, case.task).backward()
    for n, p in ref.named_parameters():
        if p.grad is not None:
            assert_close(got[n], p.grad, atol=1e-6, rtol=1e-4)
    assert float(k.max() / k.min()) > 1.5  # the coefficients really differ
    assert_close(agm.running, 0.5 * torch.tensor([0.3, 1.2, 0.9]) + 0.5 * torch.tensor(s), **CLOSE)
    logs = agm.end_validation_epoch(model, 0, True)
    assert logs["agm_coeff_text"] == pytest.approx(float(k[0]), rel=1e-5)


@pytest.mark.parametrize("average", ["ema", "cumulative"])
def test_running_average(make_case, average):
    case = make_case(overrides=[f"baselines.agm_average={average}", "baselines.agm_momentum=0.9"])
    agm = AGM(case.cfg, case.task, case.model)
    seq = [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([3.0, 2.0, 1.0]), torch.tensor([2.0, 5.0, 2.0])]
    expected = seq[0]  # the first batch sets the average
    for i, s in enumerate(seq):
        agm.update_running(s)
        if i > 0:
            expected = 0.9 * expected + 0.1 * s if average == "ema" else torch.stack(seq[: i + 1]).mean(0)
        assert_close(agm.running, expected)
    assert "running" in agm.state_dict() and int(agm.steps) == 3


def test_unknown_average_is_refused(make_case):
    """Refused with the config (tests/test_config.py) and, for a config built around that check,
    by AGM itself."""
    import copy

    case = make_case()
    cfg = copy.deepcopy(case.cfg)
    object.__setattr__(cfg.baselines, "agm_average", "median")  # past the frozen config's own check
    with pytest.raises(ValueError, match="agm_average='median' is not one of ema, cumulative"):
        AGM(cfg, case.task, case.model)


def test_under_ddp_the_scores_are_the_global_batchs(make_case, monkeypatch):
    """Each rank took AGM's coefficients and running scores from its own half batch: on one step
    the ranks boosted and damped the same modality in opposite directions (review). A simulated
    second rank of 3 * B samples with scores [1, 2, 3] must move the scores to the weighted mean."""
    from pase.methods.base import batch_weighted_mean

    case = make_case()
    agm, model = AGM(case.cfg, case.task, case.model), case.model
    out = model(case.batch)
    phi, empty = shapley_logits(model.coalition_logits(out, coalition_masks(3)))
    local = agm_scores(phi.float(), empty.float(), case.batch.target, case.task)
    B = case.batch.target.shape[0]
    other = torch.tensor([1.0, 2.0, 3.0])

    def all_reduce(packed, op=None):  # the scores' (M + 1,); the tracked coalition utilities': the other rank adds none
        if packed.numel() == len(other) + 1:
            packed += torch.cat([other * 3 * B, torch.tensor([3.0 * B])])

    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "all_reduce", all_reduce)
    expected = (local * B + other * 3 * B) / (4 * B)
    assert_close(batch_weighted_mean(local, B), expected)
    model.train()  # a training step (an eval-mode loss moves no running score); the case's head has no dropout
    agm.loss(model, case.batch, model(case.batch))
    assert_close(agm.running, expected)  # the first step sets the running scores to the global ones


def test_eval_mode_loss_issues_no_collective_under_ddp(make_case, monkeypatch):
    """An eval-mode loss all-reduced the scores: a user's DDP evaluation loop over unequal shards
    would hang in it (a review). Under a simulated process group, an eval-mode loss calls no
    all_reduce and is this process's own loss; a training-mode loss still reduces."""
    case = make_case()
    agm, model = AGM(case.cfg, case.task, case.model), case.model
    model.eval()
    local, _ = agm.loss(model, case.batch, model(case.batch))  # no process group: this process's loss
    calls = []
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda packed, op=None: calls.append(packed.numel()))
    loss, _ = agm.loss(model, case.batch, model(case.batch))
    assert calls == [], "eval mode: no collective"
    assert_close(loss, local)  # equal: same model, same batch, no dropout in eval mode
    assert int(agm.steps) == 0, "eval mode moves no running score"
    model.train()
    agm.loss(model, case.batch, model(case.batch))
    assert len(calls) > 0, "a training batch still reduces its scores"


def test_one_modality_warns_that_it_trains_as_late_fusion(make_case, caplog):
    """With one modality every coefficient is 1, so AGM ran as late fusion without a word (OGM-GE
    refuses one modality, PaSE warns; a review). It warns through the "pase" logger, naming the
    modality, and its loss is late fusion's."""
    import logging

    case = make_case("classification", M=1)
    with caplog.at_level(logging.WARNING, logger="pase"):
        agm = AGM(case.cfg, case.task, case.model)
    said = [r.getMessage() for r in caplog.records if r.name == "pase" and r.levelno == logging.WARNING]
    assert len(said) == 1 and said[0].startswith("method 'agm' with one modality (text): AGM modulates the "
                                                 "gradients between modalities"), said
    assert "trains as late fusion" in said[0]
    lf = LateFusion(case.cfg, case.task, case.model)
    out = case.model(case.batch)
    assert_close(agm.loss(case.model, case.batch, out)[0], lf.loss(case.model, case.batch, out)[0], **CLOSE)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pase"):
        AGM(case.cfg, case.task, make_case("classification", M=2).model)
    assert not [r for r in caplog.records if r.name == "pase"], "two modalities: no warning"
