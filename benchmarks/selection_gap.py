"""How much of a reported score is model selection? Validation-selected against test-selected epochs.

    python benchmarks/selection_gap.py CONFIG|- OUT VARIANTS SEEDS [KEY=VALUE ...]
    python benchmarks/selection_gap.py --table OUT

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
* **last**: the last epoch trained.

Use it to read a published figure: the gap between the first two columns is what selecting on the
test split adds. This is a diagnostic of the protocol, not a way to choose models.
"""

from __future__ import annotations

import argparse
import json
import statistics as st
import sys
from pathlib import Path
from typing import Any, Dict, List

import lightning as L
import torch

from pase.config import apply_overrides, load_config
from pase.metrics import MetricAccumulator
from pase.training import run as run_mod
from pase.training import train

KEY = "Has0_acc_2"


class TestCurve(L.Callback):
    """After each validation epoch: test metrics of the current weights (diagnostic only)."""

    def __init__(self, bundle_ref: Dict[str, Any], cfg) -> None:
        self.bundle_ref, self.cfg = bundle_ref, cfg
        self.rows: List[Dict[str, Any]] = []

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":  # not train()'s final re-validation
            return
        was_training = pl_module.training
        pl_module.eval()
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            _, logits, target = run_mod._outputs(pl_module, self.bundle_ref["bundle"], self.cfg, "test")
        pl_module.train(was_training)
        acc = MetricAccumulator(self.bundle_ref["bundle"].task.protocol)
        acc.update(logits, target)
        self.rows.append({"epoch": trainer.current_epoch, "test": acc.compute()})


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
    (run / "test_curve.json").write_text(json.dumps(curve.rows, indent=1))
    return result


def readings(run: Path) -> Dict[str, Any]:
    """valid-selected, test-selected and last-epoch test Has0 Acc-2 of one finished run."""
    metrics = json.loads((run / "metrics.json").read_text())
    curve = json.loads((run / "test_curve.json").read_text())
    best = max(curve, key=lambda r: r["test"][KEY])  # first epoch on ties
    return {"valid_selected": metrics["test"][KEY], "valid_epoch": metrics["best_epoch"],
            "test_selected": best["test"][KEY], "test_epoch": best["epoch"],
            "last": curve[-1]["test"][KEY], "epochs": len(curve)}


def table(out: Path) -> str:
    def ms(xs):
        return f"{st.mean(xs):.4f} ± {st.stdev(xs):.4f}" if len(xs) > 1 else f"{xs[0]:.4f}"

    lines = [f"| variant | seeds | valid-selected {KEY} | test-selected (bc-LSTM release) | test - valid, mean ± SE "
             "| last epoch | selected epochs (valid / test) | epochs run |", "|---|---|---|---|---|---|---|---|"]
    for vdir in sorted((out / "runs").iterdir()):
        rs = [readings(s) for s in sorted(vdir.glob("seed*")) if (s / "test_curve.json").is_file()]
        if not rs:
            continue
        gap = [r["test_selected"] - r["valid_selected"] for r in rs]
        se = st.stdev(gap) / len(gap) ** 0.5 if len(gap) > 1 else float("nan")
        lines.append(f"| {vdir.name} | {len(rs)} | {ms([r['valid_selected'] for r in rs])} | "
                     f"{ms([r['test_selected'] for r in rs])} | {st.mean(gap):+.4f} ± {se:.4f} | "
                     f"{ms([r['last'] for r in rs])} | "
                     f"{', '.join(str(r['valid_epoch']) for r in rs)} / {', '.join(str(r['test_epoch']) for r in rs)} | "
                     f"{', '.join(str(r['epochs']) for r in rs)} |")
    return "\n".join(lines)


def main(argv) -> int:
    if argv[:1] == ["--table"]:
        print(table(Path(argv[1])))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config")
    p.add_argument("out", type=Path)
    p.add_argument("variants")
    p.add_argument("seeds")
    p.add_argument("sets", nargs="*")
    a = p.parse_args(argv)
    for seed in [int(s) for s in a.seeds.split(",")]:
        for variant in a.variants.split(","):
            method, *sets = variant.split(":")
            run = a.out / "runs" / variant.replace(":", "_").replace("=", "-") / f"seed{seed}"
            if (run / "test_curve.json").exists():
                continue
            cfg = apply_overrides(load_config(None if a.config == "-" else a.config, a.sets),
                                  [f"method={method}", *sets, f"train.seed={seed}", "train.progress_bar=false"])
            run_one(cfg, run)
            r = readings(run)
            print(variant, seed, {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}, flush=True)
    print(table(a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
