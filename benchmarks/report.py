"""Render ``BENCHMARKS.md`` from the raw results of ``benchmarks/run.py`` (issue 6 targets)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Optional

#: issue 6 targets
EPOCH_RATIO = 1.15  # PaSE epoch <= 1.15 x late fusion's
SHAPLEY_SHARE = 0.10  # exact Shapley + SGM at M = 3 <= 10 % of a plain step
MMSA_PEAK = 1.5  # MMSA load peak <= 1.5 x file size
MULT_CPU_S, MULT_GPU_S, MULT_PEAK_GB = 25.0, 12.9, 10.0  # MMSA 2.2.1 MulT, MOSI, per the issue
FLAT_MB, FLAT_FRAC = 4.0, 0.005  # growth per epoch after the first counted as flat: RSS is read after gc and
# malloc_trim (workloads.live_rss_mb), which held one value over 8 MOSI-shaped epochs where untrimmed RSS
# swung by up to 186 MiB; a real leak grows every epoch
DATASETS = {"real_mosi": "real MOSI (bc-LSTM, utterance level, MLP encoders)",
            "mosi_shaped": "MOSI-shaped (1,284 x 50 steps, 768/5/20, Transformer encoders)",
            "mosei_shaped": "MOSEI-shaped (16,326 x 50 steps, 768/74/35, Transformer encoders)"}


#: the keys render() reads of every results file, and of its "machine"
REQUIRED = ("machine", "quick", "device", "bf16", "command", "started")
MACHINE = ("cpu", "cores", "affinity", "memory_gib", "torch", "torch_threads", "lightning", "numpy", "python",
           "load_avg_start")


def missing_key(res: Any) -> Optional[str]:
    """The first key render() needs that ``res`` lacks (``machine.cpu`` for one of the machine's),
    or None: a non-results JSON given to ``run.py --render`` ended in a KeyError traceback (review)."""
    if not isinstance(res, dict):
        return "machine"
    top = next((k for k in REQUIRED if k not in res), None)
    if top or not isinstance(res["machine"], dict):
        return top or "machine"
    return next((f"machine.{k}" for k in MACHINE if k not in res["machine"]), None)


def only(res: Dict[str, Any]) -> List[str]:
    """The ``--only`` prefixes of the run (empty for a full one): recorded since the review found
    an --only file rendered as "full" over BENCHMARKS.md; read from the command in older files."""
    if "only" in res:
        return list(res["only"] or [])
    m = re.search(r"--only[= ](\S+)", res.get("command", ""))
    return [o for o in m.group(1).split(",") if o] if m else []


def _q(d: Optional[Dict[str, float]], digits: int = 2, scale: float = 1.0) -> str:
    """``median (min-max)`` of a quantile dict."""
    if not d or "median" not in d:
        return "n/a"
    f = lambda x: f"{x * scale:.{digits}f}"  # noqa: E731
    return f"{f(d['median'])} ({f(d['min'])}-{f(d['max'])})" if d.get("n", 1) > 1 else f(d["median"])


def _message(error: str) -> str:
    """A worker's ``"Type: message"``, with ``(no message)`` for an exception that had none (it read
    "AssertionError: " in the CUDA run 3's targets)."""
    kind, sep, text = error.partition(": ")
    return error if text.strip() or not sep else f"{kind} (no message)"


def _ok(flag: Optional[bool]) -> str:
    return "n/a" if flag is None else ("**met**" if flag else "**missed**")


def _err(r: Optional[Dict[str, Any]]) -> Optional[str]:
    if r is None:
        return "not run"
    return r.get("error") or r.get("skipped")


def _dirty(m: Dict[str, Any]) -> str:
    """The header's note on uncommitted changes: src/ only in runs before the harness was checked too."""
    if not m.get("git_dirty"):
        return ""
    if "git_dirty_paths" not in m:
        return " with uncommitted changes in src/"
    stat = (m.get("git_diff_stat") or "").strip().splitlines()
    return (f" with uncommitted changes in {' or '.join(p + '/' for p in m['git_dirty_paths'])}"
            + (f" ({'; '.join(ln.strip() for ln in stat)})" if stat else ""))


def _machine(res: Dict[str, Any], raw: Path) -> List[str]:
    m = res["machine"]
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ""
    sel = only(res)
    kind = ", ".join(x for x in ("quick" if res["quick"] else "", f"partial: --only {','.join(sel)}" if sel else "")
                     if x) or "full"
    # an interrupted run's raw file (rewritten after every measurement) has no total: render what finished
    length = (f"{res['total_wall_s'] / 60:.1f} min in all" if "total_wall_s" in res
              else "interrupted before its end (the measurements that finished)")
    out = [
        "## Machine and commands", "",
        f"- CPU: {m['cpu']}, {m['cores']} cores ({m['affinity']} usable), {m['memory_gib']} GiB RAM{gpu}",
        f"- torch {m['torch']} ({m['torch_threads']} intra-op threads), lightning {m['lightning']}, numpy {m['numpy']}, "
        f"Python {m['python']}; commit {m.get('git', '?')}{_dirty(m)}",
        f"- load average (1/5/15 min) at start {m['load_avg_start']}, at end {m.get('load_avg_end')}: other "
        "processes shared the cores, so absolute times are noisy; ratios are paired (same process, same "
        "batches, interleaved) and are the figures to read",
        f"- run: `{res['command']}` ({kind}, device {res['device']}"
        f"{', bf16 autocast' if res['bf16'] else ', float32'}), started {res['started']}, "
        f"{length}; raw results `{raw}`",
        "- regenerate: `python benchmarks/run.py --threads 1` (full: 10 to 20 min on this 2-core VM, longer "
        "under load; this run's length is above), `python benchmarks/run.py --quick --threads 1` (a few "
        "minutes), `bash benchmarks/gpu.sh` (CUDA, "
        "bf16); `python benchmarks/parts.py --threads 1` for the per-part table below; `python benchmarks/run.py "
        "--render benchmarks/results.json` rewrites this file from the raw results", "",
        "Each figure is `median (min-max)` over the repeats. Every measurement ran in a fresh subprocess; "
        "`plain` is late fusion trained on the fused task loss alone, `late_fusion` is the registered method "
        "(which also tracks exact Shapley values every batch), `pase` has PCL, OT, gate and SGM on and is forced "
        "into phase 2 (`pase.switch_max_epoch=0`) from the first step. The timing loop is the Lightning module's "
        "step without Lightning: `out = model(batch); loss, _ = method.loss(model, batch, out); "
        "opt.zero_grad(); loss.backward(); method.before_optimizer_step(model); opt.step()`.", ""]
    return out


def _variant_rows(ds: str, r: Dict[str, Any]) -> List[str]:
    """One epoch-table row per variant of an epoch worker's result ``r`` on dataset ``ds``."""
    timed = (f"{r['batches_timed']} of {r['batches_per_epoch']} batches x {r['repeats']}, extrapolated"
             if r["batches_timed"] else f"full epoch ({r['batches_per_epoch']} batches) x {r['repeats']}")
    return [f"| {ds} | {v} | {_q(q, 3)} | {_q(r['samples_per_s'][v], 0)} | {timed} |" for v, q in r["epoch_s"].items()]


def _epoch_section(res: Dict[str, Any]) -> List[str]:
    out = ["## Training epoch time", "",
           "| data | variant | epoch s | samples/s | timed |", "|---|---|---|---|---|"]
    ratios = []
    for ds in DATASETS:
        r = res.get(f"epoch/{ds}")
        if _err(r):
            out.append(f"| {ds} | - | {_err(r)} | | |")
            continue
        out += _variant_rows(ds, r)
        qc, qcc = r.get("ratio_pase_compile_late_fusion"), r.get("ratio_pase_compile_late_fusion_compile")
        ratios.append(f"| {ds} | {_q(r.get('ratio_pase_late_fusion'))} | {_q(r.get('ratio_pase_plain'))} | "
                      f"{_q(r.get('ratio_late_fusion_plain'))} | {_q(qc) if qc else '-'} | {_q(qcc) if qcc else '-'} |")
    out += ["", "Ratios are paired: the median (min-max) over repeats of the ratio of the two variants' times in one "
            "repeat (the same batches), so they need not equal the ratio of the medians above.", "",
            "| data | pase / late_fusion | pase / plain | late_fusion / plain | pase+compile / late_fusion | "
            "pase+compile / late_fusion+compile |", "|---|---|---|---|---|---|"] + ratios
    return out + [""]


def _graphs_section(res: Dict[str, Any]) -> List[str]:
    """CUDA runs: compiled steps and CUDA graphs of them (``graphs/*`` and ``compile/*`` keys), when measured."""
    keys = [ds for ds in DATASETS if f"graphs/{ds}" in res or f"compile/{ds}" in res]
    if not keys:
        return []
    out = ["## Compiled steps and CUDA graphs (CUDA)", "",
           "The forward pass and the method's losses compiled (`+compile`: `torch.compile`, as `train.compile=true`) "
           "and replayed as CUDA graphs (`+graphs`: `torch.compile(mode=\"reduce-overhead\")`); SGM and the "
           "optimiser step stay eager. Same timing loop as above, in a worker of their own; epochs after the "
           "compiling one (every batch shape compiled before timing).", "",
           "| data | variant | epoch s | samples/s | timed |", "|---|---|---|---|---|"]
    ratios = []
    for ds in keys:
        # graphs/<ds>: eager and +graphs (earlier runs: +compile too); compile/<ds>: the +compile variants in a
        # worker of their own, labelled, so that their slow compile timing out loses only them
        got = {}
        for key, label in ((f"graphs/{ds}", ds), (f"compile/{ds}", f"{ds} (compile worker)")):
            r = res.get(key)
            if r is None:
                continue
            if _err(r):
                out.append(f"| {label} | - | {_err(r)} | | |")
                continue
            got[key] = r
            out += _variant_rows(label, r)
            for v, e in (r.get("compile_errors") or {}).items():
                out.append(f"| {label} | {v} | failed: {_message(e)} | | |")
        if not got:
            continue
        g, c = got.get(f"graphs/{ds}", {}), got.get(f"compile/{ds}", {})
        eager = g.get("ratio_pase_late_fusion") or c.get("ratio_pase_late_fusion")
        both = c.get("ratio_pase_compile_late_fusion_compile") or g.get("ratio_pase_compile_late_fusion_compile")
        ratios.append(f"| {ds} | {_q(eager)} | {_q(both)} | {_q(g.get('ratio_pase_graphs_late_fusion_graphs'))} |")
    return out + ["", "| data | pase / late_fusion (eager) | both compiled | both CUDA graphs |",
                  "|---|---|---|---|"] + ratios + [""]


def _lightning_section(res: Dict[str, Any]) -> List[str]:
    out = ["## One real `pase.training.train` run per method (Lightning)", "",
           "Epoch times come from a timing callback appended to the trainer's callbacks; the plain loop ran "
           "one epoch of the same method right after, in the same process (so `train.deterministic=true`, "
           "which `train` switches on, applies to both). PaSE runs with `pase.switch_max_epoch=0`, so its last "
           "epoch is a phase-2 (SGM) epoch; the `phase` column is the method's phase at the end.", "",
           "| data | method | train samples | Lightning training loop s / epoch | validation s | plain loop s | "
           "Lightning / plain | whole `train()` s | phase |", "|---|---|---|---|---|---|---|---|---|"]
    for ds in ("real_mosi", "mosi_shaped"):
        r = res.get(f"lightning/{ds}")
        if r is None:
            out.append(f"| {ds} | - | full run only | | | | | | |")
            continue
        if _err(r):
            out.append(f"| {ds} | - | {_err(r)} | | | | | | |")
            continue
        for meth, m in r["per_method"].items():
            last = m["epochs"][-1] if m["epochs"] else {}
            loops = ", ".join(f"{e['train_loop_s']:.2f}" for e in m["epochs"])
            ratio = f"{m['lightning_over_plain']:.2f}" if m.get("lightning_over_plain") else "n/a"
            out.append(f"| {ds} | {meth} | {r['n_train']} | {loops} | {last.get('validation_s', float('nan')):.2f} | "
                       f"{m['plain_loop_epoch_s']:.2f} | {ratio} | {m['train_total_s']:.1f} | {m.get('phase') or '-'} |")
    return out + [""]


def _shapley_section(res: Dict[str, Any]) -> List[str]:
    r = res.get("shapley")
    out = ["## Exact Shapley estimate + gradient modulation vs a plain step", ""]
    if _err(r):
        return out + [f"not measured: {_err(r)}", ""]
    out += ["Synthetic benchmark with M modalities (utterance level, MLP encoders, widths "
            "768/5/20/74/35/100/64/32, batch 64). `Shapley+SGM` is `method.track` (all 2^M coalitions in one "
            "batched head pass over the encoder outputs, exact Shapley values, shares, SGM coefficients) plus "
            "`method.before_optimizer_step` (coefficient EMA, in-place gradient scaling), after a backward; "
            "`plain step` is a whole late-fusion training step of the same encoders and head without tracking. "
            "Encoder and head calls are counted with forward hooks over full PaSE phase-2 steps (since commit "
            "after d7cb45f the coalition pass runs the head's layers itself, with the first linear layer split "
            "by modality, so the head module's hook counts only the forward pass: 1).", "",
            "| M | coalitions | plain step ms | Shapley+SGM ms | Shapley+SGM / plain | whole PaSE step ms | "
            "encoder calls per batch (max) | head calls per batch |", "|---|---|---|---|---|---|---|---|"]
    rows = [(f"{M}", s) for M, s in r["sweep"].items()]
    if r.get("mosi_shaped"):
        rows.append(("3 (MOSI-shaped, Transformer)", r["mosi_shaped"]))
    for label, s in rows:
        out.append(f"| {label} | {s['coalitions']} | {_q(s['plain_step_ms'], 1)} | {_q(s['shapley_sgm_ms'], 2)} | "
                   f"{_q(s['ratio_shapley_sgm_plain'], 3)} | {_q(s['pase_step_ms'], 1)} | "
                   f"{max(s['encoder_calls_per_batch'].values()):g} | {s['head_calls_per_batch']:g} |")
    return out + [""]


def _inference_section(res: Dict[str, Any]) -> List[str]:
    """The paired inference throughput (``inference/*`` keys); nothing for a run before them (their
    inference figure is the memory table's single pass)."""
    if not any(k.startswith("inference/") for k in res):
        return []
    out = ["## Inference throughput (paired)", "",
           "Both methods' models in one fresh process (`model.eval()`, `torch.inference_mode()`, batch 64) over the "
           "same test batches, interleaved: for every batch (block of batches on a GPU) each model runs it in a "
           "rotating order, timed with a device sync at both ends, after a warm-up pass of each. A repeat is "
           "`passes` passes over the batches, sized so that the faster model's repeat takes about a second; "
           "samples/s is the median (min-max) over the repeats, and the ratio is paired: the median (min-max) "
           "over repeats of the ratio of PaSE's time to late fusion's in that repeat (> 1: PaSE is slower).", "",
           "| data | late_fusion samples/s | pase samples/s | pase / late_fusion (time) | timed |",
           "|---|---|---|---|---|"]
    for ds in DATASETS:
        r = res.get(f"inference/{ds}")
        if r is None:
            continue
        if _err(r):
            out.append(f"| {ds} | {_err(r)} | | | |")
            continue
        sps = r["samples_per_s"]
        part = f"{r['samples']} of {r['of']} test samples" if r["of"] > r["samples"] else f"{r['samples']} test samples"
        out.append(f"| {ds} | {_q(sps.get('late_fusion'), 0)} | {_q(sps.get('pase'), 0)} | "
                   f"{_q(r.get('ratio_pase_late_fusion'))} | {part}, {r['passes_per_repeat']} pass(es) x "
                   f"{r['repeats']} repeats |")
    return out + [""]


def _memory_section(res: Dict[str, Any]) -> List[str]:
    trimmed = any("rss_untrimmed_after_epoch_mb" in r for k, r in res.items() if k.startswith("memory/"))
    how = ("read after a garbage collection and glibc's `malloc_trim`, so freed pages glibc keeps for reuse do not "
           "count" if trimmed else "read as is (this run predates the trimmed reading: freed pages glibc keeps for "
           "reuse count too, and swing RSS by up to 186 MiB between epochs)")
    streamed = any(r.get("streamed") for k, r in res.items() if k.startswith("memory/") and isinstance(r, dict))
    peaks = ("batches are streamed from the loader one at a time, as a run holds them; peaks are `VmHWM` (monotone, "
             "so the training peak includes the data)" if streamed else
             "**this run predates two fixes from a review**: each split's batches were built as one list first, so "
             "the peaks also count that copy (a review measured 13 to 22 % above a streamed run on MOSI-shaped data), and peaks are "
             "`ru_maxrss`, which a worker inherits from the driver (about 400 MiB) at exec; both overstate, "
             "so the verdicts against MulT's 10 GB hold")
    # a run before the inference worker has a single-pass throughput per row; later runs leave it to that table
    mem = [r for k, r in res.items() if k.startswith("memory/") and not _err(r)]
    thru = (any("infer_samples_per_s" in r for r in mem) if mem else not any(k.startswith("inference/") for k in res))
    out = [f"## {'Inference throughput and peak memory' if thru else 'Peak memory'}", "",
           "One fresh process per row: RSS after building the data, inference over the test split or the part "
           "of it named in the row "
           f"(`model.eval()`, `torch.inference_mode()`, batch 64), then training epochs with RSS (VmRSS) after each, "
           f"{how}; {peaks}.", "",
           f"| data | method | data RSS MiB |{' inference samples/s |' if thru else ''} inference peak MiB | "
           "training peak MiB | RSS after each epoch MiB | epoch s |", f"|---|---|---|---|---|---|---|{'---|' if thru else ''}"]
    for ds in DATASETS:
        for meth in ("late_fusion", "pase"):
            r = res.get(f"memory/{ds}/{meth}")
            if r is None:
                continue
            if _err(r):
                out.append(f"| {ds} | {meth} | {_err(r)} | | | | |{' |' if thru else ''}")
                continue
            sub = (f" ({r['batches_timed']} of {r['batches_per_epoch']} batches)" if r.get("batches_timed") else "")
            gpu = (f" (CUDA {r['cuda_peak_infer_mb']:.0f} / {r['cuda_peak_train_mb']:.0f})"
                   if "cuda_peak_train_mb" in r else "")
            part = (f" ({r['infer_samples']} of {r['infer_of']} samples)" if r.get("infer_of", 0) > r["infer_samples"]
                    else (f" ({r['infer_samples']} samples)" if "infer_of" not in r else ""))
            ips = f"{r['infer_samples_per_s']:.0f}" if "infer_samples_per_s" in r else "n/a"
            infer = (f"{ips}{part} | {r['peak_infer_mb']:.0f}" if thru
                     else f"{r['peak_infer_mb']:.0f}{part}")
            out.append(f"| {ds} | {meth} | {r['rss_data_mb']:.0f} | {infer} | {r['peak_train_mb']:.0f}{gpu} | "
                       f"{', '.join(f'{x:.0f}' for x in r['rss_after_epoch_mb'])} | "
                       f"{', '.join(f'{x:.2f}' for x in r['epoch_s'])}{sub} |")
    if res["quick"]:
        out += ["", "Quick run: MOSI-shaped rows only, on subsets; real-MOSI and MOSEI-shaped rows (the data "
                "alone is 4 GB) are measured in the full run."]
    return out + [""]


def _mmsa_section(res: Dict[str, Any]) -> List[str]:
    r = res.get("mmsa")
    out = ["## Loading a MOSEI-shaped MMSA pickle", ""]
    if r is None or "error" in r or _err(r.get("load")):
        return out + [f"not measured: {(r or {}).get('error') or _err((r or {}).get('load'))}", ""]
    ld, w = r["load"], r["write"]
    out += [f"`aligned_50.pkl` with every key of MMSA's files (layout of `tests/data/writers.py`), float32 "
            f"features, 50 steps, widths 768/74/35, {'/'.join(str(n) for n in r['sizes'])} samples "
            f"(scale {r['scale']:g} of 16,326/1,871/4,659; {r['scale_reason']}), pickle protocol 4. The full "
            f"file would be about {r['full_bytes_estimate'] / 2**30:.2f} GiB. It was written by one process "
            f"({w['write_s']:.1f} s) and loaded with `pase.data.mmsa.load_mmsa(path, dataset='mosei')` by a "
            "fresh one (so the file was in the page cache: the load time is not a cold-disk time).", "",
            "| file MiB | load s | RSS before MiB | peak MiB | RSS held after MiB | (peak - before) / file | "
            "peak / file | held / file |", "|---|---|---|---|---|---|---|---|",
            f"| {ld['file_mb']:.0f} | {ld['load_s']:.2f} | {ld['rss_before_mb']:.0f} | {ld['peak_mb']:.0f} | "
            f"{ld['rss_after_mb']:.0f} | {ld['peak_increment_over_file']:.2f} | {ld['peak_over_file']:.2f} | "
            f"{ld['held_increment_over_file']:.2f} |", ""]
    return out


def rss_slope(xs: List[float]) -> float:
    """Least-squares RSS growth per epoch over epochs 2..N (the first epoch fills the allocator's
    pools): robust to one noisy epoch where a last-minus-second difference is not."""
    ys = xs[1:]
    n = len(ys)
    mx, my = (n - 1) / 2, sum(ys) / n
    return sum((i - mx) * (y - my) for i, y in enumerate(ys)) / sum((i - mx) ** 2 for i in range(n))


def _held(r: Dict[str, Any]) -> List[float]:
    """Memory held after each epoch: CUDA-allocated MiB on a GPU, else RSS (trimmed)."""
    return r.get("cuda_allocated_after_epoch_mb") or r["rss_after_epoch_mb"]


def _flat(r: Optional[Dict[str, Any]]) -> Optional[bool]:
    if _err(r) or len(r["rss_after_epoch_mb"]) < 3:
        return None
    xs = _held(r)
    return rss_slope(xs) <= max(FLAT_MB, FLAT_FRAC * xs[1])


def _targets(res: Dict[str, Any]) -> List[str]:
    rows = []
    for ds in DATASETS:
        r = res.get(f"epoch/{ds}")
        q = None if _err(r) else r.get("ratio_pase_late_fusion")
        rows.append((f"PaSE epoch <= {EPOCH_RATIO} x late fusion, M = 3, {DATASETS[ds]}",
                     f"{_q(q)} x" if q else str(_err(r)), _ok(q["median"] <= EPOCH_RATIO) if q else "n/a"))
        qc = None if _err(r) else r.get("ratio_pase_compile_late_fusion")
        failed = None if _err(r) else (r.get("compile_errors") or {}).get("pase+compile")
        if failed:
            rows.append((f"the same with `train.compile=true` for PaSE, {DATASETS[ds]}", f"did not compile: {failed}",
                         "n/a"))
        if qc:
            qcc = r.get("ratio_pase_compile_late_fusion_compile")
            both = f"; both compiled: {_q(qcc)} x" if qcc else ""
            rows.append((f"the same with `train.compile=true` for PaSE (forward pass and losses compiled, late fusion "
                         f"eager), epochs after the first, which compiled in {r['compile_first_epoch_s']:.1f} s",
                         f"{_q(qc)} x{both}", _ok(qc["median"] <= EPOCH_RATIO)))
        g = res.get(f"graphs/{ds}")
        qg = None if _err(g) else g.get("ratio_pase_graphs_late_fusion_graphs")
        if g is not None:
            failed = _err(g) or "; ".join(f"{v} failed: {_message(e)}" for v, e in (g.get("compile_errors") or {}).items()
                                          if v.endswith("+graphs"))
            rows.append((f"the same with CUDA graphs of the compiled forward and backward for both "
                         f"(`torch.compile(mode=\"reduce-overhead\")`), {DATASETS[ds]}",
                         f"{_q(qg)} x" if qg else f"not measured: {failed or 'a variant is missing'}",
                         _ok(qg["median"] <= EPOCH_RATIO) if qg else "n/a"))
    s = res.get("shapley")
    if not _err(s):
        q3 = s["sweep"].get("3", {}).get("ratio_shapley_sgm_plain")
        rows.append(("exact Shapley + SGM at M = 3 <= 10 % of a plain step (utterance level, MLP encoders)",
                     f"{_q(q3, 1, 100)} %" if q3 else "n/a", _ok(q3["median"] <= SHAPLEY_SHARE) if q3 else "n/a"))
        qm = (s.get("mosi_shaped") or {}).get("ratio_shapley_sgm_plain")
        if qm:
            rows.append(("exact Shapley + SGM at M = 3 <= 10 % of a plain step (MOSI-shaped, Transformer)",
                         f"{_q(qm, 1, 100)} %", _ok(qm["median"] <= SHAPLEY_SHARE)))
        calls = max(max(v["encoder_calls_per_batch"].values()) for v in s["sweep"].values())
        ms = ", ".join(s["sweep"])
        rows.append((f"encoders run once per batch up to M = 8 (M = {ms})", f"max {calls:g} call per batch",
                     _ok(calls == 1)))
    m = res.get("mmsa")
    if m and "load" in m and not _err(m["load"]):
        ld = m["load"]
        full = m["full_bytes_estimate"] / 2**20
        proj = (ld["rss_before_mb"] + ld["peak_increment_over_file"] * full) / full
        at_full = ("" if m["scale"] == 1 else f"; projected whole process at full size {proj:.2f} x")
        rows.append((f"MMSA MOSEI-shaped pickle load peak <= {MMSA_PEAK} x file size",
                     f"peak increment {ld['peak_increment_over_file']:.2f} x the file ({ld['file_mb']:.0f} MiB, "
                     f"scale {m['scale']:g}); whole process {ld['peak_over_file']:.2f} x{at_full}",
                     _ok(ld["peak_increment_over_file"] <= MMSA_PEAK)))
    rows += _mult_rows(res)
    out = ["## Targets (issue 6)", "", "| target | measured | verdict |", "|---|---|---|"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return out + [""]


def _mult_rows(res: Dict[str, Any]) -> List[tuple]:
    gpu = res["device"] == "cuda"
    limit = (MULT_GPU_S if gpu else MULT_CPU_S) / 5
    where = "this GPU (MulT's figure is an H100's)" if gpu else "2 CPU cores"
    rows = []
    e = res.get("epoch/mosi_shaped")
    if not _err(e):
        q = e["epoch_s"]["pase"]
        threads = e.get("threads")
        rows.append((f"PaSE MOSI-shaped epoch <= 1/5 of MulT's {MULT_GPU_S if gpu else MULT_CPU_S} s on {where} "
                     f"= {limit:.2f} s (MulT figure from the issue, not measured here); plain loop, {threads} thread(s)",
                     f"{_q(q)} s", _ok(q["median"] <= limit)))
    e2 = res.get("epoch/mosi_shaped/threads2")
    if e2 is not None and not _err(e2):
        q, load = e2["epoch_s"]["pase"], e2.get("load_avg_1min", ["?", "?"])
        rows.append((f"the same on 2 threads, as MulT's figure (both cores of this machine; 1-minute load average "
                     f"{load[0]} before, {load[1]} after: other jobs on the cores slow a 2-thread step most)",
                     f"{_q(q)} s; late fusion {_q(e2['epoch_s']['late_fusion'])} s", _ok(q["median"] <= limit)))
    lt = res.get("lightning/mosi_shaped")
    if not _err(lt) and lt["n_train"] == 1284 and lt["per_method"].get("pase", {}).get("epochs"):
        t = lt["per_method"]["pase"]["epochs"][-1]
        rows.append(("same through Lightning (`pase.training.train`, training loop + validation)",
                     f"{t['train_loop_s']:.2f} + {t['validation_s']:.2f} s", _ok(t["epoch_s"] <= limit)))
    mem = res.get("memory/mosi_shaped/pase")
    flat = _flat(mem)
    if flat is not None:
        xs = _held(mem)
        kind = ("CUDA memory allocated" if "cuda_allocated_after_epoch_mb" in mem else
                "RSS after gc and malloc_trim" if "rss_untrimmed_after_epoch_mb" in mem else
                "RSS, untrimmed (a run before the trimmed reading)")
        peak = mem.get("cuda_peak_train_mb", mem["peak_train_mb"]) / 1024
        rows.append((f"PaSE memory flat across epochs ({kind}, after each epoch; least-squares slope over epochs 2 to "
                     f"{len(xs)}, <= max({FLAT_MB:.0f} MiB, {FLAT_FRAC:.1%} of it)), peak "
                     f"{'CUDA memory' if gpu else 'RSS'} <= MulT's {MULT_PEAK_GB:.0f} GB",
                     f"{', '.join(f'{x:.0f}' for x in xs)} MiB (slope {rss_slope(xs):+.1f} MiB / epoch); "
                     f"peak {peak:.2f} GiB",
                     _ok(flat and peak <= MULT_PEAK_GB)))
    if not gpu:
        rows.append((f"PaSE MOSI-shaped epoch <= {MULT_GPU_S / 5:.2f} s on a GPU (1/5 of MulT's {MULT_GPU_S} s on an H100)",
                     "not measured in this run (no GPU here): `bash benchmarks/gpu.sh` measures it; the CUDA runs' "
                     "reports are in `benchmarks/cuda/`", "n/a"))
    return rows


def _profile_section(res: Dict[str, Any]) -> List[str]:
    out = ["## Where the time goes (one training step, profiled)", "",
           "torch.profiler aten calls and self CPU time per step, and cProfile cumulative milliseconds per step "
           "of the method's functions (cProfile slows Python-heavy code, so read them as shares).", ""]
    for ds in ("real_mosi", "mosi_shaped"):
        r = res.get(f"profile/{ds}")
        if r is None:
            continue
        if _err(r):
            out.append(f"- {ds}: {_err(r)}")
            continue
        out += [f"**{ds}**", "", "| variant | aten calls / step | self CPU ms / step | top ops (calls, self ms per step) | "
                "top functions (cumulative ms / step) |", "|---|---|---|---|---|"]
        for v, p in r.items():
            if not isinstance(p, dict) or "aten_calls_per_step" not in p:
                continue
            cum = sorted(p["cum_ms_per_step"].items(), key=lambda kv: -kv[1])
            top = "; ".join(f"`{k}` {ms:.1f}" for k, ms in cum[:7])
            hs = p.get("host_syncs_per_step")
            where = " at " + ", ".join(f"`{k}` x{c}" for k, c in hs["top"]) if hs and hs["top"] else ""
            sync = f"; host syncs / step {hs['per_step']:g}{where}" if hs else ""
            ops = "; ".join(f"`{k}` {c}x {ms:.1f}" for k, c, ms in p["top_ops"][:4])
            out.append(f"| {v} | {p['aten_calls_per_step']:.0f} | {p['self_cpu_ms_per_step']:.1f} | {ops} | "
                       f"{top}{sync} |")
        out.append("")
    return out


def render(res: Dict[str, Any], raw: Path) -> str:
    """The whole report as Markdown."""
    title = "# PaSE benchmarks" + (" (quick run: subsets, see each table)" if res["quick"] else "")
    parts = [title, "", "Generated by `benchmarks/run.py` from its own measurements (issue 6, \"Performance: "
             "PaSE's extras at near-zero cost\"). Do not edit by hand: rerun the script.", ""]
    parts += _machine(res, raw) + _targets(res) + _epoch_section(res) + _graphs_section(res) + _lightning_section(res)
    parts += _shapley_section(res) + _inference_section(res) + _memory_section(res) + _mmsa_section(res) + _profile_section(res)
    for name in ("findings.md", "parts.md"):  # hand-written analysis; output of benchmarks/parts.py
        notes = Path(__file__).with_name(name)
        if notes.is_file():
            parts += [notes.read_text().rstrip(), ""]
    return "\n".join(parts)
