"""Robustness of a trained model: missing modalities and Gaussian input noise.

Two families of test conditions, each scored with the data's metric protocol:

* **missing modalities**: every non-empty subset S of the M modalities (for M = 3: atv, at, av,
  tv, a, t, v). An absent modality is masked at the fusion input (``model(batch, present=mask)``;
  with a prototype gate, the gates are renormalised over the present ones), exactly as the
  Shapley coalitions are scored;
* **noise**: x^m + sigma * s^m * eps, eps ~ N(0, I), added to the real (unpadded) steps of one
  modality m at a time, where s^m (D_m,) is the per-feature standard deviation of modality m on
  the train split and sigma runs over ``noise_levels`` (default 0, 0.5, 1, 2). Each sample's noise is
  drawn from a ``torch.Generator`` seeded with ``seed`` and the sample's id, so a condition's result
  depends neither on which other conditions ran nor on the evaluation batch size (one generator per
  condition drawing batch by batch gave other noise at another batch size).

The relative summary uses one *headline* metric (higher is better; ``headline_metric``):
``missing_relative`` is the mean over the 2^M - 2 proper non-empty subsets of
metric(S) / metric(all), ``noise_relative`` the mean over modalities and sigma > 0 of
metric(noisy) / metric(clean). 1 means no loss; a model at chance under a condition scores
chance / full (about 0.5 / 0.8 for MOSI accuracy).

Shapes: B batch, T steps, D features, M modalities.
"""

from __future__ import annotations

import itertools
import logging
import math
import statistics
import zlib
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor

from ..data.contract import Batch, DataBundle
from ..metrics import MetricAccumulator, Protocol, get_protocol
from ..training.datamodule import make_loader
from ..training.precision import inference
from .defaults import DEFAULT_NOISE_LEVELS

__all__ = ["DEFAULT_NOISE_LEVELS", "unique_levels", "same_levels", "headline_metric", "condition_name", "feature_std",
           "add_noise", "sample_noise", "evaluate_condition", "robustness_rows", "robustness_summary",
           "aggregate_conditions"]

LOGGER = logging.getLogger("pase.evaluation")




def unique_levels(levels: Sequence[float]) -> List[float]:
    """Noise levels as floats, each once, ascending: what is scored and recorded, so the same set in
    another order (0.5,0.1 or 0.1,0.5) gives the same rows in the same order and the same record (in
    the order given, a rerun with the other order was refused as another diagnosis). -0 is 0.
    ValueError for a negative or non-finite level (-1 scored as much noise as 1 and NaN as none,
    each recorded under its own name; the CLI refused them, the Python functions did not)."""
    out = [float(s) + 0.0 for s in levels]  # + 0.0: -0.0 becomes 0.0 (named noise:<m>@-0 otherwise)
    bad = [s for s in out if not (math.isfinite(s) and s >= 0)]
    if bad:
        raise ValueError(f"noise_levels: {bad[0]!r} is not a noise level; give non-negative numbers in units of "
                         "each feature's train std, for example [0, 0.5, 1, 2]")
    return sorted(set(out))


def same_levels(recorded: object, levels: Sequence[float]) -> bool:
    """Whether the noise levels a ``diagnostics.json`` records are ``levels`` (as ``unique_levels``
    gives them) in any order: one recorded before levels were sorted kept the order it was given."""
    try:
        return sorted({float(x) + 0.0 for x in recorded}) == list(levels)
    except (TypeError, ValueError):  # not a list of numbers: another diagnosis, refused as one
        return False


_REGRESSION_HEADLINES = ("Has0_acc_2", "Mult_acc_2")  # MOSI/MOSEI, then SIMS


def headline_metric(protocol: Protocol | str) -> str:
    """The higher-is-better metric used for relative summaries (binary accuracy for regression
    protocols, the monitor otherwise, or the protocol's first higher-is-better metric)."""
    p = get_protocol(protocol) if isinstance(protocol, str) else protocol
    candidates = [m for m in _REGRESSION_HEADLINES if m in p.higher_is_better] if p.task_kind == "regression" else []
    candidates += [p.monitor] + list(p.metric_names)
    return next(m for m in candidates if p.higher_is_better.get(m, False))


def condition_name(present: Sequence[str]) -> str:
    """``"text+audio"`` for the subset of present modalities (canonical order kept)."""
    return "+".join(present)


def feature_std(bundle: DataBundle, split: str = "train") -> Dict[str, Tensor]:
    """modality -> (D_m,) standard deviation of each feature over the real steps of ``split``."""
    d = bundle.splits[split]
    out = {}
    for m, x in d.features.items():
        mask = torch.arange(x.shape[1])[None, :] < d.lengths[m][:, None]  # (N, T)
        out[m] = x[mask].double().std(0, unbiased=False).float()  # (N*T_real, D) -> (D,)
    return out


def sample_noise(ids: Sequence[str], shape: Sequence[int], seed: int) -> Tensor:
    """(B, T, D) standard normal noise, row i drawn from a generator seeded with ``seed`` and
    ``ids[i]`` (CRC-32 of the id): the same for a sample whatever batch it is in."""
    out = torch.empty(tuple(shape))
    for i, sid in enumerate(ids):
        g = torch.Generator().manual_seed((int(seed) * 0x9E3779B1 + zlib.crc32(str(sid).encode())) % 2 ** 63)
        out[i] = torch.randn(tuple(shape[1:]), generator=g)
    return out


def add_noise(batch: Batch, modality: str, sigma: float, std: Tensor, seed: int = 0) -> Batch:
    """A copy of ``batch`` with N(0, (sigma * std)^2) noise on the real steps of ``modality``
    (``sample_noise``: each sample's draw is seeded by ``seed`` and its id)."""
    x = batch.inputs[modality]  # (B, T, D)
    eps = sample_noise(batch.ids, x.shape, seed).to(x.device, x.dtype)
    noisy = x + sigma * std.to(x.device, x.dtype) * eps * batch.mask(modality)[..., None]  # padding stays 0
    return Batch(dict(batch.inputs, **{modality: noisy}), batch.lengths, batch.target, batch.ids,
                 batch.groups, batch.positions)


@torch.no_grad()
def evaluate_condition(model: torch.nn.Module, bundle: DataBundle, split: str = "test",
                       present: Optional[Sequence[str]] = None, noise: Optional[Dict[str, object]] = None,
                       batch_size: int = 256, by_group: bool = False, seed: int = 0) -> Dict[str, float]:
    """Protocol metrics of ``model`` on ``split`` under one condition.

    Args:
        present: modalities kept at the fusion input (None: all).
        noise: {"modality": m, "sigma": s, "std": (D_m,) tensor} or None.
        seed: seed of the noise, with each sample's id (``sample_noise``).
    """
    mods = list(model.modalities)
    if present is not None:
        unknown = [present] if isinstance(present, str) else [m for m in present if m not in mods]
        if unknown:
            raise ValueError(f"present: {unknown[0]!r} is not a list of the model's modalities "
                             f"({', '.join(mods)}); pass a list of them, for example {mods[:1]}")
    was = model.training
    model.eval()
    mask = None if present is None else torch.tensor([m in present for m in mods])  # (M,)
    acc = MetricAccumulator(bundle.task.protocol)
    with inference(model) as convert:
        for batch in make_loader(bundle, split, batch_size, False, 0, by_group=by_group):
            if noise is not None and float(noise["sigma"]) > 0:
                batch = add_noise(batch, str(noise["modality"]), float(noise["sigma"]), noise["std"], seed)
            out = model(convert(batch), present=mask)
            acc.update(out.logits.float().cpu(), batch.target.cpu())
    model.train(was)
    return acc.compute()


def robustness_rows(model: torch.nn.Module, bundle: DataBundle, split: str = "test",
                    noise_levels: Sequence[float] = DEFAULT_NOISE_LEVELS, batch_size: int = 256,
                    by_group: bool = False, seed: int = 0) -> List[Dict[str, object]]:
    """One row per condition: every non-empty subset of modalities present ("missing" rows, the
    full set first), then every (modality, sigma) noise level ("noise" rows).

    Row keys: kind, condition, modality, sigma, then the protocol's metrics. A repeated noise
    level is scored once.
    """
    mods = list(model.modalities)
    noise_levels = unique_levels(noise_levels)
    rows: List[Dict[str, object]] = []
    for k in range(len(mods), 0, -1):
        for subset in itertools.combinations(mods, k):
            res = evaluate_condition(model, bundle, split, present=subset, batch_size=batch_size, by_group=by_group)
            rows.append({"kind": "missing", "condition": condition_name(subset), "modality": "", "sigma": "",
                         **res})
    std = feature_std(bundle)
    encoders = getattr(model, "encoders", {})
    for m in mods:
        if m in encoders and getattr(encoders[m], "TOKEN_IDS", False):
            # Gaussian noise on token ids (BERT text) is no condition: it made ids negative and the
            # embedding lookup failed, losing the whole diagnosis; that modality has no noise rows
            LOGGER.info("robustness: no noise rows for %r: its input is token ids", m)
            continue
        if not bool((std[m] > 0).any()):
            # noise in units of a train std of 0 is no noise: its rows would equal the clean input and
            # count as perfect robustness (noise_relative_<m> 1.0); none, so that ratio is NaN, left out
            LOGGER.warning("robustness: no noise rows for %r: every feature is constant on the train split", m)
            continue
        for s in noise_levels:
            res = evaluate_condition(model, bundle, split, noise={"modality": m, "sigma": s, "std": std[m]},
                                     batch_size=batch_size, by_group=by_group, seed=seed)
            rows.append({"kind": "noise", "condition": f"noise:{m}@{s:g}", "modality": m, "sigma": float(s),
                         **res})
    return rows


def _ratio(a: float, b: float) -> float:
    return a / b if b != 0 and math.isfinite(a) and math.isfinite(b) else float("nan")


def _mean(xs: Sequence[float]) -> float:
    xs = [x for x in xs if math.isfinite(x)]
    return sum(xs) / len(xs) if xs else float("nan")


def robustness_summary(rows: Sequence[Dict[str, object]], metric: str, modalities: Sequence[str]) -> Dict[str, float]:
    """Relative robustness of one run from its ``robustness_rows``.

    Returns:
        {"full", "missing_relative", "noise_relative", "missing_relative_<condition>",
        "noise_relative_<m>"}: ratios of ``metric`` (higher is better) to the clean, complete input.
    """
    full_name = condition_name(modalities)
    full = next(float(r[metric]) for r in rows if r["kind"] == "missing" and r["condition"] == full_name)
    out: Dict[str, float] = {"full": full}
    missing = {str(r["condition"]): _ratio(float(r[metric]), full)
               for r in rows if r["kind"] == "missing" and r["condition"] != full_name}
    out["missing_relative"] = _mean(list(missing.values()))
    out.update({f"missing_relative_{c}": v for c, v in missing.items()})
    per_mod = {}
    for m in modalities:
        mine = [r for r in rows if r["kind"] == "noise" and r["modality"] == m]
        clean = next((float(r[metric]) for r in mine if float(r["sigma"]) == 0), full)
        per_mod[m] = _mean([_ratio(float(r[metric]), clean) for r in mine if float(r["sigma"]) > 0])
        out[f"noise_relative_{m}"] = per_mod[m]
    out["noise_relative"] = _mean(list(per_mod.values()))
    return out


def aggregate_conditions(runs: Sequence[Sequence[Dict[str, object]]], metric: str) -> List[Dict[str, object]]:
    """Per condition, the n, mean and sample SD of ``metric`` over several runs' ``robustness_rows``
    (for example the seeds of one method); conditions in first-seen order."""
    groups: Dict[tuple, Dict[str, object]] = {}
    for rows in runs:
        for r in rows:
            g = groups.setdefault((r["kind"], r["condition"]), {k: r[k] for k in ("kind", "condition", "modality",
                                                                                 "sigma")} | {"values": []})
            v = float(r[metric])
            if math.isfinite(v):
                g["values"].append(v)
    out = []
    for g in groups.values():
        xs = g.pop("values")
        out.append({**g, "n": len(xs), "mean": statistics.fmean(xs) if xs else float("nan"),
                    "sd": statistics.stdev(xs) if len(xs) > 1 else float("nan")})
    return out
