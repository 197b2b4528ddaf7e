"""What the Transformer encoder's batch-first self-attention saves: ``BatchFirstEncoderLayer``
against torch's ``nn.TransformerEncoderLayer`` (through ``nn.MultiheadAttention``).

    python benchmarks/attention_probe.py [--threads 1] [--repeats 5] [--train 512]

MOSI-shaped sequences (50 steps, widths 768 / 5 / 20, Transformer encoders, batch 64), late fusion
and PaSE (every part on, SGM from the first step), each once as built (``BatchFirstEncoderLayer``,
``src/pase/models/encoders.py``) and once with the same layers, weights and dropout modules run
by torch's ``nn.TransformerEncoderLayer`` code (the class put back). The two compute the same
numbers (``tests/test_models.py``); every batch steps every variant, interleaved in rotating order
in one process, so the ratios are paired. Printed: median milliseconds per step over the repeats
(an epoch each), their range, each torch-layer variant over its twin as a ratio of medians, and the
median and range of the per-epoch ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from torch import nn

import workloads as W
from pase.models.encoders import BatchFirstEncoderLayer
from run import positive_int
from workers import twin_epochs


def torch_layers(model: nn.Module) -> int:
    """Run every ``BatchFirstEncoderLayer`` of ``model`` as torch's ``nn.TransformerEncoderLayer``
    (the same module, parameters and dropout modules; only the class changes); returns how many."""
    layers = [m for m in model.modules() if type(m) is BatchFirstEncoderLayer]
    for m in layers:
        m.__class__ = nn.TransformerEncoderLayer
    return len(layers)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=positive_int, default=1)
    ap.add_argument("--repeats", type=positive_int, default=5)
    ap.add_argument("--train", type=positive_int, default=512,
                    help="MOSI-shaped training samples (an epoch per repeat)")
    a = ap.parse_args(argv)
    _, batches, times, swapped = twin_epochs(a.train, a.threads, a.repeats, "torch's layer", torch_layers)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"`python benchmarks/attention_probe.py {' '.join(argv if argv is not None else sys.argv[1:])}` at "
          f"{time.strftime('%Y-%m-%d %H:%M')}: {len(batches)} MOSI-shaped batches of {W.BATCH_SIZE}, {a.threads} "
          f"thread(s), {swapped} encoder layers per model, median of {a.repeats} epochs, load average "
          f"{W.load_average()}\n")
    print("| variant | ms / step (min-max) | torch's layer / batch-first: ratio of medians | per-epoch ratio, "
          "median (min-max) |\n|---|---|---|---|")
    for k, v in times.items():
        base = k.split(",")[0]
        ratio = paired = ""
        if k != base:
            r = [x / y for x, y in zip(v, times[base])]
            ratio, paired = f"{med[k] / med[base]:.3f}", f"{statistics.median(r):.3f} ({min(r):.3f}-{max(r):.3f})"
        print(f"| {k} | {med[k]:.1f} ({min(v):.1f}-{max(v):.1f}) | {ratio} | {paired} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
