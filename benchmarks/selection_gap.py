"""How much of a reported score is model selection? Validation-selected against test-selected epochs.

    python benchmarks/selection_gap.py CONFIG|- OUT VARIANTS SEEDS [KEY=VALUE ...]
    python benchmarks/selection_gap.py --table OUT [--plot FIGURE.png]

``--plot`` with no finished run in OUT prints the (empty) table, then one line saying there is nothing
to plot, writes no figure and no CSV, and exits 1.

Trains like ``benchmarks/variants.py`` (same arguments, same run folders ``OUT/runs/<variant>/seed<seed>``,
same ``metrics.json``), with one diagnostic callback added: at the end of every validation epoch it
scores the **test** split with the current weights and writes the curve to ``test_curve.json``
beside ``metrics.json``. Nothing in training reads it: the callback runs under a forked random
state and in eval mode, so the run's own selection, checkpoint and ``metrics.json`` are those of a
run without it (``tests/test_selection_gap.py`` checks this on the built-in benchmark).

The table compares three readings of the same runs:

* **valid-selected**: the toolkit's protocol, the epoch with the best validation monitor (what
  ``metrics.json`` reports);
* **test-selected**: the epoch with the best test Has0 Acc-2, the protocol of the bc-LSTM release
  (its ``run.py`` keeps the epoch with the highest test accuracy over 200 epochs) and of several
  of the field's toolkits; an optimistic bound, never a result;
* **cross-fitted**: the test videos dealt into two folds; each fold's predictions come from the
  epoch best on the *other* fold by the run's own monitor (MAE on MOSI). No prediction is chosen
  with its own label, but the test split is read for selection: a protocol reading, not a hold-out;
* **last**: the last epoch trained.

A run folder left by an interrupted run (files but no ``test_curve.json``) is reported as failed
and skipped; delete it to run it again. Use it to read a published figure: the gap between the first two columns is what selecting on the
test split adds. This is a diagnostic of the protocol, not a way to choose models.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics as st
import sys
from pathlib import Path
from typing import Any, Dict, List

import lightning as L
import torch

from pase.metrics import MetricAccumulator, get_protocol
from pase.training import run as run_mod
from pase.training import train

KEY = "Has0_acc_2"


class TestCurve(L.Callback):
    """After each validation epoch: test metrics and outputs of the current weights (diagnostic only)."""

    def __init__(self, bundle_ref: Dict[str, Any], cfg) -> None:
        self.bundle_ref, self.cfg = bundle_ref, cfg
        self.rows: List[Dict[str, Any]] = []
        self.ids: List[str] = []
        self.target: List[Any] = []
        self.groups: List[Any] = []

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":  # not train()'s final re-validation
            return
        was_training = pl_module.training
        pl_module.eval()
        ids, logits, target = self._outputs(trainer, pl_module)
        pl_module.train(was_training)
        test = self.bundle_ref["bundle"].splits["test"]
        if test.groups is None:  # no videos: every sample is its own group
            group_of = {i: i for i in test.ids}
        else:
            group_of = dict(zip(test.ids, test.groups.tolist()))
        self.ids, self.target, self.groups = list(ids), target.tolist(), [group_of[i] for i in ids]
        self.rows.append({"epoch": trainer.current_epoch, "test": _score(self.bundle_ref["bundle"].task.protocol,
                                                                          logits, target),
                          "logits": logits.tolist()})

    def _outputs(self, trainer, pl_module):
        """Test ids, logits and targets, each batch moved and cast as Lightning's own test loop does
        (device transfer, precision plugin), under a forked torch random state."""
        plugin = trainer.precision_plugin

        def prepare(batch):
            return plugin.convert_input(pl_module.transfer_batch_to_device(batch, pl_module.device, 0))

        devices = [pl_module.device] if pl_module.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), plugin.forward_context():
            return run_mod._outputs(pl_module, self.bundle_ref["bundle"], self.cfg, "test", prepare)

    def state(self) -> Dict[str, Any]:
        return {"ids": self.ids, "groups": self.groups, "target": self.target, "epochs": self.rows}


def _score(protocol: str, logits, target) -> Dict[str, float]:
    acc = MetricAccumulator(protocol)
    acc.update(torch.as_tensor(logits), torch.as_tensor(target))
    return acc.compute()


def run_one(cfg, run: Path) -> Dict[str, Any]:
    """train() with the TestCurve callback; returns metrics.json's content plus the curve."""
    ref: Dict[str, Any] = {}
    curve = TestCurve(ref, cfg)
    orig_load, orig_trainer = run_mod.load_bundle, run_mod._trainer

    def load_bundle(c):
        ref["bundle"] = orig_load(c)
        return ref["bundle"]

    def trainer(c, out, callbacks, quiet):
        return orig_trainer(c, out, list(callbacks) + [curve], quiet)

    run_mod.load_bundle, run_mod._trainer = load_bundle, trainer
    try:
        result = train(cfg, run, quiet=True)
    finally:
        run_mod.load_bundle, run_mod._trainer = orig_load, orig_trainer
    if run_mod._rank() == 0:  # single-process use is the intended one; under DDP only rank 0 writes
        (run / "test_curve.json").write_text(json.dumps(curve.state()))
    return result


def crossfit(metrics: Dict[str, Any], curve: Dict[str, Any], folds: int = 2) -> Dict[str, Any]:
    """Selection cross-fitted over the test videos: the test split's context groups (videos; every
    sample alone where the data has none) are dealt into ``folds`` folds (sorted ids, round robin); each fold's predictions come from the epoch that is best on the
    other folds by the run's own monitor (``metrics.json``'s ``monitor``, MAE on MOSI). No sample's
    prediction is chosen with its own label; the test split is still read for selection, so this
    is a protocol reading, not a clean hold-out."""
    protocol = get_protocol(metrics["protocol"])
    sign = 1.0 if protocol.mode(metrics["monitor"]) == "max" else -1.0
    videos = sorted(set(curve["groups"]))
    fold_of = {v: k % folds for k, v in enumerate(videos)}
    fold = torch.tensor([fold_of[g] for g in curve["groups"]])
    target = torch.as_tensor(curve["target"])
    logits = torch.stack([torch.as_tensor(r["logits"]) for r in curve["epochs"]])  # (E, N, ...)
    chosen, pred = [], torch.empty_like(logits[0])
    for f in range(folds):
        rest = fold != f
        score = [sign * _score(metrics["protocol"], lg[rest], target[rest])[metrics["monitor"]] for lg in logits]
        score = [v if math.isfinite(v) else -math.inf for v in score]  # NaN is the worst, as in ModelCheckpoint
        e = max(range(len(score)), key=lambda k: score[k])
        chosen.append(curve["epochs"][e]["epoch"])
        pred[fold == f] = logits[e][fold == f]
    return {"metrics": _score(metrics["protocol"], pred, target), "epochs": chosen}


def readings(run: Path) -> Dict[str, Any]:
    """valid-selected, test-selected, cross-fitted and last-epoch test Has0 Acc-2 of one finished run."""
    metrics = json.loads((run / "metrics.json").read_text())
    curve = json.loads((run / "test_curve.json").read_text())
    rows = curve["epochs"]
    best = max(rows, key=lambda r: r["test"][KEY])  # first epoch on ties
    cf = crossfit(metrics, curve)
    return {"valid_selected": metrics["test"][KEY], "valid_epoch": metrics["best_epoch"],
            "test_selected": best["test"][KEY], "test_epoch": best["epoch"],
            "crossfit": cf["metrics"][KEY], "crossfit_epochs": cf["epochs"],
            "last": rows[-1]["test"][KEY], "epochs": len(rows)}


def _diff(xs: List[float]) -> str:
    se = st.stdev(xs) / len(xs) ** 0.5 if len(xs) > 1 else float("nan")
    return f"{st.mean(xs):+.4f} ± {se:.4f}"


def table(out: Path) -> str:
    def ms(xs):
        return f"{st.mean(xs):.4f} ± {st.stdev(xs):.4f}" if len(xs) > 1 else f"{xs[0]:.4f}"

    lines = [f"| variant | seeds | valid-selected {KEY} | test-selected (bc-LSTM release) | test - valid, mean ± SE "
             "| cross-fitted on test videos | cross-fitted - valid, mean ± SE | last epoch "
             "| selected epochs (valid / test) | epochs run |", "|---|---|---|---|---|---|---|---|---|---|"]
    for vdir in sorted((out / "runs").iterdir()) if (out / "runs").is_dir() else []:  # none finished: an empty table
        rs = [readings(s) for s in sorted(vdir.glob("seed*")) if (s / "test_curve.json").is_file()]
        if not rs:
            continue
        gap = [r["test_selected"] - r["valid_selected"] for r in rs]
        cgap = [r["crossfit"] - r["valid_selected"] for r in rs]
        lines.append(f"| {vdir.name} | {len(rs)} | {ms([r['valid_selected'] for r in rs])} | "
                     f"{ms([r['test_selected'] for r in rs])} | {_diff(gap)} | {ms([r['crossfit'] for r in rs])} | "
                     f"{_diff(cgap)} | {ms([r['last'] for r in rs])} | "
                     f"{', '.join(str(r['valid_epoch']) for r in rs)} / {', '.join(str(r['test_epoch']) for r in rs)} | "
                     f"{', '.join(str(r['epochs']) for r in rs)} |")
    return "\n".join(lines)


def curves(out: Path) -> List[Dict[str, Any]]:
    """One row per variant and epoch: mean over the seeds that reached it of the validation
    monitor, validation Has0 Acc-2 (log.csv) and test Has0 Acc-2 (test_curve.json)."""
    rows: List[Dict[str, Any]] = []
    for vdir in sorted((out / "runs").iterdir()) if (out / "runs").is_dir() else []:  # none finished: an empty table
        per_epoch: Dict[int, Dict[str, List[float]]] = {}
        monitor = None
        for s in sorted(vdir.glob("seed*")):
            if not (s / "test_curve.json").is_file():
                continue
            monitor = json.loads((s / "metrics.json").read_text())["monitor"]
            with open(s / "log.csv", newline="") as f:
                log = {int(r["epoch"]): r for r in csv.DictReader(f)}
            for r in json.loads((s / "test_curve.json").read_text())["epochs"]:
                d = per_epoch.setdefault(r["epoch"], {"valid_monitor": [], "valid_acc": [], "test_acc": []})
                d["valid_monitor"].append(float(log[r["epoch"]][f"valid/{monitor}"]))
                d["valid_acc"].append(float(log[r["epoch"]][f"valid/{KEY}"]))
                d["test_acc"].append(r["test"][KEY])
        for e in sorted(per_epoch):
            d = per_epoch[e]
            rows.append({"variant": vdir.name, "epoch": e, "seeds": len(d["test_acc"]), "monitor": monitor,
                         **{k: st.mean(v) for k, v in d.items()}})
    return rows


def plot(rows: List[Dict[str, Any]], path: Path) -> None:
    """Three panels by epoch: validation monitor, validation and test Has0 Acc-2; CSV beside it.
    ``rows`` (``curves``) holds at least one row: main says there is nothing to plot otherwise."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.8), layout="constrained")
    axes = fig.subplots(1, 3)
    monitor = rows[0]["monitor"]
    for variant in dict.fromkeys(r["variant"] for r in rows):
        rs = [r for r in rows if r["variant"] == variant]
        x = [r["epoch"] for r in rs]
        for ax, key in zip(axes, ("valid_monitor", "valid_acc", "test_acc")):
            ax.plot(x, [r[key] for r in rs], marker=".", label=variant)
    for ax, title in zip(axes, (f"validation {monitor} (selection)", f"validation {KEY}", f"test {KEY}")):
        ax.set_title(title)
        ax.set_xlabel("epoch (mean over the seeds still running)")
        ax.grid(alpha=0.3)
    axes[2].legend(fontsize=7)
    fig.savefig(path, dpi=120)
    with open(path.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def main(argv) -> int:
    from results_tables import variant_folder  # sibling scripts; run_one stays importable without them
    from variants import _configs, check_run, check_shared

    p = argparse.ArgumentParser(
        prog="selection_gap.py", description=__doc__.split("\n")[0],
        usage="%(prog)s CONFIG|- OUT VARIANTS SEEDS [KEY=VALUE ...]\n       %(prog)s --table OUT [--plot FIGURE.png]")
    p.add_argument("config", nargs="?", help="train: YAML config, or - for the built-in benchmark")
    p.add_argument("out", nargs="?", type=Path, help="train: the folder of the runs (OUT/runs/<variant>/seed<seed>)")
    p.add_argument("variants", nargs="?", help="train: comma list of variants, as benchmarks/variants.py takes")
    p.add_argument("seeds", nargs="?", help="train: comma list of training seeds")
    p.add_argument("sets", nargs="*", metavar="KEY=VALUE", help="train: overrides shared by every variant")
    p.add_argument("--table", type=Path, metavar="OUT", help="print the table of the runs in OUT (trains nothing)")
    p.add_argument("--plot", type=Path, metavar="FIGURE.png",
                   help="with --table: also draw the curves by epoch into FIGURE.png (and FIGURE.csv); exit 1 when "
                        "OUT holds no finished run")
    a = p.parse_args(argv)  # an unknown flag (--plott) or a missing value (--table alone) is an error, exit 2
    if a.table is not None:
        if a.config is not None:
            p.error(f"--table reads runs, it trains nothing: it takes no CONFIG OUT VARIANTS SEEDS (got {a.config!r})")
        print(table(a.table))
        if a.plot is not None:
            rows = curves(a.table)
            if not rows:  # an empty figure and a header-less CSV would read as a result (a review: IndexError)
                print(f"selection_gap.py: no finished run in {a.table} (no runs/<variant>/seed*/test_curve.json): "
                      f"nothing to plot, {a.plot} not written", file=sys.stderr)
                return 1
            plot(rows, a.plot)
        return 0
    if a.plot is not None:
        p.error("--plot draws the runs of --table OUT: pass --table OUT --plot FIGURE.png")
    if a.seeds is None:
        p.error("CONFIG|- OUT VARIANTS SEEDS are required to train (or --table OUT to read runs)")
    try:
        seeds = [int(s) for s in a.seeds.split(",")]
    except ValueError:
        raise SystemExit(f"selection_gap.py: SEEDS {a.seeds!r} is not a comma list of integers") from None
    # as variants.py: every configuration checked before anything trains, and the runs of one OUT share their
    # settings (a review averaged a 2-epoch lr 1e-3 run with a 3-epoch lr 1e-2 one in one row, exit 0)
    shared, runs = _configs(a.config, a.variants.split(","), seeds, a.sets, "selection_gap.py")
    check_shared(a.out, shared, "selection_gap.py")
    failed = 0
    for variant, seed, cfg in runs:
        run = a.out / "runs" / variant_folder(variant) / f"seed{seed}"
        check_run(run, cfg, "selection_gap.py")
        if (run / "test_curve.json").exists():
            continue
        try:
            run_one(cfg, run)
        except Exception as e:  # noqa: BLE001 - report and continue with the other runs, as variants.py
            failed += 1
            print(variant, seed, "FAILED", e, flush=True)
            continue
        r = readings(run)
        print(variant, seed, {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}, flush=True)
    print(table(a.out))
    if failed:
        print(f"selection_gap.py: {failed} run(s) failed; delete their folders and rerun to retry them", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
