"""What Adam's implementation costs at utterance level: torch's per-parameter loop against ``foreach``.

    python benchmarks/adam_probe.py [--threads 1] [--repeats 5]

Real MOSI (bc-LSTM features, MLP encoders, batch 64; ``PASE_MOSI_BCLSTM`` or ../shared/data), late
fusion and PaSE (every part on, SGM from the first step), each once with the training's optimiser
(``build_optimizer``: Adam with ``foreach=True``, since the session after ``8c5bb39``) and once with
torch's CPU default (``foreach=False``, a Python loop over the parameters). The two optimisers do
bitwise the same arithmetic (``tests/test_training.py``). Every batch steps every variant,
interleaved in rotating order in one process, so the ratios are paired; printed: median ms per
step over the repeats (an epoch each), their range, each loop variant over its foreach twin, and
PaSE over late fusion under each.
"""

from __future__ import annotations

import argparse
import statistics

import torch

import workloads as W
from run import positive_int
from workers import _batches


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--repeats", type=positive_int, default=5)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    bundle = W.load_dataset("real_mosi")
    if bundle is None:
        raise SystemExit(f"adam_probe.py: {W.MOSI_BCLSTM} is absent; set PASE_MOSI_BCLSTM")
    device = torch.device("cpu")
    ac = W.autocast_ctx(device, False)
    runs = {}
    for variant in ("late_fusion", "pase"):
        for impl in ("foreach", "loop"):
            r = W.Run(variant, bundle, "real_mosi", device)
            if impl == "loop":
                r.opt = torch.optim.Adam([{"params": g["params"]} for g in r.opt.param_groups], lr=r.cfg.train.lr,
                                         foreach=False)
            runs[f"{variant}/{impl}"] = r
    batches, _, _ = _batches(bundle, "train", 0, 0, device)
    for b in batches[:3]:  # warm: Adam's state, prototypes, SGM's EMA
        for r in runs.values():
            r.step(b, ac)
    times = W.interleaved_ms({k: (lambda b, r=r: r.step(b, ac)) for k, r in runs.items()}, batches, a.repeats)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"real MOSI, {len(batches)} batches x {a.repeats} epochs, torch {torch.__version__}, {a.threads} thread(s)")
    print("| variant | ms / step, median (min-max) |\n|---|---|")
    for k, v in times.items():
        print(f"| {k} | {med[k]:.2f} ({min(v):.2f}-{max(v):.2f}) |")

    def ratio(x, y):
        rs = [u / w for u, w in zip(times[x], times[y])]
        return f"{statistics.median(rs):.3f} ({min(rs):.3f}-{max(rs):.3f})"

    print("\n| paired ratio | median (min-max) over epochs |\n|---|---|")
    for v in ("late_fusion", "pase"):
        print(f"| {v}: loop / foreach | {ratio(f'{v}/loop', f'{v}/foreach')} |")
    for impl in ("foreach", "loop"):
        print(f"| pase / late_fusion, {impl} | {ratio(f'pase/{impl}', f'late_fusion/{impl}')} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
