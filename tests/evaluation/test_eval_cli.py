"""The ``compare``, ``report`` and ``diagnose`` commands through ``pase.cli.main``."""

import json
import shutil
import time
import types
from pathlib import Path

import pytest

import pase.evaluation.compare as compare_mod
from eval_setup import OK_METHODS, OVERRIDES, PNG_SIGNATURE
from pase.cli import main


def _sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


def test_compare_command_resumes_a_finished_comparison(comparison_copy, tmp_path, monkeypatch, capsys):
    def no_training(*args, **kwargs):
        raise AssertionError("finished runs must not be trained again")

    monkeypatch.setattr(compare_mod, "train", no_training)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("data:\n  options:\n    sizes: [192, 64, 64]\n")
    (comparison_copy / "summary.md").unlink()
    rc = main(["compare", "--config", str(cfg), *_sets(OVERRIDES), "--methods", ",".join(OK_METHODS),
               "--seeds", "2", "--out", str(comparison_copy)])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "[1/4] late_fusion seed 1111: skipped" in printed and "summary written to" in printed
    assert "| late_fusion | 2 |" in printed  # the mean ± SD table
    assert "synthetic, protocol mosi: Test metrics (mean ± sample SD over seeds)" in printed  # it names its protocol
    summary = json.loads((comparison_copy / "summary.json").read_text())
    assert summary["failed"] == [] and summary["methods"] == OK_METHODS and summary["seeds"] == [1111, 1112]
    assert (comparison_copy / "summary.md").is_file()


def test_compare_command_errors_are_one_line(comparison_copy, capsys):
    rc = main(["compare", *_sets(OVERRIDES + ["train.lr=0.5"]), "--methods", "late_fusion", "--seeds", "1",
               "--out", str(comparison_copy)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("pase: error: ") and "another configuration" in err and err.count("\n") == 1
    rc = main(["compare", "--seeds", "1111", "--out", str(comparison_copy)])
    assert rc == 2 and "write '1111,' for that one seed" in capsys.readouterr().err


def test_report_command(comparison_copy, capsys):
    assert main(["report", str(comparison_copy)]) == 0
    assert "report written to" in capsys.readouterr().out
    assert (comparison_copy / "figures" / "probes.png").read_bytes()[:8] == PNG_SIGNATURE
    assert (comparison_copy / "report.html").is_file() and (comparison_copy / "report.md").is_file()


def test_diagnose_command(comparison, tmp_path, capsys):
    ckpt = comparison[0] / "runs" / "late_fusion" / "seed1112" / "checkpoints" / "best.ckpt"
    rc = main(["diagnose", "--checkpoint", str(ckpt), "--out", str(tmp_path / "d"), "--noise-levels", "0,1",
               "--no-probes"])
    out = capsys.readouterr().out
    assert rc == 0 and "test Shapley shares (negative loss): text" in out and "synthetic, protocol mosi\n" in out
    d = json.loads((tmp_path / "d" / "diagnostics.json").read_text())
    assert d["probes"] == {} and d["robustness"]["noise_levels"] == [0.0, 1.0]
    saved = json.loads((comparison[0] / "runs" / "late_fusion" / "seed1112" / "diagnostics.json").read_text())
    assert d["shapley"] == saved["shapley"]  # the same model gives the same values
    assert {p.name for p in (tmp_path / "d").iterdir()} == {"diagnostics.json", "diagnostics.csv",
                                                            "robustness.csv", "trajectory.csv"}


def test_the_same_noise_levels_in_another_order_are_the_same_diagnosis(comparison, tmp_path, capsys):
    """--noise-levels 0.5,0.1 and 0.1,0.5 scored the same cells but wrote the rows and the record in the
    order given, so a rerun with the other order was refused as another diagnosis (a review)."""
    ckpt = comparison[0] / "runs" / "late_fusion" / "seed1112" / "checkpoints" / "best.ckpt"
    args = ["diagnose", "--checkpoint", str(ckpt), "--no-probes", "--noise-levels"]
    assert main(args + ["0.5,0.1", "--out", str(tmp_path / "a")]) == 0
    assert main(args + ["0.1,0.5,0.1", "--out", str(tmp_path / "b")]) == 0
    a, b = tmp_path / "a", tmp_path / "b"
    assert (a / "robustness.csv").read_text() == (b / "robustness.csv").read_text()
    rows = [line.split(",")[4] for line in (a / "robustness.csv").read_text().splitlines() if ",noise," in line]
    assert rows == [f"noise:{m}@{s}" for m in ("text", "audio", "vision") for s in ("0.1", "0.5")]
    d = json.loads((a / "diagnostics.json").read_text())
    assert d["robustness"]["noise_levels"] == [0.1, 0.5]
    assert d["robustness"] == json.loads((b / "diagnostics.json").read_text())["robustness"]
    assert main(args + ["0.1,0.5", "--out", str(a)]) == 0  # the same diagnosis: refreshed, was refused
    d["robustness"]["noise_levels"] = [0.5, 0.1]  # as a diagnosis made before the levels were sorted records them
    (a / "diagnostics.json").write_text(json.dumps(d))
    assert main(args + ["0.1,0.5", "--out", str(a)]) == 0
    capsys.readouterr()
    assert main(args + ["0.1", "--out", str(a)]) == 2  # another set is another diagnosis
    assert "holds a diagnosis of this checkpoint with noise_levels=" in capsys.readouterr().err


def test_diagnose_command_missing_checkpoint(tmp_path, capsys):
    assert main(["diagnose", "--checkpoint", str(tmp_path / "none.ckpt"), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["compare", "report", "diagnose"])
def test_commands_are_registered(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0 and command in capsys.readouterr().out


def test_diagnose_never_overwrites_another_diagnosis(comparison, tmp_path, capsys):
    ckpt = comparison[0] / "runs" / "late_fusion" / "seed1112" / "checkpoints" / "best.ckpt"
    out = tmp_path / "d"
    out.mkdir()
    (out / "diagnostics.json").write_text("my notes")
    args = ["diagnose", "--checkpoint", str(ckpt), "--noise-levels", "0", "--no-probes", "--out"]
    assert main(args + [str(out)]) == 2
    assert "holds another diagnosis" in capsys.readouterr().err
    assert (out / "diagnostics.json").read_text() == "my notes" and len(list(out.iterdir())) == 1
    (tmp_path / "f").write_text("x")
    assert main(args + [str(tmp_path / "f")]) == 2 and "is a file, not a folder" in capsys.readouterr().err
    assert main(args + [str(tmp_path / "e"), "--split", "tset"]) == 2
    assert "split 'tset' not in the data" in capsys.readouterr().err
    assert main(args + [str(tmp_path / "e")]) == 0 and main(args + [str(tmp_path / "e")]) == 0  # its own: refreshed



def test_diagnose_refreshes_its_own_diagnosis_from_another_directory(comparison, tmp_path, monkeypatch, capsys):
    run = comparison[0] / "runs" / "late_fusion" / "seed1112"
    args = ["diagnose", "--noise-levels", "0", "--no-probes", "--out", str(tmp_path / "d"), "--checkpoint"]
    monkeypatch.chdir(run.parent)
    assert main(args + ["seed1112/checkpoints/best.ckpt"]) == 0  # saved as a relative path
    monkeypatch.chdir(tmp_path)
    assert main(args + [str(run / "checkpoints" / "best.ckpt")]) == 0  # the same checkpoint: refreshed
    other = comparison[0] / "runs" / "late_fusion" / "seed1111" / "checkpoints" / "best.ckpt"
    assert other.is_file() and main(args + [str(other)]) == 2  # another run's checkpoint: refused
    assert "holds another diagnosis" in capsys.readouterr().err
    copy = tmp_path / "renamed_run"  # a run folder copied under another name: its own diagnosis is refreshed
    shutil.copytree(run, copy)
    own = ["diagnose", "--no-probes", "--out", str(copy), "--checkpoint"]  # the comparison's noise levels
    before = (copy / "diagnostics.json").read_bytes()
    for other_options in (["--noise-levels", "0"], ["--split", "valid"]):  # another diagnosis: refused
        assert main(own + [str(copy / "checkpoints" / "best.ckpt"), *other_options]) == 2
        assert "holds a diagnosis of this checkpoint with" in capsys.readouterr().err
    assert (copy / "diagnostics.json").read_bytes() == before
    assert main(own + [str(copy / "checkpoints" / "best.ckpt")]) == 0
    capsys.readouterr()
    assert (copy / "checkpoints" / "last.ckpt").is_file()
    assert main(own + [str(copy / "checkpoints" / "last.ckpt")]) == 2  # not the best checkpoint's diagnosis
    assert "metrics.json names" in capsys.readouterr().err
    for f in ("diagnostics.json", "diagnostics.csv", "trajectory.csv"):  # as an interrupted diagnosis leaves it
        (copy / f).unlink(missing_ok=True)
    assert main(own + [str(copy / "checkpoints" / "last.ckpt")]) == 2  # was accepted: compare then read it
    assert "as the selected model, not" in capsys.readouterr().err and not (copy / "diagnostics.json").exists()


def test_a_copied_runs_diagnosis_of_another_checkpoint_file_is_not_refreshed(comparison, tmp_path, capsys):
    """In a copied run folder, diagnostics.json is refreshed as its own only when it names the same file
    name (besides dataset, method and seed); one of the run's last.ckpt is another checkpoint's."""
    run = comparison[0] / "runs" / "late_fusion" / "seed1112"
    copy = tmp_path / "copied_run"
    shutil.copytree(run, copy)
    saved = json.loads((copy / "diagnostics.json").read_text())
    saved["checkpoint"] = str(run / "checkpoints" / "last.ckpt")
    (copy / "diagnostics.json").write_text(json.dumps(saved))
    before = (copy / "diagnostics.json").read_bytes()
    assert main(["diagnose", "--no-probes", "--out", str(copy), "--checkpoint", str(copy / "checkpoints" / "best.ckpt")]) == 2
    assert "holds another diagnosis" in capsys.readouterr().err
    assert (copy / "diagnostics.json").read_bytes() == before


def test_a_relative_checkpoint_path_from_another_run_is_another_checkpoint(comparison, tmp_path, monkeypatch,
                                                                           capsys):
    """`pase diagnose --checkpoint checkpoints/best.ckpt --out ../shared` from two run folders: the
    same relative path, two checkpoints; the second must not refresh the first's diagnosis."""
    runs = comparison[0] / "runs" / "late_fusion"
    shared = tmp_path / "shared"
    args = ["diagnose", "--noise-levels", "0", "--no-probes", "--out", str(shared), "--checkpoint",
            "checkpoints/best.ckpt"]
    monkeypatch.chdir(runs / "seed1111")
    assert main(args) == 0
    before = (shared / "diagnostics.json").read_bytes()
    monkeypatch.chdir(runs / "seed1112")
    assert main(args) == 2 and "holds another diagnosis" in capsys.readouterr().err
    assert (shared / "diagnostics.json").read_bytes() == before


def test_a_diagnosis_is_not_written_into_another_runs_folder(comparison, tmp_path, capsys):
    """`pase diagnose --checkpoint X --out <run Y's folder>` wrote X's diagnosis there, and `pase
    compare` then reported X's shares as Y's. A run folder takes only a diagnosis of the checkpoint
    its metrics.json names (the same file or the same bytes: a copied run folder still works)."""
    import shutil

    from pase.training.run import DIAGNOSIS_FILES

    runs = comparison[0] / "runs" / "late_fusion"
    y = tmp_path / "y"
    shutil.copytree(runs / "seed1112", y)
    for f in DIAGNOSIS_FILES:
        (y / f).unlink(missing_ok=True)
    args = ["--noise-levels", "0", "--no-probes", "--out", str(y)]
    other = runs / "seed1111" / "checkpoints" / "best.ckpt"
    assert main(["diagnose", "--checkpoint", str(other), *args]) == 2
    assert f"{y} is the folder of another run (its metrics.json names {y / 'checkpoints' / 'best.ckpt'}), not of " \
           f"{other}" in capsys.readouterr().err
    assert not (y / "diagnostics.json").exists()
    same_bytes = runs / "seed1112" / "checkpoints" / "best.ckpt"  # the copy's own model, in the original folder
    assert main(["diagnose", "--checkpoint", str(same_bytes), *args]) == 0
    assert (y / "diagnostics.json").is_file()


def test_diagnose_leaves_files_it_did_not_write(comparison, tmp_path, capsys):
    ckpt = comparison[0] / "runs" / "late_fusion" / "seed1112" / "checkpoints" / "best.ckpt"
    for name in ("robustness.csv", "diagnostics.csv", "trajectory.csv"):
        mine = tmp_path / name.split(".")[0]
        mine.mkdir()
        (mine / name).write_text("mine")
        rc = main(["diagnose", "--checkpoint", str(ckpt), "--out", str(mine), "--noise-levels", "0", "--no-probes"])
        assert rc == 2 and f"{name} exists but" in capsys.readouterr().err
        assert (mine / name).read_text() == "mine" and len(list(mine.iterdir())) == 1


def test_an_interrupted_diagnosis_elsewhere_is_redone_but_not_by_another_checkpoint(comparison, tmp_path,
                                                                                  monkeypatch, capsys):
    """Killed between robustness.csv and diagnostics.json in a folder of the user's: the same
    checkpoint diagnoses again there; another checkpoint's diagnosis leaves the leftovers alone."""
    from pase.evaluation import shapley_report

    runs = comparison[0] / "runs" / "late_fusion"
    ckpt, other = (runs / s / "checkpoints" / "best.ckpt" for s in ("seed1112", "seed1111"))
    out = tmp_path / "d"
    args = ["diagnose", "--noise-levels", "0", "--no-probes", "--out", str(out), "--checkpoint"]
    real = shapley_report.write_csv

    def killed(path, *a, **k):
        real(path, *a, **k)
        if Path(path).name == "robustness.csv":
            raise KeyboardInterrupt

    monkeypatch.setattr(shapley_report, "write_csv", killed)
    assert main(args + [str(ckpt)]) == 130  # Ctrl-C
    monkeypatch.setattr(shapley_report, "write_csv", real)
    assert (out / "robustness.csv").is_file() and not (out / "diagnostics.json").exists()
    left = (out / "robustness.csv").read_bytes()
    assert main(args + [str(other)]) == 2  # not its leftovers
    assert "interrupted diagnosis of another checkpoint" in capsys.readouterr().err
    assert (out / "robustness.csv").read_bytes() == left and not (out / "diagnostics.json").exists()
    assert main(args + [str(ckpt)]) == 0  # its own: redone
    saved = json.loads((out / "diagnostics.json").read_text())
    assert saved["checkpoint"] == str(ckpt) and sorted(p.name for p in out.iterdir()) == [
        "diagnostics.csv", "diagnostics.json", "robustness.csv", "trajectory.csv"]


def test_an_interrupted_diagnosis_in_its_own_run_folder_is_redone(comparison_copy):
    """Killed after robustness.csv and before diagnostics.json: resuming the comparison diagnoses again."""
    from pase.config import Config, apply_overrides
    from pase.evaluation.compare import compare

    run = comparison_copy / "runs" / "late_fusion" / "seed1111"
    (run / "diagnostics.json").unlink()
    (run / "robustness.csv").write_text("half written")
    summary = compare(apply_overrides(Config(), OVERRIDES), "late_fusion", "1111,", comparison_copy)
    assert summary["runs"][0]["diagnose_error"] == ""
    assert json.loads((run / "diagnostics.json").read_text())["split"] == "test"
    assert (run / "robustness.csv").read_text() != "half written"


def test_resuming_a_comparison_with_other_noise_levels_is_refused(comparison_copy, capsys):
    before = (comparison_copy / "runs" / "late_fusion" / "seed1111" / "diagnostics.json").read_bytes()
    rc = main(["compare", *_sets(OVERRIDES), "--methods", "late_fusion", "--seeds", "1111,",
               "--noise-levels", "0,3", "--out", str(comparison_copy)])
    assert rc == 2 and "was diagnosed with --noise-levels 0,0.5,1,2" in capsys.readouterr().err
    assert (comparison_copy / "runs" / "late_fusion" / "seed1111" / "diagnostics.json").read_bytes() == before
    # the same levels in another order are the same levels (they were refused, as other levels)
    assert main(["compare", *_sets(OVERRIDES), "--methods", "late_fusion", "--seeds", "1111,",
                 "--noise-levels", "2,1,0.5,0", "--out", str(comparison_copy)]) == 0
    assert (comparison_copy / "runs" / "late_fusion" / "seed1111" / "diagnostics.json").read_bytes() == before


def test_a_no_diagnose_call_does_not_hide_the_levels_of_kept_diagnoses(comparison_copy, capsys):
    """--no-diagnose rewrites compare.json; the kept diagnoses still decide which levels may resume."""
    common = ["compare", *_sets(OVERRIDES), "--methods", "late_fusion", "--seeds", "1111,", "--out", str(comparison_copy)]
    assert main(common + ["--no-diagnose"]) == 0
    capsys.readouterr()
    assert main(common + ["--noise-levels", "0,2"]) == 2
    assert "was diagnosed with --noise-levels 0,0.5,1,2" in capsys.readouterr().err


def test_a_diagnosis_is_not_replaced_by_another_checkpoint_with_a_look_alike_path(comparison, tmp_path, capsys):
    """Two sweeps' seed1111/checkpoints/best.ckpt of one method, dataset and seed (say, two learning
    rates): different weights, so different checkpoints."""
    import torch

    ckpt = comparison[0] / "runs" / "late_fusion" / "seed1111" / "checkpoints" / "best.ckpt"
    twin = tmp_path / "other_sweep" / "seed1111" / "checkpoints" / "best.ckpt"
    twin.parent.mkdir(parents=True)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    for v in state["state_dict"].values():
        if v.is_floating_point():
            v.mul_(0.5)  # the other sweep's weights
    torch.save(state, twin)
    args = ["diagnose", "--noise-levels", "0", "--no-probes", "--out", str(tmp_path / "d"), "--checkpoint"]
    assert main(args + [str(ckpt)]) == 0
    saved = (tmp_path / "d" / "diagnostics.json").read_bytes()
    assert main(args + [str(twin)]) == 2 and "holds another diagnosis" in capsys.readouterr().err
    assert (tmp_path / "d" / "diagnostics.json").read_bytes() == saved
    same = tmp_path / "copy" / "seed1111" / "checkpoints" / "best.ckpt"  # the same bytes elsewhere: refreshed
    same.parent.mkdir(parents=True)
    same.write_bytes(ckpt.read_bytes())
    assert main(args + [str(same)]) == 0


def test_compare_exits_1_when_a_run_failed_and_refuses_an_absent_reference(tmp_path, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("run failed")

    with monkeypatch.context() as m:
        m.setattr(compare_mod, "train", broken)
        rc = main(["compare", "--methods", "late_fusion", "--seeds", "1", "--out", str(tmp_path / "c"),
                   "--no-diagnose"])
    assert rc == 1 and "1 run(s) failed" in capsys.readouterr().out
    rc = main(["compare", "--methods", "late_fusion,pmr", "--seeds", "1", "--reference", "agm",
               "--out", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert rc == 2 and "--reference agm is not one of the compared methods (late_fusion, pmr)" in err
    assert not (tmp_path / "d").exists()
    rc = main(["compare", "--methods", "late_fusion", "--seeds", "1", "--alone", "--no-diagnose",
               "--out", str(tmp_path / "e")])
    assert rc == 2 and "--alone trains the references of the probe deficit" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_compare_exits_1_when_a_unimodal_reference_failed(tmp_path, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("probe failed")

    monkeypatch.setattr(compare_mod, "probe_model", broken)  # the alone references' probe only
    rc = main(["compare", *_sets(OVERRIDES + ["train.max_epochs=1"]), "--methods", "late_fusion", "--seeds", "1111,",
               "--alone", "--noise-levels", "0", "--out", str(tmp_path / "c")])
    assert rc == 1 and "unimodal reference(s) failed" in capsys.readouterr().err
    assert (tmp_path / "c" / "runs" / "late_fusion" / "seed1111" / "diagnostics.json").is_file()


def test_compare_out_naming_a_file_is_refused(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert main(["compare", "--methods", "late_fusion", "--seeds", "1", "--out", str(afile)]) == 2
    assert capsys.readouterr().err == f"pase: error: --out {afile} is a file, not a comparison folder; pass another " \
                                      "--out (nothing was overwritten)\n"
    assert afile.read_text() == "mine"


def test_compare_out_naming_another_kind_of_folder_is_refused(tmp_path, capsys):
    """A comparison writes summary.md, summary.csv and config.yaml into --out: a folder that is not a
    comparison (the user's own files, or a training run) is refused before anything is written."""
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "summary.md").write_text("my notes")
    assert main(["compare", "--methods", "late_fusion", "--seeds", "1", "--out", str(mine)]) == 2
    assert capsys.readouterr().err == f"pase: error: --out {mine} is not a comparison folder (no compare.json; it " \
                                      "holds summary.md); pass a new or empty --out (nothing was written)\n"
    assert [p.name for p in mine.iterdir()] == ["summary.md"] and (mine / "summary.md").read_text() == "my notes"
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("method: pase\n")
    assert main(["compare", "--methods", "late_fusion", "--seeds", "1", "--out", str(run)]) == 2
    assert "is a training run's folder (no compare.json; it holds checkpoints)" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.yaml"]


def test_compare_never_rewrites_a_lone_config_yaml_it_did_not_write(tmp_path, capsys):
    """A folder holding only config.yaml may be a comparison interrupted before compare.json, or the
    user's own experiment file: with a different configuration (here: other data) it is refused and
    the file kept byte for byte; the same configuration is used as is, and not rewritten."""
    folder = tmp_path / "exp"
    folder.mkdir()
    mine = "# my experiment, keep these notes\nmethod: late_fusion\ntrain:\n  max_epochs: 1\n"
    mine += "data:\n  options:\n    sizes: [40, 20, 20]\n"
    (folder / "config.yaml").write_text(mine)
    args = ["compare", "--config", str(folder / "config.yaml"), "--methods", "late_fusion", "--seeds", "1111,",
            "--no-diagnose", "--out", str(folder)]
    assert main(args + ["--set", "data.options.sizes=[40,20,21]"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pase: error: {folder / 'config.yaml'} is not a comparison's (no compare.json beside it)")
    assert "data.options.sizes" in err and (folder / "config.yaml").read_text() == mine
    assert [p.name for p in folder.iterdir()] == ["config.yaml"]
    assert main(args) == 0
    assert (folder / "config.yaml").read_text() == mine and (folder / "compare.json").is_file()


def test_an_interrupted_comparison_says_to_rerun_the_comparison(comparison_copy, monkeypatch, capsys):
    """The run's own advice (pase train --resume <that one run>) was passed on; the way to continue a
    comparison is the same pase compare command."""
    from pase.errors import RunInterrupted

    (comparison_copy / "runs" / "late_fusion" / "seed1112" / "metrics.json").unlink()

    def interrupted(cfg, run, resume=False, quiet=False, bundle=None):
        raise RunInterrupted("training interrupted by SIGINT in epoch 1", "SIGINT", f"continue with pase train --resume {run}")

    monkeypatch.setattr(compare_mod, "train", interrupted)
    rc = main(["compare", *_sets(OVERRIDES), "--methods", "late_fusion", "--seeds", "1111,1112", "--out",
               str(comparison_copy)])
    err = capsys.readouterr().err
    assert rc == 130 and err == ("pase: interrupted: training interrupted by SIGINT in epoch 1; run the same pase "
                                 "compare command again to continue the comparison (finished runs are kept, "
                                 "interrupted ones continue from their checkpoints)\n")


@pytest.mark.parametrize("command, advice", [
    (["train", "--out", "RUN"], "; finished epochs are kept: continue with pase train --resume RUN"),
    (["compare", "--methods", "late_fusion", "--seeds", "1", "--out", "CMP"],
     "; run the same pase compare command again to continue (finished runs are kept)"),
])
def test_ctrl_c_outside_the_training_loop_says_what_to_run(tmp_path, monkeypatch, capsys, command, advice):
    """Ctrl-C while metrics.json or a diagnosis was written printed only 'pase: interrupted'."""
    import pase.training

    def interrupted(*a, **k):
        (tmp_path / "RUN").mkdir(exist_ok=True)  # after the run folder was written
        (tmp_path / "RUN" / "config.yaml").write_text("method: late_fusion\n")
        raise KeyboardInterrupt

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pase.training, "train", interrupted)
    monkeypatch.setattr(compare_mod, "compare", interrupted)
    assert main(command) == 130
    assert capsys.readouterr().err == f"pase: interrupted{advice}\n"


def test_ctrl_c_before_the_run_folder_is_written_advises_no_resume(tmp_path, monkeypatch, capsys):
    """Ctrl-C while the data loaded advised 'pase train --resume RUN', which then failed: RUN had no
    config.yaml yet."""
    import pase.training

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pase.training, "train", interrupted)
    assert main(["train", "--out", "RUN"]) == 130
    assert capsys.readouterr().err == "pase: interrupted; no run folder was written: run the same pase train command again\n"


@pytest.mark.parametrize("second", ["SIGINT", "SIGTERM"])
def test_a_second_signal_while_the_process_exits_prints_no_traceback(tmp_path, second):
    """Ctrl-C twice: the second one, during the interpreter's shutdown after the interruption's line, raised
    KeyboardInterrupt in torch's atexit callback and printed its traceback (review m2, D5). The process ends at
    once instead, quietly, with the first interruption's status. The second signal is sent from an atexit
    callback (they run after main returned), so the test does not depend on timing; main([...]) from Python
    leaves the caller's handlers as they were."""
    import signal
    import subprocess
    import sys

    script = (
        "import atexit, os, signal, sys, time\n"
        "import pase.cli as cli\n"
        "def interrupted(args):\n"
        "    raise KeyboardInterrupt\n"
        "cli._cmd_train = interrupted\n"
        f"atexit.register(lambda: (os.kill(os.getpid(), signal.{second}), time.sleep(2), print('survived')))\n"
        "sys.argv = ['pase', 'train', '--out', 'RUN']\n"
        "sys.exit(cli.main())\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as from a terminal
    assert (proc.returncode, proc.stdout) == (130, ""), proc.stderr[-2000:]
    assert proc.stderr.startswith("pase: interrupted") and proc.stderr.count("\n") == 1, proc.stderr[-2000:]
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    import pase.cli as cli

    monkeypatch = pytest.MonkeyPatch()
    try:
        monkeypatch.setattr(cli, "_cmd_train", lambda args: (_ for _ in ()).throw(KeyboardInterrupt))
        assert main(["train", "--out", str(tmp_path / "RUN")]) == 130
    finally:
        monkeypatch.undo()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers


def test_a_run_whose_metrics_name_an_old_absolute_path_takes_its_own_diagnosis(comparison, tmp_path, capsys):
    """Older versions wrote the checkpoint's absolute path into metrics.json; a run moved since then
    selects its checkpoints/best.ckpt (run._selected_checkpoint), so diagnosing that into its own
    folder is allowed (the own-folder check refused it), and its last.ckpt still is not."""
    run = tmp_path / "moved"
    shutil.copytree(comparison[0] / "runs" / "late_fusion" / "seed1111", run)
    for f in ("diagnostics.json", "diagnostics.csv", "trajectory.csv", "robustness.csv"):
        (run / f).unlink(missing_ok=True)
    m = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**m, "checkpoint": "/home/olduser/runs/x/checkpoints/best.ckpt"}))
    own = ["diagnose", "--no-probes", "--noise-levels", "0", "--out", str(run), "--checkpoint"]
    assert main(own + [str(run / "checkpoints" / "best.ckpt")]) == 0, capsys.readouterr().err
    assert (run / "diagnostics.json").is_file()
    capsys.readouterr()
    if (run / "checkpoints" / "last.ckpt").read_bytes() != (run / "checkpoints" / "best.ckpt").read_bytes():
        assert main(own + [str(run / "checkpoints" / "last.ckpt")]) == 2


@pytest.mark.parametrize("command, advice", [
    (["train", "--out", "RUN"], "; finished epochs are kept: continue with pase train --resume RUN"),
    (["compare", "--methods", "late_fusion", "--seeds", "1", "--out", "CMP"],
     "; run the same pase compare command again to continue the comparison (finished runs are kept, interrupted "
     "ones continue from their checkpoints)"),
])
def test_sigterm_outside_the_training_loop_says_what_to_run(tmp_path, monkeypatch, capsys, command, advice):
    """SIGTERM while metrics.json, a diagnosis or a report was written killed the process silently
    (exit 143, no line); it now stops like Ctrl-C, and the process's own handler is put back after."""
    import os
    import signal

    import pase.training

    def terminated(*a, **k):
        (tmp_path / "RUN").mkdir(exist_ok=True)  # after the run folder was written
        (tmp_path / "RUN" / "config.yaml").write_text("method: late_fusion\n")
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs at the next bytecode: before the sleep
        time.sleep(30)
        raise AssertionError("SIGTERM did not stop the command")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pase.training, "train", terminated)
    monkeypatch.setattr(compare_mod, "compare", terminated)
    before = signal.getsignal(signal.SIGTERM)
    assert main(command) == 143
    assert capsys.readouterr().err == f"pase: interrupted: stopped by SIGTERM{advice}\n"
    assert signal.getsignal(signal.SIGTERM) is before


def test_lightning_gets_the_default_sigterm_handler_while_it_trains():
    """Lightning installs its own SIGTERM handler (a stop at the next step, recorded for the message
    and the resumable folder) only where none is set; the command's handler is set aside meanwhile."""
    import signal

    from pase.cli import _raise_on_sigterm
    from pase.training.run import _lightning_handles_sigterm

    previous = _raise_on_sigterm()
    try:
        mine = signal.getsignal(signal.SIGTERM)
        with _lightning_handles_sigterm(types.SimpleNamespace(received_sigterm=False)):
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("where", ["between fit and validate", "last test batch"])
def test_sigterm_after_the_training_loop_stops_the_run_with_one_line(tmp_path, monkeypatch, capsys, where):
    """Between fit and the final validation the default handler was set: SIGTERM killed the run
    silently. At the last test batch Lightning's loop let it pass: the run ended with exit 0. Both
    now stop with one line, exit 143 and the resume command."""
    import os
    import signal

    from pase.methods.base import Method
    from pase.training.lightning_module import PaseModule

    if where == "between fit and validate":
        original = Method.summary
        calls = []

        def summary(self):
            calls.append(1)
            if len(calls) == 1:  # the summary right after fit
                os.kill(os.getpid(), signal.SIGTERM)
            return original(self)

        monkeypatch.setattr(Method, "summary", summary)
    else:
        original = PaseModule.on_test_epoch_end

        def last_batch(self):  # Lightning's handler is set during the test call: it only records the signal
            os.kill(os.getpid(), signal.SIGTERM)
            return original(self)

        monkeypatch.setattr(PaseModule, "on_test_epoch_end", last_batch)
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--quiet"] + [x for s in OVERRIDES for x in ("--set", s)]) == 143
    err = capsys.readouterr().err.strip()
    assert err.startswith("pase: interrupted: training interrupted by SIGTERM during the final evaluation; "
                          "the checkpoint of the last finished epoch is kept"), err
    assert err.endswith(f"continue with pase train --resume {out}") and not (out / "metrics.json").exists()


@pytest.mark.parametrize("sig, epoch, where, kept", [
    ("SIGTERM", 0, "after epoch 0 finished, before epoch 1 started", "the checkpoint of the last finished epoch is kept"),
    ("SIGTERM", 1, "after epoch 1 (the last) finished, before the final evaluation",
     "the checkpoint of the last finished epoch is kept"),
    ("SIGINT", 0, "at the end of epoch 0, before its checkpoint was saved", "no checkpoint had been saved yet")])
def test_a_stop_at_an_epochs_end_says_which_epoch_finished(tmp_path, monkeypatch, capsys, sig, epoch, where, kept):
    """A signal at the end of an epoch, once its log.csv row is written: SIGTERM stops fit after that epoch's
    checkpoint (Lightning counts it finished by then), so the line said "in epoch 2" after epoch 1 of a 2-epoch
    run, an epoch that never was; Ctrl-C before the checkpoint said "no epoch had finished" beside the epoch's row
    in log.csv (review m2, D1)."""
    import os
    import signal

    import pase.training.callbacks as callbacks

    write = callbacks.EpochCSVLog._write

    def row_then_signal(self):
        write(self)
        if len(self.rows) == epoch + 1:
            if sig == "SIGTERM":  # Lightning's handler records it; the fit loop raises it after the epoch's end
                os.kill(os.getpid(), signal.SIGTERM)
            else:
                raise KeyboardInterrupt

    monkeypatch.setattr(callbacks.EpochCSVLog, "_write", row_then_signal)
    out = tmp_path / "run"
    sigint = signal.getsignal(signal.SIGINT)
    try:  # Lightning ignores SIGINT from a Ctrl-C on (a second one during its shutdown): not in this test process
        rc = main(["train", "--out", str(out), "--quiet"] + [x for s in OVERRIDES for x in ("--set", s)])
    finally:
        signal.signal(signal.SIGINT, sigint)
    assert rc == (143 if sig == "SIGTERM" else 130)
    assert capsys.readouterr().err == (f"pase: interrupted: training interrupted by {sig} {where}; {kept}; continue "
                                       f"with pase train --resume {out}\n")
    assert len((out / "log.csv").read_text().splitlines()) == epoch + 2  # the header, the rows up to that epoch
    assert (out / "checkpoints" / "last.ckpt").is_file() == (sig == "SIGTERM")


def test_compare_names_an_unknown_method_before_anything_trains(tmp_path, capsys, monkeypatch):
    """pase compare --methods late_fusion,psae trained and diagnosed late fusion (60 epochs by
    default), then failed psae's runs and exited 1."""
    monkeypatch.setattr(compare_mod, "compare", lambda *a, **k: pytest.fail("the comparison started"))
    assert main(["compare", "--methods", "late_fusion,psae", "--seeds", "1", "--out", str(tmp_path / "cmp")]) == 2
    assert capsys.readouterr().err == ("pase: error: --methods: unknown method 'psae'; did you mean 'pase'? valid: "
                                       "agm, late_fusion, ogm_ge, pase, pmr (nothing was trained)\n")
    assert not (tmp_path / "cmp").exists()


@pytest.mark.parametrize("item, flag", [("method=pase", "--methods"), ("train.seed=5", "--seeds")])
def test_compare_refuses_a_set_it_would_override_in_every_run(tmp_path, capsys, monkeypatch, item, flag):
    """--set method=pase / train.seed=5 were overridden in every run without a word, yet the comparison's
    config.yaml recorded them (review)."""
    monkeypatch.setattr(compare_mod, "compare", lambda *a, **k: pytest.fail("the comparison started"))
    args = ["compare", "--methods", "late_fusion", "--seeds", "1", "--out", str(tmp_path / "cmp"), "--set", item]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pase: error: --set {item}: pase compare sets {item.split('=')[0]} itself in every run")
    assert f"choose it with {flag} (nothing was written)" in err and not (tmp_path / "cmp").exists()


def test_the_command_line_is_parsed_without_importing_torch():
    """Building the parser imported pase.evaluation.compare for two defaults, and with it torch,
    Lightning, scipy and matplotlib: `pase --help` took seconds, and Ctrl-C in that window gave a
    traceback (the parser runs before the command's one-line interrupt handling)."""
    import subprocess
    import sys

    code = ("import sys, pase.cli; pase.cli._parser(); "
            "print(sorted(m for m in ('torch', 'lightning', 'scipy', 'matplotlib', 'sklearn') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr[-2000:]


def test_no_diagnosis_goes_into_a_run_that_has_not_finished(comparison, tmp_path, capsys):
    """Diagnosing an interrupted run's last.ckpt into its own folder was accepted; when the run then
    finished, pase compare kept that diagnosis of an intermediate checkpoint as the selected model's."""
    run = tmp_path / "unfinished"
    shutil.copytree(comparison[0] / "runs" / "late_fusion" / "seed1111", run)
    for f in ("metrics.json", "diagnostics.json", "diagnostics.csv", "trajectory.csv", "robustness.csv"):
        (run / f).unlink(missing_ok=True)
    before = sorted(p.name for p in run.iterdir())
    assert main(["diagnose", "--no-probes", "--noise-levels", "0", "--out", str(run), "--checkpoint",
                 str(run / "checkpoints" / "last.ckpt")]) == 2
    assert "is a run folder whose training has not finished (no metrics.json)" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == before
    assert main(["diagnose", "--no-probes", "--noise-levels", "0", "--out", str(tmp_path / "peek"), "--checkpoint",
                 str(run / "checkpoints" / "last.ckpt")]) == 0  # elsewhere it is fine


def test_every_command_refuses_an_empty_path_and_an_output_below_a_file(tmp_path, monkeypatch, capsys):
    """pase train refused both; `pase compare --out ""` (an unset $RUN) trained into the current folder
    and `pase diagnose --out ""` wrote beside the user's files; below a file both failed with a bare
    Errno 20, diagnose after loading the data (a review). Refused before any work, naming the option."""
    from pase.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    cases = [(["compare", "--methods", "late_fusion", "--seeds", "1111,", "--out", ""], "--out ''"),
             (["diagnose", "--checkpoint", "x.ckpt", "--out", ""], "--out ''"),
             (["report", ""], "DIR ''")]
    for argv, named in cases:
        assert main(argv) == 2
        assert capsys.readouterr().err == f"pase: error: {named}: an empty path; pass a file or folder (nothing was written)\n"
    for argv in (["compare", "--methods", "late_fusion", "--seeds", "1111,", "--out", "notes.txt/cmp"],
                 ["diagnose", "--checkpoint", "x.ckpt", "--out", "notes.txt/d"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("pase: error: --out notes.txt/") and "notes.txt is a file, not a folder; pass another --out" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_an_output_in_a_folder_this_user_cannot_write_is_refused_first(tmp_path, monkeypatch, capsys):
    """Under a read-only parent (or mount) pase train failed after loading the data with a bare
    '[Errno 13] Permission denied' line (a review). os.access is patched for that folder (the tests may
    run as root, for whom permissions do not apply); an OSError of that kind elsewhere gets the advice."""
    import errno
    import os

    from pase import cli

    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if str(p) == str(locked) else real(p, mode, **k))
    for argv in (["train", "--out", str(locked / "run")],
                 ["compare", "--methods", "late_fusion", "--seeds", "1111,", "--out", str(locked / "cmp")],
                 ["diagnose", "--checkpoint", "x.ckpt", "--out", str(locked / "d")]):
        assert cli.main(argv) == 2
        assert capsys.readouterr().err == (f"pase: error: --out {locked}/{argv[-1].rsplit('/', 1)[1]}: cannot create "
                                           f"it, {locked} is not writable by this user (or is on a read-only file "
                                           "system); pass another --out (nothing was written)\n")
    assert not any(locked.iterdir())

    def denied(args):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "x"))

    monkeypatch.setattr(cli, "_cmd_train", denied)
    monkeypatch.setattr(cli.argparse.ArgumentParser, "parse_args",
                        lambda self, argv=None: cli.argparse.Namespace(fn=denied, debug=False))
    assert cli.main([]) == 2
    assert capsys.readouterr().err == (f"pase: error: [Errno 13] Permission denied: '{tmp_path / 'x'}'; pass a path "
                                       "this user may write to (or read, for an input), or change its permissions\n")


def test_a_resume_or_comparison_into_a_folder_that_cannot_be_written_is_one_line(tmp_path, monkeypatch, capsys):
    """--resume into a read-only run folder failed at its lock with a bare '[Errno 30]' line advising another
    path, which --resume cannot take; pase compare warned 'running without a lock' and then failed at
    compare.json with a second line (review m2, D4). Both are one line now: told by os.access before any work,
    or by the lock file's open (as on a read-only mount where os.access says nothing; simulated: the tests may
    run as root)."""
    import errno
    import os

    from pase.config import Config, apply_overrides
    from pase.training import train
    from tiny import TINY

    run, cmp = tmp_path / "run", tmp_path / "cmp"
    train(apply_overrides(Config(), TINY + ["train.max_epochs=1"]), run, quiet=True)
    cmp.mkdir()
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    resume = ["train", "--quiet", "--resume", str(run), "--set", "train.max_epochs=2"]
    comparison = ["compare", *_sets(OVERRIDES), "--methods", "late_fusion", "--seeds", "1111,", "--out", str(cmp)]
    real_access, real_open = os.access, os.open

    def both_refused(cause):  # the resume and the comparison, each one line naming ``cause``
        assert main(resume) == 2
        assert capsys.readouterr().err == (
            f"pase: error: --resume {run}: the run folder is not writable {cause}; make it writable, or copy the run "
            "elsewhere and resume the copy (nothing was changed)\n")
        assert main(comparison) == 2
        assert capsys.readouterr().err == (
            f"pase: error: {cmp}: the folder is not writable {cause}; make it writable, or copy it elsewhere and run "
            "pase compare on the copy (nothing was changed)\n")

    with monkeypatch.context() as m:
        m.setattr(os, "access", lambda p, mode, **k: False if str(p) in (str(run), str(cmp)) and mode & os.W_OK
                  else real_access(p, mode, **k))
        both_refused("by this user (or is on a read-only file system)")

    def failing_open(names, code):  # os.open failing with errno ``code`` for the files called ``names``
        def fake(path, flags, *args, **kwargs):
            if Path(path).name in names:
                raise OSError(code, os.strerror(code), str(path))
            return real_open(path, flags, *args, **kwargs)
        return fake

    monkeypatch.setattr(os, "open", failing_open((".lock", ".compare.lock"), errno.EROFS))
    both_refused("(Read-only file system)")

    monkeypatch.setattr(os, "open", failing_open((".lock",), errno.EACCES))  # a writable folder, another user's .lock
    assert main(resume) == 2
    assert capsys.readouterr().err == (
        f"pase: error: {run / '.lock'}: the run's lock file cannot be opened for writing (Permission denied; another "
        "user's, or made immutable?): remove it or give this user write access to it (nothing was changed)\n")
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
