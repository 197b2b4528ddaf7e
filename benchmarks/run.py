"""PaSE performance benchmark (issue 6): one entry point, every figure measured in one run.

    python benchmarks/run.py [--quick] [--device cpu|cuda] [--bf16] [--threads N] [--out BENCHMARKS.md]

Measures, on this machine, in fresh subprocesses (one per measurement, so peak memory belongs to
it alone): epoch time and samples/s of plain late fusion, the registered ``late_fusion`` method
and PaSE (all parts on, phase 2) on real MOSI (bc-LSTM features), MOSI-shaped and MOSEI-shaped
sequences; one real ``pase.training.train`` run per method through Lightning; the cost of one
exact Shapley estimate plus gradient modulation against a plain step for M = 2..8 with encoder
call counts; inference throughput of both methods (paired, repeated); peak memory of inference and training; RSS after each of several epochs; the load of
a MOSEI-shaped MMSA pickle; an op-level profile of one step; on CUDA (not --quick) compiled steps
and CUDA graphs of them (``graphs/*``, ``compile/*``). It writes the report (``--out``),
the raw results (``--json``, default ``benchmarks/results[-quick][-cuda].json``) and prints
progress to stderr. ``--quick`` times subsets of batches, leaves out the compiled variants (minutes of
compiling each) and says so in the report. While measuring, the report and raw results of what finished so far
are rewritten after every measurement: a given ``--out`` / ``--json`` in place, a default one under its
``-partial`` name (``BENCHMARKS-partial.md``, ``benchmarks/results-partial.json``), so that only a run that
completes replaces ``BENCHMARKS.md`` and ``benchmarks/results.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# the pase of this checkout, not whichever one is installed: the commit machine() records is the
# code the workers time (they run this file too)
sys.path.insert(0, str(ROOT / "src"))
MARK = "@@RESULT "
#: the folders whose uncommitted changes make a run's code not its commit's (machine()'s git_dirty): src/ and the
#: harness's code; the harness's own outputs (results*.json, parts.md, BENCHMARKS*.md) are not code
#: (parts.py after a full run read "with local changes" from the run's results.json)
TRACKED = ("src", "benchmarks")
_TRACKED_SPECS = ("src", "benchmarks/*.py", "benchmarks/*.sh")
MMSA_STEPS, MMSA_DIMS, MMSA_SIZES = 50, (768, 74, 35), (16326, 1871, 4659)


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ worker side
def _worker_main(name: str, spec: Dict[str, Any]) -> None:
    import torch

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    import workers

    t0 = time.perf_counter()
    res = workers.WORKERS[name](spec)
    res["worker_wall_s"] = time.perf_counter() - t0
    res["threads"] = torch.get_num_threads()
    print(MARK + json.dumps(res), flush=True)


# ------------------------------------------------------------------------------------ driver side
def _run_worker(name: str, spec: Dict[str, Any], timeout: int = 1800) -> Dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--spec", json.dumps(spec)]
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:  # with its spec and wall time, as a result has (it was logged as "0.0 s")
        return {"error": f"timed out after {timeout} s", "spec": spec, "driver_wall_s": time.perf_counter() - t0}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        _log(f"worker {name} failed (exit {proc.returncode}):\n{tail}")
        return {"error": f"exit {proc.returncode}: {tail.splitlines()[-1] if tail else 'no output'}", "spec": spec,
                "driver_wall_s": time.perf_counter() - t0}
    res = json.loads(lines[-1][len(MARK):])
    res["spec"] = spec
    res["driver_wall_s"] = time.perf_counter() - t0
    res["load_avg_1min"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    return res


def _mem_available_mb() -> float:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _mmsa_bytes(n: int) -> int:
    """Approximate pickle size of n MMSA samples (float32 features, float64 text_bert, ids...)."""
    return n * (MMSA_STEPS * sum(MMSA_DIMS) * 4 + 3 * MMSA_STEPS * 8 + 400)


def _mmsa_scale(quick: bool, tmp: Path) -> Tuple[float, str]:
    """The largest scale 1/2^k of the MOSEI-shaped file that fits the disk and memory here."""
    free = shutil.disk_usage(tmp).free
    avail = _mem_available_mb() * 2**20
    full = _mmsa_bytes(sum(MMSA_SIZES))
    for k in range(4 if quick else 0, 8):
        scale = 1 / 2**k
        size = full * scale
        if free > 1.2 * size + 2 * 2**30 and avail > 3 * size:
            why = ("--quick: 1/16 of the samples" if quick and k == 4 else
                   f"free disk {free / 2**30:.1f} GiB, available memory {avail / 2**30:.1f} GiB, "
                   f"full file ~{full / 2**30:.2f} GiB")
            return scale, why
    return 1 / 2**8, "little disk / memory: 1/256 of the samples"


def _shaped_sizes(name: str, n_train: Optional[int] = None, small_eval: bool = True) -> List[int]:
    full = {"mosi_shaped": [1284, 229, 686], "mosei_shaped": [16326, 1871, 4659]}[name]
    return [n_train or full[0]] + ([64, 64] if small_eval else full[1:])


def plan(quick: bool, device: str, bf16: bool, threads: Optional[int]) -> List[Tuple[str, str, Dict[str, Any]]]:
    """(key, worker, spec) of every measurement, in run order."""
    base: Dict[str, Any] = {"device": device, "bf16": bf16, "threads": threads}
    gpu = device == "cuda"
    block = 8 if gpu else 1
    mosi_full = {"full_batches": math.ceil(1284 / 64), "full_n_train": 1284}
    mosei_full = {"full_batches": math.ceil(16326 / 64), "full_n_train": 16326}
    q = quick
    p: List[Tuple[str, str, Dict[str, Any]]] = [
        # the +compile variants compile every batch shape first (a cold inductor cache: about 2 min each on
        # a CPU), so --quick leaves them out, as it leaves out the graphs/* keys
        ("epoch/real_mosi", "epoch", {"dataset": "real_mosi", "repeats": 3 if q else 5, "block": block,
                                      "variants": ["plain", "late_fusion", "pase"] +
                                      ([] if q else ["late_fusion+compile", "pase+compile"])}),
        ("epoch/mosi_shaped", "epoch", {"dataset": "mosi_shaped", "sizes": _shaped_sizes("mosi_shaped"),
                                        "batches": 3 if q else 0, "repeats": 2 if q else 3, "block": block,
                                        **mosi_full}),
        # MulT's CPU figure is from 2 cores: the like-for-like PaSE epoch uses 2 threads too
        *([("epoch/mosi_shaped/threads2", "epoch", {"dataset": "mosi_shaped", "sizes": _shaped_sizes("mosi_shaped"),
                                                    "batches": 3 if q else 0, "repeats": 2 if q else 3, "block": block,
                                                    "variants": ["late_fusion", "pase"], **mosi_full, "threads": 2})]
          if not gpu and (os.cpu_count() or 1) >= 2 and threads != 2 else []),
        ("epoch/mosei_shaped", "epoch", {"dataset": "mosei_shaped",
                                         "sizes": _shaped_sizes("mosei_shaped", 1024 if q else None),
                                         "batches": 3 if q else 20, "repeats": 2 if q else 3, "block": block,
                                         **mosei_full}),
        ("shapley", "shapley", {"Ms": list(range(2, 9)), "iters": 6 if q else 30,
                                "mosi_shaped_iters": 2 if q else 10}),
        ("lightning/real_mosi", "lightning", {"dataset": "real_mosi", "epochs": 2 if q else 3,
                                             "methods": ["late_fusion", "pase"]}),
    ]
    if not q:
        p.append(("lightning/mosi_shaped", "lightning", {"dataset": "mosi_shaped", "epochs": 2,
                                                         "sizes": _shaped_sizes("mosi_shaped", small_eval=False),
                                                         "methods": ["late_fusion", "pase"]}))
    # inference throughput, paired: both methods' models over the same test batches in one worker
    p.append(("inference/real_mosi", "inference", {"dataset": "real_mosi", "repeats": 5, "block": block,
                                                   "min_repeat_s": 0.3 if q else 1.0}))
    p.append(("inference/mosi_shaped", "inference", {"dataset": "mosi_shaped", "sizes": [64, 64, 686], "repeats": 5,
                                                     "block": block, "batches": 4 if q else 0,
                                                     "min_repeat_s": 0.3 if q else 1.0}))
    if not q:
        p.append(("inference/mosei_shaped", "inference", {"dataset": "mosei_shaped", "sizes": [64, 64, 4659],
                                                          "repeats": 5, "block": block, "batches": 24,
                                                          "min_repeat_s": 1.0}))
    for method in ("late_fusion", "pase"):
        if not q:
            p.append((f"memory/real_mosi/{method}", "memory", {"dataset": "real_mosi", "method": method,
                                                               "epochs": 3}))
        p.append((f"memory/mosi_shaped/{method}", "memory", {
            "dataset": "mosi_shaped", "method": method, "sizes": _shaped_sizes("mosi_shaped", small_eval=False),
            "epochs": 3 if q else 8, "batches": 2 if q else 0, "infer_batches": 2 if q else 0}))
        if not q:
            p.append((f"memory/mosei_shaped/{method}", "memory", {
                "dataset": "mosei_shaped", "method": method, "sizes": _shaped_sizes("mosei_shaped", small_eval=False),
                "epochs": 2, "batches": 12, "infer_batches": 24}))
    p.append(("profile/real_mosi", "profile", {"dataset": "real_mosi", "steps": 3 if q else 10}))
    if not q:
        p.append(("profile/mosi_shaped", "profile", {"dataset": "mosi_shaped", "sizes": [256, 64, 64], "steps": 3}))
    if gpu and not q:  # last: compiled steps and CUDA graphs of them, in workers of their own (a failure loses
        # only them); minutes of compiling, so not in --quick
        graphs = ["late_fusion", "pase", "late_fusion+graphs", "pase+graphs"]
        # each capped (timeout_s) so that a slow compile costs a lent machine's minutes, not the run: on the H200
        # graphs/real_mosi took 77 s, the MOSI-shaped eager and +graphs variants 111 s, and its +compile variants
        # had not finished compiling after 185 s; those are a worker of their own (last), so that their timeout
        # loses only them (one worker of six variants lost all six in run 3), under a key of its own: --only
        # selects by prefix, and as graphs/mosi_shaped/compile it came with every --only graphs/mosi_shaped or
        # graphs (840 s of caps, more than a 600 s device call; review), so graphs (420 s) and compile (420 s)
        # are each one call
        p.append(("graphs/real_mosi", "epoch", {"dataset": "real_mosi", "repeats": 5, "block": block, "timeout_s": 180,
                                                "variants": graphs}))
        p.append(("graphs/mosi_shaped", "epoch", {"dataset": "mosi_shaped", "sizes": _shaped_sizes("mosi_shaped"),
                                                  "batches": 0, "repeats": 3, "block": block, "timeout_s": 240,
                                                  "variants": graphs, **mosi_full}))
        p.append(("compile/mosi_shaped", "epoch", {
            "dataset": "mosi_shaped", "sizes": _shaped_sizes("mosi_shaped"), "batches": 0, "repeats": 3, "block": block,
            "timeout_s": 420, "variants": ["late_fusion", "pase", "late_fusion+compile", "pase+compile"], **mosi_full}))
    return [(k, w, {**base, **s}) for k, w, s in p]  # a spec's own threads win


def _mmsa(quick: bool, threads: Optional[int]) -> Dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="pase-bench-mmsa-"))
    try:
        scale, why = _mmsa_scale(quick, tmp)
        sizes = [max(8, round(n * scale)) for n in MMSA_SIZES]
        path = tmp / "MOSEI" / "Processed" / "aligned_50.pkl"
        _log(f"mmsa: writing {sizes} samples (scale {scale:g}; {why})")
        w = _run_worker("mmsa_write", {"path": str(path), "sizes": sizes, "steps": MMSA_STEPS,
                                       "dims": list(MMSA_DIMS), "threads": threads})
        if "error" in w:
            return {"error": w["error"], "scale": scale}
        _log(f"mmsa: loading {w['bytes'] / 2**20:.0f} MiB")
        ld = _run_worker("mmsa_load", {"path": str(path), "threads": threads})
        return {"scale": scale, "scale_reason": why, "sizes": sizes, "write": w, "load": ld,
                "full_bytes_estimate": _mmsa_bytes(sum(MMSA_SIZES))}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def machine(threads: Optional[int]) -> Dict[str, Any]:
    import lightning
    import numpy
    import torch

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
            "torch_threads": threads or torch.get_num_threads(), "torch": torch.__version__,
            "lightning": lightning.__version__, "numpy": numpy.__version__, "python": platform.python_version(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "load_avg_start": [round(x, 2) for x in os.getloadavg()]}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        info["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                     text=True).stdout.strip()
        # the timed code is src/ and the harness (workers, timing loop, renderer): a run with either edited is
        # not the commit's (only src/ was checked: a changed benchmarks/workers.py read "clean"; review)
        status = subprocess.run(["git", "status", "--porcelain", "--", *_TRACKED_SPECS], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
        info["git_dirty"] = bool(status)
        info["git_dirty_paths"] = list(TRACKED)
        if status:
            stat = subprocess.run(["git", "diff", "--stat", "HEAD", "--", *_TRACKED_SPECS], cwd=ROOT,
                                  capture_output=True, text=True).stdout.rstrip()
            untracked = [ln[3:] for ln in status.splitlines() if ln.startswith("??")]
            info["git_diff_stat"] = stat + "".join(f"\n {p} (untracked)" for p in untracked)
    except OSError:
        pass
    import pase

    info["pase_file"] = pase.__file__  # must lie under ROOT/src: the timed code is the recorded commit's
    if not Path(pase.__file__).resolve().is_relative_to(ROOT / "src"):
        _log(f"warning: pase is imported from {pase.__file__}, not from {ROOT / 'src'}: the recorded commit "
             "is not the timed code")
    return info


def positive_int(text: str) -> int:
    """argparse type of a count (threads, repeats): 0 or less made every worker die in
    ``torch.set_num_threads`` after the run had started, or ``statistics.median`` of nothing (review)."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return n


def _args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="subsets of batches and smaller files, no compiled (+compile, CUDA-graph) variants: "
                    "a few minutes")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA only)")
    ap.add_argument("--threads", type=positive_int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--out", default=None, help="report path (default: BENCHMARKS.md at the project root; "
                    "BENCHMARKS-quick.md / BENCHMARKS-partial.md for --quick / --only, so they never replace it; "
                    "a default report is saved as BENCHMARKS[-quick]-partial.md after each measurement and "
                    "written under its own name only when the run completes; a given --out is rewritten after "
                    "each measurement)")
    ap.add_argument("--json", default=None, help="raw results path (default: benchmarks/results*.json; saved as "
                    "results[-quick]-partial*.json while measuring, as the report)")
    ap.add_argument("--only", default=None, help="comma-separated key prefixes to run (e.g. epoch,mmsa)")
    ap.add_argument("--render", metavar="JSON", default=None,
                    help="only rewrite the report (--out) from the raw results of an earlier run")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    a = _args(argv)
    if a.worker:
        _worker_main(a.worker, json.loads(a.spec))
        return 0
    if a.render:
        import report

        raw = Path(a.render).resolve()
        try:  # a missing or non-results file ended in a traceback (review)
            res = json.loads(raw.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            why = "not JSON" if isinstance(e, ValueError) else "cannot read it"
            print(f"benchmarks/run.py: --render {a.render}: {why} ({e}); give a results file "
                  "of benchmarks/run.py (benchmarks/results*.json)", file=sys.stderr)
            return 2
        missing = report.missing_key(res)
        if missing:
            print(f"benchmarks/run.py: --render {a.render}: not a benchmarks/run.py results file: no {missing!r} key; "
                  "give a results file of benchmarks/run.py (benchmarks/results*.json)", file=sys.stderr)
            return 2
        # like a measuring run: a quick, partial (interrupted or --only) or CUDA result never replaces
        # BENCHMARKS.md; an --only file has a total too, so its selection decides (it overwrote BENCHMARKS.md)
        suffix = ("-quick" if res.get("quick") else "") + \
            ("-partial" if "total_wall_s" not in res or report.only(res) else "") + \
            ("-cuda" if res.get("device") == "cuda" else "") + ("-bf16" if res.get("bf16") else "")
        out = Path(a.out) if a.out else ROOT / f"BENCHMARKS{suffix}.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report.render(res, raw.relative_to(ROOT) if raw.is_relative_to(ROOT) else raw))
        _log(f"wrote {out} from {raw}")
        return 0
    import torch

    if a.device == "cuda" and not torch.cuda.is_available():
        print("benchmarks/run.py: --device cuda but torch.cuda.is_available() is False "
              f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}); run it on a CUDA machine "
              "with a CUDA build of torch, or use --device cpu", file=sys.stderr)
        return 2
    if a.bf16 and a.device != "cuda":
        print("benchmarks/run.py: --bf16 needs --device cuda (CPU timings are float32)", file=sys.stderr)
        return 2
    only = [s for s in (a.only or "").split(",") if s]
    keys = [k for k, _, _ in plan(a.quick, a.device, a.bf16, a.threads)] + ["mmsa"]
    unknown = [o for o in only if not any(k.startswith(o) for k in keys)]
    if unknown:  # it ran nothing, exit 0, and wrote an all-"not run" BENCHMARKS.md over the committed one (review)
        print(f"benchmarks/run.py: --only {unknown[0]!r} matches no measurement; valid keys (prefixes match): "
              f"{', '.join(keys)}", file=sys.stderr)
        return 2
    # a quick or partial run writes beside the full report, never over it (unless --out / --json say so)
    tail = ("-cuda" if a.device == "cuda" else "") + ("-bf16" if a.bf16 else "")
    suffix = ("-quick" if a.quick else "") + ("-partial" if only else "") + tail
    out = Path(a.out) if a.out else ROOT / f"BENCHMARKS{suffix}.md"
    raw = Path(a.json) if a.json else HERE / f"results{suffix}.json"
    # while measuring, a default report / raw file is saved under its -partial name, and the default name is written
    # only by the last save of a run that completed: a full run cut short (Ctrl-C, a lent machine's call limit) left
    # a one-row "interrupted" report over the committed BENCHMARKS.md and results.json (review); an --out / --json of
    # the caller's (gpu.sh's $OUT/BENCHMARKS-4.md) is rewritten after every measurement, so a cut run leaves it
    partial = ("-quick" if a.quick else "") + "-partial" + tail
    out_now = out if a.out else ROOT / f"BENCHMARKS{partial}.md"
    raw_now = raw if a.json else HERE / f"results{partial}.json"
    for p in (out, raw, out_now, raw_now):  # before any measurement: a missing folder lost the first one (review)
        p.parent.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/run.py " + " ".join(x for x in (argv if argv is not None else sys.argv[1:]))
    results: Dict[str, Any] = {"machine": machine(a.threads), "quick": a.quick, "device": a.device,
                               "bf16": a.bf16, "command": command.strip(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                               "only": only}  # --render writes a partial report for it (review)
    t0 = time.perf_counter()
    import workloads as W

    if not W.MOSI_BCLSTM.is_dir():  # the real-MOSI rows are skipped; say so before, not only in the report
        _log(f"WARNING: {W.MOSI_BCLSTM} is absent, so every real-MOSI row is skipped (n/a); set PASE_MOSI_BCLSTM "
             f"to the mosi-bclstm folder to measure them")
    import report

    def save(md: Path, js: Path, final: bool = False) -> bool:
        """The raw results and the report of what finished so far: an interrupted run (a lent machine's call
        limit) leaves both, the report saying it was interrupted (only the JSON was rewritten: review). False
        when the report could not be rendered: tolerated after a measurement (the run goes on), an error at the
        end (it was logged as "wrote" and the run exited 0, the report file missing or stale: review)."""
        js.write_text(json.dumps(results, indent=1))
        try:
            md.write_text(report.render(results, js.relative_to(ROOT) if js.is_relative_to(ROOT) else js))
        except Exception as e:  # noqa: BLE001 - a renderer bug must not cost the measurements; --render retries
            if final:
                old = " (the file there is an earlier save, from before this run's end)" if md.exists() else ""
                _log(f"error: could not render the report ({type(e).__name__}: {e}): {md} was NOT written{old}; "
                     f"the raw results are in {js}: after fixing benchmarks/report.py, run "
                     f"`python benchmarks/run.py --render {js} --out {md}`")
            else:
                _log(f"warning: could not render {md} ({type(e).__name__}: {e}); the raw results are in {js}")
            return False
        return True

    if (out_now, raw_now) != (out, raw):
        _log(f"after each measurement: {out_now} and {raw_now}; {out} and {raw} only when the run completes")

    for key, worker, spec in plan(a.quick, a.device, a.bf16, a.threads):
        if only and not any(key.startswith(o) for o in only):
            continue
        _log(f"{key} ...")
        results[key] = _run_worker(worker, spec, spec.get("timeout_s", 1800))
        r = results[key]
        _log(f"{key}: {r['error']}" if "error" in r else f"{key}: {r.get('driver_wall_s', 0):.1f} s")
        save(out_now, raw_now)
    if not only or any("mmsa".startswith(o) or o.startswith("mmsa") for o in only):
        results["mmsa"] = _mmsa(a.quick, a.threads)
    results["total_wall_s"] = time.perf_counter() - t0
    results["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    if not save(out, raw, final=True):  # complete: the default names now
        return 1
    for p, q in ((out, out_now), (raw, raw_now)):
        if q != p:  # this run's own saves so far, replaced by the complete files
            q.unlink(missing_ok=True)
    _log(f"wrote {out} and {raw} in {results['total_wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
