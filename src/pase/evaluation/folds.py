"""Cross-validation over data folds (IEMOCAP leave-one-session-out): train each fold, report the mean.

GCNet's IEMOCAP protocol holds out one of the 5 sessions at a time; the published figure is the
mean over the 5 folds. ``cross_validate`` trains the configuration once per fold (the source's
``fold`` option, for example ``data.options.fold`` of the ``gcnet`` source), into
``OUT/fold<f>/``, skips folds whose ``metrics.json`` exists and continues an interrupted one
from its last checkpoint (resume), and writes
``OUT/folds_summary.json`` and ``OUT/folds_summary.md``: every fold's test metrics and their mean
and sample standard deviation (over the folds where the metric is finite; ``n`` counts them).
``folds_summary.json`` is strict JSON: an undefined number (the SD of one fold, a NaN Corr) is
``null`` there; the returned dict keeps it as NaN.
Selection inside each fold uses that fold's validation split only. With several training seeds
(``seeds``, ``pase crossval --seeds``) every seed trains every fold into ``OUT/seed<s>/fold<f>/``;
each seed's figure is its fold mean, and the summary reports the mean and sample SD of those over
the seeds (every fold of every seed is listed too). Like ``pase compare``, it holds the comparison
lock ``OUT/.compare.lock`` while it runs: a second crossval into ``OUT`` meanwhile is refused.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..config import Config, ConfigError, apply_overrides, config_difference, to_dict
from ..data.registry import DATA_SOURCES
from ..io import atomic_write_json, atomic_write_text, is_partial_write, remove_partial_writes, user_path
from ..data.contract import READ_CHANGED, fingerprint, fingerprint_difference
from ..training.checkpoint import CheckpointWriteError
from ..training.run import (check_trained_as, data_options, load_bundle, no_selection, train, trained_dataset,
                            without_locations)
from .compare import (COMPARISON_LOCK, SIGNALS, check_methods_can_start, check_one_process, interrupted_data,
                      lock_comparison, recording_signals, trained_data, unlock_comparison)
from .report import _finite_or_null

__all__ = ["cross_validate"]


def cross_validate(cfg: Config, out_dir: str | Path, folds: Sequence[int] = (1, 2, 3, 4, 5),
                   seeds: Optional[Sequence[int]] = None) -> Dict[str, object]:
    """Train ``cfg`` on every fold, for one seed or several.

    Args:
        cfg: the configuration; its data source must take a ``fold`` option.
        out_dir: ``OUT``: ``fold<f>/`` runs (one seed, ``cfg.train.seed``), or ``seed<s>/fold<f>/``
            with ``seeds``; new, empty or an earlier cross-validation's folder of the same layout.
        folds: the folds to hold out.
        seeds: training seeds (None: the config's one). Each seed's figure is its mean over the
            folds (the protocol's reported number); the summary gives their mean and sample SD.

    Returns:
        One seed: {"folds": {f: test metrics}, "mean", "sd", "n"} over the folds. Several:
        {"runs": {s: {f: test metrics}}, "fold_means": {s: fold mean}, "mean", "sd", "n"} over seeds.
    """
    out = user_path(out_dir)  # a `~` train() expands: the folds and the summaries in one folder
    if not list(folds):
        raise ConfigError("no folds to train; pass --folds, for example 1,2,3,4,5")
    if len(set(folds)) != len(list(folds)):
        raise ConfigError(f"--folds {','.join(map(str, folds))} names a fold twice; name each once "
                          "(nothing was trained)")
    if seeds is not None and (not list(seeds) or len(set(seeds)) != len(list(seeds))):
        raise ConfigError(f"--seeds {list(seeds)} must name at least one seed, each once")
    check_one_process(cfg, "pase crossval", "train one fold on several devices with pase train and "
                                             "--set data.options.fold=F")
    _check_out(out, by_seed=seeds is not None)
    configs = {s: cfg if s is None else apply_overrides(cfg, [f"train.seed={s}"]) for s in (seeds or [None])}
    _check_folds(any_cfg=cfg, folds=folds)
    out.mkdir(parents=True, exist_ok=True)
    # pase compare's lock: a second crossval into this folder is refused until this one ends (each fold's run
    # lock alone let two write the same summaries and train the folds the other had not reached)
    lock = lock_comparison(out, "pase crossval")
    try:
        _check_out(out, by_seed=seeds is not None)  # again: another crossval may have written here before the lock
        _check_fold_runs(configs, out, folds)
        return _cross_validate(cfg, out, folds, seeds, configs)
    finally:
        unlock_comparison(out, lock)


def _cross_validate(cfg: Config, out: Path, folds: Sequence[int], seeds: Optional[Sequence[int]],
                    configs: Dict[Optional[int], Config]) -> Dict[str, object]:
    """``cross_validate``'s training and summaries, its checks passed and its folder locked."""
    seen: Dict[str, set] = {}
    if seeds is None:
        per_fold, protocol = _train_folds(cfg, out, folds, seen)
        mean, sd, n = _mean_sd(list(per_fold.values()))
        info = _provenance(seen, cfg)
        summary = {"protocol": protocol, **info, "method": cfg.method, "seed": cfg.train.seed,
                   "folds": {str(f): m for f, m in per_fold.items()}, "mean": mean, "sd": sd, "n": n}
        lines = [f"# Cross-validation: {cfg.method}, protocol {protocol}, folds {list(folds)}", "", *_header(info)]
        lines += _table("fold", {str(f): m for f, m in per_fold.items()}, mean, sd, n, len(per_fold))
    else:
        runs: Dict[int, Dict[int, Dict[str, float]]] = {}
        for s in seeds:
            runs[s], protocol = _train_folds(configs[s], out / f"seed{s}", folds, seen)
        info = _provenance(seen, cfg)
        per_seed = {s: _mean_sd(list(r.values())) for s, r in runs.items()}
        fold_means = {s: v[0] for s, v in per_seed.items()}
        mean, sd, n = _mean_sd(list(fold_means.values()))
        summary = {"protocol": protocol, **info, "method": cfg.method, "seeds": list(seeds),
                   "folds_trained": list(folds),
                   "runs": {str(s): {str(f): m for f, m in r.items()} for s, r in runs.items()},
                   "fold_means": {str(s): m for s, m in fold_means.items()},
                   "fold_counts": {str(s): v[2] for s, v in per_seed.items()}, "mean": mean, "sd": sd, "n": n}
        lines = [f"# Cross-validation: {cfg.method}, protocol {protocol}, folds {list(folds)}, seeds {list(seeds)}",
                 "", *_header(info), "Each seed's row is its mean over the folds (the protocol's figure; '(k folds)' where a "
                 "metric was NaN in the others); the last row is the mean and sample SD of those over the seeds.", ""]
        lines += _table("seed", {str(s): m for s, m in fold_means.items()}, mean, sd, n, len(seeds),
                        counts={str(s): v[2] for s, v in per_seed.items()}, of=len(folds))
        lines += ["", "Every fold:", ""]
        lines += _table("seed / fold", {f"{s} / {f}": m for s, r in runs.items() for f, m in r.items()})
    remove_partial_writes(out, _SUMMARIES)  # a killed summary write's leftover, which _check_out let pass
    # strict JSON, as compare's summary.json: one fold or one seed leaves the SD undefined (null, not the NaN token)
    atomic_write_json(out / "folds_summary.json", _finite_or_null(summary))
    atomic_write_text(out / "folds_summary.md", "\n".join(lines) + "\n")
    return summary


def _header(info: Dict[str, object]) -> List[str]:
    lines = [f"Dataset {info['dataset']}; selected on the validation split: {info['selection']}.", ""]
    lines += [f"**Warning**: {unselected_folds(info)}.", ""] if "unselected" in info else []
    return lines + ([f"**Warning**: {info['code_warning']}.", ""] if "code_warning" in info else [])


def unselected_folds(info: Dict[str, object]) -> str:
    """One sentence naming the fold runs whose validation monitor was never finite (nothing selected their epoch)."""
    runs = list(info["unselected"])  # type: ignore[call-overload]
    return (f"no validation selection in {len(runs)} fold run(s): {'; '.join(runs)}; their metrics are of the "
            "checkpoint Lightning kept, which nothing selected")


def _fold_config(cfg: Config, f: int) -> Config:
    return apply_overrides(cfg, [f"data.options.fold={f}", "train.progress_bar=false"])


def _check_folds(any_cfg: Config, folds: Sequence[int]) -> None:
    """Before any fold trains and anything is written: every fold's data options (the source's
    ``check_options``, where it has one) and the method's settings ``check_methods_can_start`` tells from them."""
    source = any_cfg.data.source
    check = getattr(DATA_SOURCES.get(source), "check_options", None) if source in DATA_SOURCES else None
    for f in folds:  # a bad last fold stopped the command only after the others had trained
        opts = data_options(_fold_config(any_cfg, f))  # the options the loader takes, and those it needs
        if check is not None:
            try:
                check(**opts)
            except ValueError as exc:
                raise ConfigError(f"--folds: {exc} (nothing was trained)") from None
    # a setting the method cannot be built with (pase.binning=classes on regression labels): each fold failed
    # at model build, the same check as pase compare's (a review)
    check_methods_can_start(any_cfg, [any_cfg.method], opts, "nothing was trained")
    data_check = getattr(DATA_SOURCES.get(source), "check_folds", None) if source in DATA_SOURCES else None
    if data_check is not None:  # a fold its data cannot have (no video of that session), from the labels alone
        opts = {k: v for k, v in data_options(any_cfg).items() if k != "fold"}
        try:
            data_check(folds=list(folds), **opts)
        except ValueError as exc:  # DataFormatError is a ValueError
            raise ConfigError(f"--folds: {exc} (nothing was trained)") from None


def _check_fold_runs(configs: Dict[Optional[int], Config], out: Path, folds: Sequence[int]) -> None:
    """Before any fold trains (the folder locked): every run folder already there against the configuration
    and data it would continue."""
    for s, cfg in configs.items():  # a changed --set was found at the first finished fold, after the others
        for f in folds:
            run = (out if s is None else out / f"seed{s}") / f"fold{f}"
            diff = _other_config(run, _fold_config(cfg, f)) if (run / "config.yaml").is_file() else None
            if diff:
                raise ConfigError(f"{run} holds fold {f} of another configuration ({diff}); pass a new --out, "
                                  "or the same --config and --set values to resume it (nothing was trained)")
            # a finished fold, or an interrupted one this call would continue (checked only at its turn, after
            # the earlier folds had trained: a review; pase compare checks its interrupted runs up front too)
            last = run / "checkpoints" / "last.ckpt"
            saved = trained_data(run) if (run / "metrics.json").is_file() else \
                interrupted_data(last) if last.is_file() else None
            trained = trained_dataset(run)
            bundle = load_bundle(_fold_config(cfg, f)) if saved or trained else None
            if trained is not None:  # a moved path that names another dataset (pase compare refuses it too)
                check_trained_as(run, trained, _fold_config(cfg, f), bundle)
            why = fingerprint_difference(saved, fingerprint(bundle)) if saved else None
            if why:  # a fold of other data would be averaged with new folds (as pase compare refuses)
                what = "" if (run / "metrics.json").is_file() else " (interrupted; its checkpoints/last.ckpt)"
                raise ConfigError(f"{run} holds fold {f}{what} trained on other data than the configuration gives "
                                  f"now ({why}); point the data options at the folds' data, or pass a new --out "
                                  f"(nothing was trained){READ_CHANGED}")


def _train_folds(cfg: Config, out: Path, folds: Sequence[int], seen: Dict[str, set]
                 ) -> Tuple[Dict[int, Dict[str, float]], str]:
    """Train (or resume, or read back) every fold of one configuration into ``out/fold<f>/``;
    ``seen`` collects each fold's dataset, selection monitor and code fingerprint."""
    per_fold: Dict[int, Dict[str, float]] = {}
    protocol = ""
    for f in folds:
        run = out / f"fold{f}"
        fold_cfg = _fold_config(cfg, f)
        if (run / "metrics.json").is_file():  # its configuration checked by _check_fold_runs
            result = json.loads((run / "metrics.json").read_text())
        else:  # an interrupted fold (its config.yaml written) continues; train checks its configuration
            try:
                # a Ctrl-C that a finalizer drops (a finished fold's Trainer collected) still stops the folds
                with recording_signals():
                    result = train(fold_cfg, run, resume=(run / "config.yaml").is_file(), quiet=True)
                    SIGNALS.check(f"after {run.relative_to(out.parent)} was trained", "cross-validation")
            except CheckpointWriteError as e:  # resuming this one fold would leave the later ones untrained
                raise e.for_command("pase crossval") from None
        per_fold[f] = result["test"]
        protocol = result["protocol"]
        for key in ("dataset", "monitor", "code_sha256"):
            seen.setdefault(key, set()).add(str(result.get(key, "unrecorded")))
        if no_selection(result):  # its monitor never finite: the fold's epoch was not chosen on validation
            seen.setdefault("unselected", set()).add(f"{run} ({no_selection(result)}, epoch {result.get('best_epoch')} "
                                                     "kept)")
    return per_fold, protocol


def _provenance(seen: Dict[str, set], cfg: Config) -> Dict[str, object]:
    """What the summary names beside the protocol (PASE_SPEC section 6): the dataset, the selection
    rule, and a warning when the folds come from more than one version of the code (a fold finished
    by older code is read back, not retrained)."""
    info: Dict[str, object] = {
        "dataset": ", ".join(sorted(seen.get("dataset", []))),
        "selection": f"the epoch of the best validation {', '.join(sorted(seen.get('monitor', [])))} "
                     f"(train.monitor={cfg.train.monitor or 'the protocol default'}) of each fold's run"}
    if seen.get("unselected"):  # the selection rule did not apply to these folds: the summaries say so
        info["unselected"] = sorted(seen["unselected"])
        info["selection"] += f", except {len(info['unselected'])} fold run(s) with no validation selection"
    codes = sorted(seen.get("code_sha256", []))
    if len(codes) > 1:
        info["code_warning"] = (f"the folds come from {len(codes)} versions of the pase code ({', '.join(codes)}; "
                                "code_sha256 of each fold's metrics.json): retrain the older folds in a new --out "
                                "to compare like with like")
    return info


def _mean_sd(rows: List[Dict[str, float]]) -> Tuple[Dict[str, float], Dict[str, float], Dict[str, int]]:
    """Mean, sample SD and count of each metric over ``rows``; a NaN (Corr of a constant
    prediction) is left out of its metric, and the count says so."""
    finite = {k: [m[k] for m in rows if math.isfinite(m[k])] for k in rows[0]}
    mean = {k: statistics.mean(v) if v else float("nan") for k, v in finite.items()}
    sd = {k: statistics.stdev(v) if len(v) > 1 else float("nan") for k, v in finite.items()}
    return mean, sd, {k: len(v) for k, v in finite.items()}


def _table(first: str, rows: Dict[str, Dict[str, float]], mean: Optional[Dict[str, float]] = None,
           sd: Optional[Dict[str, float]] = None, n: Optional[Dict[str, int]] = None, total: int = 0,
           counts: Optional[Dict[str, Dict[str, int]]] = None, of: int = 0) -> List[str]:
    """Markdown rows: one per entry of ``rows`` (a row's cell says '(k folds)' where ``counts``
    gives fewer than ``of``), then ``mean ± SD`` (with n where a NaN was left out)."""
    names = list(next(iter(rows.values())))
    lines = [f"| {first} | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]

    def cell(key: str, k: str) -> str:
        c = counts[key][k] if counts else of
        return f"{rows[key][k]:.4f}" + (f" ({c} folds)" if c < of else "")

    lines += [f"| {key} | " + " | ".join(cell(key, k) for k in names) + " |" for key in rows]
    if mean is not None:
        def summary(k: str) -> str:  # one fold's (or seed's) SD is undefined: 'n/a', not 'nan'
            spread = f"{sd[k]:.4f}" if math.isfinite(sd[k]) else "n/a"
            return f"{mean[k]:.4f} ± {spread}" + (f" (n={n[k]})" if n[k] < total else "")

        lines.append("| mean ± SD | " + " | ".join(summary(k) for k in names) + " |")
    return lines


_SUMMARIES = ("folds_summary.json", "folds_summary.md")


def _check_out(out: Path, by_seed: bool = False) -> None:
    """``out`` is new, empty or an earlier cross-validation's folder of the same layout
    (``fold<f>/`` runs, or ``seed<s>/fold<f>/`` with seeds, and this command's summaries), never a
    file or somebody else's folder: the summaries are rewritten there."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder; pass a new --out (nothing was written)")
    if not out.is_dir():
        return
    # a crossval killed while writing a summary leaves its partial write: not a foreign file (this command
    # rewrites the summaries, and removes it before it does)
    # and the comparison lock file of a crossval that was killed (or is running: lock_comparison refuses it)
    entries = [p for p in out.iterdir() if not (p.is_file() and (is_partial_write(p.name, _SUMMARIES)
                                                                 or p.name == COMPARISON_LOCK))]
    runs = [p for p in entries if _numbered(p, "fold") and _run_or_empty(p)]
    seeded = [p for p in entries if _numbered(p, "seed") and all(_numbered(q, "fold") and _run_or_empty(q)
                                                                  for q in p.iterdir())]
    if runs and seeded:
        raise ConfigError(f"--out {out} mixes fold<f>/ and seed<s>/ runs; pass a new --out (nothing was written)")
    if (runs and by_seed) or (seeded and not by_seed):
        held, wanted = ("one seed's fold<f>/ runs", "--seeds") if runs else ("seed<s>/ runs", "no --seeds")
        raise ConfigError(f"--out {out} holds a cross-validation of {held}, not one with {wanted}; pass a new --out "
                          "or the same options as before (nothing was written)")
    foreign = sorted(p.name for p in entries if p not in runs + seeded and p.name not in _SUMMARIES)
    if foreign or (entries and not runs + seeded):
        what = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "") if foreign else \
            ", ".join(p.name for p in entries)
        raise ConfigError(f"--out {out} holds files that are not a cross-validation's ({what}); pass a new --out "
                          "(nothing was written)")


def _run_or_empty(p: Path) -> bool:
    """``p`` is an empty folder or a training run's (its ``config.yaml``, or only the ``.lock`` a run
    takes before writing it and the partial write of a run killed while writing config.yaml, which
    ``train`` removes), not a user's folder that happens to be called ``fold2``."""
    return (p / "config.yaml").is_file() or all(
        q.name == ".lock" or (q.is_file() and is_partial_write(q.name, ("config.yaml",))) for q in p.iterdir())


def _numbered(p: Path, prefix: str) -> bool:
    """``p`` is a folder named ``<prefix><digits>``."""
    return p.is_dir() and p.name.startswith(prefix) and p.name[len(prefix):].isdigit()


def _other_config(run: Path, cfg: Config) -> Optional[str]:
    """The first difference between the configuration a finished fold ran with (its
    ``config.yaml``) and ``cfg`` (the progress bar aside); None when they agree."""
    path = run / "config.yaml"
    if not path.is_file():
        return f"no {path.name} beside its metrics.json"
    return config_difference(path, cfg, _without_progress_bar, trained_dataset(run))


def _without_progress_bar(cfg: Config) -> Dict[str, object]:
    """What a fold folder must share with the command: all but the progress bar and where the data
    lies (it may move, as for pase train --resume)."""
    d = to_dict(cfg)
    d["train"].pop("progress_bar", None)
    return without_locations(d)
