"""The competition figure: linear probes of each encoder, jointly trained vs trained alone.

    python benchmarks/competition.py --seeds 1111 1112 1113 1114 1115 --methods late_fusion pase --out runs/competition

For every seed and method, trains the joint model on the built-in benchmark (or --config), then
one unimodal late-fusion model per weak modality, probes every frozen encoder (logistic probe on
the label's sign, fit on train, scored on test) and prints the per-modality deficit
(alone - joint, in points of Acc-2) with its mean and sample standard deviation over seeds.
Writes OUT/competition.csv and OUT/competition.md, from every finished run in OUT: a later call with
fewer --methods, --seeds or --modalities (or other ones) adds its runs to those of the earlier calls,
which are probed again, never retrained, and must share this call's configuration (a finished run of
another, named in this call or not, is named before anything trains). Delete a run folder to leave it out.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Tuple

from pase.config import ConfigError, apply_overrides, load_config
from pase.data.contract import sort_modalities
from pase.evaluation.competition import alone_config, check_finished_run, probe_deficit


def main(argv=None) -> int:
    try:
        return _main(argv)
    except (ValueError, KeyError, OSError) as e:  # ConfigError, RunDirError, a missing file: one line, not a traceback
        print(f"competition.py: error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        return 2


def _main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--seeds", type=int, nargs="+", default=[1111, 1112, 1113, 1114, 1115])
    p.add_argument("--methods", nargs="+", default=["late_fusion"])
    p.add_argument("--modalities", nargs="+", default=["audio", "vision"])
    p.add_argument("--out", default="runs/competition")
    args = p.parse_args(argv)
    out = Path(os.path.expanduser(args.out))  # as pase's own --out options
    plan = {(method, seed): list(args.modalities) for method in args.methods for seed in args.seeds}
    earlier = _finished_runs(out)
    for key, mods in earlier.items():  # a rerun with fewer modalities dropped the others' rows silently (review)
        if key in plan:
            plan[key] += [m for m in mods if m not in plan[key]]
    # the earlier calls' other runs first in the tables
    others = {k: v for k, v in earlier.items() if k not in plan and v}
    runs = {**others, **plan}
    configs = {(method, seed): apply_overrides(load_config(args.config, args.set),
                                               [f"method={method}", f"train.seed={seed}", "train.progress_bar=false"])
               for method, seed in runs}
    # every finished run this call uses, the plan's too, before anything trains: met at its turn, one of another
    # configuration stopped the call after the runs before it had trained ("nothing was changed" was false)
    for (method, seed), mods in runs.items():
        folder = out / f"{method}-{seed}"
        try:
            check_finished_run(configs[method, seed], folder / "joint")
            for m in mods:
                check_finished_run(alone_config(configs[method, seed], m), folder / f"alone_{m}")
        except ConfigError as e:
            if (method, seed) not in others:
                raise
            raise ConfigError(f"{e}; it is an earlier call's run, and competition.md / .csv cover every finished "
                              f"run in {out}, so they must share this call's configuration") from None
    rows = []
    for (method, seed), mods in runs.items():
        table = probe_deficit(configs[method, seed], mods, out / f"{method}-{seed}")
        fused = table.pop("__fused__")
        for m, v in table.items():
            for metric, d in v["by_metric"].items():
                rows.append({"method": method, "seed": seed, "modality": m, "probe": metric, "joint": d["joint"],
                             "alone": d["alone"], "deficit": d["deficit"], "fused_Has0_acc_2": fused["Has0_acc_2"]})
            print(f"{method} seed {seed} {m}: " + "; ".join(
                f"{k} joint {d['joint']:.3f} alone {d['alone']:.3f} deficit {100 * d['deficit']:+.1f} pts"
                for k, d in v["by_metric"].items()) + f" (fused test Acc-2 {fused['Has0_acc_2']:.3f})", flush=True)
    methods = list(dict.fromkeys(list(args.methods) + sorted(m for m, _ in others)))
    modalities = list(args.modalities) + sort_modalities({r["modality"] for r in rows} - set(args.modalities))
    # stable sort: each run's probes keep their order
    rows.sort(key=lambda r: (methods.index(r["method"]), r["seed"], modalities.index(r["modality"])))
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "competition.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    seeds = sorted({r["seed"] for r in rows})
    lines = [f"Probe deficit (alone - joint) on the test split, points (x 100); seeds {seeds}; "
             f"{platform.machine()} {platform.processor() or ''}".strip(),
             f"command: python benchmarks/competition.py {' '.join(sys.argv[1:] if argv is None else argv)}", "",
             f"Every finished run in {out} (`<method>-<seed>/joint` and `alone_<modality>`), this call's and "
             "earlier calls'.", "",
             "Probes: `acc2` logistic probe of the label's sign; `corr` ridge probe of the label; on the built-in "
             "benchmark `effect_r2` (R^2) and `effect_acc` (above / below the median) probe the modality's own "
             "ground-truth effect f_m (docs/synthetic.md).", "",
             "| method | modality | probe | joint | alone | deficit (pts) mean ± sd | seeds with deficit >= 5 | "
             "fused test Acc-2 |", "|---|---|---|---|---|---|---|---|"]
    for method in methods:
        for m in modalities:
            for metric in dict.fromkeys(r["probe"] for r in rows):
                sel = [r for r in rows if r["method"] == method and r["modality"] == m and r["probe"] == metric]
                if not sel:
                    continue
                d = [100 * r["deficit"] for r in sel]
                sd = f"{statistics.stdev(d):.1f}" if len(d) > 1 else "n/a"  # one seed: no SD (it printed '± nan')
                lines.append(f"| {method} | {m} | {metric} | {statistics.mean(r['joint'] for r in sel):.3f} | "
                             f"{statistics.mean(r['alone'] for r in sel):.3f} | {statistics.mean(d):+.1f} ± {sd} | "
                             f"{sum(x >= 5 for x in d)} / {len(d)} | "
                             f"{statistics.mean(r['fused_Has0_acc_2'] for r in sel):.3f} |")
    (out / "competition.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _finished_runs(out: Path) -> Dict[Tuple[str, int], List[str]]:
    """(method, seed) -> the modalities of the finished unimodal runs, for every ``out/<method>-<seed>/``
    whose joint run finished (``joint/metrics.json``); an interrupted run is left to the call that names it."""
    found: Dict[Tuple[str, int], List[str]] = {}
    for run in sorted(out.glob("*-*/joint/metrics.json")) if out.is_dir() else []:
        method, _, seed = run.parts[-3].rpartition("-")
        if method and seed.isdigit():
            found[(method, int(seed))] = sort_modalities([p.parent.name[len("alone_"):] for p in
                                                          run.parents[1].glob("alone_*/metrics.json")])
    return found


if __name__ == "__main__":
    sys.exit(main())
