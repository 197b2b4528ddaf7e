"""The competition figure: linear probes of each encoder, jointly trained vs trained alone.

    python benchmarks/competition.py --seeds 1111 1112 1113 1114 1115 --methods late_fusion pase --out runs/competition

For every seed and method, trains the joint model on the built-in benchmark (or --config), then
one unimodal late-fusion model per weak modality, probes every frozen encoder (logistic probe on
the label's sign, fit on train, scored on test) and prints the per-modality deficit
(alone - joint, in points of Acc-2) with its mean and sample standard deviation over seeds.
Writes OUT/competition.csv and OUT/competition.md.
"""

from __future__ import annotations

import argparse
import csv
import platform
import statistics
import sys
from pathlib import Path

from pase.config import apply_overrides, load_config
from pase.evaluation.competition import probe_deficit


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--seeds", type=int, nargs="+", default=[1111, 1112, 1113, 1114, 1115])
    p.add_argument("--methods", nargs="+", default=["late_fusion"])
    p.add_argument("--modalities", nargs="+", default=["audio", "vision"])
    p.add_argument("--out", default="runs/competition")
    args = p.parse_args(argv)
    out = Path(args.out)
    rows = []
    for method in args.methods:
        for seed in args.seeds:
            cfg = apply_overrides(load_config(args.config, args.set),
                                  [f"method={method}", f"train.seed={seed}", "train.progress_bar=false"])
            table = probe_deficit(cfg, args.modalities, out / f"{method}-{seed}")
            fused = table.pop("__fused__")
            for m, v in table.items():
                rows.append({"method": method, "seed": seed, "modality": m, "joint": v["joint"], "alone": v["alone"],
                             "deficit": v["deficit"], "fused_Has0_acc_2": fused["Has0_acc_2"]})
                print(f"{method} seed {seed} {m}: joint {v['joint']:.3f} alone {v['alone']:.3f} "
                      f"deficit {100 * v['deficit']:+.1f} pts (fused test Acc-2 {fused['Has0_acc_2']:.3f})", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "competition.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = [f"Probe deficit (alone - joint), logistic probe Acc-2 on the test split, points; "
             f"seeds {args.seeds}; {platform.machine()} {platform.processor() or ''}".strip(),
             f"command: python benchmarks/competition.py {' '.join(sys.argv[1:])}", "",
             "| method | modality | joint | alone | deficit (pts) mean ± sd | fused test Acc-2 |", "|---|---|---|---|---|---|"]
    for method in args.methods:
        for m in args.modalities:
            sel = [r for r in rows if r["method"] == method and r["modality"] == m]
            d = [100 * r["deficit"] for r in sel]
            sd = statistics.stdev(d) if len(d) > 1 else float("nan")
            lines.append(f"| {method} | {m} | {statistics.mean(r['joint'] for r in sel):.3f} | "
                         f"{statistics.mean(r['alone'] for r in sel):.3f} | {statistics.mean(d):+.1f} ± {sd:.1f} | "
                         f"{statistics.mean(r['fused_Has0_acc_2'] for r in sel):.3f} |")
    (out / "competition.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
