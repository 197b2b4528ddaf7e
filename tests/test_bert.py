"""The optional pretrained BERT text encoder, and the paper / synthetic configuration files.

BERT tests use a tiny randomly initialised BERT saved to a temporary folder (nothing is
downloaded). ``transformers`` is optional (``pip install 'pase[bert]'``, not in the ``test``
extra: see docs/data.md); without it those tests skip with that reason, and the paper-config runs
swap MMSA's BERT token ids for its text features so the rest of each config is still exercised.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from data.writers import write_mmsa, write_mult
from pase.config import Config, ConfigError, DataConfig, load_config
from pase.data import create_data
from pase.data.synthetic import SyntheticSpec, load_synthetic
from pase.models import build_model
from pase.models.bert import BertTextEncoder, PretrainedModelError, check_pretrained_dir
from pase.models.build import encoder_name
from pase.training import train

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "configs" / "paper"
HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None
needs_transformers = pytest.mark.skipif(
    not HAS_TRANSFORMERS, reason="transformers is not installed (optional: pip install 'pase[bert]'); "
                                 "the BERT encoder tests need it")
VOCAB = 100
# one full-batch step per epoch on the 16 training rows: every prototype class is seen at once
QUICK = ["train.max_epochs=1", "train.batch_size=16", "train.progress_bar=false"]


def _small_vocab(data: dict) -> None:
    """Map the writer's token ids (100..29999) into the tiny model's vocabulary, padding stays 0."""
    for split in data.values():
        ids, mask = split["text_bert"][:, 0], split["text_bert"][:, 1]
        split["text_bert"][:, 0] = (ids % (VOCAB - 2) + 2) * mask


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    """A tiny random BERT written by ``save_pretrained`` (config.json + weights)."""
    transformers = pytest.importorskip(
        "transformers", reason="transformers is not installed (optional: pip install 'pase[bert]')")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32)
    out = tmp_path_factory.mktemp("tiny_bert")
    transformers.BertModel(cfg).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def mosi_path(tmp_path_factory) -> Path:
    """An MMSA MOSI pickle (unaligned) whose ``text_bert`` ids fit the tiny vocabulary."""
    return write_mmsa(tmp_path_factory.mktemp("mmsa"), "mosi", aligned=False, sizes=(16, 8, 8),
                      mutate=_small_vocab)


def _bert_cfg(mosi_path: Path, bert_dir, *extra: str) -> Config:
    return load_config(None, ["data.source=mmsa", f"data.path={mosi_path}", "data.options.text=bert",
                              "model.text_encoder=bert", f"model.pretrained_path={bert_dir}",
                              "model.d_model=8", "model.hidden=16", "model.head_hidden=8", *QUICK, *extra])


# ------------------------------------------------------------------ errors (no transformers needed)
def _no_weights(tmp: Path) -> Path:
    (tmp / "config.json").write_text("{}")
    return tmp


@pytest.mark.parametrize("make, match", [
    (lambda tmp: None, r"model.text_encoder='bert' needs model.pretrained_path"),
    (lambda tmp: tmp / "absent", r"'.*absent' is not a directory"),
    (lambda tmp: tmp, r": no config.json, so it is not a Hugging Face model directory"),
    (_no_weights, r": no weights \(none of model.safetensors, pytorch_model.bin"),
], ids=["none", "absent", "no-config", "no-weights"])
def test_bad_pretrained_dir_is_one_line(tmp_path, make, match):
    with pytest.raises(PretrainedModelError, match=match) as err:
        check_pretrained_dir(make(tmp_path))
    assert "\n" not in str(err.value) and "save_pretrained" in str(err.value)


def test_missing_dir_stops_a_run_with_one_line(tmp_path, mosi_path):
    cfg = _bert_cfg(mosi_path, tmp_path / "no_such_bert")
    with pytest.raises(PretrainedModelError, match=r"no_such_bert' is not a directory; point "
                                                   r"model.pretrained_path at a folder") as err:
        train(cfg, tmp_path / "run", quiet=True)
    assert "\n" not in str(err.value)


def test_bert_encoder_needs_token_ids(tmp_path, mosi_path):
    cfg = _bert_cfg(mosi_path, tmp_path, "data.options.text=features")
    with pytest.raises(ValueError, match=r"reads \(B, L, 3\) token ids .* has width 768; load MMSA data "
                                         r"with data.options.text=bert"):
        train(cfg, tmp_path / "run", quiet=True)


def test_unknown_pooling_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"model.bert_pooling='max'; valid: cls, mean"):
        BertTextEncoder(3, 8, tmp_path, pooling="max")


def test_text_encoder_choice_per_modality(mosi_path):
    ids = create_data("mmsa", path=mosi_path, text="bert")
    feats = create_data("mmsa", path=mosi_path)
    auto = Config().model
    assert [encoder_name(auto, m, ids) for m in ids.modalities] == ["bert", "transformer", "transformer"]
    assert [encoder_name(auto, m, feats) for m in feats.modalities] == ["transformer"] * 3
    lstm_text = load_config(None, ["model.text_encoder=lstm", "model.encoder=mlp"]).model
    assert [encoder_name(lstm_text, m, feats) for m in feats.modalities] == ["lstm", "mlp", "mlp"]
    bad = load_config(None, ["model.text_encoder=bret"]).model
    with pytest.raises(KeyError, match=r"unknown encoder 'bret'; did you mean 'bert'\? valid: auto, bert, lstm"):
        encoder_name(bad, "text", feats)
    # token ids read as features by an LSTM trained without a word (and diagnose then added noise to them)
    with pytest.raises(ValueError, match=r"config key 'model.text_encoder': encoder 'lstm' would read the text's BERT "
                                         r"token ids \(data.options.text=bert\) as features; set model.text_encoder="
                                         r"bert \(or auto\)"):
        encoder_name(lstm_text, "text", ids)


def test_a_folder_of_another_model_type_is_refused(tmp_path):
    """A RoBERTa folder trained on MMSA's bert-base-uncased ids without a word (a review)."""
    (tmp_path / "config.json").write_text('{"model_type": "roberta", "vocab_size": 50265}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(PretrainedModelError, match=r": holds a 'roberta' model, but model.text_encoder='bert' reads "
                                                   r"MMSA's BERT token ids .* point model.pretrained_path at one"):
        check_pretrained_dir(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    assert check_pretrained_dir(tmp_path) == tmp_path
    (tmp_path / "config.json").write_text('{"vocab_size": 30522}')  # pytorch-pretrained-bert's: no model_type
    assert check_pretrained_dir(tmp_path) == tmp_path


def test_bf16_true_keeps_token_ids_exact(mosi_path):
    """bf16 holds whole numbers exactly only up to 256: the true half precisions cast the float token
    ids of a batch (BERT read 7744 for the file's 7754); the token inputs now stay as stored."""
    from pase.training.precision import precision_plugin, token_inputs, trainer_precision

    cfg = load_config(None, ["data.source=mmsa", f"data.path={mosi_path}", "data.options.text=bert"])
    assert token_inputs(cfg) == ("text",) and token_inputs(Config()) == ()
    bundle = create_data("mmsa", path=mosi_path, text="bert")
    batch = bundle.splits["train"].__getitems__(list(range(8)))
    batch.inputs["text"][..., 0] += 7000  # ids as large as bert-base-uncased's
    for plugin in (precision_plugin("bf16-true", token_inputs(cfg)),
                   trainer_precision("bf16-true", token_inputs(cfg))["plugins"][0]):
        out = plugin.convert_input(batch)
        assert torch.equal(out.inputs["text"], batch.inputs["text"]) and out.inputs["audio"].dtype == torch.bfloat16
    rounded = precision_plugin("bf16-true").convert_input(batch).inputs["text"]
    assert not torch.equal(rounded.float(), batch.inputs["text"])  # what happened before


# ------------------------------------------------------------------ the encoder itself
def _batch(mosi_path: Path, n: int = 8):
    return create_data("mmsa", path=mosi_path, text="bert").splits["train"].__getitems__(list(range(n)))


@needs_transformers
@pytest.mark.parametrize("finetune", [True, False])
def test_finite_output_and_gradients(mosi_path, bert_dir, finetune):
    bundle = create_data("mmsa", path=mosi_path, text="bert")
    model = build_model(_bert_cfg(mosi_path, bert_dir, f"model.finetune={str(finetune).lower()}"), bundle)
    enc = model.encoders["text"]
    assert isinstance(enc, BertTextEncoder) and enc.bert.training is finetune
    out = model(_batch(mosi_path))
    assert out.logits.shape == (8, 1) and torch.isfinite(out.logits).all()
    out.logits.pow(2).sum().backward()
    named = list(enc.bert.named_parameters())
    assert len(named) > 10
    for n, p in named:
        if finetune:
            assert p.grad is not None, f"No gradient for {n}"
            assert torch.isfinite(p.grad).all(), f"non-finite gradient for {n}"
        else:
            assert p.grad is None and not p.requires_grad, f"frozen {n} has a gradient"
    for n, p in enc.out.named_parameters():  # the projection always trains
        assert p.grad is not None, f"No gradient for {n}"
    # BERT is part of the text group (SGM modulates it); frozen, it is in no group at all
    groups = model.modality_parameters()
    in_text = {id(p) for p in groups["text"]}
    assert all((id(p) in in_text) is finetune for _, p in named)
    listed = [id(p) for ps in groups.values() for p in ps] + [id(p) for p in model.shared_parameters()]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(listed) == sorted(trainable)  # every trainable parameter exactly once


@needs_transformers
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_padding_tokens_are_ignored(bert_dir, pooling, gen):
    enc = BertTextEncoder(3, 8, bert_dir, pooling=pooling, max_len=6).eval()
    ids = torch.randint(1, VOCAB, (2, 6), generator=gen)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    x = torch.stack([ids * mask, mask, torch.zeros_like(ids)], -1).float()  # (B, L, 3)
    y = x.clone()
    y[0, 4:, 0] = 7.0  # other token ids where the mask is 0
    lengths = mask.sum(1)
    # eval mode, same weights: the masked positions must not reach the output (float32 tolerance)
    torch.testing.assert_close(enc(x, lengths), enc(y, lengths), rtol=1e-5, atol=1e-6)


@needs_transformers
def test_token_ids_from_another_tokenizer_are_refused(tmp_path, bert_dir):
    path = write_mmsa(tmp_path, "mosi", aligned=False, sizes=(8, 4, 4))  # ids up to 29999
    bundle = create_data("mmsa", path=path, text="bert")
    with pytest.raises(ValueError, match=r"text token ids \(split 'train'\), row 0: id \d+ / segment id 0 outside "
                                         r"the model's vocab_size=100"):
        build_model(_bert_cfg(path, bert_dir), bundle)
    enc = BertTextEncoder(3, 8, bert_dir, max_len=bundle.max_steps()["text"])  # in one's own loop: its first batch
    with pytest.raises(ValueError, match=r"text token ids, row 0: id \d+ / segment id 0 outside"):
        enc(bundle.splits["train"].features["text"][:2], torch.ones(2, dtype=torch.long))


@needs_transformers
def test_an_id_outside_the_vocabulary_in_a_later_split_is_refused_before_training(tmp_path, bert_dir):
    """Only the first batch was checked: an id in a later batch stopped the run with torch's
    "index out of range in self"."""
    def one_bad(data):
        _small_vocab(data)
        data["test"]["text_bert"][3, 0, 2] = 150
    path = write_mmsa(tmp_path, "mosi", aligned=False, sizes=(16, 8, 8), mutate=one_bad)
    with pytest.raises(ValueError, match=r"text token ids \(split 'test'\), row 3: id 150 / segment id 0 outside "
                                         r"the model's vocab_size=100 / type_vocab_size=2 \(1 such rows\)"):
        train(_bert_cfg(path, bert_dir), tmp_path / "run", quiet=True)


@pytest.mark.slow
@needs_transformers
def test_a_trained_bert_run_needs_no_folder_to_evaluate_and_may_move_to_resume(tmp_path, mosi_path, bert_dir):
    """The checkpoint keeps BERT's config: evaluate, predict and diagnose rebuild the encoder without
    the folder; a resume may point model.pretrained_path at its new place (both were refused)."""
    import shutil

    from pase.training import evaluate

    folder = tmp_path / "bert"
    shutil.copytree(bert_dir, folder)
    run = tmp_path / "run"
    result = train(_bert_cfg(mosi_path, folder), run, quiet=True)
    moved = tmp_path / "moved_bert"
    folder.rename(moved)
    again = evaluate(run / "checkpoints" / "best.ckpt")
    assert again["test"] == pytest.approx(result["test"], abs=1e-6)
    resumed = train(_bert_cfg(mosi_path, moved, "train.max_epochs=2"), run, resume=True, quiet=True)
    assert resumed["epochs_run"] == 2
    # the folder now holds another architecture (a whole 2-layer model: a config.json the weights do not
    # fit is refused by the loader itself): a resume names it
    import transformers

    two = transformers.BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=32)
    shutil.rmtree(moved)
    transformers.BertModel(two).save_pretrained(moved)
    with pytest.raises(ConfigError, match=r"or model.pretrained_path \(.*moved_bert\) now holds another model"):
        train(_bert_cfg(mosi_path, moved, "train.max_epochs=3"), run, resume=True, quiet=True)


@pytest.mark.slow
@needs_transformers
@pytest.mark.filterwarnings("ignore:Found .* module\\(s\\) in eval mode")  # the frozen BERT, on purpose
@pytest.mark.parametrize("finetune", [True, False])
def test_one_epoch_fine_tunes_or_freezes(tmp_path, mosi_path, bert_dir, finetune):
    from safetensors.torch import load_file

    cfg = _bert_cfg(mosi_path, bert_dir, "method=pase", f"model.finetune={str(finetune).lower()}")
    result = train(cfg, tmp_path / "run", quiet=True)
    assert all(math.isfinite(v) for v in result["test"].values()), result["test"]
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu",
                       weights_only=True)["state_dict"]
    prefix = "model.encoders.text.bert."
    trained = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    pretrained = load_file(str(bert_dir / "model.safetensors"))
    params = {n for n, _ in BertTextEncoder(3, 8, bert_dir).bert.named_parameters()}
    assert params and params <= set(trained) and params <= set(pretrained)
    for n in sorted(params):
        moved = not torch.equal(trained[n], pretrained[n])
        assert moved is finetune, f"{n}: {'unchanged' if finetune else 'changed'} after one epoch"


# ------------------------------------------------------------------ configuration files
@pytest.mark.parametrize("name, source, dataset, text", [
    ("mosi", "mmsa", "mosi", "bert"), ("mosei", "mmsa", "mosei", "bert"), ("iemocap4", "mult", "iemocap", None)])
def test_paper_config_loads_with_the_supplementary_values(name, source, dataset, text):
    cfg = load_config(PAPER / f"{name}.yaml")
    assert cfg.method == "pase"
    opts = cfg.data.options
    assert (cfg.data.source, opts.get("dataset"), opts.get("text")) == (source, dataset, text)
    assert cfg.data.path.startswith("/path/to/")  # the placeholder the user edits (docs/data.md)
    t, p = cfg.train, cfg.pase
    assert (t.optimizer, t.lr, t.batch_size, t.max_epochs) == ("adam", 1e-5, 64, 200)
    assert (p.momentum, p.alpha, p.beta, p.lambda_ot, p.lambda_pcl) == (0.98, 0.1, 0.05, 0.01, 0.1)
    if text == "bert":
        m = cfg.model
        assert (m.text_encoder, m.finetune, m.pretrained_path) == ("bert", True, "/path/to/bert-base-uncased")


def _one_emotion_each(data: dict) -> None:
    """IEMOCAP-4 is single-label: one (no, yes) pair says yes per sample, the emotions in turn."""
    for split in data.values():
        yes = np.eye(4)[np.arange(len(split["labels"])) % 4]  # (N, 4)
        split["labels"] = np.stack([1 - yes, yes], axis=-1).astype(np.float32)  # (N, 4, 2)


def _paper_data(name: str, root: Path) -> Path:
    if name == "iemocap4":
        return write_mult(root, "iemocap", sizes=(16, 8, 8), mutate=_one_emotion_each)
    return write_mmsa(root, name, aligned=False, sizes=(16, 8, 8), mutate=_small_vocab)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mosi", "mosei", "iemocap4"])
def test_paper_config_trains_on_its_format(tmp_path, name, request):
    """Each paper config, pointed at a tiny file in its format, trains one epoch as written
    (only path, epochs and batch overridden; the BERT folder becomes the tiny one)."""
    overrides = [f"data.path={_paper_data(name, tmp_path / 'data')}", *QUICK]
    if name != "iemocap4":
        if HAS_TRANSFORMERS:
            overrides.append(f"model.pretrained_path={request.getfixturevalue('bert_dir')}")
        else:  # BERT part skipped: the MMSA text features instead of its token ids
            overrides += ["data.options.text=features", "model.text_encoder=auto"]
    cfg = load_config(PAPER / f"{name}.yaml", overrides)
    result = train(cfg, tmp_path / "run", quiet=True)
    expected = {"mosi": "mosi", "mosei": "mosei", "iemocap4": "iemocap_mult"}[name]
    assert result["protocol"] == expected and result["epochs_run"] == 1
    assert all(math.isfinite(v) for v in result["test"].values()), result["test"]


def test_paper_placeholder_path_fails_clearly(tmp_path):
    cfg = load_config(PAPER / "iemocap4.yaml", QUICK)
    with pytest.raises(FileNotFoundError, match=r"/path/to/iemocap_data.pkl: no such file; check the path"):
        train(cfg, tmp_path / "run", quiet=True)


def test_synthetic_config_spells_out_the_defaults():
    cfg = load_config(ROOT / "configs" / "synthetic.yaml")
    options = dict(cfg.data.options)
    assert options.pop("seed") == inspect.signature(load_synthetic).parameters["seed"].default
    defaults = {k: p.default for k, p in inspect.signature(SyntheticSpec).parameters.items()}
    assert set(options) == set(defaults), set(options) ^ set(defaults)
    for k, v in options.items():
        assert (tuple(v) if isinstance(v, list) else v) == defaults[k], f"{k}: {v} != default {defaults[k]}"
    # the rest is the dataclass defaults, and the data equal the default benchmark's exactly
    assert Config(method=cfg.method, data=DataConfig(source=cfg.data.source)) == Config()
    a, b = create_data("synthetic", **cfg.data.options), create_data("synthetic")
    for s in ("train", "valid", "test"):
        assert torch.equal(a.splits[s].target, b.splits[s].target)
        assert all(torch.equal(a.splits[s].features[m], b.splits[s].features[m]) for m in b.modalities)


def test_new_model_keys_are_typed():
    with pytest.raises(ConfigError, match=r"'model.finetune' must be bool"):
        load_config(None, ["model.finetune=3"])
    cfg = load_config(None, ["model.pretrained_path=/models/bert", "model.text_encoder=bert"])
    assert (cfg.model.pretrained_path, cfg.model.text_encoder, Config().model.pretrained_path) == (
        "/models/bert", "bert", None)


def _folder_like(bert_dir: Path, out: Path, change) -> Path:
    """A copy of ``bert_dir`` whose weights file is replaced by ``change(state dict)`` (safetensors)."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(bert_dir, out)
    weights = out / "model.safetensors"
    save_file(change(load_file(weights)), weights, metadata={"format": "pt"})
    return out


@needs_transformers
def test_a_folder_whose_weights_do_not_cover_bert_is_refused_not_trained_at_random(tmp_path, bert_dir):
    """transformers starts the weights a folder lacks at random and prints a table: a folder keeping
    only the embeddings, or every key under another prefix, trained a random BERT without a word
    (a review). Refused, naming the folder and a missing key; a truncated weights file is one line."""
    from pase.models.bert import _load_model

    partial = _folder_like(bert_dir, tmp_path / "partial", lambda sd: {k: v for k, v in sd.items() if "embeddings" in k})
    renamed = _folder_like(bert_dir, tmp_path / "renamed", lambda sd: {f"text_model.{k}": v for k, v in sd.items()})
    for folder in (partial, renamed):
        with pytest.raises(PretrainedModelError, match=rf"{folder.name}: its weights do not cover the model its "
                                                       r"config.json describes \(\d+ missing \(e.g. .*\)\)") as err:
            _load_model(folder)
        assert "\n" not in str(err.value)
    cut = _folder_like(bert_dir, tmp_path / "cut", lambda sd: sd)
    blob = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(PretrainedModelError, match=r"cut: cannot load a BERT-style model \(") as err:
        _load_model(cut)
    assert "\n" not in str(err.value)
    assert _load_model(bert_dir) is not None  # the intact folder loads


@needs_transformers
def test_a_bfloat16_folder_loads_in_float32_and_quietly(tmp_path, bert_dir, capfd):
    """A folder saved in bfloat16 loaded in bfloat16 beside float32 layers ('mat1 and mat2 must have the
    same dtype', or under bf16-mixed a model its checkpoint's float32 rebuild scored differently; a
    review): its weights are widened exactly. transformers' load report and progress bar are not
    printed (pase refuses what matters in them itself)."""
    import transformers

    from pase.models.bert import _load_model

    half = tmp_path / "half"
    transformers.AutoModel.from_pretrained(str(bert_dir), add_pooling_layer=False).to(torch.bfloat16).save_pretrained(half)
    capfd.readouterr()
    model = _load_model(half)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    want = transformers.AutoModel.from_pretrained(str(half), add_pooling_layer=False)
    for (k, a), (_, b) in zip(model.state_dict().items(), want.state_dict().items()):
        assert torch.equal(a, b.float()), k
    capfd.readouterr()
    _load_model(bert_dir)
    out, err = capfd.readouterr()
    assert "LOAD REPORT" not in out + err and "Loading weights" not in out + err


@needs_transformers
def test_compare_refuses_seeds_fine_tuned_from_another_bert(tmp_path, mosi_path, bert_dir):
    """model.pretrained_path is a location (it may move), so a comparison rerun with another BERT in it
    averaged seeds fine-tuned from two models into one row (a review). metrics.json records the
    folder's config and weights hashes; compare refuses a kept run of another model and accepts the
    same model moved."""
    import shutil

    import transformers

    from pase.evaluation.compare import compare
    from pase.models.bert import pretrained_fingerprint

    other = tmp_path / "other_bert"
    torch.manual_seed(1)
    transformers.BertModel(transformers.BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1,
                                                   num_attention_heads=2, intermediate_size=32)).save_pretrained(other)
    out = tmp_path / "cmp"
    compare(_bert_cfg(mosi_path, bert_dir), ["late_fusion"], [1111], out, diagnose=False)
    metrics = json.loads((out / "runs" / "late_fusion" / "seed1111" / "metrics.json").read_text())
    assert metrics["pretrained_fingerprint"] == pretrained_fingerprint(bert_dir)
    assert pretrained_fingerprint(other)["config"] == pretrained_fingerprint(bert_dir)["config"]  # same shapes
    with pytest.raises(ConfigError, match=r"seed1111 was fine-tuned from another pretrained model than "
                                          r"model.pretrained_path \(.*other_bert\) holds now \(its weights differ\)"):
        compare(_bert_cfg(mosi_path, other), ["late_fusion"], [1111, 1112], out, diagnose=False)
    assert not (out / "runs" / "late_fusion" / "seed1112").exists()
    moved = tmp_path / "moved_bert"
    shutil.copytree(bert_dir, moved)
    res = compare(_bert_cfg(mosi_path, moved), ["late_fusion"], [1111, 1112], out, diagnose=False)
    assert [r["status"] for r in res["runs"]] == ["ok", "ok"]


def test_the_pretrained_fingerprint_is_of_the_weights_transformers_loads(tmp_path):
    """Every *.bin counted: deleting the unused pytorch_model.bin beside model.safetensors (as the Hub
    ships BERT) or a training_args.bin made the same model 'another' for pase compare (a review).
    No transformers needed: the files are hashed, not loaded."""
    from pase.models.bert import pretrained_fingerprint

    folder = tmp_path / "b"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert", "hidden_size": 16, "_name_or_path": "/old/place"}')
    (folder / "model.safetensors").write_bytes(b"weights")
    before = pretrained_fingerprint(folder)
    (folder / "pytorch_model.bin").write_bytes(b"a second copy transformers does not load")
    (folder / "training_args.bin").write_bytes(b"a trainer's arguments")
    (folder / "config.json").write_text('{"hidden_size": 16, "model_type": "bert", "_name_or_path": "/new/place"}')
    assert pretrained_fingerprint(folder) == before
    (folder / "model.safetensors").write_bytes(b"weights, fine-tuned")
    assert pretrained_fingerprint(folder)["weights"] != before["weights"]
    (folder / "model.safetensors").unlink()  # then transformers loads pytorch_model.bin: that is hashed
    assert pretrained_fingerprint(folder)["weights"] != before["weights"]


class _StandInBert(torch.nn.Module):
    """transformers' BertModel as pase uses it (``config``, ``last_hidden_state``) for tests that run
    without the library: an embedding drawn from the folder's weights file, so two folders of other
    weights are two models. The fingerprint and the comparison code under test are pase's own."""

    class config:  # noqa: N801 - BertModel's attribute
        vocab_size, hidden_size, max_position_embeddings, type_vocab_size = VOCAB, 16, 512, 2

        @staticmethod
        def to_json_string() -> str:
            return json.dumps({"model_type": "bert", "vocab_size": VOCAB, "hidden_size": 16})

    def __init__(self, path: Path) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(sum((Path(path) / "model.safetensors").read_bytes()))
        self.emb = torch.nn.Embedding(VOCAB, 16)
        self.emb.weight.data = torch.randn(VOCAB, 16, generator=g)

    def forward(self, input_ids, attention_mask, token_type_ids):
        import types

        return types.SimpleNamespace(last_hidden_state=self.emb(input_ids))


@pytest.fixture
def stand_in_berts(tmp_path, monkeypatch):
    """Two model folders (same config.json, other weights) that ``_load_model`` builds stand-ins from."""
    import pase.models.bert as bert

    monkeypatch.setattr(bert, "_load_model", _StandInBert)
    folders = []
    for name, byte in (("bert_a", 1), ("bert_b", 2)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text(_StandInBert.config.to_json_string())
        (folder / "model.safetensors").write_bytes(bytes([byte]) * 64)
        folders.append(folder)
    return folders


def test_compare_refuses_to_continue_an_interrupted_run_of_another_bert(tmp_path, mosi_path, stand_in_berts):
    """An interrupted run (checkpoints/last.ckpt, no metrics.json) fine-tuned from BERT A was continued by a
    comparison whose model.pretrained_path held BERT B, and kept A's fingerprint through the resume: seeds
    of A and B were averaged into one row, and only the next call refused (a review). Its checkpoint's
    fingerprint is now compared before anything trains, as a finished run's is; A moved elsewhere is fine."""
    import shutil

    from pase.evaluation.compare import compare
    from pase.models.bert import pretrained_fingerprint

    bert_a, bert_b = stand_in_berts
    out = tmp_path / "cmp"
    run = out / "runs" / "late_fusion" / "seed1111"
    compare(_bert_cfg(mosi_path, bert_a), ["late_fusion"], [1111], out, diagnose=False)
    (run / "metrics.json").unlink()  # interrupted after its last checkpoint
    with pytest.raises(ConfigError, match=r"seed1111 was fine-tuned from another pretrained model than "
                                          r"model.pretrained_path \(.*bert_b\) holds now \(its weights differ\); .*"
                                          r"\(nothing was changed\)"):
        compare(_bert_cfg(mosi_path, bert_b), ["late_fusion"], [1111, 1112], out, diagnose=False)
    assert not (out / "runs" / "late_fusion" / "seed1112").exists() and not (run / "FAILED.txt").exists()
    moved = tmp_path / "moved_bert"
    shutil.copytree(bert_a, moved)
    res = compare(_bert_cfg(mosi_path, moved), ["late_fusion"], [1111, 1112], out, diagnose=False)
    assert [r["status"] for r in res["runs"]] == ["ok", "ok"]
    for seed in (1111, 1112):
        metrics = json.loads((out / "runs" / "late_fusion" / f"seed{seed}" / "metrics.json").read_text())
        assert metrics["pretrained_fingerprint"] == pretrained_fingerprint(bert_a)


def test_a_finished_bert_comparison_is_summarised_after_its_model_folder_moved(tmp_path, mosi_path, stand_in_berts):
    """Rerunning a finished comparison (to re-summarise it) after its BERT folder moved stopped with a bare
    "[Errno 2] No such file or directory: '.../config.json'" (a review): nothing trains, so the folder is not
    needed. A call that would train a new seed names model.pretrained_path and the fix in one line."""
    from pase.evaluation.compare import compare
    from pase.models.bert import PretrainedModelError

    bert_a, _ = stand_in_berts
    out = tmp_path / "cmp"
    compare(_bert_cfg(mosi_path, bert_a), ["late_fusion"], [1111], out, diagnose=False)
    bert_a.rename(tmp_path / "elsewhere")
    res = compare(_bert_cfg(mosi_path, bert_a), ["late_fusion"], [1111], out, diagnose=False)
    assert [r["status"] for r in res["runs"]] == ["ok"] and res["stats"]["late_fusion"]["MAE"]["n"] == 1
    with pytest.raises(PretrainedModelError, match=r"^model.pretrained_path '.*bert_a' is not a directory; point "
                                                   r"model.pretrained_path at a folder written by save_pretrained"):
        compare(_bert_cfg(mosi_path, bert_a), ["late_fusion"], [1111, 1112], out, diagnose=False)
    assert not (out / "runs" / "late_fusion" / "seed1112").exists()
