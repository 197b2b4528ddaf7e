"""Print the Markdown tables of docs/results.md from finished run folders.

    python benchmarks/results_tables.py --competition runs/competition --compare runs/mosi_compare
    python benchmarks/results_tables.py --replot-trajectories docs/figures/mosi/trajectories.csv

Reads metrics.json / log.csv / diagnostics.json written by `benchmarks/competition.py` and
`pase compare`; prints mean and sample SD over seeds, paired differences against late fusion,
and PaSE's Shapley shares before and after its phase switch. Only finished runs (a
metrics.json) enter a table; each one left out is named on stderr. ``--compare`` and
``--ablation`` take the runs ``pase report`` takes (``pase.evaluation.compare.summarize``: the
methods and seeds of compare.json, not a run of another configuration than its config.yaml), so
their rows are summary.md's. ``--replot-trajectories`` redraws a trajectory figure from its CSV alone.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import math
import statistics as st
import sys
from pathlib import Path

from pase.data.contract import sort_modalities
from pase.evaluation.compare import spread_is_zero, summarize, t_quantile
from pase.evaluation.report import unselected_line

MAIN = ["Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score", "Mult_acc_7", "MAE", "Corr"]


def _finite(xs):
    return [float(x) for x in xs if x is not None and math.isfinite(float(x))]


def _fmt(xs):
    """mean ± sample SD of the finite values; "(n=k)" when some were left out (Corr of a constant
    prediction is NaN), as pase report does."""
    ok = _finite(xs)
    n = f" (n={len(ok)})" if len(ok) < len(xs) else ""
    if not ok:
        return "n/a" + n
    return (f"{st.mean(ok):.4f} ± {st.stdev(ok):.4f}" if len(ok) > 1 else f"{ok[0]:.4f}") + n


def method_table(runs: dict, ref_name: str = "late_fusion", ci: bool = False) -> str:
    """runs: method -> {seed: metrics.json}; paired differences against ``ref_name`` as mean ± SE
    and mean / SE, or (``ci``) as mean and 95% paired t-interval."""
    lines = ["| method | seeds | " + " | ".join(MAIN) + " |", "|---|---|" + "---|" * len(MAIN)]
    for meth, by_seed in runs.items():
        lines.append(f"| {meth} | {len(by_seed)} | " + " | ".join(_fmt([m['test'][k] for m in by_seed.values()]) for k in MAIN) + " |")
    if ref_name not in runs:
        raise SystemExit(f"results_tables.py: no runs of the reference {ref_name!r} to pair with; found "
                         f"{', '.join(runs) or 'none'} (pass --ref with one of them)")
    ref = runs[ref_name]
    what = "mean and 95% paired t-interval" if ci else "mean ± SE, and mean / SE"
    lines += ["", f"Paired difference against {ref_name} (same seeds), {what}:", "",
              f"| method | pairs | metric | diff | {'95% interval' if ci else 'diff / SE'} |", "|---|---|---|---|---|"]
    for meth, by_seed in runs.items():
        if meth == ref_name:
            continue
        seeds = sorted(set(by_seed) & set(ref))
        if len(seeds) < 2:
            lines.append(f"| {meth} | {len(seeds)} | (fewer than 2 seeds shared with {ref_name}: no SE) | | |")
            continue
        for k in ("Has0_acc_2", "Non0_acc_2", "MAE", "Corr"):
            d = _finite(by_seed[s]["test"][k] - ref[s]["test"][k] for s in seeds)  # a NaN pair is left out
            if len(d) < 2:
                lines.append(f"| {meth} | {len(d)} | {k} | (fewer than 2 finite pairs: no SE) | |")
                continue
            se = st.stdev(d) / math.sqrt(len(d))
            # SE 0 (to rounding, pase compare's "SD 0" rule): every pair differs by the same amount ("identical" when by
            # none; it read "+nan": a variant that never reaches its phase switch equals full PaSE run for run)
            flat = "identical" if not any(d) else "n/a (SE 0)" if spread_is_zero(st.stdev(d), st.mean(d)) else None
            if ci:  # a zero-width interval of such pairs is no evidence (it read [+0.2500, +0.2500]: a review)
                h = t_quantile(0.975, len(d) - 1) * se
                lines.append(f"| {meth} | {len(d)} | {k} | {st.mean(d):+.4f} | "
                             + (f"{flat} |" if flat else f"[{st.mean(d) - h:+.4f}, {st.mean(d) + h:+.4f}] |"))
                continue
            ratio = flat or f"{st.mean(d) / se:+.2f}"
            lines.append(f"| {meth} | {len(d)} | {k} | {st.mean(d):+.4f} ± {se:.4f} | {ratio} |")
    return "\n".join(lines)


def _finished(run: Path) -> bool:
    """Whether the run folder ``run`` finished (its ``metrics.json`` written); a failed or
    interrupted one is named on stderr, so a table never mixes it in or drops it silently."""
    if (run / "metrics.json").is_file():
        return True
    why = "failed: FAILED.txt" if (run / "FAILED.txt").is_file() else "no metrics.json: unfinished"
    print(f"results_tables.py: left out {run} ({why})", file=sys.stderr)
    return False


def _share_modalities(columns) -> list:
    """The modalities of the ``diag/share_<m>`` columns, in the canonical order."""
    return sort_modalities([c[len("diag/share_"):] for c in columns if c.startswith("diag/share_")])


def shares_table(folder: str, keep=None) -> str:
    """Training-batch Shapley shares of every finished run before and after PaSE's phase switch
    (``keep``: only the run folders it holds, those of the metric table)."""
    lines, mods = [], None
    for log in sorted(glob.glob(f"{folder}/**/log.csv", recursive=True)):
        if any(part == "alone" or part.startswith("alone_") for part in Path(log).relative_to(folder).parts):
            continue  # unimodal references (pase compare --alone, competition.py): one modality, no fusion
        if keep is not None and Path(log).parent.resolve() not in keep:
            continue
        rows = list(csv.DictReader(open(log)))
        if not rows or not any(c.startswith("diag/share_") for c in rows[0]) or not _finished(Path(log).parent):
            continue
        if mods is None:
            mods = _share_modalities(rows[0])
            lines = ["| method | seed | switch epoch | " + " | ".join(f"{m} share (epoch before switch)" for m in mods)
                     + " | " + " | ".join(f"{m} share (last epoch)" for m in mods) + " |",
                     "|---|---|---|" + "---|" * (2 * len(mods))]
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
        if Path(log).parent.name == "joint":  # <method>-<seed>/joint/: the seed, not the folder name (review)
            seed = seed.rsplit("-", 1)[-1]
        get = lambda r, m: f"{float(r[f'diag/share_{m}']):.3f}" if r and r.get(f"diag/share_{m}") else "-"  # noqa: E731
        lines.append(f"| {meth} | {seed} | {switch} | " + " | ".join(get(before, m) for m in mods)
                     + " | " + " | ".join(get(after, m) for m in mods) + " |")
    return "\n".join(lines)


def test_shares_table(folder: str, keep=None) -> str:
    """Test-split Shapley shares (negative-loss utility) of every finished run of a comparison
    (``keep``: only the run folders it holds, those of the metric table)."""
    found = [json.load(open(f)) for f in sorted(glob.glob(f"{folder}/runs/*/seed*/diagnostics.json"))
             if (keep is None or Path(f).parent.resolve() in keep) and _finished(Path(f).parent)]
    if not found:
        return ""
    mods = list(found[0].get("modalities") or found[0]["shapley"]["neg_loss"]["shares"])
    lines = ["| method | seed | " + " | ".join(f"test Shapley share {m}" for m in mods) + " |",
             "|---|---|" + "---|" * len(mods)]
    for d in found:
        s = d["shapley"]["neg_loss"]["shares"]
        lines.append(f"| {d['method']} | {d['seed']} | " + " | ".join(f"{s[m]:.3f}" if m in s else "-" for m in mods)
                     + " |")
    return "\n".join(lines)


def _runs(folder: str) -> dict:
    """method or variant folder -> {seed: metrics.json} of ``folder/runs/<name>/seed<s>/``: the runs
    ``pase report`` puts in its tables (``pase.evaluation.compare.summarize``: the methods and seeds of
    ``compare.json``, without runs of another configuration than ``config.yaml``; a folder without
    ``compare.json``, as variants.py writes, gives every method and seed found). Each run left out is
    named on stderr, as is a mix of code versions or a run with no validation selection. This globbed
    every metrics.json, so a seed trained longer with ``pase train --resume``, or one outside
    compare.json, entered the docs' tables though summary.md left it out (a review)."""
    s = summarize(folder)
    for r in s["runs"]:
        if r["status"] != "ok":
            why = "failed: FAILED.txt" if r["status"] == "failed" else f"{r['status']}: {r['error']}"
            print(f"results_tables.py: left out {r['path']} ({why})", file=sys.stderr)
    listed = {Path(r["path"]).resolve() for r in s["runs"]}
    for d in sorted(glob.glob(f"{folder}/runs/*/seed*/")):  # summarize reads the methods and seeds of compare.json
        if Path(d).resolve() not in listed:
            print(f"results_tables.py: left out {Path(d)} (not one of the methods and seeds of compare.json; "
                  "pase report leaves it out too)", file=sys.stderr)
    if s.get("code_warning"):
        print(f"results_tables.py: warning: {folder}: {s['code_warning']}", file=sys.stderr)
    if s.get("unselected"):
        print(f"results_tables.py: warning: {folder}: {unselected_line(s)}", file=sys.stderr)
    runs: dict = {}
    for r in s["runs"]:
        if r["status"] == "ok":
            runs.setdefault(r["method"], {})[r["seed"]] = r["metrics"]
    return runs


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--competition")
    p.add_argument("--compare")
    p.add_argument("--ablation", action="append", default=[])
    p.add_argument("--ref", default="late_fusion",
                   help="method or variant the paired differences are against (default late_fusion)")
    p.add_argument("--ci", action="store_true",
                   help="paired differences as mean and 95%% paired t-interval instead of mean ± SE")
    p.add_argument("--shares", action="append", default=[],
                   help="print the before / after switch Shapley shares of every run under this folder")
    p.add_argument("--replot-trajectories", action="append", default=[], metavar="CSV",
                   help="redraw the PNG beside a trajectories CSV (pase report's format) from the CSV alone")
    a = p.parse_args()
    for path in a.replot_trajectories:
        from pase.evaluation.report import plot_trajectories

        png = Path(path).with_suffix(".png")
        plot_trajectories(list(csv.DictReader(open(path))), png)
        print(f"redrew {png}")
    for folder in a.ablation:
        print(f"## {folder}\n\n" + ablation_table(folder, a.ref, a.ci) + "\n")
    for folder in a.shares:
        print(shares_table(folder) + "\n")
    if a.competition:
        runs = {}
        for d in sorted(glob.glob(f"{a.competition}/*-*/joint/")):
            if _finished(Path(d)):  # an unfinished one is named on stderr
                meth, seed = Path(d).parts[-2].rsplit("-", 1)
                runs.setdefault(meth, {})[int(seed)] = json.load(open(Path(d) / "metrics.json"))
        print("## built-in benchmark\n\n" + method_table(runs, variant_folder(a.ref), a.ci) + "\n")
        print(shares_table(a.competition) + "\n")
    if a.compare:
        runs = _runs(a.compare)
        keep = {(Path(a.compare) / "runs" / m / f"seed{s}").resolve() for m, by_seed in runs.items() for s in by_seed}
        print("## compare\n\n" + method_table(runs, variant_folder(a.ref), a.ci) + "\n")
        print(shares_table(f"{a.compare}/runs", keep) + "\n")
        print(test_shares_table(a.compare, keep))



def variant_folder(variant: str) -> str:
    """The run-folder name of a variant (``a:b=c`` -> ``a_b-c``): variants.py and selection_gap.py
    write runs under it, ``--ref`` finds them by it."""
    return variant.replace(":", "_").replace("=", "-")


def ablation_table(folder: str, ref_name: str = "late_fusion", ci: bool = False) -> str:
    """Mean ± SD of the main test metrics for every variant folder under FOLDER/runs; ``ref_name``
    a folder name or the variant as given to variants.py (``late_fusion:model.context=true``)."""
    ref_name = variant_folder(ref_name)
    runs = _runs(folder)
    order = sorted(runs, key=lambda k: (k != ref_name, k != "pase", k))
    return method_table({k: runs[k] for k in order}, ref_name, ci)


if __name__ == "__main__":
    main()
