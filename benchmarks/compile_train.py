"""``train.compile`` through Lightning on real MOSI: late fusion and PaSE eager, PaSE compiled.

    python benchmarks/compile_train.py [--epochs 12] [--threads 1] [--methods late_fusion,pase,pase+compile]

Each variant is one ``pase.training.train`` run (the benchmark overrides of ``workloads.py``:
PaSE with every part on and SGM from the first step), with a timing callback. Printed per variant:
the first epoch's training loop (compilation included for ``+compile``), the median training
loop of the later epochs, the whole ``train()`` time, and the ratios to eager late fusion; then
how many steps ``+compile`` needs to repay its first epoch. Inductor caches compiled kernels on
disk (``/tmp/torchinductor_<user>``), so a second run compiles in seconds: the printed first
epoch says which case this was.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import workloads as W
from run import positive_int
from workers import _timing_callback


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=12, help="at least 2 (the later epochs are the steady state)")
    ap.add_argument("--threads", type=positive_int, default=1)
    ap.add_argument("--methods", default="late_fusion,pase,pase+compile")
    a = ap.parse_args(argv)
    if a.epochs < 2:
        ap.error("--epochs must be at least 2: the first epoch compiles, the later ones are timed")
    torch.set_num_threads(a.threads)
    from pase.config import load_config
    from pase.data import register_data
    from pase.training import run as run_mod
    from pase.training import train

    bundle = W.load_dataset("real_mosi")
    if bundle is None:
        print(f"benchmarks/compile_train.py: {W.MOSI_BCLSTM} is absent", file=sys.stderr)
        return 2
    register_data("bench_in_memory")(lambda **_: bundle)
    timers = []
    orig = run_mod._trainer

    def _trainer(cfg, out, callbacks, quiet):
        timers.append(_timing_callback())
        return orig(cfg, out, list(callbacks) + [timers[-1]], quiet)

    run_mod._trainer = _trainer
    extra = [f"train.max_epochs={a.epochs}", "train.early_stop_patience=1000", "train.progress_bar=false",
             "data.source=bench_in_memory", f"train.batch_size={W.BATCH_SIZE}"]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in a.methods.split(","):
            method, compiled = variant.split("+")[0], variant.endswith("+compile")
            cfg = load_config(None, W.overrides("real_mosi", method) + extra + [f"train.compile={str(compiled).lower()}"])
            t0 = time.perf_counter()
            metrics = train(cfg, Path(tmp) / variant.replace("+", "_"), quiet=True)
            loops = [r["train_loop_s"] for r in timers[-1].rows]
            rows[variant] = {"first": loops[0], "later": statistics.median(loops[1:]), "total": time.perf_counter() - t0,
                             "valid_MAE": metrics["valid"]["MAE"]}
    steps = -(-len(bundle.splits["train"]) // W.BATCH_SIZE)
    print(f"real MOSI, {a.epochs} epochs of {steps} steps, {a.threads} thread(s), load average {W.load_average()}")
    print("| variant | first epoch loop s | later epochs loop s (median) | x late fusion | whole train() s | valid MAE |")
    print("|---|---|---|---|---|---|")
    ref = rows.get("late_fusion", {}).get("later")
    for k, r in rows.items():
        ratio = f"{r['later'] / ref:.2f}" if ref else "-"
        print(f"| {k} | {r['first']:.2f} | {r['later']:.3f} | {ratio} | {r['total']:.1f} | {r['valid_MAE']:.4f} |")
    if "pase" in rows and "pase+compile" in rows:
        eager, comp = rows["pase"], rows["pase+compile"]
        saved = (eager["later"] - comp["later"]) / steps  # seconds per step
        cost = comp["first"] - eager["first"]
        print(f"train.compile saves {saved * 1e3:.2f} ms per step after the first epoch, which cost {cost:.1f} s more: "
              + (f"repaid after about {cost / saved:.0f} steps ({cost / saved / steps:.0f} epochs of this size)"
                 if saved > 0 else "never repaid"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
