import copy

import pytest
import torch
from torch import nn

from pase.config import Config, apply_overrides
from pase.data import create_data
from pase.data.contract import DataBundle, MultimodalDataset, TaskSpec
from pase.models import ENCODERS, build_model, create_encoder
from pase.models.context import ContextGRU
from pase.models.encoders import BatchFirstEncoderLayer, UniformDropout
from pase.shapley import coalition_masks


@pytest.fixture(scope="module")
def bundle():
    return create_data("synthetic", sizes=[32, 8, 8])


@pytest.mark.parametrize("name", ENCODERS.names())
def test_every_encoder_is_finite_and_trains(name, gen):
    enc = create_encoder(name, d_in=5, d_model=8, hidden=16, max_len=7)
    x = torch.randn(4, 7, 5, generator=gen)
    lengths = torch.tensor([7, 3, 1, 5])
    h = enc(x, lengths)
    assert h.shape == (4, 8) and torch.isfinite(h).all()
    h.pow(2).sum().backward()
    for n, p in enc.named_parameters():
        assert p.grad is not None, f"No gradient for {n}"


@pytest.mark.parametrize("name", ["mlp", "transformer", "lstm"])
def test_padding_is_ignored(name, gen):
    enc = create_encoder(name, d_in=3, d_model=4, hidden=8, max_len=6, dropout=0.0).eval()
    x = torch.randn(1, 6, 3, generator=gen)
    lengths = torch.tensor([4])
    y = x.clone()
    y[:, 4:] = 100.0  # garbage after the true length
    torch.testing.assert_close(enc(x, lengths), enc(y, lengths))
    torch.testing.assert_close(enc(x, lengths), enc(x[:, :4], lengths))  # as if never padded


def test_odd_hidden_widths_build_every_encoder(gen):
    for name in ENCODERS.names():
        enc = create_encoder(name, d_in=5, d_model=8, hidden=33, heads=3, max_len=4)
        assert enc(torch.randn(2, 4, 5, generator=gen), torch.tensor([4, 2])).shape == (2, 8)


def test_positions_cover_the_longest_split(gen):
    """A test split with longer sequences than the training split gets positions too."""
    sizes = {"train": (6, 5), "valid": (3, 5), "test": (3, 9)}
    splits = {s: MultimodalDataset({"text": torch.randn(n, t, 4, generator=gen), "audio": torch.randn(n, t, 3, generator=gen)},
                                   torch.randn(n, generator=gen), [f"{s}{i}" for i in range(n)], split=s)
              for s, (n, t) in sizes.items()}
    bundle = DataBundle("toy", TaskSpec("regression", 1, "mosi"), splits)
    assert bundle.max_steps() == {"text": 9, "audio": 9}
    model = build_model(apply_overrides(Config(), ["model.d_model=8", "model.heads=2"]), bundle)
    out = model(bundle.splits["test"].__getitems__([0, 1, 2]))
    assert out.logits.shape[0] == 3 and torch.isfinite(out.logits).all()


def test_unknown_encoder_suggests():
    with pytest.raises(KeyError, match="unknown encoder 'mpl'; did you mean 'mlp'"):
        create_encoder("mpl", d_in=2, d_model=2)


@pytest.mark.parametrize("method", ["late_fusion", "pase"])
def test_parameter_groups_cover_every_parameter_once(bundle, method):
    cfg = apply_overrides(Config(), [f"method={method}", "model.context=true"])
    model = build_model(cfg, bundle)
    groups = model.modality_parameters()
    seen = [id(p) for ps in groups.values() for p in ps] + [id(p) for p in model.shared_parameters()]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(seen) == sorted(trainable) and len(seen) == len(set(seen))
    enc_ids = {id(p) for p in model.encoders["audio"].parameters()}
    assert enc_ids <= {id(p) for p in groups["audio"]}


@pytest.mark.parametrize("method", ["late_fusion", "pase"])
def test_model_output_finite_and_every_parameter_gets_gradient(bundle, method):
    cfg = apply_overrides(Config(), [f"method={method}"])
    model = build_model(cfg, bundle)
    batch = bundle.splits["train"].__getitems__(list(range(16)))
    if model.banks is not None:  # initialise prototypes so the gate's confidence is live
        for m in model.modalities:
            model.banks[m].update(torch.randn(16, cfg.model.d_model), (batch.target >= 0).long())
    out = model(batch)
    assert out.logits.shape == (16, 1) and torch.isfinite(out.logits).all()
    out.logits.sum().backward()
    for n, p in model.named_parameters():
        assert p.grad is not None, f"No gradient for {n}"


@pytest.mark.parametrize("method", ["late_fusion", "pase"])
def test_coalitions_equal_masked_forward(bundle, method):
    """One batched coalition pass equals a masked forward pass per coalition."""
    cfg = apply_overrides(Config(), [f"method={method}", "model.dropout=0.0"])
    model = build_model(cfg, bundle).eval()
    batch = bundle.splits["valid"].__getitems__(list(range(8)))
    out = model(batch)
    masks = coalition_masks(3)
    joint = model.coalition_logits(out, masks)
    for c in range(8):
        torch.testing.assert_close(joint[c], model(batch, present=masks[c]).logits)
    torch.testing.assert_close(joint[-1], out.logits)
    assert torch.allclose(joint[0], joint[0][0].expand_as(joint[0]))  # empty coalition: constant


@pytest.mark.parametrize("method", ["late_fusion", "pase"])
def test_present_is_a_bool_mask_or_names_and_anything_else_is_named(bundle, method):
    """forward(batch, present=...): a wrong width, names, or a 0/1 integer mask gave raw torch errors
    (PaSE's gate: 'where expected condition to be a boolean tensor'); a float mask rescaled a modality."""
    cfg = apply_overrides(Config(), [f"method={method}", "model.dropout=0.0"])
    model = build_model(cfg, bundle).eval()
    batch = bundle.splits["valid"].__getitems__(list(range(4)))
    mask = torch.tensor([True, False, True])  # the model's order: text, audio, vision
    assert model.modalities == ["text", "audio", "vision"]
    torch.testing.assert_close(model(batch, present=["vision", "text"]).logits, model(batch, present=mask).logits)
    with pytest.raises(TypeError, match=r"present must be a bool mask \(\.\.\., M\) over \(text, audio, vision\), "
                                        r"got dtype torch.int64; convert it with \.bool\(\)"):
        model(batch, present=torch.tensor([1, 0, 1]))
    with pytest.raises(ValueError, match=r"present has shape \(2,\), but its last dimension must be M = 3, one entry "
                                         r"per modality in the model's order \(text, audio, vision\)"):
        model(batch, present=torch.tensor([True, False]))
    with pytest.raises(ValueError, match=r"present: modality 'video' is not one of the model's"):
        model(batch, present=["video"])


def test_context_gru_stays_inside_groups(gen):
    ctx = ContextGRU(8).eval()
    h = torch.randn(6, 8, generator=gen)
    groups = torch.tensor([0, 1, 0, 1, 0, 2])
    pos = torch.tensor([2, 1, 0, 0, 1, 0])
    out = ctx(h, groups, pos)
    perm = torch.tensor([5, 3, 1, 0, 4, 2])
    torch.testing.assert_close(ctx(h[perm], groups[perm], pos[perm]), out[perm])  # order of the batch is irrelevant
    h2 = h.clone()
    h2[1] += 10.0  # change an utterance of video 1
    out2 = ctx(h2, groups, pos)
    torch.testing.assert_close(out2[[0, 2, 4, 5]], out[[0, 2, 4, 5]])  # videos 0 and 2 unaffected
    assert not torch.allclose(out2[3], out[3])  # its neighbour in video 1 sees it


def test_context_gru_keeps_videos_apart_with_negative_positions(gen):
    """The sort key group * (max_pos + 1) + position let a video with negative positions slide into
    the previous one: video 0's output changed by 0.15 when batched with video 1 (review)."""
    ctx = ContextGRU(8).eval()
    h = torch.randn(5, 8, generator=gen)
    groups, pos = torch.tensor([0, 0, 0, 1, 1]), torch.tensor([0, 1, 2, -3, -2])
    both = ctx(h, groups, pos)
    torch.testing.assert_close(both[:3], ctx(h[:3], groups[:3], pos[:3]))
    torch.testing.assert_close(both[3:], ctx(h[3:], groups[3:], pos[3:] + 3))  # only the order counts


def test_sequence_data_builds_transformer():
    n = 8
    ds = {s: MultimodalDataset({"text": torch.randn(n, 5, 3), "audio": torch.randn(n, 4, 2)}, torch.randn(n),
                               [f"{s}{i}" for i in range(n)], lengths={"text": torch.full((n,), 3)}, split=s)
          for s in ("train", "valid", "test")}
    b = DataBundle("seq", TaskSpec("regression", 1, "mosi"), ds)
    model = build_model(Config(), b)
    assert type(model.encoders["text"]).__name__ == "TransformerEncoder"
    assert model(ds["train"].__getitems__([0, 1])).logits.shape == (2, 1)


def test_coalition_pass_scores_every_coalition_with_the_same_head(bundle):
    """In training mode the coalition pass switches the head's dropout off (and restores it)."""
    cfg = apply_overrides(Config(), ["model.dropout=0.5"])
    model = build_model(cfg, bundle).train()
    batch = bundle.splits["train"].__getitems__(list(range(16)))
    out = model(batch)
    masks = coalition_masks(3)
    first, second = model.coalition_logits(out, masks), model.coalition_logits(out, masks)
    torch.testing.assert_close(first, second)
    assert model.head.training
    noisy = model.coalition_logits(out, masks, head_dropout=True)
    assert not torch.allclose(noisy, first)


def test_pase_forward_reuses_one_bank_snapshot_and_the_configured_tau(bundle):
    """The forward's prototype similarities are cos(h, c_k) / tau against the banks as they
    were; the snapshot it carries is a copy the later EMA update does not change."""
    from pase.fusion import prototype_confidence
    from pase.prototypes import prototype_logits

    cfg = apply_overrides(Config(), ["method=pase", "pase.tau=0.25"])
    model = build_model(cfg, bundle)
    batch = bundle.splits["train"].__getitems__(list(range(16)))
    y = (batch.target >= 0).long()
    for m in model.modalities:
        model.banks[m].update(torch.randn(16, cfg.model.d_model), y)
    out = model(batch)
    for i, m in enumerate(model.modalities):
        bank = model.banks[m]
        torch.testing.assert_close(out.proto_logits[m],
                                   prototype_logits(out.reps[m], bank.prototypes, 0.25, bank.initialized))
        torch.testing.assert_close(out.stacked[:, i], out.reps[m])
    conf = torch.stack([prototype_confidence(out.proto_logits[m], model.banks[m].initialized) for m in model.modalities])
    torch.testing.assert_close(out.gate_scores, model.gate.scores(out.stacked.transpose(0, 1), conf))
    before = out.banks[0].clone()
    for m in model.modalities:
        model.banks[m].update(torch.randn(16, cfg.model.d_model), y)
    torch.testing.assert_close(out.banks[0], before)  # a copy, not a view of the banks


def test_attention_dropout_is_configurable_and_off_by_default():
    enc = create_encoder("transformer", d_in=5, d_model=8, hidden=16, heads=2, dropout=0.3)
    layers = list(enc.body.layers)
    assert all(layer.self_attn.dropout == 0.0 and layer.dropout1.p == 0.3 for layer in layers)
    enc = create_encoder("transformer", d_in=5, d_model=8, hidden=16, heads=2, dropout=0.3, attn_dropout=0.1)
    assert all(layer.self_attn.dropout == 0.1 for layer in enc.body.layers)
    x, lengths = torch.randn(4, 6, 5), torch.tensor([6, 3, 1, 6])
    enc.eval()
    torch.testing.assert_close(enc(x, lengths), enc(x, lengths))  # eval: no dropout at all


@pytest.mark.parametrize("p,dtype", [(0.2, torch.float32), (0.5, torch.float32), (0.3, torch.bfloat16)])
def test_uniform_dropout_has_dropouts_law_and_gradient(p, dtype):
    """The Transformer's CPU dropout: each entry is zeroed with probability p (binomial bound, 5 SD)
    and otherwise scaled by 1 / (1 - p), as nn.Dropout's; the gradient is the same mask; bf16
    keeps its dtype and the probability; eval mode and p = 0 are the identity."""
    torch.manual_seed(0)
    n = 200_000
    x = (torch.rand(n) + 0.5).to(dtype).requires_grad_(True)  # no zeros: a zero output is a dropped entry
    drop = UniformDropout(p).train()
    y = drop(x)
    assert y.dtype == dtype
    dropped = y == 0
    assert abs(dropped.float().mean().item() - p) < 5 * (p * (1 - p) / n) ** 0.5
    kept = ~dropped
    torch.testing.assert_close(y[kept], (x[kept].float() * (1.0 / (1.0 - p))).to(dtype))
    g = torch.randn(n).to(dtype)
    y.backward(g)
    torch.testing.assert_close(x.grad, torch.where(kept, g.float() * (1.0 / (1.0 - p)), 0.0).to(dtype))
    assert not torch.equal(drop(x), drop(x))  # a new mask every call
    assert torch.equal(drop.eval()(x), x) and torch.equal(UniformDropout(0.0).train()(x), x)


def test_transformer_encoder_drops_with_uniform_dropout():
    enc = create_encoder("transformer", d_in=5, d_model=8, hidden=16, heads=2, layers=2, dropout=0.3)
    for layer in enc.body.layers:
        assert all(type(getattr(layer, k)) is UniformDropout and getattr(layer, k).p == 0.3
                   for k in ("dropout", "dropout1", "dropout2"))


@pytest.mark.parametrize("mask_kind", ["bool", "float", "none"])
@pytest.mark.parametrize("attn_dropout", [0.0, 0.3])
def test_batch_first_layer_equals_torchs_encoder_layer(mask_kind, attn_dropout):
    """The Transformer encoder's layer computes what nn.TransformerEncoderLayer computes with the
    same weights, in training mode: output and input gradient equal to float rounding, with bool,
    float (-inf) or no key-padding mask, and with attention dropout the same masks from the same seed;
    the state-dict keys are torch's."""
    torch.manual_seed(0)
    ours = BatchFirstEncoderLayer(16, 4, 32, 0.0, batch_first=True, norm_first=True).train()
    ours.self_attn.dropout = attn_dropout
    ref = nn.TransformerEncoderLayer(16, 4, 32, 0.0, batch_first=True, norm_first=True).train()
    ref.load_state_dict(ours.state_dict())
    ref.self_attn.dropout = attn_dropout
    assert list(ours.state_dict()) == list(ref.state_dict())
    lengths = torch.tensor([7, 3, 1, 5, 7])
    pad = torch.arange(7)[None, :] >= lengths[:, None]  # (B, T) True at padding
    mask = {"bool": pad, "float": torch.zeros(pad.shape).masked_fill(pad, float("-inf")), "none": None}[mask_kind]
    x = torch.randn(5, 7, 16, requires_grad=True)
    outs = []
    for layer in (ours, ref):
        torch.manual_seed(1)
        y = layer(x, src_key_padding_mask=mask)
        outs.append((y, torch.autograd.grad((y * torch.linspace(-1, 1, 16)).sum(), x)[0]))
    (y0, g0), (y1, g1) = outs
    torch.testing.assert_close(y0, y1, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g0, g1, rtol=1e-6, atol=1e-6)
    if attn_dropout:  # the dropout acted: another seed draws other masks
        torch.manual_seed(2)
        assert not torch.allclose(ours(x, src_key_padding_mask=mask), y0)


def test_transformer_encoder_uses_the_batch_first_layer_and_trains_as_torchs():
    """The registered encoder's layers are BatchFirstEncoderLayer; with its layers swapped for
    torch's (same weights) a training forward and backward give the same output and gradients."""
    enc = create_encoder("transformer", d_in=5, d_model=8, hidden=16, heads=2, layers=2, dropout=0.0)
    assert all(type(layer) is BatchFirstEncoderLayer for layer in enc.body.layers)
    ref = copy.deepcopy(enc)
    for i, layer in enumerate(ref.body.layers):
        plain = nn.TransformerEncoderLayer(16, 2, 32, 0.0, batch_first=True, norm_first=True)
        plain.load_state_dict(layer.state_dict())
        ref.body.layers[i] = plain
    x, lengths = torch.randn(4, 6, 5), torch.tensor([6, 3, 1, 6])
    y0, y1 = enc.train()(x, lengths), ref.train()(x, lengths)
    torch.testing.assert_close(y0, y1, rtol=1e-6, atol=1e-6)
    y0.sum().backward()
    y1.sum().backward()
    for (name, p0), p1 in zip(enc.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p0.grad, p1.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_bad_attention_dropout_names_the_key():
    with pytest.raises(ValueError, match=r"model.attn_dropout=1.5 must lie in \[0, 1\)"):
        create_encoder("transformer", d_in=5, d_model=8, hidden=16, heads=2, attn_dropout=1.5)


@pytest.mark.parametrize("head_hidden,gap", [(0, 0.0), (32, 0.0), (32, 29.0)])
def test_split_first_layer_coalition_head_equals_the_concatenation(bundle, head_hidden, gap):
    """The coalition pass's modality-split first layer and mask products give the head's output
    on each coalition's weighted concatenation (dropout off), for a linear and an MLP head, also
    with gate scores tens apart (gap 29: audio 29 and vision 58 below text, every weight exact). Beyond the
    documented gap of 60 the weights stay finite, and the empty and one-modality coalitions stay exact: a
    singleton weighs its member 1 at any gap (without the clip its e_m underflowed to 0 and the head scored its
    bias alone)."""
    cfg = apply_overrides(Config(), ["method=pase", f"model.head_hidden={head_hidden}", "model.dropout=0.3"])
    model = build_model(cfg, bundle).train()
    batch = bundle.splits["train"].__getitems__(list(range(16)))
    with torch.no_grad():
        out = model(batch)
        out.gate_scores = out.gate_scores - gap * torch.arange(3.0)  # (B, M), text first
        masks = coalition_masks(3)
        got = model.coalition_logits(out, masks)
        assert model.head.training  # the coalition pass leaves the head's mode alone
        weights = model.fusion_weights(out.gate_scores, masks[:, None, :], 16, out.stacked.device, out.stacked.dtype)
        model.head.eval()
        want = model.head((out.stacked * weights.unsqueeze(-1)).flatten(-2))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    out.gate_scores = out.gate_scores - 1000.0 * torch.arange(3.0)
    with torch.no_grad():
        far = model.coalition_logits(out, masks)
        weights = model.fusion_weights(out.gate_scores, masks[:, None, :], 16, out.stacked.device, out.stacked.dtype)
        want = model.head((out.stacked * weights.unsqueeze(-1)).flatten(-2))
    assert torch.isfinite(far).all()
    small = masks.sum(-1) <= 1  # the empty and singleton coalitions: no member 60 below another
    assert int(small.sum()) == 4
    torch.testing.assert_close(far[small], want[small], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_coalition_pass_under_half_precision_autocast_is_finite_and_close(bundle, dtype):
    """Under fp16 / bf16 autocast ("16-mixed" / "bf16-mixed") every coalition, the empty one
    included, stays finite and close to the float32 pass: the gate's exponentials and mask
    products run in float32 (in fp16 the denominator's floor rounded to 0 and gave 0 / 0)."""
    cfg = apply_overrides(Config(), ["method=pase", "model.head_hidden=32"])
    model = build_model(cfg, bundle).eval()  # no dropout: both passes see the same representations
    batch = bundle.splits["train"].__getitems__(list(range(8)))
    masks = coalition_masks(3)
    with torch.no_grad():
        with torch.autocast("cpu", dtype=dtype):
            out = model(batch)
            out.gate_scores = out.gate_scores - 25.0 * torch.arange(3.0)  # gaps past fp16's exp range
            got = model.coalition_logits(out, masks)
        out32 = model(batch)
        out32.gate_scores = out32.gate_scores - 25.0 * torch.arange(3.0)
        ref = model.coalition_logits(out32, masks)
    assert got.dtype == dtype and torch.isfinite(got).all()
    torch.testing.assert_close(got.float(), ref, atol=0.05, rtol=0.05)


def test_gate_rows_follow_the_model_order(bundle):
    """The gate's own dict API (``GateScorer.forward``) scores the modalities the model fuses in
    the same columns, so a per-modality gate reading names the right modality."""
    from pase.fusion import GateScorer, prototype_confidence

    cfg = apply_overrides(Config(), ["method=pase"])
    model = build_model(cfg, bundle)
    assert model.gate.modalities == model.modalities == ["text", "audio", "vision"]
    batch = bundle.splits["train"].__getitems__(list(range(16)))
    y = (batch.target >= 0).long()
    for m in model.modalities:
        model.banks[m].update(torch.randn(16, cfg.model.d_model), y)
    out = model(batch)
    conf = {m: prototype_confidence(out.proto_logits[m], model.banks[m].initialized) for m in model.modalities}
    torch.testing.assert_close(model.gate(out.reps, conf), out.gate_scores)
    with pytest.raises(ValueError, match="not the model's order"):
        type(model)(dict(model.encoders), model.head, cfg.model.d_model,
                     gate=GateScorer(sorted(model.modalities), cfg.model.d_model))


def test_widths_too_small_for_a_bidirectional_layer_are_named():
    """model.hidden=1 (LSTM) and model.d_model=1 with context passed the config's minimum of 1 and
    failed inside torch ('hidden_size must be greater than zero') (review)."""
    with pytest.raises(ValueError, match=r"model.context=true needs model.d_model of at least 2 .* got 1"):
        ContextGRU(1)
    with pytest.raises(ValueError, match=r"the LSTM encoder needs model.hidden of at least 2 .* got 1"):
        create_encoder("lstm", d_in=4, d_model=8, hidden=1)
    assert ContextGRU(2)(torch.randn(3, 2), torch.tensor([0, 0, 1]), torch.tensor([0, 1, 0])).shape == (3, 2)
