"""A pretrained BERT text encoder read from a local Hugging Face model directory.

The paper fine-tunes BERT-base on the text of MOSI / MOSEI (PASE_SPEC sec. 2.6-2.7). MMSA's
pickles carry the tokenised text as ``text_bert``; ``load_mmsa(..., text="bert")`` gives it as a
float (B, L, 3) tensor of token ids / attention mask / segment ids. ``BertTextEncoder`` casts the
three channels to long, runs the model, takes the [CLS] state of the last layer (as MMSA's
``BertTextEncoder`` and its models do) or the masked mean over tokens, and projects it to d_model.

Nothing is downloaded: the model is loaded with ``local_files_only=True`` from a directory that
``save_pretrained`` wrote (``config.json`` plus ``model.safetensors`` or ``pytorch_model.bin``);
anything else stops with one line naming the directory and what is missing. ``transformers`` is
an optional dependency (``pip install 'pase[bert]'``), imported only when the encoder is built.

The encoder is not in ``ENCODERS``: the registry's generic test builds every registered encoder
from widths alone, and this one needs a pretrained directory; ``build_model`` constructs it when
``model.text_encoder`` is "bert", and ``tests/test_bert.py`` runs the same checks on a tiny BERT.
Its parameters live inside ``encoders['text']``, so they form the text modality's parameter group
(SGM modulates them); frozen (``finetune=False``) they leave every group and the optimiser.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from torch import Tensor, nn
from ..io import user_path

__all__ = ["BertTextEncoder", "check_pretrained_dir", "PretrainedModelError", "POOLINGS", "pretrained_fingerprint"]

POOLINGS = ("cls", "mean")
_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
            "pytorch_model.bin.index.json")


class PretrainedModelError(FileNotFoundError):
    """The pretrained model directory is absent or incomplete; the message names what is missing."""


def check_pretrained_dir(path: Optional[str | Path]) -> Path:
    """The local model directory ``path``, after checking it holds a config and weights.

    Raises:
        PretrainedModelError: ``path`` is None, not a directory, or lacks ``config.json`` or a
            weights file; one line naming the directory, what is missing and the fix.
    """
    if path is None:
        raise PretrainedModelError(
            "model.text_encoder='bert' needs model.pretrained_path: a local Hugging Face model folder "
            "written by save_pretrained (config.json + model.safetensors or pytorch_model.bin); "
            "nothing is downloaded")
    p = user_path(path)
    fix = "point model.pretrained_path at a folder written by save_pretrained (nothing is downloaded)"
    if not p.is_dir():
        raise PretrainedModelError(f"model.pretrained_path {str(p)!r} is not a directory; {fix}")
    if not (p / "config.json").is_file():
        raise PretrainedModelError(f"{p}: no config.json, so it is not a Hugging Face model directory; {fix}")
    if not any((p / w).is_file() for w in _WEIGHTS):
        raise PretrainedModelError(f"{p}: no weights (none of {', '.join(_WEIGHTS)}); {fix}")
    try:
        kind = json.loads((p / "config.json").read_text()).get("model_type")
    except (ValueError, UnicodeDecodeError, AttributeError) as e:
        raise PretrainedModelError(f"{p / 'config.json'}: not a JSON object ({e}); {fix}") from None
    if kind is not None and kind != "bert":  # a RoBERTa trained on MMSA's ids without a word (a review); an
        # old config without model_type (pytorch-pretrained-bert's) is left to transformers, as before
        raise PretrainedModelError(f"{p}: holds a {kind!r} model, but model.text_encoder='bert' reads MMSA's BERT "
                                   "token ids (text_bert, from bert-base-uncased's tokenizer) with a BERT model "
                                   "(config.json model_type 'bert'); point model.pretrained_path at one")
    return p


def pretrained_fingerprint(path: str | Path) -> Dict[str, str]:
    """What identifies the pretrained model in folder ``path``: SHA-256 of its ``config.json`` (as
    parsed, without the fields that name where or by which library version it was saved) and of the
    weights transformers loads from it (``model.safetensors``, else its index's shards, else
    ``pytorch_model.bin`` or its shards; streamed). Recorded in a run's ``metrics.json``; ``pase
    compare`` refuses to average seeds fine-tuned from different models. (Every ``*.bin`` counted
    before: deleting the unused ``pytorch_model.bin`` the Hub ships beside ``model.safetensors``, or a
    ``training_args.bin``, made the same model "another"; a review.)"""
    import hashlib

    p = user_path(path)
    cfg = json.loads((p / "config.json").read_text())
    if isinstance(cfg, dict):
        cfg = {k: v for k, v in cfg.items() if k not in ("_name_or_path", "transformers_version")}
    files: list = []
    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (p / single).is_file():
            files = [p / single]
        elif (p / index).is_file():
            shards = json.loads((p / index).read_text()).get("weight_map", {}).values()
            files = [p / name for name in sorted(set(shards))]
        if files:
            break
    weights = hashlib.sha256()
    for f in files:
        weights.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                weights.update(chunk)
    return {"config": hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest(),
            "weights": weights.hexdigest()}


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ImportError("model.text_encoder='bert' needs the transformers package: "
                          "pip install 'pase[bert]'") from None
    return transformers


def _load_model(path: Path) -> nn.Module:
    """``AutoModel`` from ``path`` without its pooler (unused: [CLS] is read from the last layer), in
    float32, with every weight from the folder.

    transformers re-initialises at random the weights a folder lacks and only prints a table, so a
    folder of other key names trained a random BERT without a word (a review); a missing or
    mismatched weight is refused here (the pooler's, left out on purpose, is not one). A folder saved
    in bfloat16 loaded as bfloat16 beside float32 layers (a dtype error, or under autocast a model the
    checkpoint's float32 rebuild scored differently); its weights are widened, exactly. Any failure of
    the library (a truncated safetensors file, a config.json the weights do not fit) is one line."""
    tf = _transformers()
    log = tf.utils.logging
    verbosity, bars = log.get_verbosity(), log.is_progress_bar_enabled()
    log.set_verbosity_error()  # its load report and progress bar on every run (pase reports problems itself)
    log.disable_progress_bar()
    try:
        model, info = tf.AutoModel.from_pretrained(str(path), local_files_only=True, add_pooling_layer=False,
                                                   output_loading_info=True)
    except Exception as e:  # noqa: BLE001 - OSError, safetensors' and transformers' own errors alike
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise PretrainedModelError(f"{path}: cannot load a BERT-style model ({type(e).__name__}: {first[:300]}); "
                                   "expected a folder written by BertModel.save_pretrained") from None
    finally:
        log.set_verbosity(verbosity)
        if bars:
            log.enable_progress_bar()
    missing = [k for k in info.get("missing_keys") or [] if not str(k).startswith("pooler.")]
    mismatched = [str(k[0] if isinstance(k, (tuple, list)) else k) for k in info.get("mismatched_keys") or []]
    if missing or mismatched:
        what = "; ".join(f"{len(ks)} {kind} (e.g. {ks[0]})" for kind, ks in (("missing", missing),
                                                                            ("of another shape", mismatched)) if ks)
        raise PretrainedModelError(f"{path}: its weights do not cover the model its config.json describes ({what}); "
                                   "transformers would start those at random: expected a folder written by "
                                   "BertModel.save_pretrained")
    return model.float()


class BertTextEncoder(nn.Module):
    """A pretrained BERT over token ids, then a projection: (B, L, 3), (B,) -> (B, d_model).

    Args:
        d_in: input width; must be 3 (token ids, attention mask, segment ids; MMSA ``text="bert"``).
        d_model: output width.
        pretrained_path: local Hugging Face model directory (see ``check_pretrained_dir``).
        config: instead of reading the directory, build the architecture from this model config
            (``config_dict()`` of a trained encoder, kept in its checkpoint) with untrained
            weights, for a checkpoint's weights to be loaded into: evaluating a trained model
            needs no pretrained folder.
        finetune: train BERT's weights; False freezes them (no gradient, always in eval mode).
        pooling: "cls" (last-layer [CLS] state) or "mean" (masked mean over the tokens).
        dropout: dropout before the projection.
        max_len: longest sequence L of the data; must fit BERT's position embeddings.

    Raises:
        PretrainedModelError: the directory is absent or incomplete.
        ValueError: ``d_in`` is not 3, ``pooling`` is unknown, or ``max_len`` is too long.

    Example:
        >>> enc = BertTextEncoder(3, 64, "/path/to/bert-base-uncased")  # doctest: +SKIP
        >>> enc(x, lengths).shape  # x: (8, 50, 3) floats from MMSA  # doctest: +SKIP
        torch.Size([8, 64])
    """

    #: its input is token ids, not features: feature noise (``evaluation.robustness``) does not apply
    TOKEN_IDS = True

    def __init__(self, d_in: int, d_model: int, pretrained_path: Optional[str | Path],
                 finetune: bool = True, pooling: str = "cls", dropout: float = 0.2,
                 max_len: int = 512, config: Optional[Dict[str, Any]] = None, **_: object) -> None:
        super().__init__()
        if d_in != 3:
            raise ValueError(
                f"the 'bert' text encoder reads (B, L, 3) token ids / mask / segment ids, but the text "
                f"modality has width {d_in}; load MMSA data with data.options.text=bert")
        if pooling not in POOLINGS:
            raise ValueError(f"model.bert_pooling={pooling!r}; valid: {', '.join(POOLINGS)}")
        if config is None:
            path = check_pretrained_dir(pretrained_path)
            self.bert = _load_model(path)
        else:
            tf = _transformers()
            path = "the checkpoint's model config"
            self.bert = tf.BertModel(tf.BertConfig.from_dict(dict(config)), add_pooling_layer=False).eval()
        cfg = self.bert.config
        limit = getattr(cfg, "max_position_embeddings", max_len)
        if max_len > limit:
            raise ValueError(f"{path}: text sequences of length {max_len} exceed the model's "
                             f"max_position_embeddings={limit}; re-tokenise with a shorter max length")
        self.vocab_size = int(cfg.vocab_size)
        self.type_vocab_size = int(getattr(cfg, "type_vocab_size", 1))
        self.finetune = finetune
        self.pooling = pooling
        self.bert.requires_grad_(finetune)
        self.bert.train(finetune)  # from_pretrained returns eval mode; fine-tuning runs with BERT's dropout
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(cfg.hidden_size, d_model), nn.ReLU())
        self._checked = False

    def train(self, mode: bool = True) -> "BertTextEncoder":
        super().train(mode)
        if not self.finetune:
            self.bert.eval()  # a frozen feature extractor runs without dropout
        return self

    def config_dict(self) -> Dict[str, Any]:
        """The BERT model's config as plain values (kept in checkpoints; see ``config``)."""
        return json.loads(self.bert.config.to_json_string())

    def check_inputs(self, raw: Tensor, where: str = "") -> None:
        """Refuse inputs (N, L, 3) that are not token ids / segment ids this model knows, naming
        ``where`` (a split) and the first bad row. ``build_model`` checks every split of the data
        with it once; the forward pass checks its first batch (one host sync, ever) for use in
        someone's own loop. (Checking only the first batch let an id outside the vocabulary in a
        later batch stop the run with torch's "index out of range in self".)"""
        at = f" ({where})" if where else ""
        if raw.dim() != 3 or raw.shape[-1] != 3:
            raise ValueError(f"text inputs of the 'bert' encoder{at} have shape {tuple(raw.shape)}, expected "
                             "(N, L, 3) token ids / mask / segment ids; load MMSA with data.options.text=bert")
        if not torch.equal(raw, raw.round()):
            raise ValueError(f"text inputs of the 'bert' encoder{at} are not integer token ids; do not "
                             "z-score them (data.standardize=false) and load MMSA with text=bert")
        ids, segments = raw[..., 0], raw[..., 2]
        bad = ((ids < 0) | (ids >= self.vocab_size) | (segments < 0) | (segments >= self.type_vocab_size)).any(-1)
        if bool(bad.any()):  # bad: (N,) rows with an id or segment id the model does not know
            row = int(bad.nonzero()[0, 0])
            top, seg, low = int(ids[row].max()), int(segments[row].max()), int(ids[row].min())
            raise ValueError(f"text token ids{at}, row {row}: id {top if low >= 0 else low} / segment id {seg} "
                             f"outside the model's vocab_size={self.vocab_size} / type_vocab_size="
                             f"{self.type_vocab_size} ({int(bad.sum())} such rows); the ids were "
                             "made with another tokenizer than model.pretrained_path's")
        self._checked = True

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """x (B, L, 3) float ids / mask / segments, lengths (B,) (the mask says the same) -> (B, d_model)."""
        if not self._checked:
            self.check_inputs(x)
        ids, mask, segments = x.long().unbind(-1)  # (B, L, 3) -> 3 x (B, L)
        with torch.set_grad_enabled(self.finetune and torch.is_grad_enabled()):
            out = self.bert(input_ids=ids, attention_mask=mask, token_type_ids=segments)
        h = out.last_hidden_state  # (B, L, H)
        if self.pooling == "cls":
            pooled = h[:, 0]  # (B, H)
        else:
            w = mask.to(h.dtype)[..., None]  # (B, L, 1)
            pooled = (h * w).sum(1) / w.sum(1).clamp(min=1)  # (B, H)
        return self.out(pooled)  # (B, H) -> (B, d_model)
