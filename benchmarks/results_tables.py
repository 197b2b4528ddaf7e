"""Print the Markdown tables of docs/results.md from finished run folders.

    python benchmarks/results_tables.py --competition runs/competition --compare runs/mosi_compare

Reads metrics.json / log.csv / diagnostics.json written by `benchmarks/competition.py` and
`pase compare`; prints mean and sample SD over seeds, paired differences against late fusion,
and PaSE's Shapley shares before and after its phase switch.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import math
import statistics as st
from pathlib import Path

MAIN = ["Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score", "Mult_acc_7", "MAE", "Corr"]


def _fmt(xs):
    return f"{st.mean(xs):.4f} ± {st.stdev(xs):.4f}" if len(xs) > 1 else f"{xs[0]:.4f}"


def method_table(runs: dict, ref_name: str = "late_fusion") -> str:
    """runs: method -> {seed: metrics.json}; paired differences against ``ref_name``."""
    lines = ["| method | seeds | " + " | ".join(MAIN) + " |", "|---|---|" + "---|" * len(MAIN)]
    for meth, by_seed in runs.items():
        lines.append(f"| {meth} | {len(by_seed)} | " + " | ".join(_fmt([m['test'][k] for m in by_seed.values()]) for k in MAIN) + " |")
    if ref_name not in runs:
        raise SystemExit(f"results_tables.py: no runs of the reference {ref_name!r} to pair with; found "
                         f"{', '.join(runs) or 'none'} (pass --ref with one of them)")
    ref = runs[ref_name]
    lines += ["", f"Paired difference against {ref_name} (same seeds), mean ± SE, and mean / SE:", "",
              "| method | pairs | metric | diff | diff / SE |", "|---|---|---|---|---|"]
    for meth, by_seed in runs.items():
        if meth == ref_name:
            continue
        seeds = sorted(set(by_seed) & set(ref))
        if len(seeds) < 2:
            continue
        for k in ("Has0_acc_2", "Non0_acc_2", "MAE", "Corr"):
            d = [by_seed[s]["test"][k] - ref[s]["test"][k] for s in seeds]
            se = st.stdev(d) / math.sqrt(len(d))
            lines.append(f"| {meth} | {len(d)} | {k} | {st.mean(d):+.4f} ± {se:.4f} | "
                         f"{st.mean(d) / se if se > 0 else float('nan'):+.2f} |")
    return "\n".join(lines)


def shares_table(folder: str) -> str:
    """Training-batch Shapley shares of every PaSE / late-fusion run before and after the switch."""
    lines = ["| method | seed | switch epoch | text share (epoch before switch) | audio | vision | text share (last epoch) | audio | vision |",
             "|---|---|---|---|---|---|---|---|---|"]
    for log in sorted(glob.glob(f"{folder}/**/log.csv", recursive=True)):
        rows = list(csv.DictReader(open(log)))
        if not rows or "diag/share_text" not in rows[0]:
            continue
        if Path(log).parent.name.startswith("seed"):  # pase compare / variants layout: runs/<method>/seed<n>/
            meth = Path(log).parts[-3]
        elif Path(log).parent.name == "joint":  # benchmarks/competition.py layout: <method>-<seed>/joint/
            meth = Path(log).parts[-3].rsplit("-", 1)[0]
        else:
            meth = "pase" if "diag/phase" in rows[0] else "late_fusion"
        switch = next((int(float(r["epoch"])) for r in rows if r.get("diag/phase") == "2.0"), None)
        # switch 0: SGM from the first epoch, no epoch before it; None: no SGM epoch, the last in both columns
        before = rows[-1] if switch is None else (rows[switch - 1] if switch > 0 else None)
        after = rows[-1]
        seed = Path(log).parent.name if Path(log).parent.name.startswith("seed") else Path(log).parts[-3]
        get = lambda r, m: float(r[f"diag/share_{m}"])  # noqa: E731
        lines.append(f"| {meth} | {seed} | {switch} | " + " | ".join(f"{get(before, m):.3f}" if before else "-"
                                                                    for m in ("text", "audio", "vision"))
                     + " | " + " | ".join(f"{get(after, m):.3f}" for m in ("text", "audio", "vision")) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--competition")
    p.add_argument("--compare")
    p.add_argument("--ablation", action="append", default=[])
    p.add_argument("--ref", default="late_fusion",
                   help="method or variant the paired differences are against (default late_fusion)")
    p.add_argument("--shares", action="append", default=[],
                   help="print the before / after switch Shapley shares of every run under this folder")
    a = p.parse_args()
    for folder in a.ablation:
        print(f"## {folder}\n\n" + ablation_table(folder, a.ref) + "\n")
    for folder in a.shares:
        print(shares_table(folder) + "\n")
    if a.competition:
        runs = {}
        for f in glob.glob(f"{a.competition}/*-*/joint/metrics.json"):
            meth, seed = Path(f).parts[-3].rsplit("-", 1)
            runs.setdefault(meth, {})[int(seed)] = json.load(open(f))
        print("## built-in benchmark\n\n" + method_table(runs, variant_folder(a.ref)) + "\n")
        print(shares_table(a.competition) + "\n")
    if a.compare:
        runs = {}
        for f in glob.glob(f"{a.compare}/runs/*/seed*/metrics.json"):
            meth, seed = Path(f).parts[-3], int(Path(f).parts[-2][4:])
            runs.setdefault(meth, {})[seed] = json.load(open(f))
        print("## compare\n\n" + method_table(runs, variant_folder(a.ref)) + "\n")
        print(shares_table(f"{a.compare}/runs") + "\n")
        lines = ["| method | seed | test Shapley share text | audio | vision |", "|---|---|---|---|---|"]
        for f in sorted(glob.glob(f"{a.compare}/runs/*/seed*/diagnostics.json")):
            d = json.load(open(f))
            s = d["shapley"]["neg_loss"]["shares"]
            lines.append(f"| {d['method']} | {d['seed']} | {s['text']:.3f} | {s['audio']:.3f} | {s['vision']:.3f} |")
        print("\n".join(lines))



def variant_folder(variant: str) -> str:
    """The run-folder name of a variant (``a:b=c`` -> ``a_b-c``): variants.py and selection_gap.py
    write runs under it, ``--ref`` finds them by it."""
    return variant.replace(":", "_").replace("=", "-")


def ablation_table(folder: str, ref_name: str = "late_fusion") -> str:
    """Mean ± SD of the main test metrics for every variant folder under FOLDER/runs; ``ref_name``
    a folder name or the variant as given to variants.py (``late_fusion:model.context=true``)."""
    ref_name = variant_folder(ref_name)
    runs = {}
    for f in glob.glob(f"{folder}/runs/*/seed*/metrics.json"):
        runs.setdefault(Path(f).parts[-3], {})[int(Path(f).parts[-2][4:])] = json.load(open(f))
    order = sorted(runs, key=lambda k: (k != ref_name, k != "pase", k))
    return method_table({k: runs[k] for k in order}, ref_name)


if __name__ == "__main__":
    main()
