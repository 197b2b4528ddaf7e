"""benchmarks/selection_gap.py: the test curve it records is a pure observer of training, and its
cross-fitted reading equals a brute-force recomputation.

Scoring the test split after every validation epoch must not move the run: same random stream,
same selected epoch, same metrics.json as a run without the callback, and the curve's row at the
selected epoch is the test score that metrics.json reports.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, mean_absolute_error

from pase.config import load_config
from pase.training import train

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("selection_gap", ROOT / "benchmarks" / "selection_gap.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("precision", ["32-true", "64-true"])
def test_test_curve_does_not_change_the_run(tmp_path, precision):
    """Also in double precision: the test pass casts its batches as Lightning's test loop does."""
    sg = _module()
    sets = ["method=pase", "train.max_epochs=4", "train.seed=3", "train.progress_bar=false",
            "pase.switch_max_epoch=1", "data.options.sizes=[256,128,128]", f"train.precision={precision}"]
    watched = sg.run_one(load_config(None, sets), tmp_path / "watched")
    plain = train(load_config(None, sets), tmp_path / "plain", quiet=True)
    assert watched["test"] == plain["test"] and watched["valid"] == plain["valid"]
    assert watched["best_epoch"] == plain["best_epoch"]
    curve = json.loads((tmp_path / "watched" / "test_curve.json").read_text())
    rows = curve["epochs"]
    assert [r["epoch"] for r in rows] == list(range(watched["epochs_run"]))
    assert rows[watched["best_epoch"]]["test"] == watched["test"]
    assert len(curve["ids"]) == len(curve["groups"]) == len(curve["target"]) == 128
    r = sg.readings(tmp_path / "watched")
    assert r["test_selected"] == max(row["test"][sg.KEY] for row in rows) >= r["valid_selected"]
    assert r["last"] == rows[-1]["test"][sg.KEY]


def test_crossfit_selects_each_fold_on_the_other_by_brute_force():
    sg = _module()
    rng = np.random.default_rng(0)
    n = 60
    groups = rng.integers(0, 7, n).tolist()  # 7 "videos"
    target = rng.normal(0, 1.5, n)
    fold = np.array([sorted(set(groups)).index(g) % 2 for g in groups])
    # epoch 1 is best on fold 0's videos, epoch 3 on fold 1's: each fold takes the other's best
    noise = [(2.0, 2.0), (0.1, 1.5), (1.0, 1.0), (1.5, 0.1), (3.0, 3.0)]
    logits = [target + rng.normal(0, 1, n) * np.where(fold == 0, a, b) for a, b in noise]
    curve = {"ids": [str(i) for i in range(n)], "groups": groups, "target": target.tolist(),
             "epochs": [{"epoch": e, "logits": lg[:, None].tolist()} for e, lg in enumerate(logits)]}
    out = sg.crossfit({"protocol": "mosi", "monitor": "MAE"}, curve)
    pred, chosen = np.empty(n), []
    for f in range(2):
        rest = fold != f
        e = int(np.argmin([mean_absolute_error(target[rest], lg[rest]) for lg in logits]))
        chosen.append(e)
        pred[fold == f] = logits[e][fold == f]
    assert out["epochs"] == chosen == [3, 1]
    np.testing.assert_allclose(out["metrics"]["MAE"], mean_absolute_error(target, pred), rtol=1e-6)
    np.testing.assert_allclose(out["metrics"]["Has0_acc_2"], accuracy_score(target >= 0, pred >= 0), rtol=1e-9)


def test_the_script_refuses_other_shared_settings_and_a_method_typo_and_exits_1_on_failures(tmp_path, capsys):
    """It averaged runs of other settings into one row (exit 0), trained the variants before a method typo,
    exited 0 when runs failed and raised a traceback when none had finished (a review). In process: the
    script's main, with benchmarks/ on sys.path as when it runs."""
    import sys

    sg = _module()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        tiny = ["data.options.sizes=[96,32,32]", "train.max_epochs=1", "model.d_model=8", "model.hidden=16",
                "model.head_hidden=8"]
        out = tmp_path / "sg"
        assert sg.main(["-", str(out), "late_fusion", "1111", *tiny]) == 0
        assert "| late_fusion | 1 |" in capsys.readouterr().out
        with pytest.raises(SystemExit, match=r"^selection_gap.py: .* holds runs of other shared settings \(train.lr: "
                                             r"0.001 there, 0.01 now"):
            sg.main(["-", str(out), "late_fusion", "1111,1112", *tiny, "train.lr=0.01"])
        with pytest.raises(SystemExit, match=r"^selection_gap.py: variant 'late_fusoin': unknown method 'late_fusoin'.*"
                                             r"\(nothing was trained\)"):
            sg.main(["-", str(out), "agm,late_fusoin", "1111", *tiny])
        assert not (out / "runs" / "agm").exists()
        assert sg.main(["-", str(tmp_path / "failed"), "late_fusion:train.monitor=nope", "1111", *tiny]) == 1
        assert "1 run(s) failed" in capsys.readouterr().err
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_plot_of_a_folder_without_finished_runs_says_so_and_writes_nothing(tmp_path, capsys):
    """--table OUT --plot PNG on a folder with no finished run raised IndexError and left an empty PNG and
    a 0-byte CSV (a review): the empty table, one line naming the folder, exit 1, no file."""
    import sys

    sg = _module()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        out = tmp_path / "sg0"
        (out / "runs" / "late_fusion" / "seed1111").mkdir(parents=True)  # an interrupted run: no test_curve.json
        png = tmp_path / "x.png"
        assert sg.main(["--table", str(out), "--plot", str(png)]) == 1
        cap = capsys.readouterr()
        assert cap.out.strip().splitlines() == [sg.table(out).splitlines()[0], "|---|---|---|---|---|---|---|---|---|---|"]
        assert cap.err == (f"selection_gap.py: no finished run in {out} (no runs/<variant>/seed*/test_curve.json): "
                           f"nothing to plot, {png} not written\n")
        assert not png.exists() and not png.with_suffix(".csv").exists()
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_the_command_line_is_argparse_refusing_unknown_flags_and_listing_every_one(tmp_path, capsys):
    """argv was read by hand: --table OUT --plot (no figure) and --table alone raised IndexError,
    --plott x.png printed the table with exit 0, and --help listed only the training arguments (review)."""
    import sys

    sg = _module()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        out = tmp_path / "sg"
        out.mkdir()
        for argv in (["--table", str(out), "--plot"], ["--table"], ["--table", str(out), "--plott", "x.png"],
                     ["--table", str(out), "-", str(out), "late_fusion", "1111"], ["--plot", "x.png"],
                     ["-", str(out)]):
            with pytest.raises(SystemExit) as e:
                sg.main(argv)
            assert e.value.code == 2, argv
            assert "selection_gap.py: error: " in capsys.readouterr().err, argv
        with pytest.raises(SystemExit) as e:
            sg.main(["--help"])
        assert e.value.code == 0
        usage = capsys.readouterr().out
        assert all(flag in usage for flag in ("--table OUT", "--plot FIGURE.png", "KEY=VALUE", "seeds"))
        assert sg.main(["--table", str(out)]) == 0 and "| variant |" in capsys.readouterr().out
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
