import math

import pytest
import torch

from pase.fusion import GateScorer, fuse, prototype_confidence, prototype_gates


def test_gates_sum_over_present(gen):
    scores = torch.randn(5, 3, generator=gen)
    present = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 0], [0, 0, 0], [1, 1, 0]], dtype=torch.bool)
    w = prototype_gates(scores, present)
    assert (w[~present] == 0).all()
    # alpha = w / |S| sums to one over the present modalities (rows with S empty are all zero)
    n = present.sum(-1)
    torch.testing.assert_close(w.sum(-1), n.float())
    alpha = w[1, [0, 2]] / 2
    torch.testing.assert_close(alpha, torch.softmax(scores[1, [0, 2]], -1))


def test_gates_broadcast_over_coalitions(gen):
    scores = torch.randn(4, 3, generator=gen)
    masks = torch.tensor([[1, 0, 1], [1, 1, 1]], dtype=torch.bool)
    w = prototype_gates(scores, masks[:, None, :])
    assert w.shape == (2, 4, 3)
    torch.testing.assert_close(w[1], prototype_gates(scores, torch.ones(3, dtype=torch.bool)))


def test_confidence_closed_form():
    assert float(prototype_confidence(torch.zeros(4))) == 0.0  # uniform: no confidence
    sharp = prototype_confidence(torch.tensor([50.0, 0.0, 0.0]))
    assert 0.99 < float(sharp) <= 1.0
    p = torch.tensor([0.7, 0.3])
    expected = 1 + (p * p.log()).sum() / torch.log(torch.tensor(2.0))
    torch.testing.assert_close(prototype_confidence(p.log()), expected)


def test_one_class_is_confident_only_when_its_prototype_is_initialised():
    """K = 1 gave confidence 1 whatever ``initialized`` said (review)."""
    z = torch.zeros(2, 3, 1)  # (M, B, K = 1)
    init = torch.tensor([[True], [False]])  # (M, K)
    assert prototype_confidence(z, init).tolist() == [[1.0] * 3, [0.0] * 3]
    assert prototype_confidence(z).tolist() == [[1.0] * 3] * 2


def test_confidence_is_normalised_by_the_initialised_prototypes():
    """Entropy over the n initialised classes divided by log n, not log K; n < 2 gives 0."""
    z = torch.tensor([[[float("-inf"), 1.0, 2.0, float("-inf")]],  # modality 0: classes 1, 2 initialised
                      [[0.5, 1.0, 2.0, float("-inf")]],  # modality 1: classes 0, 1, 2
                      [[float("-inf"), float("-inf"), 3.0, float("-inf")]],  # modality 2: class 2 only
                      [[0.0, 0.0, 0.0, 0.0]]], requires_grad=True)  # modality 3: none yet (logits 0)
    init = torch.isfinite(z.detach()[:, 0]) & torch.tensor([[True], [True], [True], [False]])
    c = prototype_confidence(z, init)
    assert c.shape == (4, 1)

    def closed(logits):
        p = torch.softmax(torch.tensor(logits), -1)
        return 1 + float((p * p.log()).sum()) / math.log(len(logits))
    torch.testing.assert_close(c[:, 0], torch.tensor([closed([1.0, 2.0]), closed([0.5, 1.0, 2.0]), 0.0, 0.0]))
    c.sum().backward()
    assert torch.isfinite(z.grad).all()
    full = torch.tensor([[0.2, -1.0, 0.7]])  # every class initialised: the log K form
    torch.testing.assert_close(prototype_confidence(full, torch.ones(3, dtype=torch.bool)), prototype_confidence(full))


def test_permuting_keys_changes_nothing(gen):
    mods = ["text", "audio", "vision"]
    reps = {m: torch.randn(6, 4, generator=gen) for m in mods}
    conf = {m: torch.rand(6, generator=gen) for m in mods}
    scorer = GateScorer(mods, 4, inputs="both")
    shuffled_reps = {m: reps[m] for m in ["vision", "text", "audio"]}
    shuffled_conf = {m: conf[m] for m in ["audio", "vision", "text"]}
    torch.testing.assert_close(scorer(reps, conf), scorer(shuffled_reps, shuffled_conf))
    w = prototype_gates(scorer(reps, conf), torch.ones(3, dtype=torch.bool))
    torch.testing.assert_close(fuse(reps, w, mods), fuse(shuffled_reps, w, mods))
    torch.testing.assert_close(fuse(reps, w, mods)[:, 4:8], reps["audio"] * w[:, 1:2])


def test_gate_scorer_is_one_linear_map_per_modality(gen):
    """g^m = u_m . [h^m ; c^m] + b_m, computed batched, equals the per-modality formula."""
    mods = ["text", "audio", "vision"]
    scorer = GateScorer(mods, 4, inputs="both")
    reps = {m: torch.randn(5, 4, generator=gen) for m in mods}
    conf = {m: torch.rand(5, generator=gen) for m in mods}
    got = scorer(reps, conf)
    for i, m in enumerate(mods):
        x = torch.cat([reps[m], conf[m][:, None]], dim=-1)  # (B, D + 1)
        torch.testing.assert_close(got[:, i], x @ scorer.weight[i] + scorer.bias[i])
    torch.testing.assert_close(scorer(reps), scorer(reps, {m: torch.zeros(5) for m in mods}))
    bound = 1 / 5 ** 0.5  # nn.Linear(D + 1, 1)'s initialisation range
    assert scorer.weight.abs().max() <= bound and scorer.bias.abs().max() <= bound


def test_gate_input_ablations_drop_exactly_one_term():
    """pase.gate_inputs: "confidence" scores ignore the representation, "representation" scores
    ignore the confidence, "both" is their sum minus the shared bias; a bad value names the key."""
    g = torch.Generator().manual_seed(5)
    h, h2 = torch.randn(3, 4, 6, generator=g), torch.randn(3, 4, 6, generator=g)
    c, c2 = torch.rand(3, 4, generator=g), torch.rand(3, 4, generator=g)
    gates = {k: GateScorer(["a", "b", "c"], 6, inputs=k) for k in GateScorer.INPUTS}
    for k in ("confidence", "representation"):
        gates[k].load_state_dict(gates["both"].state_dict())
    conf_only, rep_only, both = gates["confidence"], gates["representation"], gates["both"]
    torch.testing.assert_close(conf_only.scores(h, c), conf_only.scores(h2, c))
    assert not torch.allclose(conf_only.scores(h, c), conf_only.scores(h, c2))
    torch.testing.assert_close(rep_only.scores(h, c), rep_only.scores(h, c2))
    assert not torch.allclose(rep_only.scores(h, c), rep_only.scores(h2, c))
    torch.testing.assert_close(both.scores(h, c), conf_only.scores(h, c) + rep_only.scores(h, c) - both.bias)
    with pytest.raises(ValueError, match="pase.gate_inputs='entropy' is not one of both, confidence, representation"):
        GateScorer(["a"], 6, inputs="entropy")
