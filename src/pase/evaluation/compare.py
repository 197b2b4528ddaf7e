"""Multi-seed comparison of training methods: runs, per-run diagnostics, statistics, summary.

``compare(cfg, methods, seeds, out_dir)`` trains every (method, seed) pair of one configuration
into ``out_dir/runs/<method>/seed<seed>/`` (``pase.training.train``: selection on the validation
split only, the test split evaluated once from the selected checkpoint), optionally diagnoses
each run (``pase.evaluation.shapley_report.diagnose``: test-split Shapley values, probes,
robustness) and writes ``summary.csv`` / ``summary.md`` / ``summary.json``.

* A failed run does not stop the others: its one-line error goes to ``FAILED.txt`` in its folder
  and to the summary (a full disk is no run's failure: it stops the comparison with the run's own error,
  and no FAILED.txt). Calling ``compare`` again resumes: runs whose ``metrics.json`` exists are
  skipped, interrupted runs continue from ``checkpoints/last.ckpt``, failed runs start afresh (the
  failed folder set aside, not deleted); a run another process holds (its lock) is reported and
  left alone.
* ``jobs > 1`` runs them in a ``ProcessPoolExecutor`` (spawned workers, one torch thread each).

Statistics (``describe``, ``paired_difference``): over the n seeds of a method, the mean, the
sample standard deviation s (n - 1 denominator) and the 95% t-interval
mean +- t_{0.975, n-1} s / sqrt(n); against the reference method, the same for the per-seed
differences d_s = metric(method, s) - metric(reference, s) (a paired t-interval; "excludes 0"
means the difference is significant at the 5% level, two-sided, without multiplicity correction;
never when the differences are all equal, SD 0, which is no evidence and reads "n/a (SD 0)").
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import json
import logging
import math
import multiprocessing
import os
import re
import shutil
import signal
import statistics
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .. import __version__, code_fingerprint
from ..config import PASE_CHOICES, Config, ConfigError, config_difference, save_config, to_dict
from ..errors import RunInterrupted
from ..io import (NOT_WRITABLE, atomic_write_json, atomic_write_text, is_partial_write, remove_partial_writes, can_lock,
                  not_writable, try_lock, user_path)
from ..parent_watch import exit_with_parent
from ..data.contract import READ_CHANGED, fingerprint, fingerprint_difference
from ..methods.base import METHODS, Method
from ..methods.ogm_ge import check_modalities as check_ogm_modalities
from ..models.build import check_encoders
from ..data.registry import DATA_SOURCES, source_task_kind
from ..training.checkpoint import CheckpointWriteError, safe_load_checkpoint
from ..training.lightning_module import check_optimizer
from ..training.run import (RunDirError, _check_first_epoch_leftovers, check_trained_as, check_trainer_settings,
                            data_location_keys, data_options, load_bundle, load_checkpoint, lock_run, no_selection,
                            run_files, train, trained_dataset, without_data_location, without_locations)
from .defaults import DEFAULT_METHODS
from .probes import probe_model
from .robustness import DEFAULT_NOISE_LEVELS, aggregate_conditions, headline_metric, same_levels, unique_levels
from .shapley_report import diagnose, read_csv

__all__ = ["DEFAULT_METHODS", "MMSA_FIRST_SEED", "parse_seeds", "parse_methods", "t_quantile", "describe",
           "paired_difference", "spread_is_zero", "sd_is_zero", "main_metrics", "compare", "summarize",
           "check_methods_can_start"]

log = logging.getLogger("pase")
MMSA_FIRST_SEED = 1111  # MMSA's seeds 1111, 1112, ...
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
#: worker start method: "spawn", because a forked child of a process that already ran OpenMP
#: threads (libgomp) can hang; each worker then imports torch and lightning once
START_METHOD = "spawn"


# ---------------------------------------------------------------------------- arguments
def parse_seeds(spec: int | str | Sequence[int]) -> List[int]:
    """Seeds from a count (``5`` or ``"5"``: 1111..1115) or an explicit list (``"1111,1113"``,
    ``"7,"`` for the single seed 7, or a sequence of ints)."""
    if isinstance(spec, str):
        parts = [p.strip() for p in spec.split(",")]
        if len(parts) == 1:
            spec = int(parts[0]) if parts[0].lstrip("-").isdigit() else _bad_seeds(spec)
        else:
            try:
                spec = [int(p) for p in parts if p]
            except ValueError:
                _bad_seeds(spec)
    if isinstance(spec, int):
        if not 1 <= spec <= 1000:  # '-1,' is no seed either: no advice to write it (review)
            one = (f"write '{spec},' for that one seed" if 0 <= spec <= 2**32 - 1 else
                   f"a seed lies in 0 to {2**32 - 1} (numpy's seed range)")
            raise ValueError(f"--seeds {spec}: a single number is a count of MMSA seeds (1 to 1000, "
                             f"{MMSA_FIRST_SEED}, {MMSA_FIRST_SEED + 1}, ...); {one}")
        return list(range(MMSA_FIRST_SEED, MMSA_FIRST_SEED + spec))
    seeds = [int(s) for s in spec]
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:  # dropped silently before: '1111,1111' ran one seed where two were asked for
        raise ValueError(f"--seeds {','.join(map(str, seeds))} names seed {twice[0]} twice; a seed's run is "
                         "deterministic, so name each seed once (for more seeds, add other ones)")
    if not seeds:
        raise ValueError("--seeds: no seed given")
    bad = [s for s in seeds if not 0 <= s <= 2**32 - 1]
    if bad:  # as train.seed: every run would start and fail inside numpy
        raise ValueError(f"--seeds: seed {bad[0]} is outside 0 to {2**32 - 1} (numpy's seed range)")
    return seeds


def _bad_seeds(spec: str):
    raise ValueError(f"--seeds {spec!r} is neither a count (5) nor a comma list of integers (1111,1112)")


def parse_methods(spec: str | Sequence[str]) -> List[str]:
    """Method names from ``"a,b"`` or a sequence (order kept; a name given twice is refused). Unknown
    names are not rejected here: their runs fail and are reported, the others go on."""
    names = [m.strip() for m in (spec.split(",") if isinstance(spec, str) else spec) if m.strip()]
    for m in names:
        if not _NAME.match(m):
            raise ValueError(f"method name {m!r} may only hold letters, digits, '_', '.', '-' (it names a folder)")
    if not names:
        raise ValueError("--methods: no method given (for example late_fusion,pase)")
    twice = [m for m in dict.fromkeys(names) if names.count(m) > 1]
    if twice:  # dropped silently before
        raise ValueError(f"--methods {','.join(names)} names {twice[0]} twice; name each method once")
    return names


# ---------------------------------------------------------------------------- statistics
def _t_cdf(t: float, df: float) -> float:
    """Student-t CDF by Simpson's rule (2,000 panels) after the substitution t = sqrt(df) tan(theta):
    the density becomes c sqrt(df) cos(theta)^(df - 1) on [0, atan(|t| / sqrt(df))], bounded for any t
    (integrated over t itself, panels wider than the density's peak at |t| in the hundreds made the
    CDF wrong and even decreasing; tested against SciPy to p = 0.99999 and df = 1)."""
    if t < 0:
        return 1.0 - _t_cdf(-t, df)
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(math.pi)  # c sqrt(df)
    n, h = 2000, math.atan(t / math.sqrt(df)) / 2000
    f = [c * math.cos(i * h) ** (df - 1) for i in range(n + 1)]
    return 0.5 + h / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))


@functools.lru_cache(maxsize=256)
def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with ``df`` degrees of freedom (bisection on the CDF).

    >>> round(t_quantile(0.975, 4), 3), round(t_quantile(0.975, 1), 3)
    (2.776, 12.706)
    """
    if not 0 < p < 1 or not df > 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def describe(values: Sequence[float], level: float = 0.95) -> Dict[str, float]:
    """n, mean, sample SD and the ``level`` t-interval of the finite ``values`` (NaN where undefined)."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    nan = float("nan")
    mean = statistics.fmean(xs) if n else nan
    sd = statistics.stdev(xs) if n > 1 else nan
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n) if n > 1 else nan
    return {"n": n, "mean": mean, "sd": sd, "ci_low": mean - half, "ci_high": mean + half}


SD_ZERO_EPS = 1e-9  # an SD this small relative to max(1, |mean|) is 0 to rounding


def spread_is_zero(sd: float, mean: float) -> bool:
    """Whether a sample SD ``sd`` of values averaging ``mean`` is 0 to rounding (every value the same).

    The one "SD 0" rule of ``pase compare``/``pase report`` and ``benchmarks/results_tables.py``: at
    most ``SD_ZERO_EPS`` relative to the values' magnitude ``|mean|``, with an absolute floor of
    ``SD_ZERO_EPS`` (metrics are O(1); a difference of two accuracies near 0.7 rounds at ~1e-16).
    A non-finite ``sd`` or ``mean`` (fewer than 2 values) is not 0.

    >>> spread_is_zero(1e-10, 0.7), spread_is_zero(1e-6, 0.7), spread_is_zero(1e-7, 1e3)
    (True, False, True)
    """
    return bool(math.isfinite(sd) and math.isfinite(mean) and sd <= SD_ZERO_EPS * max(1.0, abs(mean)))


def sd_is_zero(d: Dict[str, Any]) -> bool:
    """Whether the finite SD of ``describe``'s ``d`` is 0 to rounding: every value the same (``spread_is_zero``).

    >>> sd_is_zero({"mean": 0.05, "sd": 3.9e-17}), sd_is_zero({"mean": 0.05, "sd": 0.01})
    (True, False)
    """
    return spread_is_zero(d.get("sd", math.nan), d.get("mean", math.nan))


def paired_difference(a: Dict[int, float], b: Dict[int, float], level: float = 0.95) -> Dict[str, Any]:
    """``describe`` of a[s] - b[s] over the seeds s both have; adds ``excludes_zero`` and ``sd_zero``.

    Every pair differing by the same amount (SD 0 to rounding: two tied seeds, accuracies on a small
    test split) collapses the t-interval to a point; that is no evidence, so ``excludes_zero`` is
    False there and ``sd_zero`` True (the report says "n/a (SD 0)").
    """
    seeds = sorted(set(a) & set(b))
    d = describe([a[s] - b[s] for s in seeds], level)
    d["sd_zero"] = sd_is_zero(d)
    d["excludes_zero"] = bool(math.isfinite(d["ci_low"]) and not d["sd_zero"]
                              and (d["ci_low"] > 0 or d["ci_high"] < 0))
    return d


# ---------------------------------------------------------------------------- runs
@dataclasses.dataclass(frozen=True)
class _Job:
    kind: str  # "run" (a method on all modalities) | "alone" (late fusion on one modality)
    method: str
    seed: int
    out: str
    cfg: Config
    diagnose: bool
    noise_levels: Tuple[float, ...]
    modality: str = ""

    @property
    def label(self) -> str:
        who = f"{self.modality} alone" if self.kind == "alone" else self.method
        return f"{who} seed {self.seed}"


def _one_line(e: BaseException) -> str:
    raw = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)  # KeyError's str() is a repr
    text = raw.strip().splitlines()[0] if raw.strip() else ""
    return f"{type(e).__name__}: {text}"[:500] if text else type(e).__name__


def _train_into(cfg: Config, out: Path, bundle: Optional[Any] = None) -> None:
    """Continue an interrupted run, or start afresh. A run interrupted in its first epoch (its folder
    holds config.yaml, and maybe log.csv, an epoch-0 best.ckpt and partial writes: what
    ``pase train --resume`` restarts in place) restarts in place, one killed while writing config.yaml
    starts in its folder. The folder of a failed run is not deleted but set
    aside as ``.<name>.failed-<time>`` beside it (hidden from ``runs/*/seed*``), with its FAILED.txt and
    whatever checkpoints it holds; never while another process holds the folder's lock (it is training it)."""
    failed = (out / "FAILED.txt").is_file()
    if (out / "checkpoints" / "last.ckpt").is_file() and not failed:
        train(cfg, out, resume=True, quiet=True, bundle=bundle)
        return
    if not out.exists():
        train(cfg, out, quiet=True, bundle=bundle)
        return
    fd = lock_run(out)  # another process training this run (its first epoch): RunDirError, nothing touched
    try:
        files = set(run_files(out))
        # interrupted in its first epoch: restart it in place. Only config.yaml was taken for that, so a kill
        # between the epoch's writes (log.csv and best.ckpt written, last.ckpt not yet) was set aside as failed
        restart = not failed and "config.yaml" in files and _first_epoch_leftovers(out)
        # killed while writing config.yaml (its partial write, the lock): an empty folder to train, which removes it
        fresh = not failed and bool(files) and all("/" not in f and is_partial_write(f, ("config.yaml",))
                                                   for f in files)
        if not (restart or fresh):
            if files:  # also FAILED.txt alone: its error line is the user's record of the earlier failure (it
                # was deleted, though the docs say a failed run's folder is set aside: a review)
                aside = out.with_name(f".{out.name}.failed-{time.strftime('%Y%m%d-%H%M%S')}-"
                                      f"{time.time_ns() % 10**9:09d}")
                out.rename(aside)
            else:
                shutil.rmtree(out)  # nothing in it (its lock at most)
    finally:
        if fd is not None:
            os.close(fd)
    train(cfg, out, resume=restart, quiet=True, bundle=bundle)


def _first_epoch_leftovers(out: Path) -> bool:
    """Whether ``out`` holds what a run killed in its first epoch leaves (as ``pase train --resume`` checks)."""
    try:
        _check_first_epoch_leftovers(out)
    except (RunDirError, ValueError):  # ValueError: an unreadable best.ckpt
        return False
    return True


def _after(job: _Job, out: Path, data: Callable[[], Any]) -> Optional[str]:
    """Per-run diagnostics, or the probe of a unimodal reference run; ``data()`` gives the job's
    data, loaded once for its training and its diagnosis. Returns what it wrote ("diagnosed" or
    "probed"), None when there was nothing to do."""
    metrics = json.loads((out / "metrics.json").read_text())
    # where the data lies now (JSON is YAML: any path, or null, parses back as itself)
    moved = [f"data.{k}={json.dumps(v)}" for k, v in _data_location(job.cfg).items()]
    if job.kind == "run" and job.diagnose and not (out / "diagnostics.json").is_file():
        diagnose(out / metrics["checkpoint"], out, noise_levels=job.noise_levels, overrides=moved, bundle=data())
        return "diagnosed"
    if job.kind == "alone" and not (out / "probe.json").is_file():
        module, _, bundle = load_checkpoint(out / metrics["checkpoint"], overrides=moved, same_data=True,
                                            bundle=data())
        atomic_write_json(out / "probe.json", {**probe_model(module.model, bundle), "code_sha256": code_fingerprint()})
        return "probed"
    return None


def _data_location(cfg: Config) -> Dict[str, Any]:
    """``path`` and the location options (``options.<name>``) of ``cfg.data``: what
    :func:`without_data_location` leaves out, as ``--set`` keys below ``data.``."""
    d = to_dict(cfg)["data"]
    kept = without_data_location(d)
    return {**{"path": d.get("path")},
            **{f"options.{k}": v for k, v in (d.get("options") or {}).items() if k not in kept["options"]}}


class _SignalRecord:
    """The SIGINT (or SIGTERM) a comparison's process received, recorded by its handler before the handler
    raises as usual. A signal handler raises at whatever bytecode runs when the signal arrives; inside a
    finalizer (Lightning's ``Profiler.__del__``, run when a finished run's Trainer is collected) Python prints
    "Exception ignored" and drops the exception, and the comparison went on, trained every queued run and
    exited 0 (a review). ``check`` at the safe points (after a run's training, after its diagnosis, before
    the next run) raises the interruption the finalizer swallowed."""

    def __init__(self) -> None:
        self.signal: Optional[str] = None
        self.recording = False

    def check(self, where: str, what: str = "comparison") -> None:
        if self.signal is not None:
            raise RunInterrupted(f"{what} interrupted by {self.signal} {where}", self.signal)


SIGNALS = _SignalRecord()


@contextlib.contextmanager
def recording_signals():
    """Record SIGINT and SIGTERM in ``SIGNALS`` while a comparison's (or a cross-validation's) runs go (main
    thread only). SIGINT's
    handler records it and raises KeyboardInterrupt, as Python's default one does; a Python SIGTERM handler
    (``pase``'s, which raises RunInterrupted) is kept and called after the record. Ignored or default
    dispositions, and a caller's own SIGINT handler, are left as they are. An interruption a finalizer
    dropped is not printed as a traceback: the check that raises it prints its one line."""
    if threading.current_thread() is not threading.main_thread() or SIGNALS.recording:
        yield
        return
    SIGNALS.signal, SIGNALS.recording = None, True
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def on_sigint(signum, frame) -> None:
        SIGNALS.signal = "SIGINT"
        raise KeyboardInterrupt

    def on_sigterm(signum, frame) -> None:
        SIGNALS.signal = "SIGTERM"
        previous[signal.SIGTERM](signum, frame)

    def hook(unraisable) -> None:  # noqa: ANN001 - sys.UnraisableHookArgs
        if SIGNALS.signal is not None and isinstance(unraisable.exc_value, KeyboardInterrupt):
            return  # the recorded signal, raised again at the next check
        unraisable_before(unraisable)

    unraisable_before = sys.unraisablehook
    if previous[signal.SIGINT] is signal.default_int_handler:
        signal.signal(signal.SIGINT, on_sigint)
    if callable(previous[signal.SIGTERM]):
        signal.signal(signal.SIGTERM, on_sigterm)
    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = unraisable_before
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)
        SIGNALS.signal, SIGNALS.recording = None, False


def _execute(job: _Job) -> Dict[str, Any]:
    """Run one job; never raises (errors are returned and written next to the run), but for an interruption:
    a RunInterrupted (or KeyboardInterrupt), also one of a signal a finalizer dropped (``SIGNALS``)."""
    out = Path(job.out)
    rec = {"kind": job.kind, "method": job.method, "seed": job.seed, "modality": job.modality,
           "label": job.label, "status": "skipped", "error": "", "diagnose_error": ""}
    t0 = time.time()
    loaded: List[Any] = []

    def data() -> Any:  # the job's data, loaded at most once (a MOSEI pickle takes a while)
        if not loaded:
            loaded.append(load_bundle(job.cfg))
        return loaded[0]

    if not (out / "metrics.json").is_file():
        try:
            _train_into(job.cfg, out, data())
            rec["status"] = "trained"
        except RunDirError as e:  # another process holds the run (its lock): nothing was touched, nor is now
            rec.update(status="failed", error=_one_line(e), elapsed_s=time.time() - t0)
            return rec
        except Exception as e:  # noqa: BLE001 - recorded, the comparison goes on
            if _disk_full(e):  # not the run's fault: no FAILED.txt (the next call continues the run from its
                raise _compare_advice(e)  # checkpoint), and its own line (which file, the free space) is the one
            rec.update(status="failed", error=_one_line(e), elapsed_s=time.time() - t0)
            _write_failed(out, rec["error"])
            return rec
        SIGNALS.check(f"after {job.label} was trained")
    (out / "FAILED.txt").unlink(missing_ok=True)
    try:
        done = _after(job, out, data)
        if done and rec["status"] == "skipped":  # not trained now, but diagnosed (or probed): not "skipped" (a review)
            rec["status"] = done
        # the record of a failed diagnosis goes once a diagnosis is there (--no-diagnose made none)
        if (out / ("probe.json" if job.kind == "alone" else "diagnostics.json")).is_file():
            (out / "DIAGNOSE_FAILED.txt").unlink(missing_ok=True)
    except Exception as e:  # noqa: BLE001 - the trained run stays valid
        rec["diagnose_error"] = _one_line(e)
        _write_failed(out, rec["diagnose_error"], "DIAGNOSE_FAILED.txt")  # a full disk's error must not replace it
    SIGNALS.check(f"after {job.label} was {rec['status']}")
    rec["elapsed_s"] = time.time() - t0
    return rec


def _compare_advice(e: BaseException) -> BaseException:
    """``e`` with the whole command's advice: a checkpoint's own ("continue with pase train --resume
    <run>") finished that one run and left the comparison's others untrained (a review)."""
    return e.for_command("pase compare") if isinstance(e, CheckpointWriteError) else e


def _disk_full(e: BaseException) -> bool:
    """Whether ``e`` is a full disk or quota, or a file-size limit (a checkpoint that could not be written):
    every later run would fail on it too, so it stops the comparison, as an interruption does."""
    return isinstance(e, CheckpointWriteError) or (isinstance(e, OSError)
                                                   and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG))


def _write_failed(out: Path, error: str, name: str = "FAILED.txt") -> None:
    """Record a run's (or its diagnosis's) error in ``name``; a write that fails too (a read-only folder, a
    full disk) must not replace the error with its own: the run is then reported unfinished (or
    undiagnosed), and the next call tries it again."""
    try:
        atomic_write_text(out / name, error + "\n")
    except OSError:
        pass


#: set in a pool worker by its initializer: the comparison's stop event (set on Ctrl-C)
_STOP: Optional[Any] = None


def _init_worker(stop: Optional[Any] = None) -> None:
    import logging

    import torch

    global _STOP
    _STOP = stop
    exit_with_parent()  # a comparison killed with SIGKILL left its workers running for good
    torch.set_num_threads(1)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    # an idle worker ignores Ctrl-C (dying would break the pool); a busy one stops its run (_execute_in_worker)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _execute_in_worker(job: _Job) -> Dict[str, Any]:
    """``_execute`` in a pool worker: not started once the comparison is interrupted (a run already
    handed to a worker cannot be cancelled); Ctrl-C (SIGINT) interrupts the run, as in one process."""
    if _STOP is not None and _STOP.is_set():
        raise RunInterrupted(f"{job.label}: not started, the comparison was interrupted")
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with recording_signals():  # a signal a finalizer drops stops the run too
            return _execute(job)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


#: seconds an interrupted comparison waits for its running runs to stop on their own (a terminal's
#: Ctrl-C reaches every worker) before it passes the signal on to them (it reached this process alone)
INTERRUPT_GRACE_S = 10.0


def _stop_pool(pool: ProcessPoolExecutor, futures: Sequence[Any], stop: Any) -> None:
    """After Ctrl-C: queued runs never start, running ones stop at their last checkpoint (their own
    interrupt handling), idle workers exit. A second Ctrl-C kills the workers at once (every file a
    run writes is written atomically, so its folder continues from its last checkpoint)."""
    stop.set()
    # the pool's own workers only (a caller's other child processes are not ours to signal)
    workers = list((getattr(pool, "_processes", None) or {}).values())
    for f in futures:
        f.cancel()
    try:
        _, pending = wait(futures, timeout=INTERRUPT_GRACE_S)
        if pending:  # the signal reached this process alone (kill -INT): pass it on (idle workers ignore it)
            for proc in workers:
                if proc.is_alive():
                    os.kill(proc.pid, signal.SIGINT)
            wait(pending, timeout=120)
        pool.shutdown(wait=True, cancel_futures=True)
    except KeyboardInterrupt:
        for proc in workers:
            proc.kill()
        pool.shutdown(wait=False, cancel_futures=True)


def _submit_all(pool: ProcessPoolExecutor, jobs: List[_Job]) -> Dict[Any, _Job]:
    """Submit every job; the workers start here, and they inherit an ignored SIGINT, so Ctrl-C while
    one imports torch does not kill it (it would break the pool)."""
    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        return {pool.submit(_execute_in_worker, job): job for job in jobs}
    finally:
        if main:
            signal.signal(signal.SIGINT, old)


def _run_jobs(jobs: List[_Job], workers: int, progress: Optional[Callable[[str], None]]) -> List[Dict[str, Any]]:
    with recording_signals():  # in one process, and in the parent of --jobs N's workers
        return _run_recorded_jobs(jobs, workers, progress)


def _run_recorded_jobs(jobs: List[_Job], workers: int,
                       progress: Optional[Callable[[str], None]]) -> List[Dict[str, Any]]:
    done: List[Dict[str, Any]] = []

    def note(rec: Dict[str, Any]) -> None:
        done.append(rec)
        if progress is not None:
            extra = f": {rec['error']}" if rec["error"] else (f" (diagnostics failed: {rec['diagnose_error']})"
                                                              if rec["diagnose_error"] else "")
            progress(f"[{len(done)}/{len(jobs)}] {rec['label']}: {rec['status']}{extra}")

    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            note(_execute(job))
            SIGNALS.check(f"after {len(done)} of {len(jobs)} runs")  # before the next run
        return done
    def failure(job: _Job, err: str) -> Dict[str, Any]:
        return {"kind": job.kind, "method": job.method, "seed": job.seed, "modality": job.modality,
                "label": job.label, "status": "failed", "error": err, "diagnose_error": ""}

    ctx = multiprocessing.get_context(START_METHOD)
    stop = ctx.Event()
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(stop,))
    futures: Dict[Any, _Job] = {}
    try:
        futures = _submit_all(pool, jobs)
        for fut in as_completed(futures):
            job = futures[fut]
            try:
                note(fut.result())
                SIGNALS.check("in the pool's parent")  # one a finalizer dropped: stops the pool as Ctrl-C does
            except BrokenProcessPool as e:
                # a worker died (killed, out of memory): every run still pending or running fails with it, none
                # by its own fault, so no FAILED.txt: the next call continues each from its checkpoint
                note(failure(job, f"{_one_line(e)}: a worker process died (killed, or out of memory?); run the same "
                                  f"command again, with fewer --jobs if memory is short"))
            except Exception as e:  # noqa: BLE001 - the run's own error, raised in its worker
                if _disk_full(e):  # as in one process (_execute): the comparison stops with the run's own line
                    _stop_pool(pool, list(futures), stop)
                    raise _compare_advice(e) from None
                err = _one_line(e)
                _write_failed(Path(job.out), err)
                note(failure(job, err))
    except KeyboardInterrupt as e:  # Ctrl-C here, or a run's RunInterrupted from its worker
        _stop_pool(pool, list(futures), stop)
        sig = getattr(e, "signal", "SIGINT")
        # counted after the grace period, in which a running run may still finish (its metrics.json is kept)
        finished = sum(1 for f in futures if f.done() and not f.cancelled() and f.exception() is None)
        raise RunInterrupted(f"comparison interrupted by {sig} after {finished} of {len(jobs)} runs; the running "
                             "ones stopped at their last checkpoint, the queued ones did not start", sig) from None
    pool.shutdown(wait=True)
    return done


def _comparable(cfg: Config) -> Dict[str, Any]:
    """What the runs of one comparison share: all but the method, the seed, the progress bar and
    where the data lies (it may move between calls, as for pase train --resume)."""
    d = to_dict(cfg)
    d.pop("method")
    d["train"] = {k: v for k, v in d["train"].items() if k not in ("seed", "progress_bar")}
    return without_locations(d)


#: what a comparison writes into its folder first, before any run: config.yaml, then compare.json
_FIRST_FILES = ("config.yaml", "compare.json")


#: the lock file a running comparison (``pase compare``, ``pase crossval``) holds in its folder (``lock_comparison``)
COMPARISON_LOCK = ".compare.lock"


def lock_comparison(out: Path, command: str = "pase compare") -> Optional[int]:
    """An exclusive advisory lock (``fcntl.flock``) on ``out/.compare.lock``, held while ``compare`` (or
    ``cross_validate``: ``command`` names it in the messages) runs (the descriptor, for ``unlock_comparison``;
    None where ``fcntl`` is missing). A second ``pase compare`` into the same folder, started while the first
    ran, replaced the first's compare.json and summaries and trained its runs there (a review); it is refused
    now, having written nothing. The OS releases the lock when the process ends, so a killed comparison
    blocks nothing (its file stays, and is taken over)."""
    path = out / COMPARISON_LOCK
    # a folder this process cannot write: every command that locks it writes into it (compare.json, summary.*,
    # report.md), so it is refused here with one line (compare warned "running without a lock", then failed at
    # compare.json with a second line: a review)
    if out.is_dir() and not os.access(out, os.W_OK | os.X_OK):
        raise RunDirError(_folder_not_writable(out, command))
    if not can_lock():  # Windows: no lock
        return None
    unlocked = f"running without a lock: do not start a second {command} in this folder while this one runs"
    # the lock file is shared by these commands and says nothing of its holder: the message names them all
    busy = ConfigError(f"another pase compare, crossval or report is running in {out} (it holds {path}); wait for "
                       "it to end, or pass another --out (nothing was written)")
    while True:
        try:  # read-only: flock needs no write access, so another user's leftover file is taken over too
            fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
        except OSError as exc:
            if exc.errno in NOT_WRITABLE:  # not writable, though os.access said it was
                raise RunDirError(_folder_not_writable(out, command, exc.strerror or "")) from None
            log.warning("%s: cannot open the comparison's lock file (%s); %s", path, exc.strerror or exc, unlocked)
            return None
        if not try_lock(fd, path, unlocked, busy):
            return None  # a filesystem without locks: not another compare
        try:  # the file may have been removed by the holder that released it: lock the one now there
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _folder_not_writable(out: Path, command: str, why: str = "") -> str:
    return (f"{out}: the folder {not_writable(why)}; make it writable, or copy it elsewhere and run {command} on the copy "
            "(nothing was changed)")


def unlock_comparison(out: Path, fd: Optional[int]) -> None:
    """Remove the lock file, then release the lock: a folder refused or finished holds no file of it
    (a user's folder refused as "not a comparison's" was left with one)."""
    if fd is None:
        return
    try:
        (out / COMPARISON_LOCK).unlink()
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)


def _check_comparison_folder(out: Path) -> None:
    """``out`` is new, empty, or a comparison (``compare.json``; or only the ``config.yaml`` a comparison
    writes first, and the lock file a killed one left): a comparison writes summary.* and config.yaml, so any other folder is refused."""
    if not out.is_dir() or (out / "compare.json").is_file():
        return
    # a first call killed while writing config.yaml or compare.json leaves that write's partial file: the same
    # command continues (it removes the file before it writes them again)
    other = sorted(p.name for p in out.iterdir() if p.name not in ("config.yaml", COMPARISON_LOCK)
                   and not (p.is_file() and is_partial_write(p.name, _FIRST_FILES)))
    if not other:
        return
    what = ("a training run's folder" if (out / "metrics.json").is_file() or (out / "checkpoints").is_dir()
            else "not a comparison folder")
    shown = ", ".join(other[:4]) + (f" and {len(other) - 4} more" if len(other) > 4 else "")
    raise ConfigError(f"--out {out} is {what} (no compare.json; it holds {shown}); pass a new or empty --out "
                      "(nothing was written)")


def check_one_process(cfg: Config, command: str, advice: str) -> None:
    """``pase compare`` and ``pase crossval`` train each run in one process: under a multi-process
    strategy Lightning starts the other ranks by re-running the whole command, and each rank ran a
    comparison of its own (rank 1 found the runs locked, wrote a summary of failures, and the main
    process was killed: a review). Refused before anything is written; the message ends with the
    ``command``'s own ``advice`` (compare's ``--jobs``, which crossval does not have: a review)."""
    d, strategy = cfg.train.devices, str(cfg.train.strategy)
    # Lightning's "0," / "0,1": device indices
    devices = [x for x in d.split(",") if x.strip()] if isinstance(d, str) and "," in d else d
    # one device: 1, one index, or "auto" on the CPU (Lightning runs one process there; a review found
    # these refused as "asking for more")
    one = devices == 1 or devices == "1" or (isinstance(devices, (list, tuple)) and len(devices) == 1) or (
        devices == "auto" and str(cfg.train.accelerator) == "cpu")
    if not one or "ddp" in strategy or strategy not in ("auto", "single_device"):
        raise ConfigError(f"{command} trains each run in one process (train.devices={d!r}, train.strategy="
                          f"{strategy!r} asked for more); set train.devices=1 and train.strategy=auto, and "
                          f"{advice} (nothing was written)")


def _check_runs_can_start(cfg: Config, methods: List[str], trains: bool = True) -> None:
    """What would fail every run of a method at its start, refused before anything is written (each
    method's configuration, where ``Config`` refuses a bad ``pase.*`` choice, is built by ``_plan`` before
    this is called): the accelerator, devices, strategy
    and precision Lightning must accept (``train.devices='0,'`` on the CPU), the data options
    (``data_options``, and the source's ``check_options`` where it has one), and what
    ``check_methods_can_start`` tells from the configuration (PMR's binning, and ``pase.binning=classes`` for
    PaSE or PMR on a source that tells, without reading its data, that it loads regression labels:
    the built-in benchmark, MOSI bc-LSTM, MMSA, and MulT / GCNet MOSI / MOSEI; those runs failed at model
    build). The runs met these only after
    config.yaml and compare.json were saved, so the corrected command was refused as another configuration
    (a review). Range checks a loader makes as it loads (a negative ``data.options.seed``) need the data:
    the runs meet them, and ``_check_base_config`` then lets the corrected command replace config.yaml.
    The hardware settings are checked only when the call ``trains`` a run: a finished comparison trained on
    a GPU is re-summarised on a machine without one (a review)."""
    if trains:
        check_trainer_settings(cfg)
    opts = data_options(cfg)
    check = getattr(DATA_SOURCES.get(cfg.data.source), "check_options", None)
    if check is not None:
        try:
            check(**opts)
        except ValueError as exc:
            raise ConfigError(f"{exc} (nothing was written)") from None
    chosen = _chosen_modalities(cfg, opts) if trains and "ogm_ge" in methods else None
    if chosen is not None:
        # every OGM-GE run failed at its start, after config.yaml was written and the methods before it trained
        # (a review); when the configuration does not choose them, the data's modalities are known only once it loads
        try:
            check_ogm_modalities(chosen)
        except ValueError as exc:
            raise ConfigError(f"{exc} (nothing was written)") from None
    check_methods_can_start(cfg, methods, opts)


def check_methods_can_start(cfg: Config, methods: Sequence[str], opts: Dict[str, Any],
                            done: str = "nothing was written") -> None:
    """What would fail every run of one of ``methods`` as it builds the method, told from the configuration
    and the data options ``opts`` alone (no data is read): ``pase.binning`` for PMR (``Config`` checks it
    for PaSE only, so PMR's saved classification runs load), the encoders' and the optimiser's names
    (``check_encoders``, ``check_optimizer``), each method's own checks (``Method.check_config``: ``train.loss``,
    also against the task kind the source tells, and the method's choices), and ``pase.binning=classes`` for
    PaSE or PMR on a source that tells it loads regression labels (``source_task_kind``). ``pase compare`` and ``pase
    crossval`` call it before anything is written or trained (crossval started its folds and each failed at
    model build: a review); the message ends with ``done``, what the refusal left undone."""
    if "pmr" in methods and cfg.pase.binning not in PASE_CHOICES["binning"]:  # PMR bins regression labels with it
        raise ConfigError(f"pase.binning={cfg.pase.binning!r} is not one of {', '.join(PASE_CHOICES['binning'])} "
                          f"(method pmr bins its labels with it; {done})")
    kind = source_task_kind(cfg.data.source, **opts)
    try:  # the checks the method, the model and the optimiser make as a run builds them, where the config tells
        check_encoders(cfg.model)
        check_optimizer(cfg.train.optimizer)
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"{exc.args[0]} ({done})") from None
    try:  # the settings every method shares (train.loss, the Shapley utility): no one method is named
        Method.check_config(cfg, kind)
    except ValueError as exc:
        raise ConfigError(f"{exc} ({done})") from None
    for m in methods:
        # an unknown name: its runs fail (parse_methods names it); a plug-in registered as a factory function
        # has no check_config (a review: AttributeError); a subclass without checks of its own was checked above
        check = getattr(METHODS.get(m), "check_config", None) if m in METHODS else None
        if check is None or getattr(check, "__func__", None) is Method.check_config.__func__:
            continue
        try:
            check(dataclasses.replace(cfg, method=m), kind)
        except ValueError as exc:
            raise ConfigError(f"{exc} (method {m}; {done})") from None
    binned = [m for m in methods if m in ("pase", "pmr")]  # the methods whose prototypes bin labels with it
    if binned and cfg.pase.binning == "classes" and kind == "regression":
        valid = ", ".join(b for b in PASE_CHOICES["binning"] if b != "classes")
        raise ConfigError(f"pase.binning='classes' takes the class ids of classification data; data source "
                          f"{cfg.data.source!r} gives continuous labels (regression): bin them with one of {valid} "
                          f"({'methods' if len(binned) > 1 else 'method'} {', '.join(binned)} "
                          f"bin{'' if len(binned) > 1 else 's'} its labels with it; {done})")


def _chosen_modalities(cfg: Config, opts: Dict[str, Any]) -> Optional[List[str]]:
    """The modalities the configuration chooses, told without loading data (None where only the data
    tells): ``data.modalities``, else ``data.options.modalities`` (``load_bundle``'s other way), else for
    ``gcnet`` the modalities its ``features`` map does not leave out (null). OGM-GE's one-modality refusal
    met the last two only in its runs, after the other methods trained (review)."""
    if cfg.data.modalities is not None:
        return list(cfg.data.modalities)
    mods = opts.get("modalities")
    if isinstance(mods, str):
        return [mods]
    if isinstance(mods, (list, tuple)) and all(isinstance(m, str) for m in mods):
        return list(mods)
    if mods is not None:  # a plug-in source's option of another meaning (a count: a review): the data tells
        return None
    if cfg.data.source == "gcnet" and isinstance(opts.get("features"), dict):
        from ..data.gcnet import DEFAULT_FEATURES

        return [m for m, folder in {**DEFAULT_FEATURES, **opts["features"]}.items() if folder is not None]
    return None


def _check_base_config(cfg: Config, out: Path) -> bool:
    """``out/config.yaml`` holds the shared configuration; a different one stops the comparison. Returns
    whether config.yaml is (re)written: new, the data moved, or every run of the comparison failed (then a
    new configuration replaces the old, even one this code cannot read)."""
    path = out / "config.yaml"
    if not path.is_file():
        return True
    # the dataset its runs were trained as, where the comparison's config.yaml leaves it to the data's path
    trained = next(filter(None, map(trained_dataset, sorted(p.parent for p in out.glob("*/*/seed*/config.yaml")))),
                   None)
    try:
        diff = config_difference(path, cfg, _comparable, trained)
        moved = config_difference(path, cfg, _data_location, trained) is not None
    except ConfigError as e:  # e.g. a pase.* choice the runs all failed on, saved before it was checked (review)
        if not ((out / "compare.json").is_file() and _every_run_failed(out)):
            raise
        diff, moved = f"one this code cannot read: {e}", True
    if not moved and not diff:
        return False
    if not (out / "compare.json").is_file():  # a lone config.yaml: one a comparison interrupted at once
        # wrote, or the user's own file, which is never rewritten
        raise ConfigError(f"{path} is not a comparison's (no compare.json beside it) and differs from this "
                          f"comparison's configuration ({diff or 'where the data lies'}); pass a new or empty "
                          "--out (nothing was written)")
    if diff and _every_run_failed(out):  # nothing of it to keep: a setting every run failed on was saved
        # first, and the corrected command was refused for good (a review)
        log.warning(f"{path}: every run of the comparison there failed, so this configuration replaces it "
                    f"({diff}); the failed runs start afresh")
    elif diff:
        raise ConfigError(f"{out} holds a comparison of another configuration ({diff}); pass a new --out, "
                          "or the same --config and --set values to resume it")
    return True


def _every_run_failed(out: Path) -> bool:
    """Whether the comparison in ``out`` has run folders and every one holds FAILED.txt: no finished,
    interrupted or running run that a new configuration would mix with. No run folder yet is not "every run
    failed": a comparison started an instant before (config.yaml and compare.json written, its first run
    still loading its data) had its config.yaml replaced by a second compare of another configuration (a
    review); a failed run always leaves its folder (FAILED.txt is written there)."""
    runs = [run for run in out.glob("*/*/seed*") if run.parents[1].name in ("runs", "alone")]
    return bool(runs) and all((run / "FAILED.txt").is_file() for run in runs)


def trained_data(run: Path) -> Optional[Dict[str, Any]]:
    """The data fingerprint a finished run was trained on: its ``metrics.json``'s, or for one written
    before metrics.json kept it, its checkpoint's; None when neither has one."""
    metrics = _read_json(run / "metrics.json") or {}
    saved = metrics.get("data_fingerprint")
    ckpt = run / str(metrics.get("checkpoint") or "checkpoints/best.ckpt")
    if saved is None and ckpt.is_file():
        saved = (safe_load_checkpoint(ckpt, mmap=True).get("pase_state") or {}).get("data")
    return saved


def _pase_state(last: Path) -> Dict[str, Any]:
    """The ``pase_state`` of an interrupted run's ``checkpoints/last.ckpt`` (what its resume keeps: the
    data and pretrained model fingerprints); empty when it cannot be read (the resume itself then says so)."""
    try:
        return safe_load_checkpoint(last, mmap=True).get("pase_state") or {}
    except Exception:  # noqa: BLE001 - an unreadable checkpoint: the resume itself says so
        return {}


def interrupted_data(last: Path) -> Optional[Dict[str, Any]]:
    """The data fingerprint an interrupted run (``last``: its ``checkpoints/last.ckpt``, no metrics.json)
    was trained on, which its resume would continue; None when the checkpoint has none or cannot be read
    (the resume itself then says so)."""
    return _pase_state(last).get("data")


def _check_kept_runs(cfg: Config, out: Path, trains: bool = True) -> None:
    """The finished runs a comparison keeps (a later call resumes it) are of this configuration, on this
    data, and their diagnoses of the test split, else they would be averaged into one row with the new
    ones, silently (a review: a run trained longer with ``pase train --resume``, a ``data.path`` moved to
    other data of the same shapes, a ``pase diagnose --split valid`` into a run folder). Refused with the
    first such file, before anything is trained. The pretrained model is compared only when the call
    ``trains`` a run (re-summarising a finished comparison needs no BERT folder, which may have moved:
    a review met a bare [Errno 2] there); a folder that is not a model's is then named in one line."""
    now: List[Dict[str, Any]] = []
    loaded: List[Any] = []  # cfg's data, loaded once when a check needs it

    def bundle() -> Any:
        if not loaded:
            loaded.append(load_bundle(cfg))
        return loaded[0]

    def check_data(run: Path, saved: Any, modality: Optional[str] = None) -> None:
        trained = trained_dataset(run)  # a moved path that names another dataset: refused before the fingerprints
        if trained is not None:
            check_trained_as(run, trained, cfg, bundle())
        if saved is None:
            return
        if not now:
            now.append(fingerprint(bundle()))
        mine = now[0] if modality is None else {  # an --alone run holds one modality's features
            s: {**v, "features": {k: f for k, f in v["features"].items() if k == modality}} for s, v in now[0].items()}
        why = fingerprint_difference(saved, mine)
        if why:
            raise ConfigError(f"{run} was trained on other data than {cfg.data.path or cfg.data.source} gives now "
                              f"({why}); results of two datasets are never averaged: point "
                              f"{data_location_keys(cfg)} at the comparison's data, or pass a new --out (nothing was "
                              f"changed){READ_CHANGED}")

    started: List[Dict[str, str]] = []

    def check_pretrained(run: Path, saved: Any) -> None:  # seeds fine-tuned from two BERTs were averaged silently
        if not saved or not cfg.model.pretrained_path or not trains:  # (review)
            return
        if not started:
            from ..models.bert import check_pretrained_dir, pretrained_fingerprint

            started.append(pretrained_fingerprint(check_pretrained_dir(cfg.model.pretrained_path)))
        if saved != started[0]:
            what = "config.json" if saved.get("config") != started[0]["config"] else "weights"
            raise ConfigError(f"{run} was fine-tuned from another pretrained model than model.pretrained_path "
                              f"({cfg.model.pretrained_path}) holds now (its {what} differ); seeds of two models are "
                              "never averaged: point model.pretrained_path at the comparison's model, or pass a new "
                              "--out (nothing was changed)")

    for run in sorted(p.parent for p in out.glob("alone/*/seed*/metrics.json")):  # --alone: late fusion on one
        solo = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, modalities=[run.parent.name]))
        diff = _run_difference(run, solo)
        if diff:
            raise ConfigError(f"{run} was trained with another configuration than this comparison's --alone runs "
                              f"({diff}); its probes would be averaged with the others: move it out of alone/ to "
                              "retrain it, or pass a new --out (nothing was changed)")
        check_data(run, trained_data(run), run.parent.name)
        check_pretrained(run, _pretrained(run))
    # interrupted runs this call would continue (a refusal then recorded FAILED.txt, and the next call with
    # the right data retrained the run from scratch instead of continuing it: a review); its resume keeps the
    # checkpoint's pretrained fingerprint, so one started from another BERT finished as "from the old one" and
    # was averaged with seeds of the new one (a review)
    for last in sorted(out.glob("*/*/seed*/checkpoints/last.ckpt")):
        run = last.parents[1]
        if run.parents[1].name in ("runs", "alone") and not (run / "metrics.json").is_file() \
                and not (run / "FAILED.txt").is_file():
            state = _pase_state(last)
            check_data(run, state.get("data"), run.parent.name if run.parents[1].name == "alone" else None)
            check_pretrained(run, state.get("pretrained_fingerprint"))
    finished = sorted(p.parent for p in out.glob("runs/*/seed*/metrics.json"))
    for run in finished:
        diff = _run_difference(run, cfg)
        if diff:
            raise ConfigError(f"{run} was trained with another configuration than this comparison ({diff}: trained "
                              "longer with pase train --resume, or edited?); its results would be averaged with the "
                              "others: move it out of runs/ to retrain it, or pass a new --out (nothing was changed)")
        diag = _read_json(run / "diagnostics.json")
        if diag is not None and diag.get("split", "test") != "test":
            raise ConfigError(f"{run / 'diagnostics.json'} diagnoses split {diag.get('split')!r}, but a comparison's "
                              "tables are of the test split: move it and its CSVs aside (the comparison then "
                              "diagnoses the test split) or pass a new --out (nothing was changed)")
        check_data(run, trained_data(run))
        check_pretrained(run, _pretrained(run))


def _run_difference(run: Path, cfg: Config) -> Optional[str]:
    """The first difference (``key: <the run's> there, <cfg's> now``) between a run folder's ``config.yaml`` and
    ``cfg`` beyond method and seed (:func:`_comparable`); None when they agree or the run has no config.yaml."""
    own = run / "config.yaml"
    return config_difference(own, cfg, _comparable, trained_dataset(run)) if own.is_file() else None


def _pretrained(run: Path) -> Optional[Dict[str, str]]:
    """The pretrained model fingerprint a finished run's ``metrics.json`` records (None: none)."""
    return (_read_json(run / "metrics.json") or {}).get("pretrained_fingerprint")


def _plan(cfg: Config, methods: List[str], seeds: List[int], out: Path, diagnose_runs: bool,
          noise_levels: Tuple[float, ...]) -> List[_Job]:
    """Every method's run per seed: its path and configuration (``Config`` refuses a bad ``pase.*`` choice);
    reads nothing."""
    jobs = []
    for m in methods:
        for s in seeds:
            run_cfg = dataclasses.replace(cfg, method=m, train=dataclasses.replace(cfg.train, seed=s))
            jobs.append(_Job("run", m, s, str(out / "runs" / m / f"seed{s}"), run_cfg, diagnose_runs, noise_levels))
    return jobs


def _plan_alone(cfg: Config, seeds: List[int], out: Path, noise_levels: Tuple[float, ...]) -> List[_Job]:
    """``--alone``'s references: late fusion on each modality per seed. Loads the data when ``data.modalities``
    does not name the modalities (only the data tells them), so ``compare`` calls it after the cheap checks."""
    jobs = []
    for mod in list(cfg.data.modalities or load_bundle(cfg).modalities):
        for s in seeds:
            solo = dataclasses.replace(cfg, method="late_fusion", data=dataclasses.replace(cfg.data, modalities=[mod]),
                                       train=dataclasses.replace(cfg.train, seed=s))
            jobs.append(_Job("alone", "late_fusion", s, str(out / "alone" / mod / f"seed{s}"), solo, False,
                             noise_levels, mod))
    return jobs


def compare(cfg: Config, methods: str | Sequence[str] = DEFAULT_METHODS, seeds: int | str | Sequence[int] = 5,
            out_dir: str | Path = "compare", jobs: int = 1, diagnose: bool = True, *, alone: bool = False,
            reference: Optional[str] = None, noise_levels: Sequence[float] = DEFAULT_NOISE_LEVELS,
            progress: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Train and compare ``methods`` over ``seeds`` on one configuration; returns the summary.

    Args:
        cfg: the shared configuration (its ``method`` and ``train.seed`` are replaced per run).
        methods: method names, a list or ``"a,b"``.
        seeds: a count (MMSA seeds 1111..1110+N) or explicit seeds (see ``parse_seeds``).
        out_dir: the comparison folder (created; an existing one of the same configuration resumes).
        jobs: parallel worker processes (1: in this process).
        diagnose: per-run test-split Shapley values, probes and robustness (``diagnose``).
        alone: also train late fusion on each modality alone per seed (``out_dir/alone/<m>/seed<s>``),
            the reference of the probe deficit.
        reference: the method every other one is paired with; one of ``methods`` (None: late fusion
            when it is compared, else no paired comparison).
        noise_levels: robustness noise levels (units of each feature's train std).
        progress: called with one line per finished run.

    Returns:
        the summary (``summarize``); also written to ``summary.json``, ``summary.csv``, ``summary.md``.

    Raises:
        ConfigError: ``out_dir`` holds a comparison of a different configuration.
    """
    methods, seeds = parse_methods(methods), parse_seeds(seeds)
    if reference is not None and reference not in methods:
        raise ConfigError(f"--reference {reference} is not one of the compared methods ({', '.join(methods)}); "
                          f"add it to --methods or pair with one of them")
    reference = reference or "late_fusion"
    if alone and not diagnose:
        raise ConfigError("--alone trains the references of the probe deficit, which needs the runs' probes: "
                          "drop --no-diagnose, or --alone")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    check_one_process(cfg, "pase compare", "use --jobs N to train N runs side by side")
    out = user_path(out_dir)  # a `~` train() expands: its runs and these files in one folder
    levels = tuple(unique_levels(noise_levels))
    # every run's path and configuration (Config refuses a bad pase.* choice here); writes nothing, reads nothing
    planned = _plan(cfg, methods, seeds, out, diagnose, levels)
    trains = any(not (Path(j.out) / "metrics.json").is_file() for j in planned)
    # the checks that read no data come before --alone's plan, which loads the data without data.modalities
    # (its modality list): a bad setting (pase.binning for PMR, train.optimizer) was refused only after that load
    _check_runs_can_start(cfg, methods, trains)
    if alone:
        references = _plan_alone(cfg, seeds, out, levels)
        if not trains and any(not (Path(j.out) / "metrics.json").is_file() for j in references):
            trains = True  # only references train: the hardware settings too, now that the plan tells
            _check_runs_can_start(cfg, methods, trains)
        planned += references
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a comparison folder; pass another --out (nothing was overwritten)")
    _check_comparison_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    lock = lock_comparison(out)  # before config.yaml is read: a second compare here is refused until this one ends
    try:
        rewrite = _check_base_config(cfg, out)
        if diagnose:  # every diagnosis already there must have these levels (it is kept, not redone)
            for f in sorted(out.glob("runs/*/seed*/diagnostics.json")):
                kept = ((_read_json(f) or {}).get("robustness") or {}).get("noise_levels")
                if kept is not None and not same_levels(kept, levels):
                    raise ConfigError(f"{f} was diagnosed with --noise-levels {','.join(f'{x:g}' for x in kept)}; pass "
                                      "the same levels to resume this comparison, or a new --out (nothing was changed)")
        _check_kept_runs(cfg, out, trains=trains)
        remove_partial_writes(out, _FIRST_FILES)  # a killed first call's, which _check_comparison_folder let pass
        # written only now, after every check that may refuse ("nothing was changed" held): new, or the data moved
        # (or one whose every run failed: _check_base_config)
        if rewrite:
            save_config(cfg, out / "config.yaml")
        atomic_write_json(out / "compare.json", {
            "methods": methods, "seeds": seeds, "reference": reference, "diagnose": diagnose, "alone": alone,
            "noise_levels": list(levels), "pase_version": __version__})
        _run_jobs(planned, jobs, progress)
        from .report import write_summary  # report builds on this module's statistics

        summary = summarize(out, methods, seeds, reference)
        write_summary(summary, out)
        return summary
    finally:
        unlock_comparison(out, lock)


# ---------------------------------------------------------------------------- summary
_MAIN_REGRESSION = ("Has0_acc_2", "Non0_acc_2", "Mult_acc_2", "MAE", "Corr")  # Mult_acc_2: SIMS


def main_metrics(protocol: str) -> List[str]:
    """The metrics of the paired comparison: Has0 / Non0 Acc-2, MAE and Corr for regression
    protocols (Acc-2 for SIMS), the protocol's monitor otherwise."""
    from ..metrics import get_protocol

    p = get_protocol(protocol)
    if p.task_kind == "regression":
        return [m for m in _MAIN_REGRESSION if m in p.higher_is_better]
    return [p.monitor]


def _read_json(path: Path) -> Optional[Dict[str, Any]]:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not readable JSON ({e}); restore it, or move its run folder aside to retrain "
                          "that run") from None


def _read_run(run: Path, method: str, seed: int, diagnosed: bool = False) -> Dict[str, Any]:
    """The record of one run folder; ``diagnosed``: the comparison diagnoses its runs (``compare.json``),
    so a finished run without ``diagnostics.json`` is listed as not diagnosed, not silently left out of
    the diagnostic tables."""
    rec: Dict[str, Any] = {"method": method, "seed": seed, "path": str(run), "error": "", "diagnose_error": ""}
    metrics = _read_json(run / "metrics.json")
    if metrics is None:
        failed = run / "FAILED.txt"
        unfinished = ("unfinished (interrupted, or another process is training it): the same command continues "
                      "it from checkpoints/last.ckpt" if (run / "checkpoints" / "last.ckpt").is_file() else "not run")
        rec.update(status="failed" if failed.is_file() else "missing",
                   error=failed.read_text().strip() if failed.is_file() else unfinished)
        return rec
    _require(metrics, ("dataset", "protocol", "monitor", "test"), run / "metrics.json")
    diagnostics = _read_json(run / "diagnostics.json")
    if diagnostics is not None:
        _require(diagnostics, ("modalities",), run / "diagnostics.json")
    rec.update(status="ok", metrics=metrics, diagnostics=diagnostics)
    if (run / "DIAGNOSE_FAILED.txt").is_file():
        rec["diagnose_error"] = (run / "DIAGNOSE_FAILED.txt").read_text().strip()
        # the report lists the run as left out of the diagnostic tables: a diagnostics.json beside the failure
        # (written before a later step failed, or an earlier diagnosis's) entered the share, probe and
        # robustness means all the same (a mutation audit)
        rec["diagnostics"] = None
    elif diagnostics is None and (diagnosed or any(run.glob("diagnostics.epochs*.json"))):
        rec["diagnose_error"] = _undiagnosed(run)
    # a diagnosis writes robustness.csv before diagnostics.json: without the latter (a diagnosis that
    # failed or was cut short) the rows would feed the condition tables a seed the others leave out
    finished = rec["diagnostics"] is not None and not rec["diagnose_error"]
    rec["robustness_rows"] = read_csv(run / "robustness.csv") if finished and (run / "robustness.csv").is_file() else []
    if rec["robustness_rows"]:
        _require(rec["robustness_rows"][0], ("kind", "condition", "modality", "sigma"), run / "robustness.csv",
                 "column")
    return rec


def _mark_other_configurations(runs: List[Dict[str, Any]], shared: Path) -> None:
    """A finished run whose ``config.yaml`` differs from the comparison's ``shared`` one (trained longer with
    ``pase train --resume``, or edited) gets status "other configuration" and is left out of every table, with
    the difference and what to do: ``pase compare`` refuses such a folder before it trains, but ``pase report``
    averaged a 3-epoch seed with 2-epoch ones without a word (a review). Nothing to compare without
    ``shared`` (a folder of runs only); an unreadable file is one error naming it."""
    if not shared.is_file():
        return
    from ..config import load_config

    try:  # a file this code cannot read (another version's key) is no reason to refuse the whole report
        base = load_config(shared)
    except ConfigError as e:
        log.warning("%s: not read (%s); the runs' configurations are not compared with it", shared, e)
        return
    for r in runs:
        if r["status"] != "ok":
            continue
        try:
            diff = _run_difference(Path(r["path"]), base)
        except ConfigError as e:
            log.warning("%s; its configuration is not compared with the comparison's", e)
            continue
        if diff:
            key, _, values = diff.partition(": ")
            mine, _, theirs = values.rpartition(" now")[0].partition(" there, ")
            r.update(status="other configuration", diagnostics=None, diagnose_error="", robustness_rows=[],
                     error=f"trained with another configuration than the comparison's {shared} ({key}: {mine} in "
                           f"this run, {theirs} in the comparison: trained longer with pase train --resume, or "
                           "edited?); left out of every table: move the run folder out of runs/ and rerun pase compare "
                           "to retrain it")


def _undiagnosed(run: Path) -> str:
    """Why a finished run of a diagnosed comparison has no ``diagnostics.json``, and what to run: its diagnosis
    was cut short (the comparison's command diagnoses it), or it was trained longer with ``pase train --resume``,
    which set its diagnosis aside (a review: ``pase report`` then averaged every diagnostic table over the other
    seeds without a word). ``pase compare`` refuses a run trained longer than the comparison's configuration."""
    out = run.parents[2]
    kept = sorted(p.name for p in run.glob("diagnostics.epochs*.json"))
    if kept:
        return (f"not diagnosed: trained longer with pase train --resume after its diagnosis (kept as {kept[0]}), "
                "so it is not of the comparison's configuration, which pase compare refuses; move the run folder "
                f"out of runs/ and rerun pase compare --out {out} with the comparison's --config and --set to retrain and "
                "diagnose it")
    return (f"not diagnosed (no diagnostics.json: its diagnosis was cut short or removed); rerun pase compare --out "
            f"{out} with the comparison's --config and --set to diagnose it")


def _require(record: Any, keys: Sequence[str], path: Path, what: str = "key") -> None:
    """One error naming ``path`` and the first of ``keys`` that ``record`` lacks (a file of another version or
    program, or damaged): the tables failed later with a bare 'pase: error: protocol' (a review)."""
    missing = [k for k in keys if not isinstance(record, dict) or k not in record]
    if missing:
        raise ConfigError(f"{path}: no {what} {missing[0]!r}, so it is not as pase writes it (another version or "
                          "program, or damaged); restore it, or move its run folder aside to retrain that run")


def _discover(out: Path) -> Tuple[List[str], List[int]]:
    runs = sorted(p for p in (out / "runs").glob("*/seed*") if p.is_dir())
    methods = list(dict.fromkeys(p.parent.name for p in runs))
    seeds = sorted({int(p.name[4:]) for p in runs if p.name[4:].lstrip("-").isdigit()})
    return methods, seeds


def _by_method(ok: List[Dict[str, Any]], methods: List[str],
               get: Callable[[Dict[str, Any]], Any]) -> Dict[str, Dict[int, float]]:
    """method -> seed -> value (runs where ``get`` returns None are left out)."""
    table: Dict[str, Dict[int, float]] = {m: {} for m in methods}
    for r in ok:
        v = get(r)
        if v is not None:
            table[r["method"]][r["seed"]] = float(v)
    return table


def _dig(d: Optional[Dict[str, Any]], path: Sequence[str]) -> Any:
    for k in path:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def _stat_tree(ok: List[Dict[str, Any]], methods: List[str], mods: List[str],
               path: Callable[[str], Sequence[str]], level: float) -> Dict[str, Dict[str, Dict[str, float]]]:
    """method -> modality -> ``describe`` over seeds of ``diagnostics[path(modality)]``."""
    tree: Dict[str, Dict[str, Dict[str, float]]] = {m: {} for m in methods}
    for mod in mods:
        vals = _by_method(ok, methods, lambda r: _dig(r.get("diagnostics"), path(mod)))
        for m in methods:
            tree[m][mod] = describe(list(vals[m].values()), level)
    return tree


def _diagnostic_stats(ok: List[Dict[str, Any]], methods: List[str], mods: List[str], probe_metric: str,
                      level: float) -> Dict[str, Any]:
    keys = ["full", "missing_relative", "noise_relative"]
    robust = _stat_tree(ok, methods, keys, lambda k: ("robustness", k), level)
    utilities = list(dict.fromkeys(u for r in ok for u in (_dig(r.get("diagnostics"), ("shapley",)) or {})))
    out = {
        "shares": {u: _stat_tree(ok, methods, mods, lambda mod, u=u: ("shapley", u, "shares", mod), level)
                   for u in utilities},
        "shapley_values": _stat_tree(ok, methods, mods, lambda mod: ("shapley", "neg_loss", "values", mod), level),
        "probes": {"metric": probe_metric,
                   "values": _stat_tree(ok, methods, mods, lambda mod: ("probes", mod, probe_metric), level)},
        "robustness": robust,
    }
    truth = next((r["diagnostics"]["ground_truth_shares"] for r in ok
                  if _dig(r.get("diagnostics"), ("ground_truth_shares",))), None)
    if truth and "r2" in utilities and all(m in truth for m in mods) and sum(truth[m] for m in mods) > 0:
        out["share_truth"] = _share_truth(ok, methods, mods, truth, level)
    return out


def _share_truth(ok: List[Dict[str, Any]], methods: List[str], mods: List[str], truth: Dict[str, float],
                 level: float) -> Dict[str, Any]:
    """Test-split ``r2`` Shapley shares against the generator's ground-truth shares (issue 3's
    criterion: within 0.05). The truth is renormalised over the modalities of the runs."""
    total = sum(truth[m] for m in mods)
    want = {m: truth[m] / total for m in mods}
    error = _stat_tree(ok, methods, mods, lambda mod: ("shapley", "r2", "shares", mod), level)
    for m in methods:
        for mod in mods:
            d = error[m][mod]
            for k in ("mean", "ci_low", "ci_high"):
                d[k] -= want[mod]  # share - truth; SD and n unchanged
    worst = {m: max((abs(error[m][mod]["mean"]) for mod in mods if error[m][mod]["n"]), default=float("nan"))
             for m in methods}
    return {"utility": "r2", "truth": want, "error": error, "max_abs_error": worst,
            "within_0.05": {m: bool(worst[m] <= 0.05) for m in methods}}


def _alone(out: Path, mods: List[str], seeds: List[int], ok: List[Dict[str, Any]], methods: List[str],
           probe_metric: str, level: float, reference: Optional[str] = None) -> Dict[str, Any]:
    """Unimodal-alone probe references (``out/alone/<m>/seed<s>/probe.json``), the paired probe
    deficit alone - joint of every method and, against ``reference``, the paired reduction of the
    deficit: deficit(reference) - deficit(method) = joint(method) - joint(reference) per seed
    (positive: the method leaves the encoder closer to the one trained alone)."""
    alone: Dict[str, Dict[int, float]] = {}
    for mod in mods:
        for s in seeds:
            v = _dig(_read_json(out / "alone" / mod / f"seed{s}" / "probe.json"), (mod, probe_metric))
            if v is not None:
                alone.setdefault(mod, {})[s] = float(v)
    if not alone:
        return {}
    deficit: Dict[str, Dict[str, Any]] = {m: {} for m in methods}
    reduction: Dict[str, Dict[str, Any]] = {}
    for mod, ref in alone.items():
        joint = _by_method(ok, methods, lambda r: _dig(r.get("diagnostics"), ("probes", mod, probe_metric)))
        for m in methods:
            deficit[m][mod] = paired_difference(ref, joint[m], level)
            if reference in methods and m != reference and joint[m]:
                reduction.setdefault(m, {})[mod] = paired_difference(joint[m], joint[reference], level)
    return {"alone": {mod: {"values": v, **describe(list(v.values()), level)} for mod, v in alone.items()},
            "deficit": deficit, "deficit_reduction": reduction}


def summarize(out_dir: str | Path, methods: Optional[Sequence[str]] = None, seeds: Optional[Sequence[int]] = None,
              reference: Optional[str] = None, level: float = 0.95) -> Dict[str, Any]:
    """Statistics of the runs on disk in ``out_dir`` (methods and seeds from ``compare.json``
    unless given); see the module docstring for the definitions."""
    out = user_path(out_dir)  # the folder compare(out_dir="~/x") wrote
    meta = _read_json(out / "compare.json") or {}
    found_methods, found_seeds = _discover(out)
    methods = list(methods or meta.get("methods") or found_methods)
    seeds = [int(s) for s in (seeds or meta.get("seeds") or found_seeds)]
    reference = reference or meta.get("reference", "late_fusion")
    diagnosed = bool(meta.get("diagnose"))  # a finished run without a diagnosis is then listed as one
    runs = [_read_run(out / "runs" / m / f"seed{s}", m, s, diagnosed) for m in methods for s in seeds]
    _mark_other_configurations(runs, out / "config.yaml")
    ok = [r for r in runs if r["status"] == "ok"]
    summary: Dict[str, Any] = {
        "out_dir": str(out), "methods": methods, "seeds": seeds, "reference": reference, "level": level,
        "runs": runs, "reported": [m for m in methods if any(r["method"] == m for r in ok)],
        "failed": [{"method": r["method"], "seed": r["seed"], "error": r["error"]}
                                 for r in runs if r["status"] != "ok"], "pase_version": __version__}
    alone_runs = [p for p in sorted(out.glob("alone/*/seed*")) if p.name[4:].isdigit() and int(p.name[4:]) in seeds]
    failed_alone = [{"modality": p.parent.name, "seed": p.name[4:], "error": (p / "FAILED.txt").read_text().strip()}
                    for p in alone_runs if (p / "FAILED.txt").is_file()]
    if failed_alone:  # their seeds are missing from the probe-deficit tables
        summary["failed_alone"] = failed_alone
    # the code of every file that feeds a table: the runs, their diagnoses, the --alone runs and their probes
    records = [r["metrics"] for r in ok] + [r["diagnostics"] for r in ok if r.get("diagnostics")]
    records += [_read_json(p / name) or {} for p in alone_runs for name in ("metrics.json", "probe.json")
                if (p / name).is_file()]
    codes = sorted({rec.get("code_sha256", "unrecorded") for rec in records})
    if len(codes) > 1:  # finished runs and diagnoses are kept across calls: code changed in between
        summary["code_warning"] = (
            f"the runs come from {len(codes)} versions of the pase code ({', '.join(codes)}; code_sha256 of "
            "metrics.json, diagnostics.json and probe.json): a difference between methods may be a difference "
            "between code; rerun into a new --out to compare one version")
    unselected = [{"method": r["method"], "seed": r["seed"], "selection": no_selection(r["metrics"]),
                   "best_epoch": r["metrics"].get("best_epoch")} for r in ok if no_selection(r["metrics"])]
    if unselected:  # in the tables, but their checkpoint was not chosen on validation (the header says which)
        summary["unselected"] = unselected
    if not ok:
        return summary
    first = ok[0]["metrics"]
    protocol = first["protocol"]
    metric_names = list(dict.fromkeys(k for r in ok if isinstance(r["metrics"]["test"], dict)
                                      for k in r["metrics"]["test"]))
    for r in ok:  # a metric one run lacks was read as NaN and left out of its mean without a word (a review)
        _require(r["metrics"]["test"], metric_names, Path(r["path"]) / "metrics.json", "test metric")
    headline = headline_metric(protocol)
    probe_metric = "acc2" if "acc_2" in headline or headline == "Mult_acc_2" else "acc"
    diag_first = next((r["diagnostics"] for r in ok if r.get("diagnostics")), None)
    mods = list(diag_first["modalities"]) if diag_first else list(first.get("data_info", {}).get("modalities") or [])
    test = {k: _by_method(ok, methods, lambda r, k=k: r["metrics"]["test"].get(k)) for k in metric_names}
    from ..metrics import get_protocol

    summary.update({
        "dataset": first["dataset"], "protocol": protocol,
        "protocol_description": first.get("protocol_description", ""),
        "monitor": first["monitor"], "mode": get_protocol(protocol).mode(first["monitor"]),
        "higher_is_better": dict(get_protocol(protocol).higher_is_better),
        "metrics": metric_names, "main_metrics": main_metrics(protocol), "headline": headline, "modalities": mods,
        "stats": {m: {k: describe(list(test[k][m].values()), level) for k in metric_names} for m in methods},
        "paired": ({m: {k: paired_difference(test[k][m], test[k][reference], level) for k in main_metrics(protocol)}
                    for m in methods if m != reference} if reference in summary["reported"] else {}),
        "conditions": {m: aggregate_conditions([r["robustness_rows"] for r in ok if r["method"] == m], headline)
                       for m in methods},
    })
    if mods:
        summary.update(_diagnostic_stats(ok, methods, mods, probe_metric, level))
        summary.update(_alone(out, mods, seeds, ok, methods, probe_metric, level, reference))
        if any(_dig(r.get("diagnostics"), ("probes", mod, "effect_r2")) is not None for r in ok for mod in mods):
            # ground truth (the built-in benchmark): how much of its own effect each encoder learned
            summary["effect_probes"] = {
                "metric": "effect_r2",
                "values": _stat_tree(ok, methods, mods, lambda mod: ("probes", mod, "effect_r2"), level),
                **_alone(out, mods, seeds, ok, methods, "effect_r2", level, reference)}
    return summary
