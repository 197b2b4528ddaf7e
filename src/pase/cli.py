"""``pase`` command line: a thin view of the Python API.

    pase train [--config FILE] [--set key=value ...] [--out DIR] [--resume DIR]
    pase evaluate --checkpoint CKPT [--config FILE]
    pase predict --checkpoint CKPT [--config FILE] [--split NAME] --output FILE.csv
    pase data inspect PATH

Errors print one line (``pase: error: ...``) on stderr and exit with status 2; ``--debug``
shows the traceback. ``data inspect`` prints its report on stdout and, when the file has
problems, the first one as the error line (exit status 1). Under DDP only rank 0 prints results;
an error is printed by every rank that meets it, the ranks above 0 naming themselves (``pase (rank 1):
error: ...``), so a rank's own failure is never hidden; an interruption during training by rank 0, which
stops the other ranks (docs/reliability.md: the DDP start-up case).
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import math
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Dict, Optional, Sequence

from .errors import RESUME_ADVICE, RunInterrupted, peer_stopped
from .io import NOT_WRITABLE, not_writable

__all__ = ["main", "format_table"]


def format_table(metrics: Dict[str, Dict[str, float]], title: str = "") -> str:
    """A Markdown table: one row per split, one column per metric."""
    splits = list(metrics)
    names = list(next(iter(metrics.values())))
    lines = [title] if title else []
    lines.append("| split | " + " | ".join(names) + " |")
    lines.append("|---|" + "---|" * len(names))
    for s in splits:
        lines.append(f"| {s} | " + " | ".join(f"{metrics[s][n]:.4f}" for n in names) + " |")
    return "\n".join(lines)


#: the default run folder rank 0 chose (``runs/<method>-<time>``), for the DDP ranks it starts
_DEFAULT_RUN_ENV = "PASE_DEFAULT_RUN_DIR"


def _cmd_train(args: argparse.Namespace) -> int:
    from lightning.pytorch.utilities import rank_zero_only

    from .config import load_config
    from .training import train
    from .training.run import check_run_folder, no_selection

    for flag, value in (("--resume", args.resume), ("--out", args.out)):
        if value is not None and not value.strip():  # `--resume "$RUN"` with RUN unset started a new run (review)
            fix = "the run folder to continue" if flag == "--resume" else "a new run folder, or no --out for runs/"
            raise ValueError(f"{flag} {value!r}: an empty path; pass {fix} (nothing was written)")
    if args.resume is not None:
        if args.out or args.config:
            raise ValueError(f"--resume {args.resume} continues that folder with its own config.yaml; drop "
                             f"{' and '.join(o for o, v in (('--out', args.out), ('--config', args.config)) if v)} "
                             "(--set may change only how long and where it trains)")
        out = Path(args.resume)
        check_run_folder(out, resume=True)  # before its config.yaml is read
        cfg = load_config(out / "config.yaml", args.set)
    else:
        cfg = load_config(args.config, args.set)
        default = Path("runs") / time.strftime(f"{cfg.method}-%Y%m%d-%H%M%S")
        if args.out is None and _who() != "pase" and os.environ.get(_DEFAULT_RUN_ENV):
            # a DDP worker re-runs this command tens of seconds later: its clock named another folder, and
            # its messages pointed at one that did not exist (a review); rank 0 passes its choice on
            default = Path(os.environ[_DEFAULT_RUN_ENV])
        out = Path(args.out) if args.out is not None else default
        if args.out is None and _who() == "pase":
            os.environ[_DEFAULT_RUN_ENV] = str(out)  # inherited by the ranks Lightning starts
    args.run_dir = out  # for the advice of an interrupt outside the training loop
    result = train(cfg, out, resume=args.resume is not None, quiet=args.quiet)
    if rank_zero_only.rank != 0:  # a DDP worker: rank 0 reports
        return 0
    none = no_selection(result)  # "none: valid/<monitor> never finite"
    chosen = (f"no validation selection, {none.partition(': ')[2]}: epoch {result['best_epoch']} kept" if none
              else f"selected on valid/{result['monitor']}, epoch {result['best_epoch']}")
    title = (f"{result['dataset']} / {result['method']} / seed {result['seed']} / protocol "
             f"{result['protocol']} ({chosen})")
    print(format_table({"valid": result["valid"], "test": result["test"]}, title))
    print(f"run written to {out} ({result['elapsed_s']:.1f} s)")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .config import load_config
    from .training import evaluate

    cfg = load_config(args.config, args.set) if args.config else None
    res = evaluate(args.checkpoint, cfg, splits=args.splits.split(","), overrides=() if args.config else args.set)
    named = {k: getattr(res, k, None) for k in ("dataset", "protocol")}  # every result names its protocol
    title = f"{args.checkpoint} / {named['dataset']} / protocol {named['protocol']}"
    if args.json:  # stdout is one strict JSON object (NaN, e.g. Corr of a constant prediction, is null)
        print(format_table(res, title), file=sys.stderr)
        print(json.dumps({**named, **{s: {k: (v if math.isfinite(v) else None) for k, v in m.items()}
                                      for s, m in res.items()}}, allow_nan=False))
    else:
        print(format_table(res, title))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from .config import load_config
    from .training import predict

    cfg = load_config(args.config, args.set) if args.config else None
    n = predict(args.checkpoint, args.output, cfg, split=args.split, overrides=() if args.config else args.set)
    print(f"wrote {n} rows to {args.output}")
    return 0


#: what --features reads as "leave this modality out": YAML's null, as a config's features.<m>: null
_NULLS = ("null", "Null", "NULL", "~")


def _feature_pairs(flag: str, earlier: Dict[str, Optional[str]]) -> Dict[str, Optional[str]]:
    """One ``--features`` value as modality -> folder (None: left out); a modality named twice, in this
    value or in an ``earlier`` one, is refused rather than the first silently dropped."""
    pairs = [x.split("=", 1) for x in flag.split(",") if x.strip()]
    if not pairs or any(len(kv) != 2 or not kv[0].strip() for kv in pairs):
        raise ValueError(f"--features {flag!r} is not MODALITY=FOLDER pairs, for example "
                         "--features audio=wav2vec-large-c-UTT,text=deberta-large-4-UTT (vision=null leaves "
                         "vision out)")
    empty = next((k.strip() for k, v in pairs if not v.strip()), None)
    if empty is not None:
        raise ValueError(f"--features {flag!r}: modality {empty!r} has no folder name; name its "
                         f"folder, or {empty}=null to leave it out")
    out: Dict[str, Optional[str]] = {}
    for k, v in pairs:
        k = k.strip()
        if k in out or k in earlier:
            raise ValueError(f"--features names modality {k!r} twice; name each modality once (one --features "
                             "flag, or several naming different modalities)")
        # null leaves a modality out, as data.options.features.<m>: null does (the YAML spellings of null)
        out[k] = None if v.strip() in _NULLS else v.strip()
    return out


def _cmd_data_inspect(args: argparse.Namespace) -> int:
    from .data.inspect import inspect_path

    features = None
    if args.features:  # the flag may be repeated, as --set is: its pairs are merged
        features = {}
        for flag in args.features:
            features.update(_feature_pairs(flag, features))
    report = inspect_path(args.path, dataset=args.dataset, feature_root=args.feature_root, features=features)
    print(report.text)
    if report.ok:
        return 0
    more = f" (and {len(report.problems) - 1} more, listed above)" if len(report.problems) > 1 else ""
    print(f"pase: error: {report.problems[0].splitlines()[0]}{more}", file=sys.stderr)
    return 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pase", description="PaSE multimodal sentiment toolkit")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one configuration (default: the built-in benchmark)")
    t.add_argument("--config", help="YAML config (see configs/)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    t.add_argument("--out", help="run directory (must not hold files)")
    t.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(fn=_cmd_train)

    e = sub.add_parser("evaluate", help="re-evaluate a saved checkpoint")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--config")
    e.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    e.add_argument("--splits", default="valid,test")
    e.add_argument("--json", action="store_true", help="print the metrics as one JSON object on stdout: "
                                                        "'dataset', 'protocol' and split -> metrics (the table "
                                                        "goes to stderr; NaN becomes null)")
    e.set_defaults(fn=_cmd_evaluate)

    pr = sub.add_parser("predict", help="write per-sample predictions as CSV")
    pr.add_argument("--checkpoint", required=True)
    pr.add_argument("--config")
    pr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    pr.add_argument("--split", default="test")
    pr.add_argument("--output", required=True)
    pr.set_defaults(fn=_cmd_predict)

    d = sub.add_parser("data", help="data tools")
    dsub = d.add_subparsers(dest="data_command", required=True)
    di = dsub.add_parser("inspect", help="detect a file's format and report its content and problems")
    di.add_argument("path")
    di.add_argument("--dataset", default=None,
                    help="the dataset when the path does not tell (for example mosi, mosei, sims, iemocap4)")
    di.add_argument("--feature-root", default=None,
                    help="GCNet / MoMKE: the features folder (default: <label folder>/features), as "
                         "data.options.feature_root")
    di.add_argument("--features", action="append", default=None, metavar="MODALITY=FOLDER,...",
                    help="GCNet / MoMKE: feature folder names other than the defaults, as data.options.features "
                         "(MODALITY=null leaves a modality out); may be repeated, each modality named once")
    di.set_defaults(fn=_cmd_data_inspect)
    _register_extra(sub)
    return p


def _register_extra(sub) -> None:
    """Commands of the evaluation suite (compare, report, diagnose) when available."""
    try:
        from .evaluation.cli import register
    except ImportError:
        return
    register(sub)


def _interrupt_advice(args: argparse.Namespace) -> str:
    """What to run after Ctrl-C outside a training loop; every file is written atomically, so the
    same command (or a resume) continues."""
    if args.command == "train" and getattr(args, "run_dir", None) is not None:
        if not (Path(args.run_dir) / "config.yaml").is_file():  # stopped before the run folder was written
            return "; no run folder was written: run the same pase train command again"
        return f"; finished epochs are kept: continue with pase train --resume {args.run_dir}"
    if args.command in ("compare", "crossval"):
        return f"; run the same pase {args.command} command again to continue (finished runs are kept)"
    if args.command in ("diagnose", "report", "predict", "evaluate"):
        return f"; run the same pase {args.command} command again (what it was writing is redone)"
    return ""


def _who() -> str:
    """``pase``, or ``pase (rank N)`` in a DDP worker of rank N > 0 (Lightning sets its environment)."""
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0)
    return f"pase (rank {rank})" if rank else "pase"


_WARNINGS = {"depth": 0, "saved": None}
_WARNINGS_LOCK = threading.Lock()


def _one_warning_line(message, category, *_, **__) -> str:
    """The first line of a warning (torch.compile's carry a quoted source line and ``^^^`` markers:
    two six-line blocks per compiled run broke the one-line rule; a review); `` [...]`` marks a cut."""
    lines = [ln for ln in str(message).strip().splitlines() if ln.strip()] or [""]
    return f"{_who()}: warning: {lines[0].rstrip()}{' [...]' if len(lines) > 1 else ''}\n"


def _one_line_warnings(on: bool) -> None:
    """While a command runs, a library's warning prints as one ``pase: warning:`` line, without its
    file and source line. Counted, so overlapping calls of :func:`main` (threads, nesting) restore
    Python's format only when the last one ends."""
    with _WARNINGS_LOCK:
        if on:
            if _WARNINGS["depth"] == 0:
                _WARNINGS["saved"] = warnings.formatwarning
                warnings.formatwarning = _one_warning_line
            _WARNINGS["depth"] += 1
        else:
            _WARNINGS["depth"] -= 1
            if _WARNINGS["depth"] == 0:
                warnings.formatwarning = _WARNINGS["saved"]


#: the options and arguments that name a file or folder (of every command)
_PATH_ARGS = ("config", "out", "resume", "checkpoint", "output", "path", "feature_root", "dir")


def _check_path_args(args: argparse.Namespace) -> None:
    """Every command's paths: an empty one (an unset ``$RUN``) is refused, as is an output folder below
    a file, before any work (``pase train`` checked both; compare and diagnose wrote into the current
    folder for ``--out ""`` and failed with a bare Errno 20 below a file, after loading the data: a
    review)."""
    for name in _PATH_ARGS:
        value = getattr(args, name, None)
        flag = f"--{name.replace('_', '-')}" if name not in ("path", "dir") else name.upper()
        own = getattr(args, "fn", None) is _cmd_train and name in ("out", "resume")  # its own advice (_cmd_train)
        if isinstance(value, str) and not value.strip() and not own:
            raise ValueError(f"{flag} {value!r}: an empty path; pass a file or folder (nothing was written)")
        if name in ("out", "output") and isinstance(value, str):
            target = Path(value)
            above = next((q for q in target.absolute().parents if q.exists()), None)
            if not target.exists() and above is not None and not above.is_dir():
                raise ValueError(f"{flag} {value}: {above} is a file, not a folder; pass another {flag} "
                                 "(nothing was written)")
            # a read-only parent (or mount) failed with a bare "[Errno 13]" / "[Errno 30]" line, for pase train
            # after the data loaded (a review)
            if not target.exists() and above is not None and not os.access(above, os.W_OK | os.X_OK):
                raise ValueError(f"{flag} {value}: cannot create it, {above} {not_writable()}; pass another {flag} "
                                 "(nothing was written)")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    # `--out=~/runs/a` (the shell leaves that `~`) put the checkpoints under $HOME (Lightning expands it) and
    # the rest in a folder named `~` (review): every path option is expanded once, as data paths are
    for name in _PATH_ARGS:
        value = getattr(args, name, None)
        if isinstance(value, str):
            setattr(args, name, os.path.expanduser(value))
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    previous = _raise_on_sigterm()
    _one_line_warnings(True)
    leaving = None  # the exit status of an interruption, once its line is printed
    try:
        _check_path_args(args)
        return args.fn(args)
    except RunInterrupted as e:  # a training loop's (with its advice), or a SIGTERM elsewhere
        print(f"{_who()}: interrupted: {e if e.advice else e.message + _interrupt_advice(args)}", file=sys.stderr)
        leaving = 143 if e.signal == "SIGTERM" else 130
        return leaving
    except KeyboardInterrupt:  # outside a training loop (metrics.json, a diagnosis, a report): say what to do
        print(f"{_who()}: interrupted{_interrupt_advice(args)}", file=sys.stderr)
        leaving = 130
        return leaving
    except Exception as e:  # noqa: BLE001 - one line for the user, traceback with --debug
        if args.debug:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        advice = getattr(e, RESUME_ADVICE, None)  # an error that stopped a DDP run's training
        # gloo's raw "Connection closed by peer ... GLHF!" named neither cause nor rank (a review); only an error that
        # stopped a DDP run's training (it carries the resume advice): a one-process error is printed as it is
        if advice and peer_stopped(e):
            msg = "another process of this DDP run stopped (its error is printed above)"
        if advice:
            msg += f"; {advice}"
        if isinstance(e, KeyError) and msg.startswith(("'", '"')):
            msg = msg[1:-1]
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT) and "--resume" not in msg:
            msg += "; free space" + (_interrupt_advice(args) or ", then run the same command again")
        elif isinstance(e, OSError) and e.errno in NOT_WRITABLE:
            msg += "; pass a path this user may write to (or read, for an input), or change its permissions"
        print(f"{_who()}: error: {msg}", file=sys.stderr)
        return 2
    finally:
        _one_line_warnings(False)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if leaving is not None and argv is None:  # the process itself (its command line), not a caller's main([...])
            _exit_at_the_next_signal(leaving)


def _exit_at_the_next_signal(status: int) -> None:
    """After an interruption's line, the process is on its way out: a second Ctrl-C (or a SIGTERM) during the
    interpreter's shutdown raised KeyboardInterrupt in an atexit callback (torch's), whose traceback broke the
    one-line rule (a review). From here either signal ends the process at once with ``status``, quietly; it
    still stops (ignoring the signals instead could leave a DDP rank or a comparison hanging in its shutdown
    unstoppable), every file is written atomically, and a comparison's workers end with their parent."""
    if threading.current_thread() is not threading.main_thread():
        return

    def now(signum, frame) -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a closed or broken stream: nothing more to say
                pass
        os._exit(status)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, now)


def _on_sigterm(signum, frame) -> None:
    raise RunInterrupted("stopped by SIGTERM", "SIGTERM")


def _raise_on_sigterm():
    """SIGTERM outside a training loop (writing metrics.json, a diagnosis, a report) stops with one
    line and exit 143 like Ctrl-C, instead of a silent kill; every file is written atomically. Inside
    ``fit`` Lightning's own handler takes over (``training.run._lightning_handles_sigterm``). Returns
    the previous handler, or None where none can be set (not the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _on_sigterm)


if __name__ == "__main__":
    sys.exit(main())
