"""What the Transformer encoder's CPU dropout costs: ``UniformDropout`` against ``nn.Dropout``.

    python benchmarks/dropout_probe.py [--threads 1] [--repeats 5] [--train 512]

MOSI-shaped sequences (50 steps, widths 768 / 5 / 20, Transformer encoders, batch 64), late fusion
and PaSE (every part on, SGM from the first step), each once with the encoders' dropout as built
(``UniformDropout``, ``src/pase/models/encoders.py``) and once with torch's ``nn.Dropout`` put
back in the Transformer layers. Every batch steps every variant, interleaved in rotating order in
one process, so the ratios are paired; printed: median milliseconds per step over the repeats (an
epoch each), their range, and each ``nn.Dropout`` variant over its ``UniformDropout`` twin. A
second table times one dropout call's forward and backward on the encoder's activation shapes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from torch import nn

import workloads as W
from pase.models.encoders import UniformDropout
from run import positive_int
from workers import twin_epochs


def torch_dropout(model: nn.Module) -> int:
    """Put ``nn.Dropout`` back wherever the model uses ``UniformDropout``; returns how many."""
    swaps = [(parent, name, child.p) for parent in model.modules() for name, child in parent.named_children()
             if isinstance(child, UniformDropout)]
    for parent, name, p in swaps:
        setattr(parent, name, nn.Dropout(p))
    return len(swaps)


def one_call(shapes, p: float = 0.2, repeats: int = 21) -> None:
    print("\n| activation shape | nn.Dropout ms | UniformDropout ms | ratio |\n|---|---|---|---|")
    for shape in shapes:
        x, g = torch.randn(shape, requires_grad=True), torch.randn(shape)
        mods = {"nn": nn.Dropout(p), "uniform": UniformDropout(p)}
        ms = {k: [] for k in mods}
        for _ in range(repeats):
            for k, m in mods.items():
                t0 = time.perf_counter()
                m(x).backward(g)
                ms[k].append((time.perf_counter() - t0) * 1e3)
        med = {k: statistics.median(v) for k, v in ms.items()}
        print(f"| {tuple(shape)} | {med['nn']:.2f} | {med['uniform']:.2f} | {med['nn'] / med['uniform']:.2f} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=positive_int, default=1)
    ap.add_argument("--repeats", type=positive_int, default=5)
    ap.add_argument("--train", type=positive_int, default=512,
                    help="MOSI-shaped training samples (an epoch per repeat)")
    a = ap.parse_args(argv)
    runs, batches, times, swapped = twin_epochs(a.train, a.threads, a.repeats, "nn.Dropout", torch_dropout)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"`python benchmarks/dropout_probe.py {' '.join(argv if argv is not None else sys.argv[1:])}` at "
          f"{time.strftime('%Y-%m-%d %H:%M')}: {len(batches)} MOSI-shaped batches of {W.BATCH_SIZE}, {a.threads} "
          f"thread(s), {swapped} dropout modules swapped per model, median of {a.repeats} epochs, load average "
          f"{W.load_average()}\n")
    print("| variant | ms / step (min-max) | nn.Dropout / UniformDropout |\n|---|---|---|")
    for k, v in times.items():
        base = k.split(",")[0]
        ratio = f"{med[k] / med[base]:.3f}" if k != base else ""
        print(f"| {k} | {med[k]:.1f} ({min(v):.1f}-{max(v):.1f}) | {ratio} |")
    hidden = runs["pase"].cfg.model.hidden
    one_call([(W.BATCH_SIZE, 50, hidden), (W.BATCH_SIZE, 50, 2 * hidden)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
