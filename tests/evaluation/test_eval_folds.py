"""Cross-validation over IEMOCAP sessions (GCNet layout): one run per fold, the mean reported."""

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))

from tiny import TINY  # noqa: E402
from writers import write_gcnet  # noqa: E402

import pytest  # noqa: E402

from pase.cli import main  # noqa: E402
from pase.data import create_data  # noqa: E402
from pase.data.synthetic import load_synthetic  # noqa: E402


@pytest.fixture(autouse=True)
def _built_in_benchmark_takes_folds(monkeypatch):
    """Most tests here stand a fake ``train`` in for the folds' runs and pass the built-in benchmark's
    ``Config()``; its loader takes no ``fold``, and its ``check_options`` refuses ``data.options.fold``
    before any fold trains (``test_crossval_of_a_source_without_folds_is_refused_before_any_fold_trains``
    puts it back), so that check is lifted here."""
    monkeypatch.delattr(load_synthetic, "check_options", raising=False)


def test_crossval_trains_each_fold_and_reports_the_mean(tmp_path, capsys):
    """With the shipped configs/iemocap4_gcnet.yaml (the docs' command; its placeholders overridden:
    the docs named a config that was not shipped, a review)."""
    label = write_gcnet(tmp_path / "data", "iemocap4")
    sets = [s for s in TINY if not s.startswith("data.options.sizes")] + [
        f"data.options.label_path={label}",
        f"data.options.feature_root={label.parent / 'features'}", "train.batch_size=16", "train.max_epochs=2"]
    config = Path(__file__).resolve().parents[2] / "configs" / "iemocap4_gcnet.yaml"
    args = ["crossval", "--config", str(config), "--folds", "1,2", "--out", str(tmp_path / "cv")] + [
        x for s in sets for x in ("--set", s)]
    assert main(args) == 0
    summary = json.loads((tmp_path / "cv" / "folds_summary.json").read_text())
    assert summary["protocol"] == "multiclass" and set(summary["folds"]) == {"1", "2"}
    for k in ("WA", "UA", "WF1"):
        vals = [summary["folds"][f][k] for f in ("1", "2")]
        assert abs(summary["mean"][k] - statistics.mean(vals)) < 1e-12
    # each fold held out its own session: fold f's test ids all come from session f
    for f in ("1", "2"):
        metrics = json.loads((tmp_path / "cv" / f"fold{f}" / "metrics.json").read_text())
        assert metrics["test"] == summary["folds"][f]
        held_out = create_data("gcnet", label_path=label, feature_root=label.parent / "features", fold=int(f))
        assert all(i.startswith(f"Ses0{f}") for i in held_out.splits["test"].ids)
    assert "| mean ± SD |" in capsys.readouterr().out
    # a second call resumes: nothing is retrained, and a fold interrupted before its metrics.json continues
    before = (tmp_path / "cv" / "fold1" / "metrics.json").stat().st_mtime_ns
    fold2 = json.loads((tmp_path / "cv" / "fold2" / "metrics.json").read_text())
    (tmp_path / "cv" / "fold2" / "metrics.json").unlink()
    assert main(args) == 0
    assert (tmp_path / "cv" / "fold1" / "metrics.json").stat().st_mtime_ns == before
    again = json.loads((tmp_path / "cv" / "fold2" / "metrics.json").read_text())
    assert (again["test"], again["best_epoch"]) == (fold2["test"], fold2["best_epoch"])
    # a rerun with another configuration into the same folder stops before mixing folds
    capsys.readouterr()
    other = [a.replace("train.max_epochs=2", "train.max_epochs=3") for a in args]
    assert main(other) == 2
    err = capsys.readouterr().err
    assert "fold1 holds fold 1 of another configuration (train.max_epochs: 2 there, 3 now)" in err, err
    assert (tmp_path / "cv" / "fold1" / "metrics.json").stat().st_mtime_ns == before
    # other data at the same paths: a finished fold is not averaged with new ones (pase compare refuses it too)
    write_gcnet(tmp_path / "data", "iemocap4", seed=7)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "fold1 holds fold 1 trained on other data than the configuration gives now (" in err, err
    assert (tmp_path / "cv" / "fold1" / "metrics.json").stat().st_mtime_ns == before


def test_crossval_refuses_a_fold_set_with_set(tmp_path, monkeypatch, capsys):
    """--set data.options.fold=3 --folds 1 trained fold 1 with no note (review)."""
    import pase.evaluation.folds as folds

    monkeypatch.setattr(folds, "cross_validate", lambda *a, **k: pytest.fail("the cross-validation started"))
    args = ["crossval", "--folds", "1", "--out", str(tmp_path / "cv"), "--set", "data.source=gcnet",
            "--set", "data.options.fold=3"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("pase: error: --set data.options.fold=3: pase crossval sets data.options.fold itself in "
                          "every run") and "choose it with --folds (nothing was written)" in err
    assert not (tmp_path / "cv").exists()


@pytest.mark.parametrize("extra, key, flag", [
    (["--set", "data.options={fold: 3}"], "data.options.fold", "--folds"),  # the option inside a parent's mapping
    (["--seeds", "1,2", "--set", "train.seed=5"], "train.seed", "--seeds"),  # --seeds sets each run's seed
])
def test_crossval_refuses_a_set_it_overrides_written_any_way(tmp_path, monkeypatch, capsys, extra, key, flag):
    """--set 'data.options={fold: 3}' passed the fold refusal, and --set train.seed=5 with --seeds was
    dropped without a word (a review). Without --seeds, train.seed is the one run's seed and is taken."""
    import pase.evaluation.folds as folds

    monkeypatch.setattr(folds, "cross_validate", lambda *a, **k: pytest.fail("the cross-validation started"))
    assert main(["crossval", "--folds", "1", "--out", str(tmp_path / "cv")] + extra) == 2
    err = capsys.readouterr().err
    assert f"pase crossval sets {key} itself in every run" in err and f"choose it with {flag}" in err, err
    started = []
    monkeypatch.setattr(folds, "cross_validate", lambda cfg, *a, **k: started.append(cfg.train.seed) or {})
    main(["crossval", "--folds", "1", "--out", str(tmp_path / "cv2"), "--set", "train.seed=5"])
    assert started == [5]


def test_a_nan_fold_is_left_out_of_its_metric_and_counted(tmp_path, monkeypatch):
    """Corr of a constant prediction is NaN in one fold: the mean is over the others, with n."""
    import math

    import pase.evaluation.folds as folds
    from pase.config import Config

    results = {1: {"MAE": 1.0, "Corr": 0.5}, 2: {"MAE": 2.0, "Corr": float("nan")}, 3: {"MAE": 3.0, "Corr": 0.7}}

    def fake_train(cfg, run, resume=False, quiet=False):
        return {"test": results[cfg.data.options["fold"]], "protocol": "mosi"}

    monkeypatch.setattr(folds, "train", fake_train)
    summary = folds.cross_validate(Config(), tmp_path / "cv", folds=[1, 2, 3])
    assert summary["mean"]["MAE"] == 2.0 and summary["n"] == {"MAE": 3, "Corr": 2}
    assert math.isclose(summary["mean"]["Corr"], 0.6) and math.isclose(summary["sd"]["Corr"], statistics.stdev([0.5, 0.7]))
    assert "0.6000 ± 0.1414 (n=2)" in (tmp_path / "cv" / "folds_summary.md").read_text()
    # one finite fold: no SD to give, and the cell says so instead of '± nan'
    results[3]["Corr"] = float("nan")
    folds.cross_validate(Config(), tmp_path / "cv1", folds=[1, 2, 3])
    md = (tmp_path / "cv1" / "folds_summary.md").read_text()
    assert "0.5000 ± n/a (n=1)" in md and "nan" not in md.split("mean ± SD")[1]
    try:
        folds.cross_validate(Config(), tmp_path / "cv2", folds=[])
    except ValueError as e:
        assert "no folds to train" in str(e)
    else:
        raise AssertionError("an empty fold list must be refused")


def test_folds_summary_json_is_strict_json_with_null_for_an_undefined_number(tmp_path, monkeypatch):
    """One fold (or one seed) leaves the SD undefined, and a fold's Corr may be NaN: folds_summary.json
    held the bare NaN token, which jq and JSON.parse reject (a review); it holds null there, as compare's
    summary.json does, and the returned summary keeps NaN."""
    import math

    import pase.evaluation.folds as folds
    from pase.config import Config

    results = {1: {"MAE": 1.0, "Corr": 0.5}, 2: {"MAE": 2.0, "Corr": float("nan")}}

    def fake_train(cfg, run, resume=False, quiet=False):
        return {"test": dict(results[cfg.data.options["fold"]]), "protocol": "mosi"}

    def strict(path):
        def refuse(token):
            raise ValueError(f"{path.name} holds the non-JSON token {token}")
        return json.loads(path.read_text(), parse_constant=refuse)

    monkeypatch.setattr(folds, "train", fake_train)
    one = folds.cross_validate(Config(), tmp_path / "cv1", folds=[1])
    assert math.isnan(one["sd"]["MAE"])
    saved = strict(tmp_path / "cv1" / "folds_summary.json")
    assert saved["sd"] == {"MAE": None, "Corr": None} and saved["mean"] == {"MAE": 1.0, "Corr": 0.5}
    folds.cross_validate(Config(), tmp_path / "cv2", folds=[1, 2])
    both = strict(tmp_path / "cv2" / "folds_summary.json")
    assert both["folds"]["2"] == {"MAE": 2.0, "Corr": None} and both["sd"] == {"MAE": statistics.stdev([1.0, 2.0]),
                                                                              "Corr": None}
    assert both["n"] == {"MAE": 2, "Corr": 1}
    folds.cross_validate(Config(), tmp_path / "cv3", folds=[1, 2], seeds=[1111])
    seeds = strict(tmp_path / "cv3" / "folds_summary.json")
    assert seeds["fold_means"]["1111"] == {"MAE": 1.5, "Corr": 0.5} and seeds["sd"] == {"MAE": None, "Corr": None}
    assert seeds["runs"]["1111"]["2"]["Corr"] is None

def test_crossval_folds_that_are_not_numbers_are_named(tmp_path, capsys):
    assert main(["crossval", "--folds", "a,b", "--out", str(tmp_path / "cv")]) == 2
    assert capsys.readouterr().err == "pase: error: --folds 'a,b' is not a comma list of fold numbers, for example " \
                                      "--folds 1,2,3,4,5\n"
    assert not (tmp_path / "cv").exists()


def test_crossval_of_a_source_without_folds_is_refused_before_any_fold_trains(tmp_path, monkeypatch):
    """The built-in benchmark's loader takes **options, so crossval's up-front check let
    data.options.fold through and the first fold failed as it loaded its data (a review, of compare);
    its check_options names the option now, before anything is written."""
    import pase.evaluation.folds as folds
    from pase.config import Config, ConfigError

    monkeypatch.undo()  # the loader's own check_options, which _built_in_benchmark_takes_folds lifted
    monkeypatch.setattr(folds, "train", lambda cfg, run, resume=False, quiet=False: pytest.fail("trained"))
    with pytest.raises(ConfigError, match=r"^--folds: data.options.fold is not an option of the built-in benchmark; "
                                          r"it takes data.options.seed, .* \(nothing was trained\)$"):
        folds.cross_validate(Config(), tmp_path / "cv", folds=[1, 2])
    assert not (tmp_path / "cv").exists()


@pytest.mark.parametrize("method, sets, match", [
    ("pase", ["pase.binning=classes"], r"^pase.binning='classes' takes the class ids of classification data; data "
                                       r"source 'synthetic' gives continuous labels \(regression\): bin them with "
                                       r"one of sign, polarity, round7 \(method pase bins its labels with it; "
                                       r"nothing was trained\)$"),
    ("pmr", ["pase.binning=classes"], r"^pase.binning='classes' .* \(method pmr bins its labels with it; nothing "
                                      r"was trained\)$"),
    ("pmr", ["pase.binning=sgn"], r"^pase.binning='sgn' is not one of sign, polarity, round7, classes \(method pmr "
                                  r"bins its labels with it; nothing was trained\)$"),
])
def test_crossval_refuses_a_binning_the_method_cannot_build_before_any_fold_trains(tmp_path, monkeypatch, method,
                                                                                    sets, match):
    """pase compare refused pase.binning=classes for PaSE / PMR on regression labels (and a binning PMR does not
    know) before writing anything; crossval started its folds, and each failed at model build. The same check
    (compare's check_methods_can_start) refuses it now before any fold trains; a valid binning goes ahead."""
    import pase.evaluation.folds as folds
    from pase.config import Config, ConfigError, apply_overrides

    monkeypatch.setattr(folds, "train", lambda cfg, run, resume=False, quiet=False: pytest.fail("trained"))
    with pytest.raises(ConfigError, match=match):
        folds.cross_validate(apply_overrides(Config(), [f"method={method}"] + sets), tmp_path / "cv", folds=[1, 2])
    assert not (tmp_path / "cv").exists()
    trained = []
    monkeypatch.setattr(folds, "train", lambda cfg, run, resume=False, quiet=False: trained.append(run) or {
        "test": {"MAE": 1.0}, "protocol": "mosi"})
    folds.cross_validate(apply_overrides(Config(), [f"method={method}", "pase.binning=sign"]), tmp_path / "cv",
                         folds=[1, 2])
    assert trained == [tmp_path / "cv" / "fold1", tmp_path / "cv" / "fold2"]


@pytest.mark.parametrize("sets, match", [
    (["method=agm", "train.loss=foo"], r"^train.loss='foo' is not one of auto, l1, mse \(nothing was trained\)$"),
    (["train.optimizer=foo"], r"^train.optimizer='foo' is not one of adam, adamw, sgd \(nothing was trained\)$"),
    (["model.encoder=foo"], r"^config key 'model.encoder': unknown encoder 'foo'; .* \(nothing was trained\)$"),
])
def test_crossval_refuses_a_setting_the_run_is_built_with_before_any_fold_trains(tmp_path, monkeypatch, sets, match):
    """A setting the method, the model or the optimiser refused only as each fold's run built them: every fold
    started and failed. pase compare's check_methods_can_start refuses them before any fold trains."""
    import pase.evaluation.folds as folds
    from pase.config import Config, ConfigError, apply_overrides

    monkeypatch.setattr(folds, "train", lambda cfg, run, resume=False, quiet=False: pytest.fail("trained"))
    with pytest.raises(ConfigError, match=match):
        folds.cross_validate(apply_overrides(Config(), sets), tmp_path / "cv", folds=[1, 2])
    assert not (tmp_path / "cv").exists()


def test_crossval_refuses_a_file_or_somebody_elses_folder(tmp_path, monkeypatch):
    """crossval --out wrote into any folder, replacing a folds_summary.md there, and an existing
    file as --out ended in '[Errno 20] Not a directory'. Nothing is written now."""
    import pytest

    import pase.evaluation.folds as folds
    from pase.config import Config, ConfigError

    monkeypatch.setattr(folds, "train", lambda cfg, run, resume=False, quiet=False: pytest.fail("trained"))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep\n")
    (mine / "folds_summary.md").write_text("my summary\n")
    with pytest.raises(ConfigError, match=r"holds files that are not a cross-validation's \(notes.txt\)"):
        folds.cross_validate(Config(), mine, folds=[1])
    (mine / "notes.txt").unlink()  # a summary without fold runs is not this command's either
    with pytest.raises(ConfigError, match=r"not a cross-validation's \(folds_summary.md\); pass a new --out"):
        folds.cross_validate(Config(), mine, folds=[1])
    assert (mine / "folds_summary.md").read_text() == "my summary\n"
    (tmp_path / "preds.csv").write_text("id,pred\n")
    with pytest.raises(ConfigError, match="preds.csv is a file, not a folder"):
        folds.cross_validate(Config(), tmp_path / "preds.csv", folds=[1])
    assert (tmp_path / "preds.csv").read_text() == "id,pred\n"


def test_crossval_expands_a_tilde_in_its_folder(tmp_path, monkeypatch):
    """cross_validate(cfg, "~/cv") wrote its summaries into ./~/cv while train() expanded the folds'
    `~` (a review: only the CLI expanded it)."""
    import pase.evaluation.folds as folds
    from pase.config import Config

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    runs = []

    def fake_train(cfg, run, resume=False, quiet=False):
        runs.append(run)
        return {"test": {"MAE": float(cfg.data.options["fold"])}, "protocol": "mosi"}

    monkeypatch.setattr(folds, "train", fake_train)
    summary = folds.cross_validate(Config(), "~/cv", folds=[1, 2])
    assert runs == [home / "cv" / "fold1", home / "cv" / "fold2"] and summary["mean"]["MAE"] == 1.5
    assert json.loads((home / "cv" / "folds_summary.json").read_text())["mean"] == {"MAE": 1.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]  # no folder named ~


def test_crossval_over_seeds_reports_the_seeds_mean_of_fold_means(tmp_path, monkeypatch, capsys):
    """--seeds trains every fold per seed into seed<s>/fold<f>/; each seed's figure is its fold
    mean, and the summary is the mean and sample SD of those over the seeds. The layouts do not mix."""
    import math

    import pytest

    import pase.evaluation.folds as folds
    from pase.config import ConfigError, save_config

    trained = []

    def fake_train(cfg, run, resume=False, quiet=False):
        s, f = cfg.train.seed, cfg.data.options["fold"]
        trained.append((s, f, Path(run).relative_to(Path(run).parents[1 if Path(run).parent.name.startswith("seed")
                                                                   else 0]).as_posix()))
        Path(run).mkdir(parents=True)
        save_config(cfg, Path(run) / "config.yaml")
        test = {"MAE": s % 10 + f / 10, "Corr": float("nan") if (s, f) == (1112, 2) else f / 10}
        (Path(run) / "metrics.json").write_text(json.dumps({"test": test, "protocol": "mosi"}))
        return {"test": test, "protocol": "mosi"}

    monkeypatch.setattr(folds, "train", fake_train)
    args = ["crossval", "--folds", "1,2,3", "--seeds", "1111,1112", "--out", str(tmp_path / "cv")]
    assert main(args) == 0
    assert trained == [(s, f, f"seed{s}/fold{f}") for s in (1111, 1112) for f in (1, 2, 3)]
    summary = json.loads((tmp_path / "cv" / "folds_summary.json").read_text())
    fold_mae = {s: statistics.mean(s % 10 + f / 10 for f in (1, 2, 3)) for s in (1111, 1112)}  # 1.2, 2.2
    assert summary["fold_means"]["1111"]["MAE"] == pytest.approx(fold_mae[1111])
    assert summary["mean"]["MAE"] == pytest.approx(1.7) and summary["sd"]["MAE"] == pytest.approx(math.sqrt(0.5))
    # seed 1112's Corr is the mean of its finite folds (0.1, 0.3); both seeds count
    assert summary["fold_means"]["1112"]["Corr"] == pytest.approx(0.2) and summary["n"]["Corr"] == 2
    assert summary["runs"]["1112"]["2"]["MAE"] == pytest.approx(2.2)
    out = capsys.readouterr().out
    assert "| 1111 | 1.2000 | 0.2000 |" in out and "| mean ± SD | 1.7000 ± 0.7071 | 0.2000 ± 0.0000 |" in out
    assert "| 1112 / 2 | 2.2000 | nan |" in out and "| 1112 | 2.2000 | 0.2000 (2 folds) |" in out
    assert summary["fold_counts"]["1112"] == {"MAE": 3, "Corr": 2}
    # a second call reads the finished runs back; a seed count is MMSA's seeds
    trained.clear()
    assert main(args) == 0 and trained == []
    assert main(["crossval", "--folds", "1", "--seeds", "2", "--out", str(tmp_path / "cv")]) == 0
    assert trained == [] and json.loads((tmp_path / "cv" / "folds_summary.json").read_text())["seeds"] == [1111, 1112]
    # one seed's layout and the seeds' layout are not mixed in one folder
    with pytest.raises(ConfigError, match=r"holds a cross-validation of seed<s>/ runs, not one with no --seeds"):
        folds.cross_validate(folds.Config(), tmp_path / "cv", folds=[1])
    assert main(["crossval", "--folds", "1", "--out", str(tmp_path / "one")]) == 0
    with pytest.raises(ConfigError, match=r"holds a cross-validation of one seed's fold<f>/ runs, not one with --seeds"):
        folds.cross_validate(folds.Config(), tmp_path / "one", folds=[1], seeds=[1111])
    assert main(["crossval", "--seeds", "x,y", "--out", str(tmp_path / "bad")]) == 2
    assert "--seeds 'x,y' is neither a count" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_crossval_checks_every_fold_and_the_folder_before_training(tmp_path, monkeypatch, capsys):
    """A bad fold number stopped the command only at its turn, after the folds before it trained; a
    repeated fold was averaged once under a header that named it twice; a user's folder called
    fold2 was taken for a run and written beside; Ctrl-C advised resuming one fold's run, which
    writes no summary."""
    import pytest

    import pase.evaluation.folds as folds
    from pase.config import apply_overrides, load_config, save_config
    from pase.errors import RunInterrupted

    label = write_gcnet(tmp_path / "data", "iemocap4")
    sets = [x for s in ["data.source=gcnet", f"data.options.label_path={label}", "train.max_epochs=1"]
            for x in ("--set", s)]
    monkeypatch.setattr(folds, "train", lambda cfg, run, resume=False, quiet=False: pytest.fail("trained"))
    assert main(["crossval", "--folds", "1,6", "--out", str(tmp_path / "cv")] + sets) == 2
    assert "pase: error: --folds: fold=6; IEMOCAP folds are 1..5 (the test session) (nothing was trained)" in \
        capsys.readouterr().err and not (tmp_path / "cv").exists()
    assert main(["crossval", "--folds", "1,1", "--out", str(tmp_path / "cv")] + sets) == 2
    err = capsys.readouterr().err
    assert "--folds 1,1 names a fold twice" in err and not (tmp_path / "cv").exists()
    assert "reads them differently" not in err  # the advice of a "trained on other data" refusal (review)
    # a changed --set is found at any fold already there, before the others train
    done = tmp_path / "cv_done" / "fold2"
    done.mkdir(parents=True)
    save_config(apply_overrides(load_config(None, [a for a in sets if a != "--set"]),
                                ["data.options.fold=2", "train.progress_bar=false"]), done / "config.yaml")
    (done / "metrics.json").write_text(json.dumps({"test": {"WA": 0.5}, "protocol": "multiclass"}))
    assert main(["crossval", "--folds", "1,2", "--out", str(tmp_path / "cv_done")] + sets
                + ["--set", "train.lr=0.01"]) == 2
    assert "fold2 holds fold 2 of another configuration (train.lr: 0.001 there, 0.01 now)" in capsys.readouterr().err
    assert not (tmp_path / "cv_done" / "fold1").exists()
    mine = tmp_path / "mine" / "fold2"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("keep\n")
    assert main(["crossval", "--folds", "1,2", "--out", str(tmp_path / "mine")] + sets) == 2
    assert "holds files that are not a cross-validation's (fold2)" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["fold2"]

    def interrupted(cfg, run, resume=False, quiet=False):
        raise RunInterrupted("training interrupted by SIGTERM in epoch 3", "SIGTERM",
                             f"finished epochs are kept: continue with pase train --resume {run}")

    monkeypatch.setattr(folds, "train", interrupted)
    assert main(["crossval", "--folds", "1,2", "--out", str(tmp_path / "cv")] + sets) == 143
    err = capsys.readouterr().err
    assert "run the same pase crossval command again to continue the cross-validation" in err and "--resume" not in err
    # the data may move between calls (as for a resume): a finished fold of the old place is no conflict
    moved = tmp_path / "moved" / label.name
    moved.parent.mkdir()
    moved.write_bytes(label.read_bytes())
    other = [a.replace(f"data.options.label_path={label}", f"data.options.label_path={moved}") for a in sets]
    assert main(["crossval", "--folds", "1,2", "--out", str(tmp_path / "cv_done")] + other
                + ["--set", f"data.options.feature_root={label.parent / 'features'}"]) == 143
    capsys.readouterr()
    # a loader argument the source needs is named, as by pase train (it was check_options' TypeError)
    assert main(["crossval", "--folds", "1", "--out", str(tmp_path / "cv_none"), "--set", "data.source=gcnet"]) == 2
    assert "data source 'gcnet' needs data.options.label_path" in capsys.readouterr().err
    # a fold killed after taking its lock, before its config.yaml, is a run's folder: it goes on to train
    (tmp_path / "locked" / "fold1").mkdir(parents=True)
    (tmp_path / "locked" / "fold1" / ".lock").touch()
    assert main(["crossval", "--folds", "1", "--out", str(tmp_path / "locked")] + sets) == 143
    assert "run the same pase crossval command again" in capsys.readouterr().err


def test_the_summary_names_dataset_and_selection_and_warns_of_folds_of_other_code(tmp_path, monkeypatch, capsys):
    """folds_summary.* named the protocol but not the dataset or the selection rule (PASE_SPEC
    section 6), and averaged a fold finished by older code with new ones without a word (review)."""
    import pase.evaluation.folds as folds
    from pase.config import save_config

    def fake_train(cfg, run, resume=False, quiet=False):
        f = cfg.data.options["fold"]
        Path(run).mkdir(parents=True)
        save_config(cfg, Path(run) / "config.yaml")
        result = {"test": {"MAE": f / 10}, "protocol": "mosi", "dataset": "synthetic", "monitor": "MAE",
                  "code_sha256": "new" if f > 1 else "old"}
        (Path(run) / "metrics.json").write_text(json.dumps(result))
        return result

    monkeypatch.setattr(folds, "train", fake_train)
    assert main(["crossval", "--folds", "1,2", "--out", str(tmp_path / "cv")]) == 0
    summary = json.loads((tmp_path / "cv" / "folds_summary.json").read_text())
    assert summary["dataset"] == "synthetic" and summary["selection"].startswith(
        "the epoch of the best validation MAE (train.monitor=the protocol default)")
    assert summary["code_warning"].startswith("the folds come from 2 versions of the pase code (new, old;")
    captured = capsys.readouterr()
    assert "Dataset synthetic; selected on the validation split: the epoch of the best validation MAE" in captured.out
    assert "**Warning**: the folds come from 2 versions" in captured.out
    assert "pase crossval: warning: the folds come from 2 versions" in captured.err


def test_a_fold_whose_monitor_was_never_finite_is_flagged_not_called_validation_selected(tmp_path, monkeypatch,
                                                                                          capsys):
    """A fold whose valid monitor was NaN in every epoch (metrics.json's "selection") was summed into a
    summary that said every fold kept the epoch of its best validation MAE (a review); a fold whose
    metrics.json has no "selection" (older files) stays a validation selection."""
    import pase.evaluation.folds as folds
    from pase.config import save_config

    def fake_train(cfg, run, resume=False, quiet=False):
        f = cfg.data.options["fold"]
        Path(run).mkdir(parents=True)
        save_config(cfg, Path(run) / "config.yaml")
        result = {"test": {"MAE": f / 10}, "protocol": "mosi", "dataset": "synthetic", "monitor": "MAE",
                  "best_epoch": 0, "code_sha256": "same",
                  **({"selection": "none: valid/MAE never finite"} if f == 2 else {})}
        (Path(run) / "metrics.json").write_text(json.dumps(result))
        return result

    monkeypatch.setattr(folds, "train", fake_train)
    assert main(["crossval", "--folds", "1,2", "--out", str(tmp_path / "cv")]) == 0
    flagged = f"{tmp_path / 'cv' / 'fold2'} (none: valid/MAE never finite, epoch 0 kept)"
    summary = json.loads((tmp_path / "cv" / "folds_summary.json").read_text())
    assert summary["unselected"] == [flagged]
    assert summary["selection"].endswith("of each fold's run, except 1 fold run(s) with no validation selection")
    captured = capsys.readouterr()
    said = f"no validation selection in 1 fold run(s): {flagged}; their metrics are of the checkpoint Lightning kept"
    assert f"**Warning**: {said}" in captured.out and "fold1" not in captured.out
    assert f"pase crossval: warning: {said}" in captured.err


def test_a_session_the_data_lacks_is_refused_before_any_fold_trains(tmp_path, monkeypatch, capsys):
    """A label pickle without session 5: fold 1 trained in full, then fold 5 failed (review)."""
    import pytest

    import pase.evaluation.folds as folds

    def no_session_5(d):
        for v in [v for v in d["videoIDs"] if v.startswith("Ses05")]:
            for key in ("videoIDs", "videoLabels", "videoSpeakers", "videoSentences"):
                del d[key][v]
        d["testVids"] = {v for v in d["videoIDs"] if v.startswith("Ses04")}
        d["trainVids"] -= d["testVids"]

    label = write_gcnet(tmp_path / "data", "iemocap4", mutate=no_session_5)
    monkeypatch.setattr(folds, "train", lambda cfg, run, resume=False, quiet=False: pytest.fail("trained"))
    assert main(["crossval", "--folds", "1,5", "--out", str(tmp_path / "cv"), "--set", "data.source=gcnet",
                 "--set", f"data.options.label_path={label}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pase: error: --folds: ") and "no video of session 5 (Ses05...)" in err, err
    assert "(nothing was trained)" in err and not (tmp_path / "cv").exists()


def test_a_crossval_killed_in_an_atomic_write_continues_with_the_same_command(tmp_path, monkeypatch):
    """A crossval killed while writing folds_summary.json left its hidden .folds_summary.json.*.tmp, and one
    killed while a fold wrote its config.yaml left that fold's folder with .lock and .config.yaml.*.tmp: the
    same command refused the folder as not a cross-validation's (naming the tmp file, or fold2), and a new
    --out retrained the finished folds. Now the finished fold is read back, the killed one trains afresh
    in its folder, and the summary's partial write is removed."""
    import pytest

    import pase.evaluation.folds as folds
    from pase.config import Config, ConfigError, save_config

    trained = []

    def fake_train(cfg, run, resume=False, quiet=False):
        trained.append((cfg.data.options["fold"], resume))
        Path(run).mkdir(parents=True, exist_ok=True)
        save_config(cfg, Path(run) / "config.yaml")
        result = {"test": {"MAE": float(cfg.data.options["fold"])}, "protocol": "mosi"}
        (Path(run) / "metrics.json").write_text(json.dumps(result))
        return result

    monkeypatch.setattr(folds, "train", fake_train)
    cv = tmp_path / "cv"
    folds.cross_validate(Config(), cv, folds=[1])
    assert trained == [(1, False)]
    (cv / ".folds_summary.json.ppvhejt6.tmp").write_text('{"protocol": ')  # killed in the summary's write
    (cv / "fold2").mkdir()
    (cv / "fold2" / ".lock").touch()  # killed while fold 2 wrote its config.yaml
    (cv / "fold2" / ".config.yaml.okxtcid5.tmp").write_text("data:\n")
    trained.clear()
    summary = folds.cross_validate(Config(), cv, folds=[1, 2])
    assert trained == [(2, False)]  # fold 1 read back, fold 2 started in its folder (train removes its tmp)
    assert summary["folds"] == {"1": {"MAE": 1.0}, "2": {"MAE": 2.0}}
    assert json.loads((cv / "folds_summary.json").read_text())["folds"] == summary["folds"]
    assert sorted(p.name for p in cv.iterdir()) == ["fold1", "fold2", "folds_summary.json", "folds_summary.md"]
    # another hidden file, or a partial write of a file crossval does not write, is still not this command's
    (cv / ".notes.txt.abcd1234.tmp").write_text("x")
    with pytest.raises(ConfigError, match=r"not a cross-validation's \(\.notes\.txt\.abcd1234\.tmp\)"):
        folds.cross_validate(Config(), cv, folds=[1, 2])
    (cv / ".notes.txt.abcd1234.tmp").unlink()
    (cv / "fold3").mkdir()
    (cv / "fold3" / "notes.tmp").write_text("mine")  # not a hidden partial write: the user's folder
    with pytest.raises(ConfigError, match=r"not a cross-validation's \(fold3\)"):
        folds.cross_validate(Config(), cv, folds=[1, 2])


def test_a_checkpoint_that_cannot_be_written_tells_to_rerun_the_crossval(tmp_path, monkeypatch):
    """A fold's CheckpointWriteError said 'continue with pase train --resume <fold>', which finishes that
    fold and leaves the later folds untrained and no summary (a review); the crossval's own command
    continues every fold."""
    import pytest

    import pase.evaluation.folds as folds
    from pase.config import Config
    from pase.training.checkpoint import CheckpointWriteError

    def full(cfg, run, resume=False, quiet=False):
        raise CheckpointWriteError(f"{run}/checkpoints/last.ckpt: the checkpoint could not be written (0 MiB free on "
                                   "its disk; ...); the previous one is kept", "free space", str(run))

    monkeypatch.setattr(folds, "train", full)
    with pytest.raises(CheckpointWriteError) as got:
        folds.cross_validate(Config(), tmp_path / "cv", folds=[1, 2])
    assert str(got.value).endswith("the previous one is kept: free space, then run the same pase crossval command "
                                   "again to continue (finished runs are kept)")
    assert "pase train --resume" not in str(got.value)


def test_an_interrupted_fold_of_other_data_is_refused_before_any_fold_trains(tmp_path):
    """A fold interrupted after its first epoch (checkpoints/last.ckpt, no metrics.json) was checked
    against the data only at its turn, inside its resume, after the folds before it had trained (a
    review; pase compare checks its interrupted runs up front). Now its checkpoint's data fingerprint is
    compared before anything trains; with the right data the fold continues from its checkpoint."""
    import pytest

    from pase.config import ConfigError, load_config
    from pase.evaluation.folds import _fold_config, cross_validate
    from pase.training import train

    a = write_gcnet(tmp_path / "a", "iemocap4", seed=0)
    b = write_gcnet(tmp_path / "b", "iemocap4", seed=1)  # the same shapes, other values

    def cfg(label):
        return load_config(None, ["data.source=gcnet", f"data.options.label_path={label}", "train.max_epochs=1",
                                  "train.batch_size=8", "train.progress_bar=false", "model.d_model=8",
                                  "model.hidden=16", "model.head_hidden=8"])

    out = tmp_path / "cv"
    fold2 = out / "fold2"
    train(_fold_config(cfg(a), 2), fold2, quiet=True)
    (fold2 / "metrics.json").unlink()  # interrupted after its last checkpoint
    with pytest.raises(ConfigError, match=r"fold2 holds fold 2 \(interrupted; its checkpoints/last.ckpt\) trained "
                                          r"on other data than the configuration gives now \(split '\w+'.*\); point "
                                          r"the data options at the folds' data, .*\(nothing was trained\); if the "
                                          r"files are the same, this pase reads them differently .*docs/data.md"):
        cross_validate(cfg(b), out, folds=[1, 2])  # the advice was on the "--folds 1,1" refusal instead (review)
    assert not (out / "fold1").exists()  # trained before the refusal, before the fix
    assert not (fold2 / "metrics.json").exists()
    before = (fold2 / "checkpoints" / "last.ckpt").read_bytes()
    summary = cross_validate(cfg(a), out, folds=[2])  # the right data: the fold continues from its checkpoint
    assert set(summary["folds"]) == {"2"} and (fold2 / "checkpoints" / "last.ckpt").read_bytes() == before


def test_crossval_keeps_the_dataset_its_folds_were_trained_as(tmp_path):
    """The dataset was inferred from the label file's name at every call, so a finished fold was read back, and
    new folds trained, under another dataset once the file was renamed (a review found it for pase compare). A
    fold of an older pase (no dataset in its config.yaml) is checked against its metrics.json, and the --set of
    its dataset is no change."""
    import shutil

    import pytest

    from pase.config import ConfigError, load_config
    from pase.evaluation.folds import _fold_config, cross_validate
    from pase.training import train
    from tiny import as_an_older_pase_saved

    label = write_gcnet(tmp_path / "a", "iemocap4")
    sets = ["data.source=gcnet", "train.max_epochs=1", "train.batch_size=8", "train.progress_bar=false",
            "model.d_model=8", "model.hidden=16", "model.head_hidden=8"]
    out = tmp_path / "cv"
    train(_fold_config(load_config(None, sets + [f"data.options.label_path={label}"]), 2), out / "fold2", quiet=True)
    as_an_older_pase_saved(out / "fold2")
    renamed = tmp_path / "b" / "IEMOCAP_features_raw_6way.pkl"  # now names IEMOCAP's six classes
    renamed.parent.mkdir()
    shutil.copy(label, renamed)
    moved = sets + [f"data.options.label_path={renamed}", f"data.options.feature_root={label.parent / 'features'}"]
    with pytest.raises(ConfigError, match=rf"^{renamed}: this data loads as dataset 'iemocap6' \(iemocap6_gcnet, "
                                          r"protocol multiclass\), but .*fold2 was trained as 'iemocap4'.*--set "
                                          r"data.options.dataset=iemocap4"):
        cross_validate(load_config(None, moved), out, folds=[2])
    summary = cross_validate(load_config(None, moved + ["data.options.dataset=iemocap4"]), out, folds=[2])
    assert summary["dataset"] == "iemocap4_gcnet" and set(summary["folds"]) == {"2"}


def test_a_folder_named_like_a_fold_without_its_number_is_not_a_fold_run(tmp_path, monkeypatch):
    """fold<f>/ and seed<s>/ name a number: a user's empty 'folders/' or 'seedlings/' in --out is
    somebody else's, not a run this command may write beside (nothing is trained)."""
    import pytest

    import pase.evaluation.folds as folds
    from pase.config import Config, ConfigError

    monkeypatch.setattr(folds, "train", lambda cfg, run, resume=False, quiet=False: pytest.fail("trained"))
    for name in ("folders", "seedlings"):
        out = tmp_path / name
        (out / name).mkdir(parents=True)
        with pytest.raises(ConfigError, match=rf"holds files that are not a cross-validation's \({name}\)"):
            folds.cross_validate(Config(), out, folds=[1], seeds=[1111] if name == "seedlings" else None)


def test_a_second_crossval_into_a_running_crossvals_folder_is_refused(tmp_path, monkeypatch, capsys):
    """pase crossval held only each fold's run lock: a second crossval into the same --out, started while the
    first trained, trained the folds the first had not reached and wrote its summaries over the first's. It
    holds pase compare's comparison lock (.compare.lock) now: the second is refused with one line naming the
    folder and the lock, nothing written, and the file is gone once the first ends."""
    import pase.evaluation.folds as folds
    from pase.config import Config

    cv = tmp_path / "cv"
    started, refused = [], []

    def first_trains(cfg, run, resume=False, quiet=False):
        if started:  # the second crossval got past the lock
            pytest.fail(f"the second crossval trained {run}")
        started.append(run)
        refused.append(main(["crossval", "--folds", "1", "--out", str(cv)]))
        refused.append(sorted(p.name for p in cv.iterdir()))
        Path(run).mkdir()
        return {"test": {"MAE": 1.0}, "protocol": "mosi"}

    monkeypatch.setattr(folds, "train", first_trains)
    capsys.readouterr()
    folds.cross_validate(Config(), cv, folds=[1])
    err = capsys.readouterr().err
    assert refused == [2, [".compare.lock"]], refused
    assert err == (f"pase: error: another pase compare, crossval or report is running in {cv} (it holds {cv / '.compare.lock'}); "
                   "wait for it to end, or pass another --out (nothing was written)\n"), err
    assert sorted(p.name for p in cv.iterdir()) == ["fold1", "folds_summary.json", "folds_summary.md"]
    (cv / ".compare.lock").touch()  # the file of a crossval that was killed: no lock held, not a foreign file
    monkeypatch.setattr(folds, "train", lambda cfg, run, resume=False, quiet=False: {"test": {"MAE": 2.0},
                                                                                      "protocol": "mosi"})
    assert folds.cross_validate(Config(), cv, folds=[1])["mean"] == {"MAE": 2.0}
    assert not (cv / ".compare.lock").exists()


def test_a_signal_a_finalizer_drops_still_stops_the_cross_validation(tmp_path, monkeypatch, capsys):
    """Ctrl-C while a finished fold's Trainer was collected (a KeyboardInterrupt raised in a finalizer, which
    Python prints as "Exception ignored" and drops) was lost, as in pase compare (a review): the folds went on.
    The signal is recorded and stops the cross-validation after that fold: one line, status 130, the next fold
    not started, and the same command continues."""
    import signal

    import pase.evaluation.folds as folds
    from pase.config import save_config

    class SignalInFinalizer:
        def __del__(self):
            signal.raise_signal(signal.SIGINT)

    trained, signalling = [], [True]

    def fake_train(cfg, run, resume=False, quiet=False):
        trained.append(cfg.data.options["fold"])
        Path(run).mkdir(parents=True)
        save_config(cfg, Path(run) / "config.yaml")
        result = {"test": {"MAE": 1.0}, "protocol": "mosi"}
        (Path(run) / "metrics.json").write_text(json.dumps(result))
        if signalling:
            SignalInFinalizer()  # collected at once, as a finished fold's Trainer is when train returns
        return result

    monkeypatch.setattr(folds, "train", fake_train)
    args = ["crossval", "--folds", "1,2", "--out", str(tmp_path / "cv")]
    assert main(args) == 130
    err = capsys.readouterr().err
    assert err.startswith("pase: interrupted: cross-validation interrupted by SIGINT after cv/fold1 was trained; "
                          "run the same pase crossval command again") and len(err.splitlines()) == 1, err
    assert trained == [1] and not (tmp_path / "cv" / "fold2").exists()
    signalling.clear()  # the same command again: fold 1 is kept, fold 2 trains
    assert main(args) == 0 and trained == [1, 2]
