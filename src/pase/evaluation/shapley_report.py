"""Per-run diagnostics: test-split Shapley values, frozen-encoder probes, contribution trajectories.

``diagnose(checkpoint, out_dir)`` loads a saved model once and writes, into ``out_dir``:

* ``diagnostics.json`` / ``diagnostics.csv``: each modality's exact Shapley value and share on
  the test split under two utilities, and a linear probe of each frozen encoder;
* ``robustness.csv``: the protocol's metrics under every missing-modality and noise condition
  (``pase.evaluation.robustness``), summarised in ``diagnostics.json["robustness"]``;
* ``trajectory.csv``: the per-epoch contribution columns of the run's ``log.csv`` (when found).

The Shapley utility of a coalition S is computed over the **whole split**, not per batch:

    v_loss(S) = - (1/N) sum_i loss(f_S(x_i), y_i),    v_acc(S) = (1/N) sum_i 1[f_S(x_i) correct],

where f_S is the fused head with the modalities outside S masked at the fusion input. The
encoders run once per batch, all 2^M coalitions go through ``model.coalition_logits`` in one
batched head pass, per-coalition sums are accumulated over batches and ``exact_shapley`` runs
once on the (2^M,) utilities. Shares follow ``shapley_shares``.

Shapes: B batch, C = 2^M coalitions, O output width, M modalities.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import Tensor

from .. import code_fingerprint
from ..data.contract import DataBundle
from ..io import atomic_write_json, atomic_write_text, remove_partial_writes, sha256_file, user_path
from ..methods.base import coalition_utility, task_loss
from ..shapley import coalition_masks, exact_shapley, shapley_shares
from ..training.datamodule import make_loader
from ..training.precision import inference
from ..training.run import DIAGNOSIS_FILES, RunDirError, check_split, load_checkpoint
from .probes import probe_model
from .robustness import (DEFAULT_NOISE_LEVELS, headline_metric, robustness_rows, robustness_summary, same_levels,
                         unique_levels)

__all__ = ["UTILITIES", "split_coalition_utilities", "split_shapley", "copy_trajectory", "diagnose",
           "write_csv", "read_csv"]

#: the utilities reported for every run: negative task loss (the training default) and accuracy;
#: regression runs add ``r2`` (see :func:`split_coalition_utilities`)
UTILITIES = ("neg_loss", "accuracy")

_TRAJECTORY_PREFIXES = ("diag/shapley_", "diag/share_", "diag/weight_", "diag/sgm_coeff_")
_TRAJECTORY_KEYS = ("diag/phase", "diag/switch_epoch")


def write_csv(path: str | Path, rows: Sequence[Dict[str, Any]], fields: Optional[Sequence[str]] = None) -> None:
    """Write ``rows`` as CSV (atomically); columns in first-seen order unless ``fields`` is given."""
    keys: List[str] = list(fields or [])
    if not fields:
        for r in rows:
            keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def read_csv(path: str | Path) -> List[Dict[str, str]]:
    """The rows of a CSV file as dicts of strings."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@torch.no_grad()
def split_coalition_utilities(model: torch.nn.Module, bundle: DataBundle, split: str = "test",
                              loss_kind: str = "auto", batch_size: int = 256,
                              by_group: bool = False) -> Dict[str, Tensor]:
    """(2^M,) float64 utility of every coalition over the whole ``split``, per utility name.

    ``neg_loss`` (minus the task loss), ``accuracy`` and, for regression, ``r2``: the coalition's
    explained variance 1 - MSE(S) / Var(y) over the split. Its Shapley values sum to R^2(all) -
    R^2(empty), and for predictions that add one zero-mean term per modality they are each
    modality's share of the explained label variance: the quantity the built-in benchmark's
    ground-truth shares define (an L1 or accuracy utility does not measure that).

    Coalition c holds modality i (``model.modalities`` order) iff bit i of c is set.
    """
    was = model.training
    model.eval()
    masks = coalition_masks(len(model.modalities))  # (C, M)
    loss_sum = torch.zeros(masks.shape[0], dtype=torch.float64)
    hit_sum = torch.zeros(masks.shape[0], dtype=torch.float64)
    sse = torch.zeros(masks.shape[0], dtype=torch.float64)  # regression: squared errors, and y's moments
    ys: List[torch.Tensor] = []
    regression = bundle.task.kind == "regression"
    n = 0
    with inference(model) as convert:  # the run's training precision
        for batch in make_loader(bundle, split, batch_size, False, 0, by_group=by_group):
            batch = convert(batch)
            out = model(batch)  # encoders once
            logits = model.coalition_logits(out, masks)  # (C, B, O)
            per = task_loss(logits, batch.target, bundle.task, loss_kind, reduce_batch=False)  # (C, B)
            loss_sum += per.double().sum(-1).cpu()
            acc = coalition_utility(logits, batch.target, bundle.task, "accuracy", loss_kind)  # (C,) batch means
            hit_sum += acc.double().cpu() * len(batch)
            if regression:
                y = batch.target.double().cpu()
                sse += (logits[..., 0].double().cpu() - y).pow(2).sum(-1)
                ys.append(y.reshape(-1))
            n += len(batch)
    model.train(was)
    table = {"neg_loss": -loss_sum / n, "accuracy": hit_sum / n}
    # centred (two passes over the split's labels): E[y^2] - E[y]^2 left 2e-16 of rounding for
    # constant labels, and r2 was reported as about -6e15 instead of left out
    y_all = torch.cat(ys) if ys else None
    var = float(y_all.var(unbiased=False)) if y_all is not None else 0.0
    if regression and y_all is not None and var > (1e-12 * float(y_all.abs().max())) ** 2:
        table["r2"] = 1.0 - sse / (n * var)
    return table


def split_shapley(model: torch.nn.Module, bundle: DataBundle, split: str = "test", loss_kind: str = "auto",
                  batch_size: int = 256, by_group: bool = False) -> Dict[str, Dict[str, Any]]:
    """utility -> {"values": {m: phi_m}, "shares": {m: psi_m}, "coalitions": [[names], ...],
    "utilities": [v(c), ...]} with the coalitions in bitmask order (row 0 empty, last all)."""
    mods = list(model.modalities)
    table = split_coalition_utilities(model, bundle, split, loss_kind, batch_size, by_group)
    masks = coalition_masks(len(mods))
    coalitions = [[m for i, m in enumerate(mods) if bool(row[i])] for row in masks]
    result = {}
    for name, util in table.items():
        phi = exact_shapley(util)  # (M,)
        psi = shapley_shares(phi)
        result[name] = {"values": dict(zip(mods, phi.tolist())), "shares": dict(zip(mods, psi.tolist())),
                        "coalitions": coalitions, "utilities": util.tolist()}
    return result


def copy_trajectory(log_csv: str | Path, out_csv: str | Path, monitor: Optional[str] = None) -> int:
    """Copy the per-epoch contribution columns of ``log.csv`` (epoch, ``diag/shapley_*``,
    ``diag/share_*``, ``diag/weight_*``, ``diag/sgm_coeff_*``, ``diag/phase``,
    ``diag/switch_epoch`` and ``valid/<monitor>``) to ``out_csv``; returns the row count. A leading
    ``~`` in either path is the home folder, as ``diagnose`` takes it."""
    rows = read_csv(user_path(log_csv))
    cols = list(rows[0]) if rows else []
    keep = ["epoch"] + [c for c in cols if c.startswith(_TRAJECTORY_PREFIXES) or c in _TRAJECTORY_KEYS]
    if monitor and f"valid/{monitor}" in cols:
        keep.append(f"valid/{monitor}")
    write_csv(user_path(out_csv), rows, keep)
    return len(rows)


def _find_log(checkpoint: Path) -> Optional[Path]:
    """``log.csv`` of the run a checkpoint belongs to (``<run>/checkpoints/best.ckpt``)."""
    for parent in checkpoint.resolve().parents[:2]:
        if (parent / "log.csv").is_file():
            return parent / "log.csv"
    return None


def _modality_rows(mods: Sequence[str], shap: Dict[str, Dict[str, Any]],
                   probes: Dict[str, Dict[str, float]]) -> List[Dict[str, Any]]:
    rows = []
    for m in mods:
        row: Dict[str, Any] = {"modality": m}
        for u in shap:
            row[f"shapley_{u}"] = shap[u]["values"][m]
            row[f"share_{u}"] = shap[u]["shares"][m]
        row.update({f"probe_{k}": v for k, v in probes.get(m, {}).items()})
        rows.append(row)
    return rows


#: the files a diagnosis writes beside diagnostics.json
_DIAGNOSIS_FILES = tuple(f for f in DIAGNOSIS_FILES if f != "diagnostics.json")


#: written before the files of a diagnosis and removed after its diagnostics.json: whose leftovers they are
_PARTIAL = ".diagnosis-in-progress.json"


def _truth_over(truth: Optional[Dict[str, float]], mods: Sequence[str]) -> Optional[Dict[str, float]]:
    """The generator's ground-truth shares renormalised over the modalities a run uses (a run on
    text and audio: text 0.4 / 0.75, audio 0.35 / 0.75), the shares its Shapley values estimate."""
    if not truth or any(m not in truth for m in mods):
        return None
    total = sum(float(truth[m]) for m in mods)
    return {m: float(truth[m]) / total for m in mods} if total > 0 else None


def _same_checkpoint(record: Path, checkpoint: Path, identity: Dict[str, Any], own_run: bool) -> bool:
    """Whether the diagnosis record ``record`` (a diagnostics.json, or the in-progress record) is of
    ``checkpoint``: outside its run folder, the same bytes (the recorded SHA-256); else the same
    file; in its own run folder, the same file name and ``identity``; for a record without the
    fingerprint elsewhere, the same last three path parts and identity."""
    try:
        saved = json.loads(record.read_text())
        theirs = Path(saved["checkpoint"])
        mine = checkpoint.resolve()
        if not own_run and "checkpoint_sha256" in saved:
            # elsewhere: the same bytes, whatever the path says (a relative path names another file from
            # another folder; a path's file may have been replaced since, say by a longer run)
            return saved["checkpoint_sha256"] == sha256_file(checkpoint)
        if theirs.resolve() == mine:
            return True
        if own_run:  # a moved or copied run folder: its own diagnosis of the same file name
            return theirs.name == mine.name and all(saved.get(k) == v for k, v in identity.items())
        # a diagnosis written before the fingerprint was recorded
        return theirs.parts[-3:] == mine.parts[-3:] and all(saved.get(k) == v for k, v in identity.items())
    except (ValueError, KeyError, TypeError, AttributeError, OSError):
        return False


def _check_other_run(out: Path, checkpoint: Path, own_run: bool = False) -> None:
    """``out`` is a run folder (it holds metrics.json): it may receive the diagnosis only if its
    metrics.json names the same checkpoint (same file or same bytes), whether ``checkpoint`` lies in
    it (``own_run``: its last.ckpt is not the selected model) or elsewhere. Else ``pase compare``
    would later read another model's diagnosis as that run's."""
    from ..training.run import _selected_checkpoint

    try:
        metrics = json.loads((out / "metrics.json").read_text())
        named = metrics.get("checkpoint")
        # in its own folder, the rule the run itself follows (an older absolute path: checkpoints/best.ckpt)
        theirs = (_selected_checkpoint(out, metrics) if own_run else (out / named)).resolve() if named else None
    except (ValueError, TypeError, AttributeError, OSError):
        theirs = None
    if theirs is not None and (theirs == checkpoint.resolve() or (
            theirs.is_file() and sha256_file(theirs) == sha256_file(checkpoint))):
        return
    if own_run:
        raise RunDirError(f"{out}'s metrics.json names {theirs if theirs is not None else 'no checkpoint'} as the "
                          f"selected model, not {checkpoint}: the run folder holds only the diagnosis of its selected "
                          "checkpoint (pase compare reads it as the run's); pass another --out (nothing was written)")
    raise RunDirError(f"{out} is the folder of another run (its metrics.json names "
                      f"{theirs if theirs is not None else 'no checkpoint'}), not of {checkpoint}; pass another --out "
                      "(nothing was written)")


def _check_diagnosis_dir(out: Path, checkpoint: Path, identity: Optional[Dict[str, Any]] = None,
                         options: Optional[Dict[str, Any]] = None) -> None:
    """``out`` may receive a diagnosis of ``checkpoint``: a folder (or nothing yet) whose
    diagnostics.json, if any, is one of the same checkpoint (it is refreshed); never a file, never
    another checkpoint's or a foreign diagnostics.json (nothing is overwritten then). The same
    checkpoint: the same file; in the checkpoint's own run folder (moved or copied), the same file
    name and ``identity`` (dataset, method, seed); elsewhere, the same bytes (the SHA-256 the
    diagnosis records; diagnoses without it: the same last three path parts and identity).
    Without ``identity`` only the folder is checked. A diagnosis of the same checkpoint with other
    ``options`` (split, noise levels) is another diagnosis too. Outside the run's own folder, the
    files a diagnosis writes without a diagnostics.json beside them are refused (somebody else's)
    unless the in-progress record (``_PARTIAL``, written before them) names the same checkpoint:
    then, as inside the run's own folder, they are the leftovers of an interrupted diagnosis and
    are replaced."""
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out} is a file, not a folder; pass another --out (nothing was overwritten)")
    previous = out / "diagnostics.json"
    parents = checkpoint.resolve().parents
    own_run = len(parents) > 1 and out.resolve() == parents[1]  # the checkpoint's own run folder
    if (out / "metrics.json").is_file():  # also in its own folder: only the selected checkpoint's diagnosis
        _check_other_run(out, checkpoint, own_run)
    elif (out / "config.yaml").is_file() and (out / "checkpoints").is_dir():
        # a run still training (or interrupted): once it finishes, pase compare would read this diagnosis
        # of an intermediate checkpoint as the selected model's
        raise RunDirError(f"{out} is a run folder whose training has not finished (no metrics.json); its diagnosis "
                          "would later pass for the selected model's: pass another --out, or finish the run first "
                          "(nothing was written)")
    if not previous.is_file():
        theirs = [f for f in _DIAGNOSIS_FILES if (out / f).exists()]
        partial = out / _PARTIAL
        if theirs and not own_run and not partial.is_file():  # in its own run folder: an interrupted diagnosis
            raise RunDirError(f"{out / theirs[0]} exists but {previous} does not, so it is not a diagnosis to "
                              "refresh; pass another --out (nothing was overwritten)")
        if theirs and not own_run and identity is not None and not _same_checkpoint(partial, checkpoint, identity,
                                                                                  own_run):
            raise RunDirError(f"{out / theirs[0]} is left from an interrupted diagnosis of another checkpoint "
                              f"({partial}); pass another --out (nothing was overwritten)")
        return
    if identity is None:
        return
    if not _same_checkpoint(previous, checkpoint, identity, own_run):
        raise RunDirError(f"{previous} holds another diagnosis (not of {checkpoint}); pass another --out "
                          "(nothing was overwritten)")
    saved = json.loads(previous.read_text())
    kept = {"split": saved.get("split"), "noise_levels": (saved.get("robustness") or {}).get("noise_levels")}
    for key, value in (options or {}).items():
        same = same_levels(kept.get(key), value) if key == "noise_levels" else kept.get(key) == value
        if kept.get(key) is not None and not same:
            raise RunDirError(f"{previous} holds a diagnosis of this checkpoint with {key}={kept[key]!r}, not "
                              f"{value!r}; pass another --out to keep both (nothing was overwritten)")


def diagnose(checkpoint: str | Path, out_dir: Optional[str | Path] = None, split: str = "test",
             noise_levels: Sequence[float] = DEFAULT_NOISE_LEVELS, probes: bool = True,
             log_csv: Optional[str | Path] = None, bundle: Optional[DataBundle] = None,
             overrides: Sequence[str] = ()) -> Dict[str, Any]:
    """Diagnostics and robustness of one saved model; returns the content of ``diagnostics.json``.

    Args:
        checkpoint: a checkpoint written by ``pase train`` (``<run>/checkpoints/best.ckpt``).
        out_dir: where the files go (default: the run folder, two levels above the checkpoint).
        split: the evaluated split (the test split: the model was selected on validation).
        noise_levels: sigma values in units of each feature's train-split std.
        probes: fit a linear probe on each frozen encoder (scikit-learn).
        log_csv: the run's per-epoch log (default: found next to the checkpoint's run folder).
        bundle: the data, when the caller has it loaded already.
        overrides: ``key=value`` changes to the checkpoint's configuration, as for ``pase evaluate``
            (moved data: ``data.path=NEW``); the data must be the data the checkpoint was trained on
            (its fingerprint; to score a model on other data, use ``pase evaluate``).
    """
    checkpoint = user_path(checkpoint)  # as the CLI's path options: `~` is the home folder
    out = user_path(out_dir) if out_dir is not None else checkpoint.resolve().parents[1]
    noise_levels = unique_levels(noise_levels)  # as scored, so as recorded and compared
    _check_diagnosis_dir(out, checkpoint)  # before the work: not a file
    module, cfg, bundle = load_checkpoint(checkpoint, bundle=bundle, overrides=overrides, same_data=True)
    check_split(bundle, split)
    _check_diagnosis_dir(out, checkpoint, {"dataset": bundle.name, "method": cfg.method, "seed": cfg.train.seed},
                         {"split": split, "noise_levels": noise_levels})
    model = module.model
    out.mkdir(parents=True, exist_ok=True)
    # a killed diagnosis's unfinished atomic writes (.<file>.<random>.tmp), which stayed for good; its checks passed
    remove_partial_writes(out, DIAGNOSIS_FILES + (_PARTIAL,))
    by_group, mods = cfg.model.context, list(model.modalities)
    shap = split_shapley(model, bundle, split, cfg.train.loss, cfg.train.batch_size, by_group)
    probe = probe_model(model, bundle, split) if probes else {}
    rob = robustness_rows(model, bundle, split, noise_levels, cfg.train.batch_size, by_group)
    metric = headline_metric(bundle.task.protocol)
    log_csv = user_path(log_csv) if log_csv is not None else _find_log(checkpoint)
    # every figure is computed; now the files, diagnostics.json last (it marks a finished diagnosis),
    # after a record of whose they are, so an interrupted diagnosis can be redone wherever it was
    digest = sha256_file(checkpoint)
    identity = {"checkpoint": str(checkpoint), "checkpoint_sha256": digest,
                "dataset": bundle.name, "method": cfg.method, "seed": cfg.train.seed}
    if not (out / "diagnostics.json").is_file():  # else that file already says whose they are
        atomic_write_json(out / _PARTIAL, identity)
    # every row names its dataset and protocol (PASE_SPEC section 6), as the comparison's CSVs do
    named = {"dataset": bundle.name, "protocol": bundle.task.protocol, "split": split}
    write_csv(out / "robustness.csv", [{**named, **r} for r in rob])
    trajectory = None
    if log_csv is not None and log_csv.is_file():
        copy_trajectory(log_csv, out / "trajectory.csv", module.monitor)
        trajectory = "trajectory.csv"
    else:
        (out / "trajectory.csv").unlink(missing_ok=True)  # an earlier diagnosis's, not this one's
    result = {
        "checkpoint": str(checkpoint), "checkpoint_sha256": digest, "split": split,
        "dataset": bundle.name, "protocol": bundle.task.protocol,
        "method": cfg.method, "seed": cfg.train.seed, "modalities": mods,
        "shapley": shap, "probes": probe,
        # the built-in benchmark's, over the run's modalities (else None); the generator's own beside it
        "ground_truth_shares": _truth_over(bundle.info.get("ground_truth_shares"), mods),
        "ground_truth_shares_generator": bundle.info.get("ground_truth_shares"),
        "robustness": {"metric": metric, "noise_levels": noise_levels,
                       **robustness_summary(rob, metric, mods)},
        "files": {"robustness": "robustness.csv", "trajectory": trajectory, "table": "diagnostics.csv"},
        "code_sha256": code_fingerprint(),  # which code computed these figures (pase compare compares it)
    }
    write_csv(out / "diagnostics.csv", [{**named, **r} for r in _modality_rows(mods, shap, probe)])
    atomic_write_json(out / "diagnostics.json", result)
    (out / _PARTIAL).unlink(missing_ok=True)
    return result
