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
from ..training.run import load_bundle, load_checkpoint
from .compare import _comparable, _train_into
from .probes import probe_model

__all__ = ["probe_deficit", "trained_probes"]


def trained_probes(cfg: Config, out: Path) -> Dict[str, object]:
    """Train ``cfg`` into ``out`` (a finished run of the same configuration there is kept, an
    interrupted one continued, as ``pase compare`` does); returns {"metrics": metrics.json content,
    "probe": per-modality probes}. (A second call into the same folder stopped with a traceback.)"""
    done = out / "metrics.json"
    if done.is_file():
        # where the data (or a pretrained folder) lies may move, as for pase compare; nothing else may differ
        view = lambda c: {**_comparable(c), "method": c.method, "seed": c.train.seed}  # noqa: E731
        diff = config_difference(out / "config.yaml", cfg, view) if (out / "config.yaml").is_file() else "no config.yaml"
        if diff:
            raise ConfigError(f"{out} holds a finished run of another configuration ({diff}); pass another output "
                              "folder (nothing was changed)")
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
    root = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="pase-competition-"))
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
        solo_cfg = apply_overrides(cfg, [f"data.modalities=[{m}]", "method=late_fusion"])
        solo = trained_probes(solo_cfg, root / f"alone_{m}")
        pj, pa = joint["probe"][m], solo["probe"][m]
        by = {k: {"joint": pj[k], "alone": pa[k], "deficit": pa[k] - pj[k]} for k in pj if k in pa}
        table[m] = {**by[metric], "by_metric": by}
    table["__fused__"] = dict(joint["metrics"]["test"])
    return table
