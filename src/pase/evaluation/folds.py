"""Cross-validation over data folds (IEMOCAP leave-one-session-out): train each fold, report the mean.

GCNet's IEMOCAP protocol holds out one of the 5 sessions at a time; the published figure is the
mean over the 5 folds. ``cross_validate`` trains the configuration once per fold (the source's
``fold`` option, for example ``data.options.fold`` of the ``gcnet`` source), into
``OUT/fold<f>/``, skips folds whose ``metrics.json`` exists and continues an interrupted one
from its last checkpoint (resume), and writes
``OUT/folds_summary.json`` and ``OUT/folds_summary.md``: every fold's test metrics and their mean
and sample standard deviation (over the folds where the metric is finite; ``n`` counts them).
Selection inside each fold uses that fold's validation split only.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Dict, Optional, Sequence

from ..config import Config, ConfigError, apply_overrides, config_difference, to_dict
from ..io import atomic_write_json, atomic_write_text
from ..training.run import train

__all__ = ["cross_validate"]


def cross_validate(cfg: Config, out_dir: str | Path, folds: Sequence[int] = (1, 2, 3, 4, 5)) -> Dict[str, object]:
    """Train ``cfg`` on every fold; returns {"folds": {f: test metrics}, "mean": ..., "sd": ...}."""
    out = Path(out_dir)
    if not list(folds):
        raise ConfigError("no folds to train; pass --folds, for example 1,2,3,4,5")
    _check_out(out)
    per_fold: Dict[int, Dict[str, float]] = {}
    protocol = None
    for f in folds:
        run = out / f"fold{f}"
        fold_cfg = apply_overrides(cfg, [f"data.options.fold={f}", "train.progress_bar=false"])
        if (run / "metrics.json").is_file():
            diff = _other_config(run, fold_cfg)
            if diff:
                raise ConfigError(f"{run} holds fold {f} of another configuration ({diff}); pass a new --out, "
                                  "or the same --config and --set values to resume it")
            result = json.loads((run / "metrics.json").read_text())
        else:  # an interrupted fold (its config.yaml written) continues; train checks its configuration
            result = train(fold_cfg, run, resume=(run / "config.yaml").is_file(), quiet=True)
        per_fold[f] = result["test"]
        protocol = result["protocol"]
    names = list(next(iter(per_fold.values())))
    # a NaN fold (Corr of a constant prediction) is left out of its metric's mean, and n says so
    finite = {k: [m[k] for m in per_fold.values() if math.isfinite(m[k])] for k in names}
    n = {k: len(v) for k, v in finite.items()}
    mean = {k: statistics.mean(v) if v else float("nan") for k, v in finite.items()}
    sd = {k: statistics.stdev(v) if len(v) > 1 else float("nan") for k, v in finite.items()}
    summary = {"protocol": protocol, "method": cfg.method, "seed": cfg.train.seed,
               "folds": {str(f): m for f, m in per_fold.items()}, "mean": mean, "sd": sd, "n": n}
    atomic_write_json(out / "folds_summary.json", summary)
    lines = [f"# Cross-validation: {cfg.method}, protocol {protocol}, folds {list(folds)}", "",
             "| fold | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines += [f"| {f} | " + " | ".join(f"{m[k]:.4f}" for k in names) + " |" for f, m in per_fold.items()]
    lines.append("| mean ± SD | " + " | ".join(f"{mean[k]:.4f} ± {sd[k]:.4f}" + (f" (n={n[k]})" if n[k] < len(per_fold)
                                                                                   else "") for k in names) + " |")
    atomic_write_text(out / "folds_summary.md", "\n".join(lines) + "\n")
    return summary


_SUMMARIES = ("folds_summary.json", "folds_summary.md")


def _check_out(out: Path) -> None:
    """``out`` is new, empty or an earlier cross-validation's folder (``fold<k>/`` runs and this
    command's summaries), never a file or somebody else's folder: the summaries are rewritten there."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder; pass a new --out (nothing was written)")
    if not out.is_dir():
        return
    entries = list(out.iterdir())
    runs = [p for p in entries if p.is_dir() and p.name.startswith("fold") and p.name[4:].isdigit()]
    foreign = sorted(p.name for p in entries if p not in runs and p.name not in _SUMMARIES)
    if foreign or (entries and not runs):
        what = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "") if foreign else \
            ", ".join(p.name for p in entries)
        raise ConfigError(f"--out {out} holds files that are not a cross-validation's ({what}); pass a new --out "
                          "(nothing was written)")


def _other_config(run: Path, cfg: Config) -> Optional[str]:
    """The first difference between the configuration a finished fold ran with (its
    ``config.yaml``) and ``cfg`` (the progress bar aside); None when they agree."""
    path = run / "config.yaml"
    if not path.is_file():
        return f"no {path.name} beside its metrics.json"
    return config_difference(path, cfg, _without_progress_bar)


def _without_progress_bar(cfg: Config) -> Dict[str, object]:
    d = to_dict(cfg)
    d["train"].pop("progress_bar", None)
    return d
