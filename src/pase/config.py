"""One typed configuration: dataclass defaults, then a YAML file, then ``--set key=value`` flags.

Every section is a frozen dataclass; each unusual default carries its reason. An unknown key or
a value of the wrong type stops the run with a message naming the key, the closest valid key and
the valid keys. The resolved configuration is saved with every result (``to_dict``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import typing
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import yaml

__all__ = [
    "Config", "DataConfig", "ModelConfig", "TrainConfig", "PaseConfig", "BaselineConfig",
    "ConfigError", "load_config", "apply_overrides", "to_dict", "from_dict", "save_config", "config_difference",
    "as_trained", "with_dataset", "first_difference", "coerce_value",
]


class ConfigError(ValueError):
    """A configuration key or value that cannot be used; the message names it and the fix."""


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's core scalars: ``1e-5`` is a float (YAML 1.1 reads a
    string), ``017`` is 17 (not octal 15), ``yes`` / ``no`` / ``on`` / ``off`` stay strings and so
    do dates (``2024-01-01``), which no configuration key holds. Digit separators (``1_000``) are
    kept from YAML 1.1; binary and base-60 numbers (``0b101``, ``1:30``) are text."""

    yaml_implicit_resolvers = {
        c: [(tag, rx) for tag, rx in rs if tag.rsplit(":", 1)[-1] not in ("bool", "int", "float", "timestamp")]
        for c, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        """A mapping whose keys are unique: PyYAML keeps the last of a repeated key silently, so a
        second ``train:`` section would drop the first one's settings without a word."""
        seen: Dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: flatten_mapping merges it (the keys
                continue  # written here win); it has no constructor of its own, so it was refused as not YAML
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (lines {seen[key]} and {line}); keep one of them",
                    key_node.start_mark)
            if isinstance(key, Hashable):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


#: YAML 1.2 core schema's implicit scalars: (tag, pattern, first characters)
_CORE_12 = [
    ("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")),
    ("tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9][0-9_]*|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")),
    ("tag:yaml.org,2002:float",
     re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
     list("-+.0123456789")),
]


class _Dumper(yaml.SafeDumper):
    """PyYAML's safe dumper that also quotes the strings YAML 1.2 reads as other types (``1e-5``),
    so a saved config.yaml reads back the same under :class:`_Loader` and under YAML 1.1."""


for _tag, _rx, _first in _CORE_12:
    _Loader.add_implicit_resolver(_tag, _rx, _first)
    _Dumper.add_implicit_resolver(_tag, _rx, _first)


class _IntText(int):
    """An int read from a literal that is not its decimal text (``017``, ``1_000``, ``0x1F``, ``+5``):
    it keeps that text, so a text field (``data.path: 017``) gets what was written, not ``"17"``.
    :func:`coerce_value` turns it into a plain int or that text; it never reaches a config."""

    text: str


def _construct_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    text = loader.construct_scalar(node)
    if text.startswith(("0o", "0x")):
        value = int(text[2:], 8 if text[1] == "o" else 16)
    else:
        value = int(text.replace("_", ""), 10)
    if str(value) == text:
        return value
    kept = _IntText(value)
    kept.text = text
    return kept


def _type_name(value: Any) -> str:
    """The type a user wrote: an :class:`_IntText` is an int."""
    return "int" if isinstance(value, _IntText) else type(value).__name__


def _plain(value: Any) -> Any:
    """``value`` with every :class:`_IntText` inside it a plain int."""
    if isinstance(value, _IntText):
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _yaml(text: str) -> Any:
    """YAML text to Python values with YAML 1.2's scalars (:class:`_Loader`)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


@dataclass(frozen=True)
class DataConfig:
    source: str = "synthetic"  # built-in competition benchmark (docs/synthetic.md)
    path: Optional[str] = None  # file or folder of an on-disk source; None for synthetic
    options: Dict[str, Any] = field(default_factory=dict)  # source-specific keyword options
    modalities: Optional[List[str]] = None  # keep only these modalities (None: all of the source)
    standardize: bool = False  # z-score features with train-split statistics (raw descriptors differ in scale)

    def __post_init__(self) -> None:
        if isinstance(self.options, Mapping):
            object.__setattr__(self, "options", _source_options(self.source, self.options))
        mods = self.modalities
        if isinstance(mods, (list, tuple)):
            if not mods:
                raise ConfigError("config key 'data.modalities' is an empty list; name at least one modality, or "
                                  "leave it unset (null) for all of the source's")
            twice = sorted({m for m in mods if list(mods).count(m) > 1}, key=str)
            if twice:
                raise ConfigError(f"config key 'data.modalities' names {twice[0]!r} twice; name each modality once")


def _source_options(source: str, options: Mapping[str, Any]) -> Dict[str, Any]:
    """``options`` with an int that YAML read where source's loader takes text (a path or a name:
    ``data.options.label_path=007``, ``features.text=017``) turned back into what was written (``"007"``,
    as a text config key gets it); every other value plain (:func:`_plain`). A source this code does not
    know (a typo, named when the data loads) leaves them as read."""
    maybe_text = any(isinstance(v, int) and not isinstance(v, bool) or isinstance(v, dict) for v in options.values())
    if not maybe_text or not isinstance(source, str):
        return _plain(dict(options))
    from .data.registry import text_options  # the loaders' signatures; importing them registers the sources

    def text(v: Any) -> Any:
        return getattr(v, "text", str(v)) if isinstance(v, int) and not isinstance(v, bool) else _plain(v)

    kinds = text_options(source)
    return {k: text(v) if kinds.get(k) == "value" else
            {m: text(x) for m, x in v.items()} if kinds.get(k) == "values" and isinstance(v, dict) else _plain(v)
            for k, v in options.items()}


@dataclass(frozen=True)
class ModelConfig:
    encoder: str = "auto"  # "auto": mlp for utterance data (T = 1), transformer for sequences
    d_model: int = 64  # common width of every modality's representation h^m
    hidden: int = 128  # encoder hidden width
    layers: int = 1  # sequence-encoder layers
    heads: int = 4  # transformer heads
    dropout: float = 0.2
    attn_dropout: float = 0.0  # transformer encoder: dropout on the attention probabilities (off: benchmarks/findings.md)
    head_hidden: int = 64  # fused prediction head hidden width (0: linear head)
    context: bool = False  # contextual GRU over the utterances of a video / dialogue (issue 3.9)
    text_encoder: str = "auto"  # text's own encoder; "auto": `encoder`, or bert when text holds BERT token ids
    pretrained_path: Optional[str] = None  # local Hugging Face model folder for "bert"; nothing is downloaded
    finetune: bool = True  # train the pretrained text encoder (the paper fine-tunes BERT-base); false freezes it
    bert_pooling: str = "cls"  # "cls": last-layer [CLS] state, as MMSA's BERT models; "mean": masked token mean

    def __post_init__(self) -> None:
        _at_least(self, "model", {"d_model": 1, "hidden": 1, "layers": 1, "heads": 1, "head_hidden": 0})
        _in_range(self, "model", {"dropout": "[0,1)", "attn_dropout": "[0,1)"})


#: choices of ``pase.*`` text settings (the same as the methods' own checks: fusion.GateScorer.INPUTS,
#: prototypes.BINNINGS, methods.base.UTILITIES, methods/pase.py)
PASE_CHOICES = {"gate_inputs": ("both", "confidence", "representation"),
                "binning": ("sign", "polarity", "round7", "classes"), "ot_solver": ("auto", "sinkhorn"),
                "ot_gradient": ("implicit", "unroll"),
                "shapley_utility": ("neg_loss", "accuracy"), "sgm_target": ("grad", "step")}


@dataclass(frozen=True)
class PaseConfig:
    pcl: bool = True  # prototype-guided calibration loss (sec. 2.2)
    ot: bool = True  # entropic-OT cross-modal alignment (sec. 2.3)
    gate: bool = True  # prototype-gated fusion (sec. 2.4)
    gate_inputs: str = "confidence"  # the gate score's terms: confidence | both | representation; confidence
    # chosen on validation (docs/results.md section 7; "both" was the default before)
    sgm: bool = True  # Shapley gradient modulation in phase 2 (sec. 2.5)
    lambda_pcl: float = 0.1  # PCL weight; the paper's mu = 0.1 (which term it weights is unstated)
    lambda_ot: float = 0.01  # OT weight; the paper's lambda = 0.01
    momentum: float = 0.98  # prototype EMA momentum gamma (supplementary)
    tau: float = 0.1  # prototype-softmax temperature
    binning: str = "sign"  # regression labels -> prototype classes: sign | polarity | round7
    ot_reg: float = 0.05  # Sinkhorn epsilon on the cosine cost (log domain: stable when small)
    alpha: float = 0.1  # OT structure-term factor (supplementary alpha)
    beta: float = 0.05  # OT consistency-term factor (supplementary beta)
    ot_warm_start: bool = True  # Sinkhorn starts from the previous step's potentials
    ot_max_iter: int = 100  # Sinkhorn iterations at most on the CPU (stops at marginal error 1e-5)
    ot_fixed_iter: int = 20  # Sinkhorn iterations per step on an accelerator (fixed: no host sync)
    ot_solver: str = "auto"  # auto: 2-class plan in closed form (exact), Sinkhorn otherwise; sinkhorn: always iterate
    ot_gradient: str = "implicit"  # implicit: exact gradient of the converged plan (one solve); unroll: last ot_grad_iters iterations
    ot_grad_iters: int = 10  # with ot_gradient=unroll: the Sinkhorn iterations differentiated
    shapley_utility: str = "neg_loss"  # neg_loss | accuracy
    shapley_exact_max_m: int = 8  # exact Shapley (2^M coalitions) up to this M; permutation sampling above
    shapley_permutations: int = 32  # permutations per batch when sampling (its standard error is logged)
    sgm_smoothing: float = 0.9  # EMA of the SGM coefficients over steps
    switch_patience: int = 3  # phase 2 starts after this many epochs without validation gain
    switch_max_epoch: int = 30  # phase 2 starts at this epoch at the latest
    sgm_min_coeff: float = 0.0  # floor on phi_m (0: the paper's formula unchanged)
    sgm_target: str = "grad"  # grad: multiply modality m's gradients by phi_m (the paper); step: its learning rate (docs/method.md)

    def __post_init__(self) -> None:
        _at_least(self, "pase", {"ot_max_iter": 1, "ot_fixed_iter": 1, "ot_grad_iters": 1, "shapley_exact_max_m": 1,
                                 "shapley_permutations": 1, "switch_patience": 0, "switch_max_epoch": 0})
        _in_range(self, "pase", {"tau": ">0", "ot_reg": ">0", "lambda_pcl": ">=0", "lambda_ot": ">=0",
                                 "momentum": "[0,1)", "alpha": ">=0", "beta": ">=0", "sgm_smoothing": "[0,1)",
                                 "sgm_min_coeff": "[0,1]"})


#: choices of ``baselines.ogm_rule``, ``agm_average`` and ``pmr_rule`` (the methods read them from here)
OGM_RULES = ("original", "continuous")
AGM_AVERAGES = ("ema", "cumulative")
PMR_RULES = ("continuous", "original")


@dataclass(frozen=True)
class BaselineConfig:
    ogm_alpha: float = 0.3  # OGM-GE modulation strength (CVPR 2022 uses 0.1 to 0.8)
    ogm_noise: bool = True  # OGM-GE's generalisation enhancement (Gaussian gradient noise)
    ogm_rule: str = "original"  # original: k = 1 - tanh(alpha rho) for the leaders; continuous: 1 - tanh(alpha relu(rho - 1))
    agm_alpha: float = 1.0  # AGM coefficient strength
    agm_momentum: float = 0.9  # AGM running-average momentum
    agm_average: str = "ema"  # "ema" (agm_momentum) | "cumulative": the original code's mean over all steps
    agm_max_gap: float = 7.0  # cap on r* - r before exp: BalanceBenchmark's cap, keeps exp() finite
    pmr_weight: float = 1.0  # PMR prototype cross-entropy weight for the weaker modality
    pmr_momentum: float = 0.9  # PMR centroid momentum
    # continuous: weight clip(max s / s_m - 1, 0, 1); original: 1 for every modality below the most confident
    pmr_rule: str = "continuous"

    def __post_init__(self) -> None:
        for key, allowed in (("ogm_rule", OGM_RULES), ("agm_average", AGM_AVERAGES), ("pmr_rule", PMR_RULES)):
            if getattr(self, key) not in allowed:  # here, so `pase compare` stops before the first run
                raise ConfigError(f"baselines.{key}={getattr(self, key)!r} is not one of {', '.join(allowed)}")
        _in_range(self, "baselines", {"ogm_alpha": ">=0", "agm_alpha": ">=0", "agm_momentum": "[0,1)",
                                      "agm_max_gap": ">0", "pmr_weight": ">=0", "pmr_momentum": "[0,1)"})


@dataclass(frozen=True)
class TrainConfig:
    max_epochs: int = 60
    batch_size: int = 64  # supplementary: batch 64
    lr: float = 1e-3  # 1e-5 in the paper is for a fine-tuned BERT; our encoders train from scratch
    weight_decay: float = 0.0
    optimizer: str = "adam"  # adam | adamw (both torch's foreach step) | sgd (OGM-GE, AGM and PMR were published with SGD)
    momentum: float = 0.9  # sgd only: heavy-ball momentum (the baselines' papers use 0.9)
    loss: str = "auto"  # auto: l1 for regression (as MMSA), cross-entropy / BCE otherwise
    monitor: Optional[str] = None  # validation metric for selection; None: the protocol's default
    early_stop_patience: int = 10
    grad_clip: float = 0.0  # 0: off; clipping runs after SGM on the modulated gradients
    seed: int = 1111  # MMSA seeds 1111..1115
    accelerator: str = "cpu"
    devices: Any = 1
    strategy: str = "auto"
    precision: str = "32-true"
    deterministic: bool = True
    compile: bool = False  # torch.compile the training step's forward pass and losses (long runs; BENCHMARKS.md, "train.compile")
    num_workers: int = 0
    progress_bar: bool = True

    def __post_init__(self) -> None:
        _at_least(self, "train", {"max_epochs": 1, "batch_size": 1, "early_stop_patience": 0, "num_workers": 0,
                                  "seed": 0})
        if isinstance(self.seed, int) and self.seed > 2**32 - 1:  # numpy's seed range, as Lightning seeds it
            raise ConfigError(f"config key 'train.seed' must be at most {2**32 - 1}, got {self.seed}")
        _in_range(self, "train", {"lr": ">=0", "weight_decay": ">=0", "grad_clip": ">=0", "momentum": "[0,1)"})
        if self.precision not in _PRECISIONS:
            raise ConfigError(f"config key 'train.precision' must be one of {', '.join(_PRECISIONS)}, got "
                              f"{self.precision!r}")
        if self.precision == "16-true" and self.optimizer in ("adam", "adamw"):
            raise ConfigError(f"train.precision=16-true with train.optimizer={self.optimizer}: Adam's eps (1e-8) is 0 "
                              "in float16, so a weight whose gradient is 0 gets 0/0 = NaN at the first step; use "
                              "train.precision=16-mixed (float32 weights) or bf16-true, or train.optimizer=sgd")
        d = self.devices
        if not (d == "auto" or (isinstance(d, int) and not isinstance(d, bool) and (d >= 1 or d == -1))
                or (isinstance(d, str) and re.fullmatch(r"-1|\d+|(\d+,)+\d*", re.sub(r"\s", "", d))
                    and d.strip() != "0")  # "0, 1" and "1, 2," as Lightning parses them
                or (isinstance(d, list) and d and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                                                       for i in d))):
            raise ConfigError(f"config key 'train.devices' must be a count of at least 1, -1 (all), 'auto', or a list "
                              f"of device indices such as [0, 1], got {d!r}")


#: Lightning's precision settings (``train.precision``; an integer in YAML is read as its text)
_PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "32", "16", "bf16", "64",
               "transformer-engine", "transformer-engine-float16")


@dataclass(frozen=True)
class Config:
    method: str = "late_fusion"  # late_fusion | pase | ogm_ge | agm | pmr
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pase: PaseConfig = field(default_factory=PaseConfig)
    baselines: BaselineConfig = field(default_factory=BaselineConfig)

    def __post_init__(self) -> None:
        # the pase.* choices, when the config is built for a method that reads them (`pase compare` builds every
        # method's config before it trains: a misspelling failed each PaSE run after the other methods had
        # trained; review): PaSE reads them all and every method tracks Shapley values with
        # pase.shapley_utility (every method's runs failed at model build; review). PMR bins its labels with
        # pase.binning on regression data only, so its saved configs of classification runs may hold any
        # binning and must still load (review): `pase compare` checks it for PMR up front. A choice a method
        # does not read is not checked: its saved configs (written before this check) must still load
        # (review); no method's saved config holds a bad binning or utility it reads, since its constructor
        # refused those
        for key, allowed in PASE_CHOICES.items():
            read = self.method == "pase" or key == "shapley_utility"
            if read and getattr(self.pase, key) not in allowed:
                raise ConfigError(f"pase.{key}={getattr(self.pase, key)!r} is not one of {', '.join(allowed)}")


#: the largest count a setting may hold: above it itertools and torch stopped with bare overflow errors
INT_MAX = 2**63 - 1


def _at_least(section: Any, name: str, minimum: Mapping[str, int]) -> None:
    """ConfigError naming the first integer field of ``section`` below its minimum or above :data:`INT_MAX`."""
    for key, low in minimum.items():
        value = getattr(section, key)
        if isinstance(value, int) and value < low:
            raise ConfigError(f"config key '{name}.{key}' must be at least {low}, got {value}")
        if isinstance(value, int) and value > INT_MAX:
            raise ConfigError(f"config key '{name}.{key}' must be at most {INT_MAX}, got {value}")


def _in_range(section: Any, name: str, bounds: Mapping[str, str]) -> None:
    """ConfigError naming the first number of ``section`` outside its range: ``bounds`` maps a key to
    ">0", ">=0" or "[0,1)" (a probability or momentum). NaN and infinity are refused too: before,
    a negative temperature or learning rate trained silently, or stopped later as a non-finite loss."""
    for key, rule in bounds.items():
        value = getattr(section, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # a wrong type is from_dict's error
        ok = math.isfinite(value) and {">0": value > 0, ">=0": value >= 0, "[0,1)": 0 <= value < 1,
                                       "[0,1]": 0 <= value <= 1}[rule]
        if not ok:
            want = {">0": "a number above 0", ">=0": "a number at least 0", "[0,1)": "in [0, 1)",
                    "[0,1]": "in [0, 1]"}[rule]
            raise ConfigError(f"config key '{name}.{key}' must be {want}, got {value!r}")


def _fields(cls) -> Dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _unknown(key: str, where: str, valid: Sequence[str]) -> ConfigError:
    close = difflib.get_close_matches(key.split(".")[-1], list(valid), n=1)
    hint = f"; did you mean {where + close[0]!r}?" if close else ";"  # a `;` before "valid keys" either way
    return ConfigError(f"unknown config key {key!r}{hint} valid keys under "
                       f"{where.rstrip('.') or 'the top level'}: {', '.join(valid)}")


#: a decimal number (``1e-5``, ``-2.5E+3``, ``3``); not ``nan`` or ``inf``
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def coerce_value(value: Any, annotation: Any, key: str, written: Optional[str] = None) -> Any:
    """Check ``value`` against the field's type; ints may become floats, and so may strings in
    exponent notation without a dot (YAML reads ``1e-5`` as a string); nothing else converts.
    ``written`` is the text of a ``--set`` that gave ``value``: the hint to quote it repeats that
    text (``1.50``), not the number YAML read (``1.5``, another folder)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return _plain(value)
    if origin is typing.Union:  # Optional[X]
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce_value(value, inner[0], key, written)
    if origin in (dict, Dict) or annotation is dict:
        if value is None:  # `options:` with every line commented out, as an empty section is the defaults
            return {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key {key!r} must be a mapping, got {_type_name(value)} {value!r}")
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise ConfigError(f"config key {key!r} has the key {bad[0]!r}, which YAML read as {_type_name(bad[0])}: "
                              "option names are text; quote it if it is meant as one")
        return dict(value)  # ints keep their text (_IntText): DataConfig keeps a text option's, plain ints the rest
    if origin in (list, List):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r} must be a list, for example [text, audio], got "
                              f"{_type_name(value)} {value!r}")
        return [coerce_value(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)] if args else _plain(list(value))
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # "int too large to convert to float" named no key (review)
            shown = str(value) if len(str(value)) <= 24 else f"{str(value)[:12]}... ({len(str(value))} digits)"
            raise ConfigError(f"config key {key!r} must be a finite number, got {shown}") from None
    if annotation is float and isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return float(value)
    if annotation is str and isinstance(value, int) and not isinstance(value, bool):
        return getattr(value, "text", str(value))  # train.precision=32, data.path=017: the text written
    if annotation is int and isinstance(value, _IntText):
        return int(value)
    if annotation in (int, float, str, bool) and not isinstance(value, annotation) or (
            annotation is int and isinstance(value, bool)):
        example = _quote_example(key, written) if written is not None else None
        hint = ("" if annotation is not str else f"; quote it to pass the text: {example}" if example else
                "" if isinstance(value, (list, dict)) else "; write it in quotes to pass the text")
        raise ConfigError(f"config key {key!r} must be {annotation.__name__}, got "
                          f"{_type_name(value)} {getattr(value, 'text', repr(value))}{hint}")
    return value


def from_dict(data: Mapping[str, Any], cls=Config, prefix: str = "",
              written: Optional[Mapping[str, str]] = None) -> Any:
    """Build a (nested) config dataclass from a mapping, rejecting unknown keys and wrong types;
    ``written`` maps a key to the text a ``--set`` gave it (for :func:`coerce_value`'s hint)."""
    if not isinstance(data, Mapping):
        where = prefix.rstrip(".") or "top level"
        example = f" (for example {where}: {{KEY: VALUE}})" if prefix else ""
        raise ConfigError(f"config section {where} must be a mapping of its keys{example}, got {data!r}")
    fields = _fields(cls)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if not isinstance(key, str):  # YAML reads `1:` or `true:` as a number or flag
            where = prefix.rstrip(".") or "the top level"
            raise ConfigError(f"config key {key!r} under {where} is not a name (YAML read it as "
                              f"{_type_name(key)}); valid keys there: {', '.join(fields)}")
        if key not in fields:
            raise _unknown(prefix + key, prefix, list(fields))
        t = hints[key]
        if dataclasses.is_dataclass(t):
            # `pase:` (null) is the defaults; `pase: false` is an error
            kwargs[key] = from_dict({} if value is None else value, t, prefix + key + ".", written)
        else:
            kwargs[key] = coerce_value(value, t, prefix + key, (written or {}).get(prefix + key))
    return cls(**kwargs)


def to_dict(cfg: Any) -> Dict[str, Any]:
    """The config as plain nested dicts (YAML-safe)."""
    return dataclasses.asdict(cfg)


def _parse_value(text: str) -> Any:
    return _yaml(text) if text != "" else ""


def apply_overrides(cfg: Config, overrides: Sequence[str]) -> Config:
    """Apply ``key.sub=value`` overrides (values parsed as YAML scalars) to ``cfg``.

    ``data.options.NAME=value`` sets a source-specific option.
    """
    data = to_dict(cfg)
    written: Dict[str, str] = {}  # key -> the text given, for the hint of a wrong type
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value (for example --set train.lr=0.001)")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node, cls, where = data, Config, ""
        for i, part in enumerate(parts[:-1]):
            if cls is not None:  # a dataclass section; below it, free-form dicts (data.options)
                fields = _fields(cls)
                if part not in fields:
                    raise _unknown(".".join(parts[: i + 1]), where, list(fields))
                t = typing.get_type_hints(cls)[part]
                if not dataclasses.is_dataclass(t) and typing.get_origin(t) not in (dict, Dict) and t is not dict:
                    raise ConfigError(f"override {item!r}: {'.'.join(parts[: i + 1])!r} is a single value, not a "
                                      f"section; it has no keys (set it as {'.'.join(parts[: i + 1])}=VALUE)")
                cls = t if dataclasses.is_dataclass(t) else None
                where += part + "."
            node = node.setdefault(part, {})  # a section or dict field always exists; option dicts grow
            if not isinstance(node, dict):  # a dict field or option holding one value (from a --set or the file)
                here = ".".join(parts[: i + 1])
                by = (" was set to {!r} by an earlier --set;" if any(here == k or here.startswith(k + ".")
                                                                     for k in written) else " is {!r};")
                raise ConfigError(f"override {item!r}: {here!r}{by.format(node)} it is not a mapping, so it has "
                                  "no keys to set")
        if cls is not None and parts[-1] not in _fields(cls):
            raise _unknown(key, where, list(_fields(cls)))
        if cls is not None and dataclasses.is_dataclass(typing.get_type_hints(cls)[parts[-1]]):
            raise ConfigError(f"override {item!r}: {key.strip()!r} is a section; set its keys (for example "
                              f"{key.strip()}.KEY=VALUE)")
        try:
            node[parts[-1]] = _parse_value(text)
            comment = _dropped_comment(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({yaml_problem(e)}); quote a text "
                              f"value, close a list ([a, b])") from None
        if comment is not None:  # `data.path=runs/mosi #2` trained on runs/mosi, without a word (review)
            want = typing.get_type_hints(cls).get(parts[-1]) if cls is not None else None
            # a text setting, or a free-form option (data.options.*) that YAML read as text
            texty = want is str or str in typing.get_args(want) if cls is not None else isinstance(
                node[parts[-1]], str)
            example = f" ({_quote_example(key.strip(), text.strip())})" if texty and _quote_example(
                key.strip(), text.strip()) else ""
            fix = f"quote the value to keep the text{example}, or leave the comment out" if texty else \
                "leave the comment out"
            raise ConfigError(f"override {item!r}: YAML reads {comment!r} as a comment and would drop it; {fix}")
        written[".".join(parts)] = text.strip()
    return from_dict(data, written=written)


def _quote_example(key: str, text: str) -> Optional[str]:
    r"""``--set "KEY='TEXT'"``: a YAML single-quoted scalar (backslashes kept as typed, ``'`` doubled)
    inside shell double quotes; None where the shell would still change the text (``"``, ``$``,
    backticks, ``\``, ``!``). Double quotes in YAML read backslashes as escapes: the advice turned
    ``runs\tmp`` into a tab (a review)."""
    if any(c in text for c in '"$`\\!'):
        return None
    quoted = "'" + text.replace("'", "''") + "'"
    return '--set "' + key + "=" + quoted + '"'


def _dropped_comment(text: str) -> Optional[str]:
    """The comment (``#`` after a space, to the end of its line) that YAML drops from ``text``, or None."""
    if "#" not in text:
        return None
    spans = [(t.start_mark.index, t.end_mark.index) for t in yaml.scan(text, Loader=_Loader)]
    for i, c in enumerate(text):
        if c == "#" and not any(a <= i < b for a, b in spans):
            return text[i:].splitlines()[0]
    return None


def yaml_problem(e: yaml.YAMLError) -> str:
    """A YAML error in one line: the problem, where it is (1-based line and column) and, when
    PyYAML gives one, what it was reading (``str(e)``'s first line is often only the latter)."""
    problem, mark = getattr(e, "problem", None), getattr(e, "problem_mark", None)
    if not problem:
        return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    context = getattr(e, "context", None)
    return f"{problem}{where}" + (f", {context}" if context else "")


def load_config(path: Optional[str | Path] = None, overrides: Sequence[str] = ()) -> Config:
    """Defaults, then the YAML file at ``path`` (if any; a leading ``~`` is the home folder, as on the
    command line), then ``overrides``."""
    from .io import user_path

    cfg = Config()
    if path is not None:
        p = user_path(path)
        if p.is_dir():
            raise ConfigError(f"config file {str(p)!r} is a folder; pass a YAML file (see configs/ for examples)")
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist; see configs/ for examples")
        try:
            raw = _yaml(p.read_text())
        except UnicodeDecodeError as e:
            raise ConfigError(f"{p}: not UTF-8 text (byte {e.start}); save the config as UTF-8") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML ({yaml_problem(e)})") from None
        try:  # an empty file is the defaults; `[]`, `false` or `0` are not a mapping (they read as the defaults)
            cfg = from_dict({} if raw is None else raw)
        except ConfigError as e:
            raise ConfigError(f"{p}: {e}") from None
    return apply_overrides(cfg, overrides)


def first_difference(a: Any, b: Any, key: str = "") -> Optional[str]:
    """``"key: a there, b now"`` for the first (sorted) key where nested dicts ``a`` and ``b`` differ; None if equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            diff = first_difference(a.get(k), b.get(k), f"{key}.{k}" if key else k)
            if diff:
                return diff
        return None
    return None if a == b else f"{key}: {a!r} there, {b!r} now"


def as_trained(saved: Config, cfg: Config, trained: Optional[str] = None) -> tuple:
    """``(saved, cfg)`` as every check of a run's configuration against a new one compares them (evaluate,
    predict, diagnose, a resume, a comparison, cross-validation): ``data.options.dataset`` of the run is the
    dataset it was trained as, its own or, where its config left the dataset to the data's path (a run of a
    pase before training recorded it), ``trained`` (its metrics.json's); a ``cfg`` that names none takes the
    run's, as the loader is then checked to resolve the same (``run.check_trained_as``). Names compare in
    lower case, as the loaders read them. Nothing known of the run: both as given (a review: the dataset was
    re-inferred from a moved path, and ``--set data.options.dataset=`` the run's own was refused)."""
    run = saved.data.options.get("dataset") or trained
    if not isinstance(run, str):
        return saved, cfg
    now = cfg.data.options.get("dataset")
    now = now.lower() if isinstance(now, str) else run.lower() if now is None else now
    return with_dataset(saved, run.lower()), with_dataset(cfg, now)


def with_dataset(cfg: Config, name: Any) -> Config:
    """``cfg`` with ``data.options.dataset`` set to ``name`` (a copy; ``cfg`` is left as it is)."""
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, options={**cfg.data.options, "dataset": name}))


def config_difference(path: str | Path, cfg: Config, view: Any = to_dict, trained: Optional[str] = None
                      ) -> Optional[str]:
    """The first difference between the configuration saved at ``path`` (a run's or a
    comparison's ``config.yaml``) and ``cfg``, both seen through ``view`` (a function of a Config
    to nested dicts that leaves out what may differ) after :func:`as_trained` (``trained``: the dataset
    the run was trained as, where its config does not name it); None when they agree. A file that is not a
    pase configuration is a :class:`ConfigError` naming it. A leading ``~`` in ``path`` is the home folder."""
    from .io import user_path

    path = user_path(path)
    try:
        old = _yaml(path.read_text())
        old = from_dict({} if old is None else old)
    except (yaml.YAMLError, ConfigError, TypeError, ValueError) as e:
        first = (yaml_problem(e) if isinstance(e, yaml.YAMLError) else
                 str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
        raise ConfigError(f"{path}: not a readable pase configuration ({first}); move the folder aside "
                          "or pass a new --out") from e
    old, cfg = as_trained(old, cfg, trained)
    return first_difference(view(old), view(cfg))


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the fully resolved config as YAML (atomically) to ``path`` (a leading ``~``: the home folder)."""
    from .io import atomic_write_text, user_path

    atomic_write_text(user_path(path), yaml.dump(to_dict(cfg), Dumper=_Dumper, sort_keys=False))
