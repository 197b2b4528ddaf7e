"""Commands of the evaluation suite, registered on the ``pase`` command line by ``pase.cli``.

    pase compare [--config FILE] [--set key=value ...] --methods a,b --seeds 5 --out DIR
                 [--jobs N] [--no-diagnose] [--alone] [--reference NAME] [--noise-levels 0,0.5,1,2]
    pase report DIR
    pase diagnose --checkpoint CKPT --out DIR [--split test] [--set KEY=VALUE] [--noise-levels ...] [--no-probes]

Each command is a view of one public function (``compare``, ``report``, ``diagnose``); errors
propagate as exceptions, which the main CLI turns into one-line messages.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Dict, List

from ..config import ConfigError

__all__ = ["register"]


def _levels(text: str) -> List[float]:
    from .robustness import unique_levels

    try:
        levels = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        levels = []
    if not levels or not all(math.isfinite(x) and x >= 0 for x in levels):
        raise argparse.ArgumentTypeError(f"--noise-levels {text!r}: expected non-negative numbers like 0,0.5,1,2")
    return unique_levels(levels)


def _refuse_overridden_sets(command: str, sets: List[str], flags: Dict[str, str]) -> None:
    """Refuse a ``--set KEY=...`` that sets a key of ``flags`` (key -> the flag that chooses it), which the
    command sets itself in every run: it was accepted and silently overridden (review). Also when a parent
    key's mapping holds it (``--set 'data.options={fold: 3}'``: a later review)."""
    import yaml

    for item in sets:
        key, _, value = (part.strip() for part in item.partition("="))
        for flag_key, flag in flags.items():
            hit = key == flag_key
            if not hit and flag_key.startswith(key + "."):  # a mapping for a parent key: look inside it
                try:
                    node = yaml.safe_load(value)
                except yaml.YAMLError:
                    node = None  # the configuration's own parser names it
                for part in flag_key[len(key) + 1:].split("."):
                    node = node.get(part) if isinstance(node, dict) else None
                hit = node is not None
            if hit:
                raise ConfigError(f"--set {item}: pase {command} sets {flag_key} itself in every run, so this value "
                                  f"would be overridden; choose it with {flag} (nothing was written)")


def _cmd_compare(args: argparse.Namespace) -> int:
    from ..config import ConfigError, load_config
    from ..errors import RunInterrupted
    from ..methods import METHODS
    from ..registry import unknown_name_message
    from .compare import compare, parse_methods
    from .report import summary_tables, unselected_line

    _refuse_overridden_sets("compare", args.set, {"method": "--methods", "train.seed": "--seeds"})
    cfg = load_config(args.config, args.set)
    for name in parse_methods(args.methods):  # before any run trains (the API runs the others, then fails)
        if name not in METHODS:
            raise ConfigError(f"--methods: {unknown_name_message('method', name, METHODS.names())} "
                              "(nothing was trained)")
    try:
        summary = compare(cfg, args.methods, args.seeds, args.out, jobs=args.jobs, diagnose=args.diagnose,
                          alone=args.alone, reference=args.reference, noise_levels=args.noise_levels, progress=print)
    except RunInterrupted as e:  # the advice is the comparison's, not one run folder's
        raise _rerun(e, "compare", "comparison") from None
    tables = summary_tables(summary)
    if tables:
        t = tables[0]
        print(f"{summary.get('dataset', '')}, protocol {summary.get('protocol', 'n/a')}: {t['title']}")
        print("| " + " | ".join(t["headers"]) + " |")
        for row in t["rows"]:
            print("| " + " | ".join(str(c) for c in row) + " |")
    if summary.get("code_warning"):
        print(f"pase compare: warning: {summary['code_warning']}", file=sys.stderr)
    if summary.get("unselected"):
        print(f"pase compare: warning: {unselected_line(summary)}", file=sys.stderr)
    failed = len(summary["failed"])
    note = f" ({failed} run(s) failed, see the summary)" if failed else ""
    print(f"summary written to {args.out}/summary.md{note}")
    problems = _problems("pase compare", summary, Path(args.out), alone=args.alone, runs=False)
    return 1 if failed or problems else 0


def _problems(command: str, summary, out: Path, alone: bool, runs: bool = True) -> List[str]:
    """Print (stderr) and return one line per kind of failure in a comparison folder: runs that
    failed or never finished (``runs``), failed diagnoses, failed unimodal references."""
    lines = []
    bad_runs = [r for r in summary["runs"] if r["status"] != "ok"]
    if runs and bad_runs:
        kinds = ", ".join(f"{sum(r['status'] == k for r in bad_runs)} {k}" for k in ("failed", "missing", "other configuration")
                          if any(r["status"] == k for r in bad_runs))
        lines.append(f"{command}: {len(bad_runs)} run(s) left out of the tables ({kinds}), for example "
                     f"{bad_runs[0]['method']} seed {bad_runs[0]['seed']}: {bad_runs[0]['error'][:600]}")
    bad = [r for r in summary["runs"] if r.get("diagnose_error")]
    if bad:
        lines.append(f"{command}: diagnostics failed or missing for {len(bad)} run(s), for example {bad[0]['method']} seed "
                     f"{bad[0]['seed']}: {bad[0]['diagnose_error']}")
    seeds = {str(s) for s in summary.get("seeds", [])}  # this comparison's (another call's leftovers are not)
    refs = sorted(p.parent for name in ("FAILED.txt", "DIAGNOSE_FAILED.txt")
                  for p in out.glob(f"alone/*/seed*/{name}") if p.parent.name[4:] in seeds) if alone else []
    if refs:
        lines.append(f"{command}: {len(refs)} unimodal reference(s) failed, for example {refs[0]}")
    for line in lines:
        print(line, file=sys.stderr)
    return lines


def _cmd_report(args: argparse.Namespace) -> int:
    from ..io import user_path
    from .compare import lock_comparison, unlock_comparison
    from .report import load_comparison, report, unselected_line

    out = user_path(args.dir)
    lock, running = None, False
    if (out / "runs").is_dir():  # the comparison lock from reading the runs to rewriting summary.*: a pase compare
        # ending meanwhile wrote its final summary, which the report then replaced with its older one (a review)
        try:
            lock = lock_comparison(out, "pase report")
        except ConfigError:  # a compare (or another report) holds it: summary.* is left to that command
            running = True
    try:
        summary = load_comparison(args.dir)  # read once: the report and the lines about its failed runs
        files = report(args.dir, summary, rewrite_summary=not running)
    finally:
        unlock_comparison(out, lock)
    figures = sum(name.endswith((".png", ".csv")) and name != "summary.csv" for name in files)
    rewritten = ("summary.md, .csv and .json rewritten" if not running else
                 f"summary.* not rewritten: another pase command holds {out / '.compare.lock'} (a compare writes "
                 "them when it finishes; after an interrupted one, run pase report again)")
    print(f"report written to {files['report.html']} and {files['report.md']} ({figures} figure files; {rewritten})")
    if summary.get("unselected"):
        print(f"pase report: warning: {unselected_line(summary)}", file=sys.stderr)
    _problems("pase report", summary, Path(args.dir), alone=(Path(args.dir) / "alone").is_dir())
    return 0


def _cmd_diagnose(args: argparse.Namespace) -> int:
    from .shapley_report import diagnose

    res = diagnose(args.checkpoint, args.out, split=args.split, noise_levels=args.noise_levels, probes=args.probes,
                   overrides=args.set)
    print(f"{res.get('dataset', '')}, protocol {res.get('protocol', 'n/a')}")
    shares = res["shapley"]["neg_loss"]["shares"]
    print(f"{res['split']} Shapley shares (negative loss): " + ", ".join(f"{m} {v:.3f}" for m, v in shares.items()))
    rob = res["robustness"]
    print(f"robustness ({rob['metric']}): all {rob['full']:.4f}, missing-modality ratio {rob['missing_relative']:.3f}, "
          f"noise ratio {rob['noise_relative']:.3f}")
    print(f"diagnostics written to {args.out}")
    return 0


def _rerun(e, command: str, what: str):
    """The interruption ``e`` of one run inside ``pase <command>``, advising the whole command."""
    from ..errors import RunInterrupted

    return RunInterrupted(e.message, e.signal, f"run the same pase {command} command again to continue the {what} "
                          "(finished runs are kept, interrupted ones continue from their checkpoints)")


def _cmd_crossval(args: argparse.Namespace) -> int:
    from ..config import load_config
    from .folds import cross_validate, unselected_folds

    # without --seeds one run per fold takes train.seed, which --set may choose
    _refuse_overridden_sets("crossval", args.set, {"data.options.fold": "--folds",
                                                   **({"train.seed": "--seeds"} if args.seeds is not None else {})})
    try:
        folds = [int(f) for f in args.folds.split(",") if f.strip()]
    except ValueError:
        raise ConfigError(f"--folds {args.folds!r} is not a comma list of fold numbers, for example --folds 1,2,3,4,5") \
            from None
    seeds = None
    if args.seeds is not None:
        from .compare import parse_seeds
        try:
            seeds = parse_seeds(args.seeds)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    from ..errors import RunInterrupted

    try:
        summary = cross_validate(load_config(args.config, args.set), args.out, folds, seeds)
    except RunInterrupted as e:  # the advice is the cross-validation's, not one fold's run folder
        raise _rerun(e, "crossval", "cross-validation") from None
    print(open(Path(args.out) / "folds_summary.md").read(), end="")
    if summary.get("code_warning"):
        print(f"pase crossval: warning: {summary['code_warning']}", file=sys.stderr)
    if summary.get("unselected"):
        print(f"pase crossval: warning: {unselected_folds(summary)}", file=sys.stderr)
    return 0


def register(subparsers) -> None:
    """Add ``compare``, ``report`` and ``diagnose`` to the ``pase`` sub-command parser."""
    from .defaults import DEFAULT_METHODS, DEFAULT_NOISE_LEVELS

    levels = ",".join(f"{x:g}" for x in DEFAULT_NOISE_LEVELS)
    c = subparsers.add_parser("compare", help="train several methods over several seeds and compare them")
    c.add_argument("--config", help="YAML config shared by every run (see configs/)")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    c.add_argument("--methods", default=",".join(DEFAULT_METHODS), help="comma list of methods")
    c.add_argument("--seeds", default="5", help="a count N (MMSA seeds 1111..1110+N) or a comma list")
    c.add_argument("--out", required=True, help="comparison folder (an existing one of the same config resumes)")
    c.add_argument("--jobs", type=int, default=1, help="parallel worker processes")
    c.add_argument("--diagnose", action=argparse.BooleanOptionalAction, default=True,
                   help="per-run test-split Shapley values, probes and robustness (default: on)")
    c.add_argument("--alone", action="store_true", help="also train each modality alone (probe-deficit reference)")
    c.add_argument("--reference", default=None, help="method of the paired comparison, one of --methods "
                                                      "(default: late_fusion when compared)")
    c.add_argument("--noise-levels", type=_levels, default=list(DEFAULT_NOISE_LEVELS), metavar=levels,
                   help=f"robustness noise levels in units of each feature's train std (default {levels})")
    c.set_defaults(fn=_cmd_compare)

    x = subparsers.add_parser("crossval", help="train every data fold (IEMOCAP sessions) and report the mean")
    x.add_argument("--config", help="YAML config (its data source must take a 'fold' option)")
    x.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    x.add_argument("--folds", default="1,2,3,4,5", help="comma list of folds")
    x.add_argument("--seeds", default=None,
                   help="training seeds: a count N (MMSA seeds 1111..1110+N) or a comma list; every seed trains "
                        "every fold (default: the config's train.seed)")
    x.add_argument("--out", required=True, help="folder for fold<f>/ runs (seed<s>/fold<f>/ with --seeds) and "
                                                "folds_summary.json/.md")
    x.set_defaults(fn=_cmd_crossval)

    r = subparsers.add_parser("report", help="figures, report.md and report.html of a comparison folder")
    r.add_argument("dir", help="the --out folder of pase compare")
    r.set_defaults(fn=_cmd_report)

    d = subparsers.add_parser("diagnose", help="Shapley values, probes and robustness of one checkpoint")
    d.add_argument("--checkpoint", required=True)
    d.add_argument("--out", required=True, help="folder for diagnostics.json/.csv, robustness.csv, trajectory.csv")
    d.add_argument("--split", default="test")
    d.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change the checkpoint's configuration as for pase evaluate (moved data: data.path=NEW)")
    d.add_argument("--noise-levels", type=_levels, default=list(DEFAULT_NOISE_LEVELS), metavar=levels)
    d.add_argument("--probes", action=argparse.BooleanOptionalAction, default=True, help="fit linear probes")
    d.set_defaults(fn=_cmd_diagnose)
