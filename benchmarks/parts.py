"""Where PaSE's extra step time goes: one training step with each part of PaSE switched off.

    python benchmarks/parts.py [--dataset real_mosi|mosi_shaped] [--threads 1] [--repeats 7] [--out benchmarks/parts.md]

Every variant steps the same shuffled epoch of batches, interleaved batch by batch in rotating
order, in one process (so the ratios hold whatever the machine's load); printed as the median milliseconds per
step and the ratio to the registered ``late_fusion`` method. ``pase`` has every part on and SGM
active from the first step (``pase.switch_max_epoch=0``, as in ``benchmarks/run.py``); ``-X`` is
``pase`` with part X off; ``plain`` is late fusion on the task loss without Shapley tracking.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

import workloads as W
from run import machine, positive_int
from workers import _batches

VARIANTS = {"plain": ("plain", []), "late_fusion": ("late_fusion", []), "pase": ("pase", []),
            "-ot": ("pase", ["pase.ot=false"]), "-pcl": ("pase", ["pase.pcl=false"]),
            "-gate": ("pase", ["pase.gate=false"]), "-sgm": ("pase", ["pase.sgm=false"]),
            "-ot -pcl": ("pase", ["pase.ot=false", "pase.pcl=false"])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="real_mosi", choices=["real_mosi", "mosi_shaped"])
    ap.add_argument("--threads", type=positive_int, default=1)
    ap.add_argument("--repeats", type=positive_int, default=7)
    ap.add_argument("--out", default=None, help="also write the table here (Markdown; BENCHMARKS.md includes "
                                                 "benchmarks/parts.md)")
    a = ap.parse_args(argv)
    if a.out:  # before measuring, as run.py: a missing folder lost the measured table to a traceback (review)
        try:
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            print(f"benchmarks/parts.py: --out {a.out}: cannot create its folder ({e}); give a writable path",
                  file=sys.stderr)
            return 2
    torch.set_num_threads(a.threads)
    dev = torch.device("cpu")
    sizes = [256, 64, 64] if a.dataset == "mosi_shaped" else None
    bundle = W.load_dataset(a.dataset, sizes)
    if bundle is None:
        print(f"benchmarks/parts.py: {W.MOSI_BCLSTM} is absent; try --dataset mosi_shaped", file=sys.stderr)
        return 2
    runs = {k: W.Run(v, bundle, a.dataset, dev, extra=e) for k, (v, e) in VARIANTS.items()}
    ac = contextlib.nullcontext()
    batches, _, _ = _batches(bundle, "train", 0, 0, dev)
    for r in runs.values():
        for b in batches[:3]:
            r.step(b, ac)
    times = W.interleaved_ms({k: (lambda b, r=r: r.step(b, ac)) for k, r in runs.items()}, batches, a.repeats)
    med = {k: statistics.median(v) / 1e3 for k, v in times.items()}
    cmd = "python benchmarks/parts.py " + " ".join(argv if argv is not None else sys.argv[1:])
    info = machine(a.threads)  # the commit, as run.py records it: parts.md is pasted into BENCHMARKS.md
    commit = f"commit `{info.get('git', '?')}`{' with local changes' if info.get('git_dirty') else ''}"
    lines = ["## Where PaSE's extra step time goes (`benchmarks/parts.py`)", "",
             f"`{cmd.strip()}` at {time.strftime('%Y-%m-%d %H:%M')}, {commit}: {a.dataset}, {len(batches)} batches of "
             f"{W.BATCH_SIZE}, {a.threads} thread(s), median of {a.repeats} epochs interleaved per batch, load "
             f"average {W.load_average()}. `-X`: PaSE with part X off.", "",
             "| variant | ms / step | x late_fusion | ms over late_fusion |", "|---|---|---|---|"]
    lines += [f"| {k} | {v * 1e3:.2f} | {v / med['late_fusion']:.2f} | {(v - med['late_fusion']) * 1e3:+.2f} |"
              for k, v in med.items()]
    print("\n".join(lines))
    if a.out:
        Path(a.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
