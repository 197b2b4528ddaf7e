"""The competition figure: each encoder's linear probe after joint training vs trained alone.

Modality competition shows as a *probe deficit*: the encoder of a weak modality, trained jointly
with a dominant one, represents its own modality worse than the same encoder trained alone on
the same labels. ``probe_deficit`` trains the configured method on all modalities and one
unimodal model per modality (same config, ``data.modalities=[m]``), probes every frozen encoder
(fit on train, scored on test) and returns the per-modality scores and their differences.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Dict, Optional, Sequence

from ..config import Config, ConfigError, apply_overrides, config_difference
from ..io import user_path
from ..training.run import load_bundle, load_checkpoint
from .compare import _comparable, _train_into
from .probes import probe_model

__all__ = ["alone_config", "check_finished_run", "probe_deficit", "trained_probes"]


def check_finished_run(cfg: Config, out: Path) -> None:
    """A finished run in ``out`` (its metrics.json) is of ``cfg``'s configuration, else a ConfigError naming it;
    nothing (no run, or an interrupted one, which its resume checks) passes. Also called on every run a
    call will use before any of them trains: met only at its turn, a run of another configuration stopped
    the call after the runs before it had trained (a review)."""
    if not (out / "metrics.json").is_file():
        return
    # where the data (or a pretrained folder) lies may move, as for pase compare; nothing else may differ
    view = lambda c: {**_comparable(c), "method": c.method, "seed": c.train.seed}  # noqa: E731
    diff = config_difference(out / "config.yaml", cfg, view) if (out / "config.yaml").is_file() else "no config.yaml"
    if diff:
        raise ConfigError(f"{out} holds a finished run of another configuration ({diff}); pass another output "
                          "folder (nothing was changed)")


def alone_config(cfg: Config, modality: str) -> Config:
    """The unimodal reference run's configuration: ``cfg``'s late fusion on ``modality`` alone."""
    return apply_overrides(cfg, [f"data.modalities=[{modality}]", "method=late_fusion"])


def trained_probes(cfg: Config, out: Path) -> Dict[str, object]:
    """Train ``cfg`` into ``out`` (a finished run of the same configuration there is kept, an
    interrupted one continued, as ``pase compare`` does); returns {"metrics": metrics.json content,
    "probe": per-modality probes}. (A second call into the same folder stopped with a traceback.)"""
    done = out / "metrics.json"
    if done.is_file():
        check_finished_run(cfg, out)
    else:
        _train_into(cfg, out)
    result = json.loads(done.read_text())
    module, _, bundle = load_checkpoint(out / result["checkpoint"])
    return {"metrics": result, "probe": probe_model(module.model, bundle)}


def probe_deficit(cfg: Config, modalities: Optional[Sequence[str]] = None, out_dir: Optional[str | Path] = None,
                  metric: Optional[str] = None) -> Dict[str, Dict[str, float]]:
    """Probe scores of each modality's encoder, jointly trained vs alone.

    Args:
        cfg: the joint configuration (any method).
        modalities: which modalities get a unimodal reference (default: every one but the first).
        out_dir: where the runs go (default: a temporary folder).
        metric: probe metric ("acc2" or "corr" for regression, "acc" for classification; None:
            "acc2" for regression, "acc" otherwise).

    Returns:
        modality -> {"joint", "alone", "deficit" = alone - joint} for ``metric``, and under
        "by_metric" the same triple for every probe metric both runs report (``acc2``, ``corr``,
        and on the built-in benchmark the ground-truth ``effect_r2`` and ``effect_acc``); key
        "__fused__" holds the joint model's test metrics.
    """
    # `~` expanded as train() expands it: the joint run and its probes in one folder (a review)
    root = user_path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="pase-competition-"))
    if modalities is not None:  # before anything trains (a typo failed after the joint run)
        have = list(cfg.data.modalities or load_bundle(cfg).modalities)
        unknown = [m for m in modalities if m not in have]
        if unknown:
            raise ValueError(f"modality {unknown[0]!r} is not one of the data's ({', '.join(have)}); nothing was "
                             "trained")
    joint = trained_probes(cfg, root / "joint")
    mods = list(modalities) if modalities is not None else list(joint["probe"])[1:]
    scores = next(iter(joint["probe"].values()), {})
    metric = metric or ("acc2" if "acc2" in scores else "acc")
    if metric not in scores:  # before the unimodal runs are trained
        raise ValueError(f"probe metric {metric!r} is not one of this task's probe metrics: {', '.join(scores)}")
    table: Dict[str, Dict[str, float]] = {}
    for m in mods:
        solo = trained_probes(alone_config(cfg, m), root / f"alone_{m}")
        pj, pa = joint["probe"][m], solo["probe"][m]
        by = {k: {"joint": pj[k], "alone": pa[k], "deficit": pa[k] - pj[k]} for k in pj if k in pa}
        table[m] = {**by[metric], "by_metric": by}
    table["__fused__"] = dict(joint["metrics"]["test"])
    return table
