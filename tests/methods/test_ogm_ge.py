"""OGM-GE: closed-form coefficients from hand-computed unimodal scores, GE noise, determinism."""

import math

import pytest
import torch
from torch.testing import assert_close

from pase.config import apply_overrides
from pase.methods.ogm_ge import OGMGE, ogm_coefficients

# float32 products of a gradient with one scalar: equal up to one rounding
TIGHT = dict(atol=1e-7, rtol=1e-6)


def _hand_scores(case, reps):
    """Scores from the head fed one modality's representation and zeros elsewhere, sample by sample."""
    scores = []
    empty = case.model.head(torch.cat([torch.zeros_like(reps[n]) for n in case.mods], -1)).detach().double()
    for i, m in enumerate(case.mods):
        fused = torch.cat([reps[n] if n == m else torch.zeros_like(reps[n]) for n in case.mods], -1)
        # the modality's output with a 1/M share of the empty input's (the original's bias / 2)
        z = case.model.head(fused).detach().double() - (1 - 1 / len(case.mods)) * empty  # (B, O)
        y = case.batch.target
        if case.kind == "classification":
            s = sum(math.exp(z[b, y[b]]) / sum(math.exp(v) for v in z[b]) for b in range(len(y)))
        elif case.kind == "multilabel":
            p = torch.sigmoid(z)
            s = float((y * p + (1 - y) * (1 - p)).mean())
        else:  # L1 loss by default
            s = sum(math.exp(-abs(float(z[b, 0]) - float(y[b]))) for b in range(len(y))) / len(y)
        scores.append(float(s))
    return scores


def _step(case, method, model):
    out = model(case.batch)
    loss, _ = method.loss(model, case.batch, out)
    loss.backward()
    before = {id(p): p.grad.clone() for p in model.parameters()}
    method.before_optimizer_step(model)
    return out, before


@pytest.mark.parametrize("kind", ["regression", "classification", "multilabel"])
@pytest.mark.parametrize("M", [2, 3])
@pytest.mark.parametrize("rule", ["original", "continuous"])
def test_coefficients_match_hand_computation(make_case, kind, M, rule):
    alpha = 5.0 if rule == "continuous" else 0.3
    case = make_case(kind, M=M, overrides=["baselines.ogm_noise=false", f"baselines.ogm_alpha={alpha}",
                                           f"baselines.ogm_rule={rule}"])
    method = OGMGE(case.cfg, case.task, case.model)
    out, before = _step(case, method, case.model)
    scores = _hand_scores(case, out.reps)
    weakest = min(scores)
    if rule == "continuous":
        expected = [1 - math.tanh(alpha * max(s / weakest - 1, 0.0)) for s in scores]
    else:  # the released code: 1 - tanh(alpha * ratio) for a modality ahead of the weakest
        expected = [1 - math.tanh(alpha * s / weakest) if s > weakest else 1.0 for s in scores]
    assert expected[scores.index(weakest)] == 1.0
    assert min(expected) < 0.99, "the case should modulate someone"
    groups = case.model.modality_parameters()
    for i, m in enumerate(case.mods):
        for p in groups[m]:
            assert_close(p.grad, before[id(p)] * expected[i], **TIGHT)
    for p in case.model.shared_parameters():
        assert torch.equal(p.grad, before[id(p)]), "shared fusion / head gradients must be untouched"
    logs = method.end_validation_epoch(case.model, 0, True)
    for i, m in enumerate(case.mods):
        assert logs[f"ogm_coeff_{m}"] == pytest.approx(expected[i], rel=1e-5)


def test_two_modality_linear_head_scores_are_the_originals(make_case):
    """With a linear head over [h_a, h_v] and two modalities, the original (main.py) scores each
    modality by sum_b softmax(h W_m^T + b / 2)[y] and damps the leader by 1 - tanh(alpha * ratio)."""
    from pase.models.fusion_model import FusionModel, build_head

    case = make_case("classification", M=2, B=16, seed=3,
                     overrides=["baselines.ogm_alpha=0.5", "baselines.ogm_noise=false"])
    torch.manual_seed(3)
    d = 8  # the case's encoder width
    head = build_head(2 * d, 3, hidden=0, dropout=0.0)
    model = FusionModel(case.model.encoders, head, d_model=d)
    lin = [mod for mod in head.modules() if isinstance(mod, torch.nn.Linear)]
    assert len(lin) == 1
    with torch.no_grad():
        lin[0].bias.copy_(torch.tensor([2.0, -1.5, 0.5]))
    method = OGMGE(case.cfg, case.task, model)
    out = model(case.batch)
    k, rho = method.modulation(model, case.batch, out)
    W, b = lin[0].weight.detach().double(), lin[0].bias.detach().double()
    s = []
    for j, m in enumerate(case.mods):
        z = out.reps[m].detach().double() @ W[:, d * j:d * (j + 1)].T + b / 2
        s.append(float(z.softmax(-1).gather(-1, case.batch.target[:, None]).sum()))
    lead = max(s) / min(s)
    assert lead > 1.001  # someone leads
    expected = [1 - math.tanh(0.5 * lead) if v == max(s) else 1.0 for v in s]
    assert_close(k.double(), torch.tensor(expected, dtype=torch.float64), atol=1e-6, rtol=1e-6)
    assert float(rho.max()) == pytest.approx(lead, rel=1e-5)


def test_coefficients_average_over_micro_batches(make_case):
    case = make_case("classification", overrides=["baselines.ogm_noise=false", "baselines.ogm_alpha=5.0"])
    method, model = OGMGE(case.cfg, case.task, case.model), case.model
    out = model(case.batch)
    k1, _ = method.modulation(model, case.batch, out)
    method.loss(model, case.batch, out)[0].backward()
    with torch.no_grad():  # a second micro-batch: the same batch with another model state
        for p in model.encoders["text"].parameters():
            p.mul_(1.5)
    out2 = model(case.batch)
    k2, _ = method.modulation(model, case.batch, out2)
    method.loss(model, case.batch, out2)[0].backward()
    method.before_optimizer_step(model)
    assert not torch.allclose(k1, k2)
    assert_close(method.coeffs, (k1 + k2) / 2)


def test_ratio_closed_form_and_edge_cases():
    k, rho = ogm_coefficients(torch.tensor([3.0, 1.0, 2.0]), alpha=0.5, rule="continuous")
    assert_close(rho, torch.tensor([3.0, 1.0, 2.0]))
    assert_close(k, torch.tensor([1 - math.tanh(1.0), 1.0, 1 - math.tanh(0.5)]))
    k, _ = ogm_coefficients(torch.tensor([3.0, 1.0, 2.0]), alpha=0.5)  # the original's rule
    assert_close(k, torch.tensor([1 - math.tanh(1.5), 1.0, 1 - math.tanh(1.0)]))
    k, _ = ogm_coefficients(torch.tensor([1.001, 1.0]), alpha=0.5)  # any lead: at most 1 - tanh(alpha)
    assert float(k[0]) == pytest.approx(1 - math.tanh(0.5005), rel=1e-5)
    for rule in ("original", "continuous"):
        k0, _ = ogm_coefficients(torch.tensor([0.0, 1.0]), alpha=0.5, rule=rule)  # a zero score: finite
        assert torch.isfinite(k0).all() and k0[0] == 1.0
        k_eq, _ = ogm_coefficients(torch.tensor([2.0, 2.0]), alpha=0.5, rule=rule)  # tied: no modulation
        assert torch.equal(k_eq, torch.ones(2))
    with pytest.raises(ValueError, match="baselines.ogm_rule='paper' is not one of original, continuous"):
        ogm_coefficients(torch.ones(2), 0.5, "paper")


@pytest.mark.parametrize("alpha", ["500.0", "1e9"])  # 1e9: k underflows to exactly 0 in float32
def test_generalisation_noise_is_seeded_and_scaled(make_case, alpha):
    case = make_case("classification", B=64, overrides=[f"baselines.ogm_alpha={alpha}", "train.seed=7"])
    runs = []
    for _ in range(2):
        model = case.fresh()
        method = OGMGE(case.cfg, case.task, model)
        _, before = _step(case, method, model)
        runs.append((model, method, before))
    (m1, meth1, before), (m2, _, _) = runs
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p1.grad, p2.grad), "same seed, same noise"
    k = meth1.coeffs
    for i, m in enumerate(case.mods):  # every modality, the weakest included, gets noise (as the original)
        w = m1.encoders[m].hidden.weight
        assert float((w.grad - before[id(w)] * k[i]).abs().max()) > 0
    i = int(k.argmin())  # the dominant modality
    big = m1.encoders[case.mods[i]].out.weight  # 8 x 16 = 128 entries: the sample std is within ~25 %
    scaled = before[id(big)] * k[i]
    # the noise has the spread of the gradient before modulation (the original's right-hand side)
    ratio = float((big.grad - scaled).std() / (before[id(big)].std() + 1e-8))
    assert 0.7 < ratio < 1.3 and float(k[i]) < 0.5, (ratio, k)  # k well below 1: the two readings differ
    for p in m1.shared_parameters():
        assert torch.equal(p.grad, before[id(p)])
    other = apply_overrides(case.cfg, ["train.seed=8"])
    model3 = case.fresh()
    _step(case, OGMGE(other, case.task, model3), model3)
    assert not torch.equal(model3.encoders[case.mods[i]].out.weight.grad, big.grad), "another seed, other noise"


def test_noise_is_not_drawn_from_the_initialisation_stream(make_case):
    """The GE noise generator and torch's global one (seeded with train.seed by seed_everything: the
    initial weights, dropout) drew the same numbers (both seeded with train.seed, on the CPU the same
    Mersenne Twister): the noise replayed the initial weights' draws (a review). Now its own stream:
    uncorrelated with the global one, and different for another seed."""
    case = make_case("classification", overrides=["train.seed=7"])
    noise = torch.randn(4096, generator=OGMGE(case.cfg, case.task, case.model)._generator(torch.device("cpu")))
    init = torch.randn(4096, generator=torch.Generator().manual_seed(7))  # what the weights were drawn from
    assert abs(float(torch.corrcoef(torch.stack([noise, init]))[0, 1])) < 0.1  # about 0.016 SD by chance
    other = apply_overrides(case.cfg, ["train.seed=8"])
    again = torch.randn(4096, generator=OGMGE(other, case.task, case.fresh())._generator(torch.device("cpu")))
    assert abs(float(torch.corrcoef(torch.stack([noise, again]))[0, 1])) < 0.1


def test_noise_generator_state_travels_with_the_state_dict():
    """A resumed OGM-GE run continues the same noise stream (generator state in the checkpoint)."""
    import torch as _torch

    from pase.config import Config, apply_overrides
    from pase.data import create_data
    from pase.methods import create_method
    from pase.models import build_model

    cfg = apply_overrides(Config(), ["method=ogm_ge"])
    bundle = create_data("synthetic", sizes=[16, 8, 8])
    a = create_method("ogm_ge", cfg, bundle.task, build_model(cfg, bundle))
    _torch.randn(3, generator=a._generator(_torch.device("cpu")))  # advance the stream
    b = create_method("ogm_ge", cfg, bundle.task, build_model(cfg, bundle))
    b.load_state_dict(a.state_dict(), strict=False)
    x = _torch.randn(5, generator=a._generator(_torch.device("cpu")))
    y = _torch.randn(5, generator=b._generator(_torch.device("cpu")))
    _torch.testing.assert_close(x, y)


def test_a_gpu_runs_noise_state_and_an_old_checkpoint_load_on_this_machine(make_case):
    """A checkpoint of a GPU run keys the noise generator's state by 'cuda:0': loading it on a
    machine without that device failed ("weights do not fit"); it is now kept, unused, and saved
    again. A checkpoint written before the state existed loads with the generator at its seed."""
    case = make_case()
    a = OGMGE(case.cfg, case.task, case.model)
    cpu = a._generator(torch.device("cpu")).get_state()
    state = a.state_dict()
    state["_extra_state"] = {"cuda:0": cpu.clone(), "cpu": cpu.clone()}
    b = OGMGE(case.cfg, case.task, case.fresh())
    b.load_state_dict(state)
    if not torch.cuda.is_available():
        assert torch.equal(b.get_extra_state()["cuda"], cpu)  # kept for a later run on the GPU
    assert torch.equal(b._generator(torch.device("cpu")).get_state(), cpu)
    assert set(b.get_extra_state()) == ({"cpu"} if torch.cuda.is_available() else {"cpu", "cuda"})
    old = {k: v for k, v in a.state_dict().items() if k != "_extra_state"}
    c = OGMGE(case.cfg, case.task, case.fresh())
    c.load_state_dict(old)
    fresh = OGMGE(case.cfg, case.task, case.fresh())
    assert torch.equal(torch.randn(4, generator=c._generator(torch.device("cpu"))),
                       torch.randn(4, generator=fresh._generator(torch.device("cpu"))))


def test_one_modality_is_refused_at_training_and_an_old_checkpoint_still_loads(tmp_path, make_case):
    """With one modality the coefficient is always 1 and GE added gradient noise alone, logged as no
    modulation (review); refused when training starts, not when a method is rebuilt (a one-modality
    OGM-GE checkpoint of an earlier version still loads for evaluation)."""
    from tiny import TINY

    from pase.config import Config, ConfigError
    from pase.training import train

    cfg = apply_overrides(Config(), TINY + ["method=ogm_ge", "data.modalities=[text]"])
    with pytest.raises(ConfigError, match=r"method=ogm_ge balances two or more modalities; this data has one "
                                          r"\(text\): use method=late_fusion"):
        train(cfg, tmp_path / "run", quiet=True)
    assert not (tmp_path / "run" / "checkpoints").exists()
    case = make_case(M=1)
    method = OGMGE(case.cfg, case.task, case.model)
    method.load_state_dict(OGMGE(case.cfg, case.task, case.fresh()).state_dict())
    case.model.eval()
    method.loss(case.model, case.batch, case.model(case.batch))  # evaluating it is fine
    case.model.train()  # a training step in one's own loop is refused too (it added noise alone)
    with pytest.raises(ValueError, match=r"method=ogm_ge balances two or more modalities; this data has one"):
        method.loss(case.model, case.batch, case.model(case.batch))


def test_every_ddp_rank_continues_the_same_noise_stream_after_a_resume(make_case):
    """Under DDP each rank adds its own generator's noise after the all-reduce; the generators draw the
    same stream (same seed), which keeps the replicas equal. The checkpoint (rank 0's) keyed its state
    by device ('cuda:0'), so on resume rank 1's cuda:1 generator restarted at the seed and the replicas
    diverged. States are keyed by device type now, and an old key with an index ('cpu:0' here, standing
    for rank 0's 'cuda:0') restores the generator of any device of that type."""
    case = make_case()
    rank0 = OGMGE(case.cfg, case.task, case.model)
    torch.randn(7, generator=rank0._generator(torch.device("cpu")))  # training advanced the stream
    saved = rank0.state_dict()
    assert set(saved["_extra_state"]) == {"cpu"}
    reference = torch.Generator()
    reference.set_state(saved["_extra_state"]["cpu"])
    expected = torch.randn(5, generator=reference)
    for state in (saved, {**saved, "_extra_state": {"cpu:0": saved["_extra_state"]["cpu"]}}):
        rank1 = OGMGE(case.cfg, case.task, case.fresh())
        rank1.load_state_dict(state)
        assert torch.equal(torch.randn(5, generator=rank1._generator(torch.device("cpu"))), expected)


def test_under_ddp_the_coefficients_are_the_global_batchs(make_case, monkeypatch):
    """Each rank took its coefficients from its own half batch and the ranks' coefficients were averaged,
    which damped both modalities when the ranks disagreed on the leader (a review: [0.85, 0.85] against
    one process's [1.0, 0.71]). Rank 1 holds the samples where modality 1 leads most; the coefficients
    of rank 0, given rank 1's all-reduced scores, must equal one process's on the whole batch."""
    from pase.data.contract import Batch

    case = make_case("classification", M=2, overrides=["baselines.ogm_noise=false", "baselines.ogm_alpha=0.3"])
    model = case.model.eval()
    k_global, _ = OGMGE(case.cfg, case.task, model).modulation(model, case.batch, model(case.batch))
    singletons = torch.tensor([[1, 0], [0, 1], [0, 0]], dtype=torch.bool)
    z = model.coalition_logits(model(case.batch), singletons).detach()
    p = (z[:2] - 0.5 * z[2]).softmax(-1).gather(-1, case.batch.target.expand(2, -1)[..., None])[..., 0]
    order = (p[0] - p[1]).argsort(descending=True)
    half = len(order) // 2

    def part(idx):
        b = case.batch
        return Batch({m: x[idx] for m, x in b.inputs.items()}, {m: n[idx] for m, n in b.lengths.items()},
                     b.target[idx], [b.ids[i] for i in idx.tolist()])

    b0, b1 = part(order[:half]), part(order[half:])
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    sent = []
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda t, op=None: sent.append(t.clone()))
    k1, _ = OGMGE(case.cfg, case.task, model).modulation(model, b1, model(b1))  # rank 1's packed scores
    k_local, _ = OGMGE(case.cfg, case.task, model).modulation(model, b0, model(b0))
    assert (k_local < 1).any() and (k1 < 1).any() and not torch.equal(k_local < 1, k1 < 1), \
        "the ranks should disagree on the leader"

    def all_reduce(t, op=None):
        t += sent[0]

    monkeypatch.setattr(torch.distributed, "all_reduce", all_reduce)
    method = OGMGE(case.cfg, case.task, model)
    k0, _ = method.modulation(model, b0, model(b0))
    assert_close(k0, k_global, atol=1e-6, rtol=1e-6)
    assert (k_global == 1).sum() == 1, "one process never damps both modalities"
