"""benchmarks/selection_gap.py: the test curve it records is a pure observer of training.

Scoring the test split after every validation epoch must not move the run: same random stream,
same selected epoch, same metrics.json as a run without the callback, and the curve's row at the
selected epoch is the test score that metrics.json reports.
"""

import importlib.util
import json
from pathlib import Path

from pase.config import load_config
from pase.training import train

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("selection_gap", ROOT / "benchmarks" / "selection_gap.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_test_curve_does_not_change_the_run(tmp_path):
    sg = _module()
    sets = ["method=pase", "train.max_epochs=4", "train.seed=3", "train.progress_bar=false",
            "pase.switch_max_epoch=1", "data.options.sizes=[256,128,128]"]
    watched = sg.run_one(load_config(None, sets), tmp_path / "watched")
    plain = train(load_config(None, sets), tmp_path / "plain", quiet=True)
    assert watched["test"] == plain["test"] and watched["valid"] == plain["valid"]
    assert watched["best_epoch"] == plain["best_epoch"]
    curve = json.loads((tmp_path / "watched" / "test_curve.json").read_text())
    assert [r["epoch"] for r in curve] == list(range(watched["epochs_run"]))
    assert curve[watched["best_epoch"]]["test"] == watched["test"]
    r = sg.readings(tmp_path / "watched")
    assert r["test_selected"] == max(row["test"][sg.KEY] for row in curve) >= r["valid_selected"]
    assert r["last"] == curve[-1]["test"][sg.KEY]
