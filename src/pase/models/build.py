"""Build the ``FusionModel`` a configuration asks for, sized from the data."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from torch import nn

from ..data.contract import DataBundle, TaskSpec, sort_modalities
from ..fusion import GateScorer
from ..registry import unknown_name_message
from .encoders import ENCODERS, create_encoder
from .fusion_model import FusionModel, build_head

__all__ = ["build_model", "check_encoders", "encoder_name", "prototype_classes"]


def prototype_classes(task: TaskSpec, binning: str) -> int:
    """K, the number of prototype classes: the task's classes, or the regression binning's bins
    (``binning`` is ``pase.binning``; an unknown one is named with that key)."""
    if task.kind == "regression":
        from ..prototypes import BINNINGS, num_bins

        if binning == "classes":  # it said "num_bins('classes') needs num_classes", which the user cannot give
            valid = ", ".join(b for b in BINNINGS if b != "classes")
            raise ValueError(f"config key 'pase.binning': 'classes' takes the class ids of classification data; "
                             f"these labels are continuous (regression): bin them with one of {valid}")

        try:
            return num_bins(binning)
        except ValueError as e:  # the component's message, naming the config key that held the name
            raise ValueError(f"config key 'pase.binning': {e}") from None
    return task.num_classes


def encoder_name(mc, modality: str, bundle: DataBundle) -> str:
    """The encoder of ``modality``: ``model.text_encoder`` for text unless it is "auto", else ``model.encoder``.

    "auto" text that holds BERT token ids (MMSA ``text="bert"``) gets "bert"; an "auto" ``encoder``
    is "mlp" for utterance data (T = 1) and "transformer" for sequences.
    """
    key = "model.encoder"
    if modality == "text" and mc.text_encoder != "auto":
        name, key = mc.text_encoder, "model.text_encoder"
    elif modality == "text" and bundle.info.get("text") == "bert":
        name = "bert"  # token ids only make sense to a token model
    else:
        name = mc.encoder
    if name == "auto":
        name = "mlp" if max(bundle.max_steps().values()) == 1 else "transformer"
    if modality == "text" and bundle.info.get("text") == "bert" and name != "bert":
        # an LSTM or MLP over raw token ids trained without a word, and diagnose added noise to the ids
        raise ValueError(f"config key {key!r}: encoder {name!r} would read the text's BERT token ids "
                         f"(data.options.text=bert) as features; set {key}=bert (or auto) with "
                         "model.pretrained_path, or load the text features with data.options.text=features")
    if name == "bert" and modality != "text":  # token ids are text's alone; audio / vision got a BERT and failed late
        raise ValueError(f"config key {key!r}: encoder 'bert' reads text token ids, but modality {modality!r} holds "
                         f"features; set model.text_encoder=bert (or leave it auto) and {key} to one of "
                         f"{', '.join(ENCODERS.names())}")
    _check_encoder(key, name)
    return name


def _check_encoder(key: str, name: str) -> None:
    """KeyError naming ``key`` when ``name`` is no encoder (``bert``: the text's; ``auto``: chosen from the data)."""
    if name not in ("auto", "bert") and name not in ENCODERS:
        valid = ENCODERS.names() + ["auto", "bert"]  # auto: chosen from the data (a typo of the default got no hint)
        raise KeyError(f"config key {key!r}: " + unknown_name_message("encoder", name, valid))


def check_encoders(mc) -> None:
    """``model.encoder`` and ``model.text_encoder`` name encoders there are, told from the configuration
    alone (``encoder_name`` checks the rest against the data): ``pase compare`` and ``pase crossval`` check
    them before anything is written (every run failed at model build after config.yaml was saved)."""
    _check_encoder("model.encoder", mc.encoder)
    _check_encoder("model.text_encoder", mc.text_encoder)


def _encoder(name: str, mc, d_in: int, max_len: int, pretrained: Optional[Dict[str, Any]] = None) -> nn.Module:
    if name == "bert":  # needs a pretrained folder (or its config), so it is built here rather than through ENCODERS
        from .bert import BertTextEncoder

        return BertTextEncoder(d_in, mc.d_model, mc.pretrained_path, finetune=mc.finetune,
                               pooling=mc.bert_pooling, dropout=mc.dropout, max_len=max_len, config=pretrained)
    return create_encoder(name, d_in=d_in, d_model=mc.d_model, hidden=mc.hidden, layers=mc.layers,
                          heads=mc.heads, dropout=mc.dropout, attn_dropout=mc.attn_dropout, max_len=max_len)


def build_model(cfg, bundle: DataBundle, max_steps: Optional[Mapping[str, int]] = None,
                pretrained: Optional[Mapping[str, Dict[str, Any]]] = None) -> FusionModel:
    """Encoders sized from ``bundle``'s widths (chosen per modality), a head for its task; PaSE
    adds gate and banks. ``max_steps`` (modality -> T) replaces the data's longest sequences where
    given: a saved model keeps the position table it was trained with, whatever data it scores.
    ``pretrained`` (modality -> model config, from a checkpoint) builds a pretrained encoder's
    architecture without its folder, for the checkpoint's weights. A BERT encoder checks the token
    ids of every split here, once."""
    mc = cfg.model
    steps = {**bundle.max_steps(), **(max_steps or {})}
    names = {m: encoder_name(mc, m, bundle) for m in bundle.dims()}  # every name checked before any encoder is built
    encoders = {m: _encoder(names[m], mc, d, steps[m], (pretrained or {}).get(m)) for m, d in bundle.dims().items()}
    for m, enc in encoders.items():
        if hasattr(enc, "check_inputs"):
            for split, ds in bundle.splits.items():
                enc.check_inputs(ds.features[m], f"split {split!r}")
    mods = sort_modalities(list(encoders))  # the model's order: the gate's rows follow it
    head = build_head(len(mods) * mc.d_model, bundle.task.output_dim, mc.head_hidden, mc.dropout)
    gate = banks = None
    pc = cfg.pase
    if cfg.method == "pase":
        if pc.gate:
            gate = GateScorer(mods, mc.d_model, inputs=pc.gate_inputs)
        if pc.pcl or pc.ot or pc.gate:
            from ..prototypes import PrototypeBank

            k = prototype_classes(bundle.task, pc.binning)
            banks = {m: PrototypeBank(k, mc.d_model, momentum=pc.momentum) for m in mods}
    return FusionModel(encoders, head, mc.d_model, gate=gate, banks=banks, context=mc.context, tau=pc.tau)
