"""Benchmark workers: each runs in a fresh subprocess (``run.py --worker NAME --spec JSON``) and
returns one JSON object, so peak memory (``ru_maxrss``) belongs to one measurement only.

Workers: ``epoch`` (paired epoch times of plain / late_fusion / pase), ``shapley`` (exact
Shapley + SGM cost against a plain step for M modalities, encoder call counts), ``lightning``
(one real ``pase.training.train`` run per method, epoch times through Lightning next to the
plain loop), ``inference`` (paired inference throughput of late_fusion and pase over the same test batches,
repeated), ``memory`` (peak memory of inference and training, RSS after each epoch), ``profile`` (aten calls and cProfile times per step; CUDA host syncs),
``mmsa_write`` / ``mmsa_load`` (a MOSEI-shaped MMSA pickle and its load, ``mmsa_file.py``).
"""

from __future__ import annotations

import itertools
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import torch

import mmsa_file
import workloads as W
from pase.methods.base import task_loss


def _device(spec: Dict[str, Any]) -> torch.device:
    return torch.device(spec.get("device", "cpu"))


def _loader(bundle, split: str, seed: int, shuffle: bool = True):
    """A seeded loader of ``split``. (Imported here: ``pase.training`` pulls in Lightning, which
    the MMSA load measurement must not count.)"""
    from pase.training.datamodule import make_loader

    return make_loader(bundle, split, W.BATCH_SIZE, shuffle, seed)


def _stream(loader, limit: int, device: torch.device):
    """The first ``limit`` (0: all) batches of ``loader``, moved to ``device`` one at a time, as a
    training or inference run holds them."""
    for b in itertools.islice(iter(loader), limit or None):
        yield b.to(device)


def twin_epochs(train: int, threads: int, repeats: int, twin: str, swap: Callable[[torch.nn.Module], int]):
    """The probes' paired measurement (``dropout_probe.py``, ``attention_probe.py``): late fusion and PaSE on
    ``train`` MOSI-shaped samples, each also as a twin named ``"<method>, <twin>"`` whose model ``swap``
    changes (it returns how many modules it changed), every batch stepping every variant in rotating order
    (:func:`workloads.interleaved_ms`), ``repeats`` epochs on ``threads`` threads. Returns ``(runs, batches,
    times, swapped)``: the variants' ``workloads.Run``, the batches, per-epoch milliseconds per step by variant,
    and ``swap``'s count."""
    import contextlib

    torch.set_num_threads(threads)
    cpu, ac = torch.device("cpu"), contextlib.nullcontext()
    bundle = W.load_dataset("mosi_shaped", [train, 64, 64])
    runs = {}
    for method in ("late_fusion", "pase"):
        runs[method] = W.Run(method, bundle, "mosi_shaped", cpu)
        runs[f"{method}, {twin}"] = other = W.Run(method, bundle, "mosi_shaped", cpu)
        swapped = swap(other.model)
    batches, _, _ = _batches(bundle, "train", 0, 0, cpu)
    for r in runs.values():
        r.step(batches[0], ac)
    times = W.interleaved_ms({k: (lambda b, r=r: r.step(b, ac)) for k, r in runs.items()}, batches, repeats)
    return runs, batches, times, swapped

def _batches(bundle, split: str, limit: int, seed: int, device: torch.device, shuffle: bool = True):
    """The first ``limit`` (0: all) batches of a seeded loader on ``device``, built as one list, the
    loader time and the loader's length."""
    loader = _loader(bundle, split, seed, shuffle)
    t0 = time.perf_counter()
    out = list(_stream(loader, limit, device))
    W.sync(device)
    return out, time.perf_counter() - t0, len(loader)


# ------------------------------------------------------------------------------------ epoch
def _timed_pass(calls: Dict[str, Callable[[Any], Any]], batches: List[Any], block: int, k0: int,
                device: torch.device, acc: Dict[str, float]) -> None:
    """One pass over ``batches`` in blocks of ``block``: each of ``calls`` (name -> call(batch)) runs the block, in
    an order that rotates with ``k0`` and the block, timed with a device sync at both ends; seconds added to
    ``acc``. The epoch and inference workers' pairing: every variant meets the same load."""
    names = list(calls)
    for i in range(0, len(batches), block):
        blk = batches[i:i + block]
        k = (k0 + i // block) % len(names)
        for v in names[k:] + names[:k]:
            acc[v] += W.timed(lambda: [calls[v](b) for b in blk], device)


def _paired(times: Dict[str, List[float]], a: str, b: str) -> Dict[str, float]:
    """Quantiles of the per-repeat ratios of ``a``'s time to ``b``'s (the same batches in each repeat)."""
    return W.quantiles([p / q for p, q in zip(times[a], times[b])])


def epoch(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Paired epoch times: the variants step the same batches, interleaved in blocks.

    Each repeat draws one shuffled epoch (or its first ``batches`` batches); for every block of
    ``block`` batches each variant runs the block in a rotating order, timed with a device sync
    at both ends. A variant's epoch time is its summed step time plus the loader time of the
    epoch, scaled to the full epoch's samples when only a subset of batches ran. Ratios are the
    median over repeats of the per-repeat paired ratios.
    """
    device, bf16 = _device(spec), spec.get("bf16", False)
    bundle = W.load_dataset(spec["dataset"], spec.get("sizes"))
    if bundle is None:
        return {"skipped": f"{W.MOSI_BCLSTM} is absent"}
    runs = {v: W.Run(v, bundle, spec["dataset"], device) for v in spec.get("variants", W.VARIANTS)}
    ac = W.autocast_ctx(device, bf16)
    warm, _, _ = _batches(bundle, "train", 2, 99, device)
    # compiled runs: every batch shape, compiled once (built only for them: a whole MOSEI epoch is GiBs)
    whole = _batches(bundle, "train", 0, 99, device)[0] if any(r.compiled for r in runs.values()) else []
    compile_s, compile_errors = {}, {}
    for v, r in list(runs.items()):
        t0 = time.perf_counter()
        try:
            for b in (whole if r.compiled else warm):
                r.step(b, ac)
        except Exception as e:  # noqa: BLE001 - a compiled variant that cannot compile here is dropped, named
            if not r.compiled:
                raise
            compile_errors[v] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            del runs[v]
            continue
        if r.compiled:
            compile_s[v] = time.perf_counter() - t0
    block = spec.get("block", 1)
    times: Dict[str, List[float]] = {v: [] for v in runs}
    for rep in range(spec["repeats"]):
        batches, t_load, n_epoch = _batches(bundle, "train", spec.get("batches", 0), rep, device)
        acc = dict.fromkeys(runs, 0.0)
        _timed_pass({v: (lambda b, r=r: r.step(b, ac)) for v, r in runs.items()}, batches, block, rep, device, acc)
        # to the full epoch by samples (a subset has full batches only; the epoch ends in a smaller one)
        scale = spec.get("full_n_train", len(bundle.splits["train"])) / sum(len(b) for b in batches)
        for v in runs:
            times[v].append((acc[v] + t_load) * scale)
    n_train = spec.get("full_n_train", len(bundle.splits["train"]))
    res: Dict[str, Any] = {"n_train": n_train, "batches_per_epoch": spec.get("full_batches", n_epoch),
                           "batches_timed": spec.get("batches", 0) or None, "repeats": spec["repeats"],
                           "epoch_s": {v: W.quantiles(t) for v, t in times.items()},
                           "samples_per_s": {v: W.quantiles([n_train / x for x in t]) for v, t in times.items()},
                           "raw_epoch_s": times}
    if compile_errors:
        res["compile_errors"] = compile_errors
    if "pase" in times and "late_fusion" in times:
        res["ratio_pase_late_fusion"] = _paired(times, "pase", "late_fusion")
    if "pase+compile" in times and "late_fusion" in times:
        res["ratio_pase_compile_late_fusion"] = _paired(times, "pase+compile", "late_fusion")
        res["compile_first_epoch_s"] = compile_s["pase+compile"]  # its first epoch, compilation included
    if "pase+compile" in times and "late_fusion+compile" in times:
        res["ratio_pase_compile_late_fusion_compile"] = _paired(times, "pase+compile", "late_fusion+compile")
    if "pase+graphs" in times and "late_fusion+graphs" in times:  # CUDA graphs (reduce-overhead), both
        res["ratio_pase_graphs_late_fusion_graphs"] = _paired(times, "pase+graphs", "late_fusion+graphs")
        res["graphs_first_epoch_s"] = compile_s["pase+graphs"]
    if "pase" in times and "plain" in times:
        res["ratio_pase_plain"] = _paired(times, "pase", "plain")
        res["ratio_late_fusion_plain"] = _paired(times, "late_fusion", "plain")
    return res


# ------------------------------------------------------------------------------------ shapley
def _count_calls(modules: Dict[str, torch.nn.Module]):
    """Forward-hook call counters: (modality -> [count], hook handles)."""
    counts = {m: [0] for m in modules}
    handles = [mod.register_forward_hook(lambda *_, c=counts[m]: c.__setitem__(0, c[0] + 1))
               for m, mod in modules.items()]
    return counts, handles


def _shapley_one(bundle, dataset: str, device, bf16: bool, iters: int) -> Dict[str, Any]:
    ac = W.autocast_ctx(device, bf16)
    plain = W.Run("plain", bundle, dataset, device)
    pase = W.Run("pase", bundle, dataset, device)
    batches, _, _ = _batches(bundle, "train", 4, 0, device)
    # encoder / head calls over full PaSE steps (phase 2: tracking, coalition pass, SGM)
    enc, h1 = _count_calls(dict(pase.model.encoders.items()))
    head, h2 = _count_calls({"head": pase.model.head})
    for b in batches:
        pase.step(b, ac)
    for h in h1 + h2:
        h.remove()
    for b in batches:  # plain's warm-up, as PaSE's counted steps were its own
        plain.step(b, ac)
    calls = {m: c[0] / len(batches) for m, c in enc.items()}
    head_calls = head["head"][0] / len(batches)
    t_plain, t_extra, t_pase_step = [], [], []
    for i in range(iters):
        b = batches[i % len(batches)]
        t_plain.append(W.timed(lambda: plain.step(b, ac), device))
        t_pase_step.append(W.timed(lambda: pase.step(b, ac), device))
        with ac:
            out = pase.model(b)
            loss = task_loss(out.logits, b.target, pase.task, pase.method.loss_kind)
        pase.opt.zero_grad(set_to_none=True)
        loss.backward()

        def extra():  # one exact Shapley estimate (2^M coalitions) + SGM on the gradients
            with ac:
                pase.method.track(pase.model, b, out)
            pase.method.before_optimizer_step(pase.model, pase.opt)

        t_extra.append(W.timed(extra, device))
        pase.opt.step()
    ratio = [e / p for e, p in zip(t_extra, t_plain)]
    return {"plain_step_ms": W.quantiles([t * 1e3 for t in t_plain]),
            "shapley_sgm_ms": W.quantiles([t * 1e3 for t in t_extra]),
            "pase_step_ms": W.quantiles([t * 1e3 for t in t_pase_step]),
            "ratio_shapley_sgm_plain": W.quantiles(ratio),
            "encoder_calls_per_batch": calls, "head_calls_per_batch": head_calls,
            "coalitions": 2 ** len(calls)}


def shapley(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Exact Shapley + SGM cost and encoder calls per batch for M = 2..8 (and MOSI-shaped M = 3)."""
    device, bf16 = _device(spec), spec.get("bf16", False)
    out: Dict[str, Any] = {"sweep": {}}
    for M in spec["Ms"]:
        out["sweep"][str(M)] = _shapley_one(W.sweep_bundle(M), f"sweep{M}", device, bf16, spec["iters"])
    if spec.get("mosi_shaped_iters"):
        b = W.shaped_bundle("mosi_shaped", (256, 64, 64))
        out["mosi_shaped"] = _shapley_one(b, "mosi_shaped", device, bf16, spec["mosi_shaped_iters"])
    return out


# ------------------------------------------------------------------------------------ lightning
def _timing_callback():
    import lightning as L

    class EpochTimer(L.Callback):
        """Wall times per epoch: training batches, validation, whole epoch."""

        def __init__(self) -> None:
            self.rows: List[Dict[str, float]] = []
            self.t: Dict[str, float] = {}

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self.t = {"start": time.perf_counter()}

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.t["last_batch"] = time.perf_counter()

        def on_validation_start(self, trainer, pl_module) -> None:
            if "start" in self.t:
                self.t["val_start"] = time.perf_counter()

        def on_validation_end(self, trainer, pl_module) -> None:
            if "val_start" in self.t:
                self.t["val_end"] = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            t, now = self.t, time.perf_counter()
            self.rows.append({"train_loop_s": t["last_batch"] - t["start"],
                              "validation_s": t.get("val_end", now) - t.get("val_start", now),
                              "epoch_s": now - t["start"]})

    return EpochTimer()


def lightning(spec: Dict[str, Any]) -> Dict[str, Any]:
    """``pase.training.train`` for ``epochs`` epochs per method, then the plain loop on one epoch.

    The method's own cost is the plain loop; the framework's overhead is the ratio of the
    training-loop part of a Lightning epoch to the plain-loop epoch, in the same process.
    """
    from pase.data import register_data
    from pase.training import run as run_mod

    dataset, device, bf16 = spec["dataset"], _device(spec), spec.get("bf16", False)
    bundle = W.load_dataset(dataset, spec.get("sizes"))
    if bundle is None:
        return {"skipped": f"{W.MOSI_BCLSTM} is absent"}
    register_data("bench_in_memory")(lambda **_: bundle)
    timers: List[Any] = []
    hooked = hasattr(run_mod, "_trainer")
    if hooked:
        orig = run_mod._trainer

        def _trainer(cfg, out, callbacks, quiet):
            timers.append(_timing_callback())
            return orig(cfg, out, list(callbacks) + [timers[-1]], quiet)

        run_mod._trainer = _trainer
    res: Dict[str, Any] = {"epochs": spec["epochs"], "n_train": len(bundle.splits["train"]), "per_method": {},
                           "timing_hook": hooked}
    extra = [f"train.max_epochs={spec['epochs']}", "train.progress_bar=false", "data.source=bench_in_memory",
             f"train.batch_size={W.BATCH_SIZE}"]
    if device.type == "cuda":
        extra += ["train.accelerator=gpu", f"train.precision={'bf16-mixed' if bf16 else '32-true'}"]
    from pase.config import load_config
    from pase.training import train

    with tempfile.TemporaryDirectory() as tmp:
        for method in spec["methods"]:
            cfg = load_config(None, W.overrides(dataset, method) + extra)
            t0 = time.perf_counter()
            metrics = train(cfg, Path(tmp) / method, quiet=True)
            total = time.perf_counter() - t0
            rows = timers[-1].rows if hooked else []
            r = W.Run(method, bundle, dataset, device)
            ac = W.autocast_ctx(device, bf16)
            batches, t_load, _ = _batches(bundle, "train", 0, 0, device)
            plain_loop = W.timed(lambda: [r.step(b, ac) for b in batches], device) + t_load
            last = rows[-1] if rows else {}
            res["per_method"][method] = {
                "train_total_s": total, "epochs": rows, "plain_loop_epoch_s": plain_loop,
                "lightning_over_plain": (last["train_loop_s"] / plain_loop) if last else None,
                "phase": metrics.get("diagnostics", {}).get("phase"),
            }
    return res


# ------------------------------------------------------------------------------------ inference
def inference(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Paired inference throughput: the methods' models run the same test batches, interleaved.

    The test split's first ``batches`` (0: all) batches are built once on the device; after a
    warm-up pass of each model, every repeat runs ``passes`` passes over them in which, for every
    block of ``block`` batches, each method runs the block in a rotating order, timed with a device
    sync at both ends (``model.eval()``, ``torch.inference_mode()``). ``passes`` is chosen once so
    that the fastest method's repeat takes about ``min_repeat_s`` seconds (a single pass of real
    MOSI's test split takes 10 to 90 ms). The ratio is the median over repeats of the per-repeat
    ratios of the two methods' times (the same batches, the same passes), as ``epoch``'s.
    """
    device, bf16 = _device(spec), spec.get("bf16", False)
    bundle = W.load_dataset(spec["dataset"], spec.get("sizes"))
    if bundle is None:
        return {"skipped": f"{W.MOSI_BCLSTM} is absent"}
    methods = spec.get("methods", ["late_fusion", "pase"])
    runs = {m: W.Run(m, bundle, spec["dataset"], device) for m in methods}
    ac = W.autocast_ctx(device, bf16)
    block = spec.get("block", 1)
    with torch.inference_mode(), ac:
        batches = list(_stream(_loader(bundle, "test", 0, shuffle=False), spec.get("batches", 0), device))
        n = sum(len(b) for b in batches)
        for r in runs.values():
            r.model.eval()
            r.model(batches[0])  # warm-up

        models = {m: r.model for m, r in runs.items()}
        calib = dict.fromkeys(runs, 0.0)
        _timed_pass(models, batches, block, 0, device, calib)  # a second warm-up pass, which also sizes the repeats
        passes = max(1, math.ceil(spec.get("min_repeat_s", 1.0) / max(min(calib.values()), 1e-9)))
        times: Dict[str, List[float]] = {m: [] for m in runs}
        for rep in range(spec.get("repeats", 5)):
            acc = dict.fromkeys(runs, 0.0)
            for p in range(passes):
                _timed_pass(models, batches, block, rep + p, device, acc)
            for m in runs:
                times[m].append(acc[m])
    res: Dict[str, Any] = {"samples": n, "of": len(bundle.splits["test"]), "batches": len(batches),
                           "passes_per_repeat": passes, "repeats": len(times[methods[0]]), "block": block,
                           "pass_s": {m: W.quantiles([t / passes for t in ts]) for m, ts in times.items()},
                           "samples_per_s": {m: W.quantiles([n * passes / t for t in ts]) for m, ts in times.items()},
                           "raw_repeat_s": times}
    if "pase" in times and "late_fusion" in times:
        res["ratio_pase_late_fusion"] = _paired(times, "pase", "late_fusion")
    return res


# ------------------------------------------------------------------------------------ memory
def memory(spec: Dict[str, Any]) -> Dict[str, Any]:
    """The inference peak, then training for ``epochs`` epochs with RSS after each. (Inference
    throughput is the ``inference`` worker's: this one pass over the test split, unrepeated and
    unpaired, read 8,000 to 38,000 samples/s for PaSE between identical runs; review.)

    Batches are streamed from the loader one at a time (loading and collation are timed with the
    steps), so the peaks are the run's, not a pre-built copy of the split's. The peak (VmHWM) is
    monotone, so it is read after the data is built, after inference (the inference peak) and
    after training (the training peak; training holds more than inference).
    """
    from pase.training import datamodule  # noqa: F401  (Lightning's import is part of any training run)

    device, bf16 = _device(spec), spec.get("bf16", False)
    base = W.rss_mb()
    bundle = W.load_dataset(spec["dataset"], spec.get("sizes"))
    if bundle is None:
        return {"skipped": f"{W.MOSI_BCLSTM} is absent"}
    res: Dict[str, Any] = {"rss_start_mb": base, "rss_data_mb": W.rss_mb(), "peak_data_mb": W.peak_rss_mb(),
                           "streamed": True, "peak_source": "VmHWM"}
    run = W.Run(spec["method"], bundle, spec["dataset"], device)
    ac = W.autocast_ctx(device, bf16)
    limit = spec.get("infer_batches", 0)
    run.model.eval()
    with torch.inference_mode(), ac:
        test = _loader(bundle, "test", 0, shuffle=False)
        run.model(next(_stream(test, 1, device)))  # warm-up
        sizes: List[int] = []
        for b in _stream(test, limit, device):
            sizes.append(len(b))
            run.model(b)
        W.sync(device)
    res.update(infer_samples=sum(sizes), infer_of=len(bundle.splits["test"].ids), peak_infer_mb=W.peak_rss_mb())
    if device.type == "cuda":
        res["cuda_peak_infer_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        torch.cuda.reset_peak_memory_stats(device)
    run.model.train()
    rss, rss_raw, cuda, times = [], [], [], []
    for ep in range(spec["epochs"]):
        train = _loader(bundle, "train", ep)
        n_epoch = len(train)
        times.append(W.timed(lambda: [run.step(b, ac) for b in _stream(train, spec.get("batches", 0), device)], device))
        run.method.end_validation_epoch(run.model, ep, True)  # what Lightning calls once per epoch
        rss_raw.append(W.rss_mb())
        rss.append(W.live_rss_mb())  # after gc and malloc_trim: what the process still holds
        if device.type == "cuda":
            cuda.append(torch.cuda.memory_allocated(device) / 2**20)
    res.update(rss_after_epoch_mb=rss, rss_untrimmed_after_epoch_mb=rss_raw, epoch_s=times, batches_per_epoch=n_epoch,
               batches_timed=spec.get("batches", 0) or None, peak_train_mb=W.peak_rss_mb())
    if device.type == "cuda":
        res["cuda_peak_train_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        res["cuda_allocated_after_epoch_mb"] = cuda
    return res


# ------------------------------------------------------------------------------------ profile
#: functions whose cumulative time per step the profile reports (file suffix, function name)
PROFILED = (("ot.py", "sinkhorn_log"), ("ot.py", "ot_alignment_loss"), ("prototypes.py", "pcl_loss"),
            ("prototypes.py", "update"), ("base.py", "track"), ("fusion_model.py", "coalition_logits"),
            ("fusion_model.py", "forward"), ("shapley.py", "scale_gradients"), ("pase.py", "loss"),
            ("pase.py", "before_optimizer_step"), ("_tensor.py", "backward"), ("optimizer.py", "wrapper"))


def _host_syncs(r, batches, ac) -> Dict[str, Any]:
    """CUDA only: device-to-host synchronisations per step and where they happen, counted with
    ``torch.cuda.set_sync_debug_mode("warn")`` (house rule 20: none in the training step)."""
    import collections
    import warnings

    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for b in batches:
                r.step(b, ac)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    where = collections.Counter(f"{Path(w.filename).name}:{w.lineno}" for w in caught
                                if "synchroniz" in str(w.message))
    return {"per_step": sum(where.values()) / len(batches), "top": where.most_common(6)}


def profile(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Per training step: aten calls and self time (torch.profiler), and cProfile cumulative
    milliseconds of the method's functions, for each variant on ``steps`` batches."""
    import cProfile
    import pstats

    from torch.profiler import profile as tprofile

    device = _device(spec)
    bundle = W.load_dataset(spec["dataset"], spec.get("sizes"))
    if bundle is None:
        return {"skipped": f"{W.MOSI_BCLSTM} is absent"}
    ac = W.autocast_ctx(device, spec.get("bf16", False))
    batches, _, _ = _batches(bundle, "train", spec["steps"], 0, device)
    out: Dict[str, Any] = {}
    for v in spec.get("variants", W.VARIANTS):
        r = W.Run(v, bundle, spec["dataset"], device)
        r.step(batches[0], ac)
        with tprofile() as prof:
            for b in batches:
                r.step(b, ac)
        ev = prof.key_averages()
        n = len(batches)
        aten = sum(e.count for e in ev if e.key.startswith("aten::"))
        top = sorted(ev, key=lambda e: -e.self_cpu_time_total)[:6]
        pr = cProfile.Profile()
        pr.enable()
        wall = W.timed(lambda: [r.step(b, ac) for b in batches], device)
        pr.disable()
        stats = pstats.Stats(pr).stats  # (file, line, name) -> (cc, nc, tt, ct, callers)
        cum = {}
        for (file, _, name), (_, _, _, ct, _) in stats.items():
            for suffix, fn in PROFILED:
                if name == fn and file.endswith(suffix):
                    cum[f"{suffix}:{fn}"] = cum.get(f"{suffix}:{fn}", 0.0) + ct * 1e3 / n
        syncs = _host_syncs(r, batches, ac) if device.type == "cuda" else None
        out[v] = {"aten_calls_per_step": aten / n, "host_syncs_per_step": syncs,
                  "self_cpu_ms_per_step": sum(e.self_cpu_time_total for e in ev) / 1e3 / n,
                  "top_ops": [(e.key, e.count // n, e.self_cpu_time_total / 1e3 / n) for e in top],
                  "cprofile_step_ms": wall * 1e3 / n, "cum_ms_per_step": cum}
    return out


WORKERS = {"profile": profile, "epoch": epoch, "inference": inference, "shapley": shapley, "lightning": lightning, "memory": memory,
           "mmsa_write": mmsa_file.mmsa_write, "mmsa_load": mmsa_file.mmsa_load}
