"""The built-in benchmark: seeded multimodal regression data with controllable modality competition.

The generator (math in ``docs/synthetic.md``): every sample has an independent latent factor per
modality, z^m ~ N(0, I_{k_m}); the label is an additive sum of one unit-variance effect per
modality plus noise,

    y = sigma_y * ( sum_m sqrt(s_m) f_m(z^m) + sqrt(noise) * eps ) / sqrt(1 + noise),

so the share of explained label variance of modality m is exactly s_m (the ground-truth
Shapley share of the additive game v(S) = Var(sum_{m in S} sqrt(s_m) f_m)). The effects differ in
difficulty:

* ``linear``: f = w . z (the easy, dominant modality, "text"),
* ``product``: f = z_1 z_2 (an interaction a linear model cannot see),
* ``abs``: f = (|z_1| - sqrt(2/pi)) / sqrt(1 - 2/pi) (a symmetric non-monotone effect).

Each modality is observed through a random linear mixing into D_m dimensions with isotropic noise,
x^m = A_m z^m + sigma_m n, A_m with orthonormal rows (the latent occupies k_m of D_m directions,
at unit variance each, against noise of variance sigma_m^2 in every direction). The dominant modality additionally carries ``memorize_dim`` columns of
pure per-sample noise (part of its D_1): a wide fused model can fit the training labels through them alone
(memorisation, as a fine-tuned text encoder does on MOSI), which starves the weak encoders of
gradient: modality competition.
"""

from __future__ import annotations

import difflib
import inspect
import math
import numbers
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from .contract import DataBundle, MultimodalDataset, TaskSpec
from .registry import register_data

__all__ = ["SyntheticSpec", "make_synthetic", "load_synthetic", "EFFECTS"]

_ABS_MEAN = math.sqrt(2 / math.pi)
_ABS_STD = math.sqrt(1 - 2 / math.pi)


def _linear(z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return z @ w  # w has unit norm, so Var = 1


def _product(z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return z[:, 0] * z[:, 1]  # Var(z1 z2) = 1 for independent standard normals


def _abs(z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return (z[:, 0].abs() - _ABS_MEAN) / _ABS_STD


EFFECTS = {"linear": _linear, "product": _product, "abs": _abs}


class SyntheticSpec:
    """Parameters of the generator (all keyword options of the ``synthetic`` data source).

    Args:
        modalities: names, in order.
        dims: observed width D_m per modality (the bc-LSTM MOSI widths 100 / 73 / 100 by default).
        shares: ground-truth variance shares s_m, summing to 1.
        effects: effect kind per modality (``linear``, ``product``, ``abs``).
        latent: latent width k_m per modality (>= 2 for product and abs).
        obs_noise: sigma_m, the observation noise per modality.
        label_noise: noise variance relative to the explained variance (1 - R^2 of the Bayes model
            is label_noise / (1 + label_noise)).
        label_scale: sigma_y, the label's standard deviation (MOSI labels have about 1.5).
        memorize_dim: how many of the first modality's D columns are per-sample noise.
        shortcut: in [0, 1); on the train split only, the first memorisation column of the first
            modality carries the rest of the label (y minus its own effect, standardised) with
            this share of its unit variance, the rest noise; on valid and test it stays unit-variance
            noise, as memorised sample-specific detail is on unseen samples.
            It models a dominant encoder that can fit the training labels through sample-specific
            detail (as a fine-tuned BERT does), which starves the other encoders of gradient.
        scales: a positive factor per modality on the observed features (small features learn slowly
            under Adam, as raw acoustic descriptors do); default (1, 0.1, 0.1); None: 1 for every
            modality.
        sizes: train / valid / test sample counts (MOSI's 1,284 / 229 / 686); train needs at least 2.

    Raises:
        ValueError: an option out of range, naming it: also a train size below 2, a scale not above 0,
            or an observed width (for the first modality: D_1 - memorize_dim) below the latent width.
    """

    def __init__(
        self,
        modalities: Sequence[str] = ("text", "audio", "vision"),
        dims: Sequence[int] = (100, 73, 100),
        shares: Sequence[float] = (0.4, 0.35, 0.25),
        effects: Sequence[str] = ("linear", "product", "abs"),
        latent: Sequence[int] = (8, 2, 2),
        obs_noise: Sequence[float] = (0.3, 0.2, 0.2),
        label_noise: float = 0.1,
        label_scale: float = 1.5,
        memorize_dim: int = 40,
        scales: Optional[Sequence[float]] = (1.0, 0.1, 0.1),
        shortcut: float = 0.95,
        sizes: Sequence[int] = (1284, 229, 686),
    ) -> None:
        _check_spec_types(dict(modalities=modalities, dims=dims, shares=shares, effects=effects, latent=latent,
                               obs_noise=obs_noise, label_noise=label_noise, label_scale=label_scale,
                               memorize_dim=memorize_dim, scales=scales, shortcut=shortcut, sizes=sizes))
        n = len(modalities)
        for name, v in (("dims", dims), ("shares", shares), ("effects", effects), ("latent", latent),
                        ("obs_noise", obs_noise)):
            if len(v) != n:
                raise ValueError(f"synthetic option {name!r} has {len(v)} entries for {n} modalities "
                                 f"{list(modalities)}; give one per modality")
        if abs(sum(shares) - 1) > 1e-6 or min(shares) < 0:
            raise ValueError(f"synthetic option 'shares' must be non-negative and sum to 1, got {list(shares)}")
        for e, k in zip(effects, latent):
            if e not in EFFECTS:
                raise ValueError(f"synthetic effect {e!r} is not one of {sorted(EFFECTS)}")
            if e != "linear" and k < 2:
                raise ValueError(f"synthetic effect {e!r} needs latent width >= 2, got {k}")
        if not all(k >= 1 for k in latent):  # k = 0: a zero effect, shares untrue
            raise ValueError(f"synthetic option 'latent' must be widths of at least 1, got {list(latent)}")
        if not all(math.isfinite(s) and s >= 0 for s in obs_noise):
            raise ValueError(f"synthetic option 'obs_noise' must be standard deviations of at least 0, got "
                             f"{list(obs_noise)}")
        if not (math.isfinite(label_noise) and label_noise >= 0):  # a variance: sqrt of a negative one failed
            raise ValueError(f"synthetic option 'label_noise'={label_noise} must be a variance of at least 0")
        if not (math.isfinite(label_scale) and label_scale > 0):  # 0: every label 0 (Non0 and Corr undefined)
            raise ValueError(f"synthetic option 'label_scale'={label_scale} must be a standard deviation above 0")
        if not 0 <= memorize_dim < dims[0]:
            raise ValueError(f"synthetic option 'memorize_dim'={memorize_dim} must lie in [0, dims[0]={dims[0]})")
        for i, (m, d, k) in enumerate(zip(modalities, dims, latent)):
            width = d - (memorize_dim if i == 0 else 0)  # the first modality's memorisation columns hold no latent
            if width < k:
                shown = f"{d} - memorize_dim {memorize_dim} = {width}" if width != d else f"{d}"
                raise ValueError(f"synthetic option 'dims': modality {m!r} has observed width {shown}, below its "
                                 f"latent width {k} (option 'latent'); raise dims[{i}] or lower latent[{i}]")
        if len(sizes) != 3 or min(sizes) < 1 or sizes[0] < 2:
            raise ValueError(f"synthetic option 'sizes' must be 3 positive counts (train, valid, test) with at least "
                             f"2 training samples (the shortcut column is standardised over train), got {sizes}")
        self.modalities = tuple(modalities)
        self.dims, self.shares, self.effects = tuple(dims), tuple(shares), tuple(effects)
        self.latent, self.obs_noise = tuple(latent), tuple(obs_noise)
        self.label_noise, self.label_scale = float(label_noise), float(label_scale)
        self.memorize_dim, self.sizes = int(memorize_dim), tuple(sizes)
        if not 0 <= shortcut < 1 or (shortcut > 0 and memorize_dim < 1):
            raise ValueError(f"synthetic option 'shortcut'={shortcut} must lie in [0, 1) and needs memorize_dim >= 1")
        self.shortcut = float(shortcut)
        self.scales = tuple(scales) if scales is not None else (1.0,) * n
        if len(self.scales) != n:
            raise ValueError(f"synthetic option 'scales' has {len(self.scales)} entries for {n} modalities")
        if not all(c > 0 for c in self.scales):  # also refuses NaN; a zero scale divides by zero (shortcut)
            raise ValueError(f"synthetic option 'scales' must be positive factors, got {list(self.scales)}")

    def ground_truth_shares(self) -> Dict[str, float]:
        """Exact Shapley shares of the explained label variance, s_m."""
        return dict(zip(self.modalities, self.shares))


def make_synthetic(spec: SyntheticSpec, seed: int = 0) -> Tuple[Dict[str, Dict[str, torch.Tensor]],
                                                                  Dict[str, torch.Tensor],
                                                                  Dict[str, torch.Tensor]]:
    """Draw all splits of ``spec``. Returns (features split->modality->(N, D_m), labels split->(N,),
    effects split->(N, M) unit-variance effects f_m before weighting)."""
    g = torch.Generator().manual_seed(seed)
    mixing, weights = {}, {}
    widths = [d - (spec.memorize_dim if i == 0 else 0) for i, d in enumerate(spec.dims)]
    for m, d, k in zip(spec.modalities, widths, spec.latent):
        q, _ = torch.linalg.qr(torch.randn(d, k, generator=g))  # (D, k), orthonormal columns
        mixing[m] = q.T  # (k, D): z is embedded along k orthonormal directions of R^D
        w = torch.randn(k, generator=g)
        weights[m] = w / w.norm()
    feats, labels, effects = {}, {}, {}
    for split, n in zip(("train", "valid", "test"), spec.sizes):
        cols, eff = {}, []
        for i, m in enumerate(spec.modalities):
            z = torch.randn(n, spec.latent[i], generator=g)  # (N, k)
            eff.append(EFFECTS[spec.effects[i]](z, weights[m]))
            x = z @ mixing[m] + spec.obs_noise[i] * torch.randn(n, widths[i], generator=g)  # (N, D - mem)
            if i == 0 and spec.memorize_dim > 0:
                x = torch.cat([x, torch.randn(n, spec.memorize_dim, generator=g)], dim=1)
            cols[m] = spec.scales[i] * x
        f = torch.stack(eff, dim=1)  # (N, M)
        signal = f @ torch.tensor(spec.shares).sqrt()
        noise = math.sqrt(spec.label_noise) * torch.randn(n, generator=g)
        labels[split] = spec.label_scale * (signal + noise) / math.sqrt(1 + spec.label_noise)
        if spec.shortcut > 0:
            first, j = spec.modalities[0], -spec.memorize_dim
            if split == "train":
                rest = signal - math.sqrt(spec.shares[0]) * f[:, 0] + noise  # what modality 1 cannot explain
                rest = (rest - rest.mean()) / rest.std()
                col = cols[first][:, j] / spec.scales[0]  # a unit-variance noise column
                col = math.sqrt(spec.shortcut) * rest + math.sqrt(1 - spec.shortcut) * col
                cols[first][:, j] = spec.scales[0] * col
            # valid / test keep the column as unit-variance noise: memorised detail of unseen samples
        feats[split], effects[split] = cols, f
    return feats, labels, effects


def _default_as_set(name: str) -> str:
    """The default of list option ``name``, written as ``--set`` takes it: ``[text, audio, vision]``."""
    return "[" + ", ".join(map(str, inspect.signature(SyntheticSpec).parameters[name].default)) + "]"


#: the element type of each list option and the type of each scalar option of ``SyntheticSpec``
_LIST_TYPES = {"modalities": str, "dims": int, "shares": float, "effects": str, "latent": int, "obs_noise": float,
               "scales": float, "sizes": int}
_SCALAR_TYPES = {"label_noise": float, "label_scale": float, "memorize_dim": int, "shortcut": float}


def _check_spec_types(values: Dict[str, Any]) -> None:
    """``_check_types`` of every ``SyntheticSpec`` argument in ``values`` (name -> value)."""
    _check_types({k: (values[k], t) for k, t in _LIST_TYPES.items()},
                 {k: (values[k], t) for k, t in _SCALAR_TYPES.items()})


def _check_types(lists: Dict[str, Tuple[Any, type]], scalars: Dict[str, Tuple[Any, type]]) -> None:
    """ValueError naming the first option whose type is wrong: a list option that is not a list of
    ``str`` / ``int`` / numbers (``float`` allows ints; ``None`` is allowed for ``scales``), a scalar
    that is not one. Before, ``sizes=abc`` compared str with int and ``modalities=text`` was read as
    the four modalities t, e, x, t."""
    def fits(x: Any, want: type) -> bool:
        if isinstance(x, (bool, np.bool_)):
            return False
        # numpy numbers too (np.int64, np.float32), as the Python API took them before these checks
        return {str: isinstance(x, str), int: isinstance(x, numbers.Integral),
                float: isinstance(x, numbers.Real)}[want]

    names = {str: "names", int: "whole numbers", float: "numbers"}
    for name, (v, want) in lists.items():
        if v is None and name == "scales":
            continue
        if isinstance(v, np.ndarray):
            v = v.tolist()  # an array of numbers (sizes=np.array([96, 32, 32]))
        if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple)) or not all(fits(x, want) for x in v):
            raise ValueError(f"synthetic option {name!r} must be a list of {names[want]} ("
                             + ("train, valid, test" if name == "sizes" else "one per modality")
                             + f"), for example the default {_default_as_set(name)}; got {v!r}")
    for name, (v, want) in scalars.items():
        if not fits(v, want):
            raise ValueError(f"synthetic option {name!r} must be a {'whole number' if want is int else 'number'}, "
                             f"got {v!r}")


def check_options(seed: int = 0, **options) -> None:
    """The option errors ``load_synthetic`` would raise by name (``data.path``, an option ``SyntheticSpec``
    does not take) or by type (``sizes=abc``), generating nothing: ``pase compare`` and ``pase crossval``
    refuse them before anything is written, as ``pase train`` does (a review: a misspelt option failed
    every run of a comparison after its config.yaml was saved). Ranges are left to the loader."""
    known = [k for k in inspect.signature(SyntheticSpec).parameters]
    if "path" in options:  # data.path arrives as the option "path"
        raise ValueError("data.path is not used by the built-in benchmark (data.source=synthetic, generated in "
                         "memory): remove data.path, or set data.source to the format of the files there "
                         "(for example mosi_bclstm or mmsa)")
    unknown = [k for k in options if k not in known]
    if unknown:
        close = difflib.get_close_matches(unknown[0], ["seed"] + known, n=1)
        raise ValueError(f"data.options.{unknown[0]} is not an option of the built-in benchmark"
                         + (f"; did you mean data.options.{close[0]}? It" if close else "; it")
                         + f" takes data.options.seed, {', '.join('data.options.' + k for k in known)}")
    defaults = {k: p.default for k, p in inspect.signature(SyntheticSpec).parameters.items()}
    _check_spec_types({**defaults, **options})


@register_data("synthetic")
def load_synthetic(seed: int = 0, **options) -> DataBundle:
    """The built-in benchmark as a ``DataBundle`` (protocol "mosi": MOSI-style regression metrics).

    Args:
        seed: the data seed (independent of the training seed, so every run sees the same data).
        **options: ``SyntheticSpec`` arguments.
    """
    check_options(seed, **options)
    # torch's bare "Overflow when unpacking long long" above; below 0 torch takes 2^64 + seed, so -1 gave the data
    # of 2^64 - 1 under another name (mosi_bclstm and gcnet refuse negative seeds too)
    if isinstance(seed, int) and not 0 <= seed <= 2**64 - 1:
        raise ValueError(f"data.options.seed={seed} is outside the seed range (0 to {2**64 - 1})")
    spec = SyntheticSpec(**options)
    feats, labels, effects = make_synthetic(spec, seed)
    splits = {}
    for s in ("train", "valid", "test"):
        n = labels[s].shape[0]
        ds = MultimodalDataset(feats[s], labels[s], [f"{s}_{i}" for i in range(n)], split=s)
        ds.effects = effects[s]  # (N, M) ground-truth unit effects, for diagnostics
        splits[s] = ds
    task = TaskSpec(kind="regression", num_classes=1, protocol="mosi")
    info = {"generator": "pase.data.synthetic", "data_seed": seed,
            "ground_truth_shares": spec.ground_truth_shares(),
            "effects": dict(zip(spec.modalities, spec.effects)),
            "bayes_r2": 1 / (1 + spec.label_noise)}
    return DataBundle("synthetic", task, splits, info)


load_synthetic.task_kind = "regression"  # whatever its options; read by pase compare (source_task_kind)
load_synthetic.check_options = check_options  # read by pase compare and pase crossval
