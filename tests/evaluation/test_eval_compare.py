"""``compare``: run folders, summary files and statistics, failures, resuming, parallel workers."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

import pase.evaluation.compare as compare_mod
from eval_setup import METHODS, MODALITIES, OK_METHODS, OVERRIDES, SEEDS
from pase import code_fingerprint
from pase.config import Config, ConfigError, apply_overrides
from pase.evaluation.compare import compare, summarize


@pytest.fixture
def runs_about_to_start(monkeypatch):
    """An exception raised where compare would start its runs (every check before them passed); the
    test gets its class."""

    class Reached(Exception):
        pass

    def reached(jobs, workers, progress):
        raise Reached()

    monkeypatch.setattr(compare_mod, "_run_jobs", reached)
    return Reached


def _rows(out):
    with open(out / "summary.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_run_folders_and_summary_rows(comparison):
    out, summary = comparison
    assert {p.name for p in out.iterdir()} >= {"runs", "summary.csv", "summary.md", "summary.json", "config.yaml",
                                               "compare.json"}
    rows = _rows(out)
    assert [(r["method"], int(r["seed"])) for r in rows] == [(m, s) for m in METHODS for s in SEEDS]
    ok = [r for r in rows if r["status"] == "ok"]
    assert [r["method"] for r in ok] == ["late_fusion"] * 2 + ["agm"] * 2
    metrics = ["Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score", "Mult_acc_5", "Mult_acc_7", "MAE", "Corr"]
    for r in ok:
        run = out / "runs" / r["method"] / f"seed{r['seed']}"
        saved = json.loads((run / "metrics.json").read_text())
        assert saved["method"] == r["method"] and saved["seed"] == int(r["seed"])
        assert (r["dataset"], r["protocol"]) == (saved["dataset"], saved["protocol"]) == ("synthetic", "mosi")
        for k in metrics:
            assert float(r[f"test_{k}"]) == pytest.approx(saved["test"][k], rel=1e-12)
            assert float(r[f"valid_{k}"]) == pytest.approx(saved["valid"][k], rel=1e-12)
        assert float(r["elapsed_s"]) == saved["elapsed_s"] > 0
        assert {f"share_{m}" for m in MODALITIES} <= set(r)


def test_summary_statistics_match_the_per_seed_rows(comparison):
    out, summary = comparison
    rows = [r for r in _rows(out) if r["status"] == "ok"]
    saved = json.loads((out / "summary.json").read_text())
    for m in OK_METHODS:
        for k in summary["metrics"]:
            xs = np.array([float(r[f"test_{k}"]) for r in rows if r["method"] == m])
            d = saved["stats"][m][k]
            assert d["n"] == 2 and d["mean"] == pytest.approx(xs.mean(), abs=1e-12)
            sd = xs.std(ddof=1)
            assert d["sd"] == pytest.approx(sd, abs=1e-12)
            half = 12.706 * sd / math.sqrt(2)  # t_{0.975, 1}
            assert d["ci_high"] - d["mean"] == pytest.approx(half, abs=1e-3 * max(sd, 1e-9) + 1e-12)


def test_paired_differences_against_late_fusion(comparison):
    out, summary = comparison
    rows = [r for r in _rows(out) if r["status"] == "ok"]
    assert set(summary["paired"]["agm"]) == {"Has0_acc_2", "Non0_acc_2", "MAE", "Corr"}
    for k, d in summary["paired"]["agm"].items():
        by = {m: {int(r["seed"]): float(r[f"test_{k}"]) for r in rows if r["method"] == m} for m in OK_METHODS}
        diff = np.array([by["agm"][s] - by["late_fusion"][s] for s in SEEDS])
        assert d["n"] == 2 and d["mean"] == pytest.approx(diff.mean(), abs=1e-12)
        assert d["sd"] == pytest.approx(diff.std(ddof=1), abs=1e-12)


def test_summary_markdown_names_protocol_and_selection(comparison):
    out, _ = comparison
    md = (out / "summary.md").read_text()
    assert "protocol **mosi**" in md and "validation split only" in md and "valid/MAE" in md
    assert "Paired differences against late_fusion" in md and "t-interval" in md
    for m in OK_METHODS:
        assert f"| {m} |" in md


def test_failing_method_is_reported_and_the_others_continue(comparison):
    out, summary = comparison
    for s in SEEDS:
        text = (out / "runs" / "nope" / f"seed{s}" / "FAILED.txt").read_text()
        assert text.startswith("KeyError: config key 'method': unknown method 'nope'") and text.count("\n") == 1
    assert [(f["method"], f["seed"]) for f in summary["failed"]] == [("nope", s) for s in SEEDS]
    assert "unknown method 'nope'" in (out / "summary.md").read_text()
    assert summary["reported"] == OK_METHODS


def test_resume_skips_finished_runs_and_continues_interrupted_ones(comparison_copy, monkeypatch):
    out = comparison_copy
    finished = out / "runs" / "agm" / "seed1111"
    stamps = {p: p.stat().st_mtime_ns for p in (finished / "metrics.json", finished / "diagnostics.json")}
    interrupted = out / "runs" / "late_fusion" / "seed1112"
    (interrupted / "metrics.json").unlink()  # as if stopped after its last checkpoint
    calls = []

    def fake_train(cfg, run, resume=False, quiet=False, bundle=None):
        calls.append((cfg.method, cfg.train.seed, resume))
        raise RuntimeError("not trained in this test")

    monkeypatch.setattr(compare_mod, "train", fake_train)
    summary = compare(apply_overrides(Config(), OVERRIDES), METHODS, SEEDS, out)
    assert sorted(calls) == [("late_fusion", 1112, True), ("nope", 1111, False), ("nope", 1112, False)]
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert {(f["method"], f["seed"]) for f in summary["failed"]} == {("late_fusion", 1112), ("nope", 1111),
                                                                     ("nope", 1112)}
    assert (interrupted / "FAILED.txt").read_text() == "RuntimeError: not trained in this test\n"


def test_a_run_another_process_holds_is_left_alone_and_a_failed_one_is_set_aside(comparison_copy, monkeypatch):
    """A run folder whose lock another process holds is reported but not marked failed, so the next
    call continues it from its checkpoint (before, FAILED.txt was written into it and the next call
    deleted it, checkpoints and all, and retrained from epoch 0); a failed run's folder is set aside
    as .seed<N>.failed-<time>, not deleted, and the summaries do not read it."""
    from pase.training.run import RunDirError

    out = comparison_copy
    held = out / "runs" / "late_fusion" / "seed1112"
    (held / "metrics.json").unlink()  # interrupted after its last checkpoint
    ckpt = (held / "checkpoints" / "last.ckpt").read_bytes()
    calls = []

    def locked(cfg, run, resume=False, quiet=False, bundle=None):
        calls.append((cfg.method, cfg.train.seed, resume))
        raise RunDirError(f"another process is writing {run} (it holds {run / '.lock'}); wait for it to end")

    monkeypatch.setattr(compare_mod, "train", locked)
    lines = []
    summary = compare(apply_overrides(Config(), OVERRIDES), ["late_fusion"], SEEDS, out, progress=lines.append)
    assert calls == [("late_fusion", 1112, True)] and "failed: RunDirError: another process" in lines[-1]
    assert summary["failed"][0]["error"].startswith("unfinished (interrupted, or another process is training it)")
    assert not (held / "FAILED.txt").exists() and (held / "checkpoints" / "last.ckpt").read_bytes() == ckpt
    calls.clear()
    compare(apply_overrides(Config(), OVERRIDES), ["late_fusion"], SEEDS, out)
    assert calls == [("late_fusion", 1112, True)]  # continued from its checkpoint, not started afresh

    (held / "FAILED.txt").write_text("RuntimeError: diverged\n")  # a run that really failed
    calls.clear()
    compare(apply_overrides(Config(), OVERRIDES), ["late_fusion"], SEEDS, out)
    assert calls == [("late_fusion", 1112, False)]
    aside = [p for p in held.parent.iterdir() if p.name.startswith(".seed1112.failed-")]
    assert len(aside) == 1 and (aside[0] / "checkpoints" / "last.ckpt").read_bytes() == ckpt
    assert [p.name for p in held.parent.glob("seed*")] == ["seed1111"]  # the summaries' pattern skips it


def test_a_run_in_its_first_epoch_is_neither_set_aside_while_held_nor_marked_failed(comparison_copy, monkeypatch):
    """A run folder holding only config.yaml is a run in its first epoch: while another process holds its
    lock (it is training it) the folder is left alone (before, it was renamed to .seed<N>.failed-<time>
    and both processes then wrote the same run), and once the lock is free it restarts in place (before,
    an interrupted first epoch was set aside as a failure)."""
    from pase.training.run import lock_run

    out = comparison_copy
    run = out / "runs" / "late_fusion" / "seed1112"
    config = (run / "config.yaml").read_bytes()
    for p in sorted(run.rglob("*"), reverse=True):  # back to what a run killed in its first epoch leaves
        if p.name not in ("config.yaml", ".lock"):
            p.rmdir() if p.is_dir() else p.unlink()
    calls = []
    monkeypatch.setattr(compare_mod, "train", lambda cfg, r, resume=False, quiet=False, bundle=None: calls.append(resume))
    fd = lock_run(run)  # the other process
    try:
        lines = []
        compare(apply_overrides(Config(), OVERRIDES), ["late_fusion"], SEEDS, out, progress=lines.append)
    finally:
        __import__("os").close(fd)
    assert calls == [] and "another process is writing" in lines[-1]
    assert sorted(p.name for p in run.iterdir()) == [".lock", "config.yaml"] and (run / "config.yaml").read_bytes() == config
    assert not [p for p in run.parent.iterdir() if ".failed-" in p.name] and not (run / "FAILED.txt").exists()
    compare(apply_overrides(Config(), OVERRIDES), ["late_fusion"], SEEDS, out)
    assert calls == [True]  # restarted in place (a resume with no epoch finished), not set aside
    assert not [p for p in run.parent.iterdir() if ".failed-" in p.name]


def test_an_interrupted_run_stops_the_comparison(comparison_copy, monkeypatch):
    """Ctrl-C or SIGTERM in a run ends the comparison (it is not recorded as one failed run)."""
    from pase.errors import RunInterrupted

    (comparison_copy / "runs" / "late_fusion" / "seed1112" / "metrics.json").unlink()

    def interrupted(cfg, run, resume=False, quiet=False, bundle=None):
        raise RunInterrupted("training interrupted by SIGTERM in epoch 1", "SIGTERM")

    monkeypatch.setattr(compare_mod, "train", interrupted)
    with pytest.raises(RunInterrupted):
        compare(apply_overrides(Config(), OVERRIDES), METHODS, SEEDS, comparison_copy)
    assert not (comparison_copy / "runs" / "late_fusion" / "seed1112" / "FAILED.txt").exists()


def test_another_configuration_does_not_mix_into_a_comparison(comparison_copy):
    with pytest.raises(ConfigError, match=r"another configuration \(train.lr: 0.001 there, 0.5 now\)"):
        compare(apply_overrides(Config(), OVERRIDES + ["train.lr=0.5"]), ["late_fusion"], [1111], comparison_copy)


def test_a_kept_run_of_another_configuration_or_split_does_not_mix_into_a_comparison(comparison_copy):
    """A run trained longer with pase train --resume, or a diagnosis of the valid split written into a
    run folder, was averaged into the comparison's tables without a word (a review)."""
    import yaml

    run = comparison_copy / "runs" / "agm" / "seed1112"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    longer = {**cfg, "train": {**cfg["train"], "max_epochs": 6}}
    original = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(yaml.safe_dump(longer))
    with pytest.raises(ConfigError, match=r"agm/seed1112 was trained with another configuration than this comparison "
                                          r"\(train.max_epochs: 6 there, 2 now: trained longer"):
        compare(apply_overrides(Config(), OVERRIDES), OK_METHODS, SEEDS, comparison_copy)
    (run / "config.yaml").write_text(original)
    diag = json.loads((run / "diagnostics.json").read_text())
    (run / "diagnostics.json").write_text(json.dumps({**diag, "split": "valid"}))
    with pytest.raises(ConfigError, match=r"seed1112/diagnostics.json diagnoses split 'valid', but a comparison's "
                                          r"tables are of the test split"):
        compare(apply_overrides(Config(), OVERRIDES), OK_METHODS, SEEDS, comparison_copy)


@pytest.mark.parametrize("text", ["train: [unclosed\n", "train:\n  no_such_key: 1\n"])
def test_an_unreadable_saved_configuration_is_named(tmp_path, text):
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "config.yaml").write_text(text)
    with pytest.raises(ConfigError, match=rf"{out / 'config.yaml'}: not a readable pase configuration") as e:
        compare(apply_overrides(Config(), OVERRIDES), ["late_fusion"], [1111], out)
    assert "\n" not in str(e.value)
    assert (out / "config.yaml").read_text() == text  # left as it was


def test_parallel_workers_and_alone_reference(comparison, tmp_path, monkeypatch):
    # forked workers: a spawned one imports torch and lightning afresh (20 s on a loaded CPU); the
    # pool, its worker initialiser and the result collection are the same code either way
    monkeypatch.setattr(compare_mod, "START_METHOD", "fork")
    out = tmp_path / "par"
    summary = compare(apply_overrides(Config(), OVERRIDES), ["late_fusion"], "1111,", out, jobs=2, alone=True)
    assert summary["failed"] == []
    same = json.loads((comparison[0] / "runs" / "late_fusion" / "seed1111" / "metrics.json").read_text())
    again = json.loads((out / "runs" / "late_fusion" / "seed1111" / "metrics.json").read_text())
    assert again["test"] == same["test"]  # a worker process reproduces the in-process run
    for m in MODALITIES:
        probe = json.loads((out / "alone" / m / "seed1111" / "probe.json").read_text())
        assert list(probe) == [m, "code_sha256"] and 0 <= probe[m]["acc2"] <= 1
        assert probe["code_sha256"] == code_fingerprint()
        d = summary["deficit"]["late_fusion"][m]
        joint = summary["runs"][0]["diagnostics"]["probes"][m]["acc2"]
        assert d["n"] == 1 and d["mean"] == pytest.approx(probe[m]["acc2"] - joint)
        # the built-in benchmark's ground truth: the effect-probe deficit, paired the same way
        e = summary["effect_probes"]["deficit"]["late_fusion"][m]
        joint_eff = summary["runs"][0]["diagnostics"]["probes"][m]["effect_r2"]
        assert e["n"] == 1 and e["mean"] == pytest.approx(probe[m]["effect_r2"] - joint_eff)
    text = (out / "summary.md").read_text()
    assert "Probe deficit" in text and "Effect-probe deficit" in text
    # a failed reference is listed (its seed was silently missing from the deficits), and a reference
    # trained by other code counts in the code-version warning (its probe feeds the deficit tables)
    ref = out / "alone" / MODALITIES[0] / "seed1111"
    (ref / "FAILED.txt").write_text("RuntimeError: alone boom\n")
    m = json.loads((ref / "metrics.json").read_text())
    (ref / "metrics.json").write_text(json.dumps({**m, "code_sha256": "0" * 16}))
    s = summarize(out)
    assert s["failed_alone"] == [{"modality": MODALITIES[0], "seed": "1111", "error": "RuntimeError: alone boom"}]
    assert "2 versions of the pase code" in s["code_warning"]
    from pase.evaluation.report import summary_markdown
    assert "Failed unimodal references" in summary_markdown(s) and "alone boom" in summary_markdown(s)
    # a kept --alone run trained longer is refused like a kept run (a review of this check)
    (ref / "FAILED.txt").unlink()
    other = out / "alone" / MODALITIES[1] / "seed1111" / "config.yaml"
    other.write_text(other.read_text().replace("max_epochs: 2", "max_epochs: 4"))
    with pytest.raises(ConfigError, match=rf"alone/{MODALITIES[1]}/seed1111 was trained with another configuration than "
                                          r"this comparison's --alone runs \(train.max_epochs: 4 there, 2 now\)"):
        compare(apply_overrides(Config(), OVERRIDES), ["late_fusion"], "1111,", out, alone=True)


def test_deficit_reduction_against_the_reference(comparison_copy):
    """With alone references on disk, each method's reduction of the reference's probe deficit is
    joint(method) - joint(reference), paired by seed, for the label and the effect probes."""
    from pase.evaluation.report import report

    for mod in MODALITIES:
        for seed in (1111, 1112):
            folder = comparison_copy / "alone" / mod / f"seed{seed}"
            folder.mkdir(parents=True)
            (folder / "probe.json").write_text(json.dumps({mod: {"acc2": 0.9, "corr": 0.5, "effect_r2": 0.8,
                                                                 "effect_acc": 0.85}}))
    summary = summarize(comparison_copy)
    diag = {(r["method"], r["seed"]): r["diagnostics"]["probes"] for r in summary["runs"] if r["status"] == "ok"}
    for metric, block in (("acc2", summary), ("effect_r2", summary["effect_probes"])):
        assert list(block["deficit_reduction"]) == ["agm"]  # the reference itself has no row
        for mod in MODALITIES:
            d = [diag[("agm", s)][mod][metric] - diag[("late_fusion", s)][mod][metric] for s in (1111, 1112)]
            got = block["deficit_reduction"]["agm"][mod]
            assert got["n"] == 2 and got["mean"] == pytest.approx(sum(d) / 2, abs=1e-12)
            assert block["deficit"]["late_fusion"][mod]["mean"] - block["deficit"]["agm"][mod]["mean"] == \
                pytest.approx(got["mean"], abs=1e-12)
    report(comparison_copy)
    md = (comparison_copy / "report.md").read_text()
    assert "Does a method reduce the probe deficit of late_fusion? (acc2)" in md
    assert "Does a method reduce the probe deficit of late_fusion? (effect_r2)" in md
    verdicts = [line for line in md.splitlines() if line.startswith("| agm |")
                and any(v in line for v in ("reduces", "increases", "no evidence"))]
    assert len(verdicts) == 2  # one row per probe table


def test_r2_shares_against_the_generators_ground_truth(comparison):
    """On the built-in benchmark the summary compares each method's test-split r2 Shapley shares
    with the generator's ground-truth shares: per-seed share - truth, averaged, and the verdict."""
    out, summary = comparison
    st = summary["share_truth"]
    truth = {m: v for m, v in summary["runs"][0]["diagnostics"]["ground_truth_shares"].items() if m in MODALITIES}
    assert st["truth"] == pytest.approx({m: v / sum(truth.values()) for m, v in truth.items()})
    for method in OK_METHODS:
        runs = [r for r in summary["runs"] if r["method"] == method and r["status"] == "ok"]
        worst = 0.0
        for m in MODALITIES:
            err = [r["diagnostics"]["shapley"]["r2"]["shares"][m] - st["truth"][m] for r in runs]
            assert st["error"][method][m]["mean"] == pytest.approx(np.mean(err), abs=1e-12)
            assert st["error"][method][m]["sd"] == pytest.approx(np.std(err, ddof=1), abs=1e-12)
            worst = max(worst, abs(np.mean(err)))
        assert st["max_abs_error"][method] == pytest.approx(worst)
        assert st["within_0.05"][method] == (worst <= 0.05)
    assert "ground truth (r2 utility)" in (out / "summary.md").read_text()


def test_a_damaged_metrics_file_is_named(comparison_copy):
    bad = comparison_copy / "runs" / "agm" / "seed1111" / "metrics.json"
    bad.write_text('{"test": ')
    with pytest.raises(ConfigError, match=rf"^{bad}: not readable JSON \(.*\); restore it, or move its run folder "
                                          r"aside to retrain that run$"):
        summarize(comparison_copy)
    assert bad.read_text() == '{"test": '


@pytest.mark.parametrize("name, text, what", [
    ("metrics.json", None, r"no key 'protocol'"),  # an older metrics.json: a bare "pase: error: protocol"
    ("robustness.csv", "kind,condition\nmissing,text\n", r"no column 'modality'"),
    ("trajectory.csv", "epoch,diag/share_text\nfoo,0.5\n", r"not a per-epoch log as pase writes it \(ValueError: "),
])
def test_a_foreign_run_file_is_named_with_what_it_lacks(comparison_copy, name, text, what):
    """Files that read but are not as pase writes them failed with a bare key or conversion error (review)."""
    from pase.evaluation.report import report

    bad = comparison_copy / "runs" / "agm" / "seed1111" / name
    if text is None:
        d = json.loads(bad.read_text())
        del d["protocol"]
        text = json.dumps(d)
    bad.write_text(text)
    with pytest.raises(ConfigError, match=rf"^{bad}: {what}"):
        report(comparison_copy)
    assert bad.read_text() == text


def test_a_metrics_file_without_a_test_metric_is_named(tmp_path):
    """A metrics.json without test 'MAE' was read as NaN: the MAE cell read '(n=1)' and the paired table one pair,
    without a word naming the file (a review); it is refused with the file and the key, as damaged files are."""
    from eval_setup import fake_comparison, mosi_metrics

    out = fake_comparison(tmp_path / "c", {("pase", 1): mosi_metrics(), ("pase", 2): mosi_metrics()}, [1, 2])
    bad = out / "runs" / "pase" / "seed2" / "metrics.json"
    d = json.loads(bad.read_text())
    del d["test"]["MAE"]
    bad.write_text(json.dumps(d))
    with pytest.raises(ConfigError, match=rf"^{bad}: no test metric 'MAE', so it is not as pase writes it .*; "
                                          r"restore it, or move its run folder aside to retrain that run$"):
        summarize(out)


def test_a_dead_worker_fails_no_run_for_good(comparison_copy, monkeypatch):
    """One killed --jobs worker breaks the pool: every pending run then fails with BrokenProcessPool.
    None of them failed by itself, so none gets FAILED.txt (which made the next call restart
    partly trained runs from scratch); the message says what to do."""
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    class DeadPool:
        def __init__(self, *a, **k):
            pass

        def submit(self, fn, job):
            fut = Future()
            fut.set_exception(BrokenProcessPool("A process in the process pool was terminated abruptly"))
            return fut

        def shutdown(self, wait=True, cancel_futures=False):
            pass

    monkeypatch.setattr(compare_mod, "ProcessPoolExecutor", DeadPool)
    out = comparison_copy
    run = out / "runs" / "late_fusion" / "seed1112"
    (run / "metrics.json").unlink()
    lines = []
    compare(apply_overrides(Config(), OVERRIDES), ["late_fusion"], SEEDS, out, jobs=2, progress=lines.append)
    assert any("a worker process died (killed, or out of memory?); run the same command again" in x for x in lines)
    assert not (run / "FAILED.txt").exists() and (run / "checkpoints" / "last.ckpt").is_file()


def test_runs_trained_by_different_code_are_flagged(comparison_copy):
    """Finished runs are kept across calls, so a comparison continued after a code change mixed two
    versions of the code without a word (every metrics.json said pase_version 0.1.0). Each run now
    records the package's source fingerprint, and the summary warns when they differ."""
    from pase.evaluation.report import summary_markdown

    runs = comparison_copy / "runs"
    one = runs / "agm" / "seed1111" / "metrics.json"
    assert json.loads(one.read_text())["code_sha256"] == code_fingerprint()
    assert "code_warning" not in summarize(comparison_copy)
    saved = json.loads(one.read_text())
    one.write_text(json.dumps({**saved, "code_sha256": "0123456789abcdef"}))
    s = summarize(comparison_copy)
    assert s["code_warning"].startswith(f"the runs come from 2 versions of the pase code (0123456789abcdef, "
                                        f"{code_fingerprint()}; code_sha256 of metrics.json")
    assert "**Warning: the runs come from 2 versions of the pase code" in summary_markdown(s)
    one.write_text(json.dumps(saved))
    # a diagnosis is code too: its figures fill the Shapley, probe and robustness tables
    diag = runs / "late_fusion" / "seed1112" / "diagnostics.json"
    assert json.loads(diag.read_text())["code_sha256"] == code_fingerprint()
    assert "code_warning" not in summarize(comparison_copy)
    diag.write_text(json.dumps({k: v for k, v in json.loads(diag.read_text()).items() if k != "code_sha256"}))
    assert f"({code_fingerprint()}, unrecorded;" in summarize(comparison_copy)["code_warning"]


def test_report_carries_the_code_warning_failed_diagnoses_and_strict_json(comparison_copy):
    """From a review of the reports: report.md / report.html dropped the mixed-code warning; a failed
    diagnosis was listed nowhere in summary.md or the report while the diagnostic tables silently
    averaged over fewer seeds; summary.json held NaN literals (one seed's SD), which strict JSON
    readers refuse."""
    from pase.evaluation.report import report, write_summary

    out = comparison_copy
    one = out / "runs" / "agm" / "seed1111" / "metrics.json"
    one.write_text(json.dumps({**json.loads(one.read_text()), "code_sha256": "0123456789abcdef"}))
    run = out / "runs" / "late_fusion" / "seed1112"
    for f in ("diagnostics.json", "robustness.csv", "trajectory.csv"):
        (run / f).unlink(missing_ok=True)
    (run / "DIAGNOSE_FAILED.txt").write_text("RuntimeError: diag boom\n")
    s = summarize(out)
    write_summary(s, out)
    files = report(out)
    for name in ("report.md", "report.html"):
        text = files[name].read_text()
        assert "Warning" in text and "2 versions of the pase code" in text, name
        assert "Failed diagnoses" in text and "diag boom" in text, name
    assert "diag boom" in (out / "summary.md").read_text()
    json.loads((out / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in summary.json"))
    s1 = summarize(out, seeds=[1111])  # one seed: every SD is NaN
    write_summary(s1, out)
    saved = json.loads((out / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert saved["stats"]["late_fusion"]["MAE"]["sd"] is None


def test_stopping_the_pool_signals_only_its_own_workers(monkeypatch):
    """_stop_pool passed SIGINT to (and on a second Ctrl-C killed) every multiprocessing child of the
    process, including a caller's own; it now signals the pool's workers only."""
    import multiprocessing
    import threading
    import time
    from concurrent.futures import Future

    ctx = multiprocessing.get_context("spawn")
    other = ctx.Process(target=time.sleep, args=(30,))
    other.start()
    try:
        class Pool:
            _processes = {}  # no worker of its own

            def shutdown(self, wait=True, cancel_futures=False):
                pass

        pending = Future()
        pending.set_running_or_notify_cancel()  # running: cannot be cancelled
        threading.Timer(0.5, pending.set_result, args=(None,)).start()
        monkeypatch.setattr(compare_mod, "INTERRUPT_GRACE_S", 0.1)
        compare_mod._stop_pool(Pool(), [pending], ctx.Event())
        assert other.is_alive()
    finally:
        other.kill()
        other.join()


def test_a_diagnosis_cut_short_feeds_no_condition_rows(comparison_copy):
    """A diagnosis writes robustness.csv before diagnostics.json; one that failed in between (a
    damaged log.csv) left the rows, which fed the missing-modality and noise tables and figures a
    seed that the Shapley, probe and robustness tables left out."""
    run = comparison_copy / "runs" / "late_fusion" / "seed1112"
    assert (run / "robustness.csv").is_file()
    full = [c for c in summarize(comparison_copy)["conditions"]["late_fusion"] if c["kind"] == "missing"]
    assert {c["n"] for c in full} == {2}
    (run / "diagnostics.json").unlink()
    (run / "DIAGNOSE_FAILED.txt").write_text("UnicodeDecodeError: log.csv\n")
    s = summarize(comparison_copy)
    cut = [c for c in s["conditions"]["late_fusion"] if c["kind"] == "missing"]
    assert {c["n"] for c in cut} == {1}
    with open(comparison_copy / "runs" / "late_fusion" / "seed1111" / "robustness.csv") as fh:
        kept = {r["condition"]: float(r[s["headline"]]) for r in csv.DictReader(fh) if r["kind"] == "missing"}
    assert {c["condition"]: c["mean"] for c in cut} == pytest.approx(kept)  # the seed left: 1111 alone


def test_a_comparison_may_move_its_data_but_diagnoses_only_the_same_data(tmp_path):
    """Rerunning a comparison after its data moved was refused as another configuration, and its
    runs' diagnoses read the data from where the checkpoint said it lay. The data may move now (as
    for pase train --resume); a run is diagnosed only on the data it was trained on."""
    import shutil

    from data.writers import write_mmsa

    path = write_mmsa(tmp_path / "a", "mosi", sizes=(40, 16, 16))
    sets = ["data.source=mmsa", "data.options.dataset=mosi", "train.batch_size=8", "train.max_epochs=1",
            "train.progress_bar=false", "model.d_model=8", "model.hidden=16", "model.head_hidden=8"]
    out = tmp_path / "cmp"
    compare(apply_overrides(Config(), sets + [f"data.path={path}"]), ["late_fusion"], [1111], out, diagnose=False)
    moved = tmp_path / "b: moved" / "aligned_50.pkl"  # a colon: the path must reach the run's config intact
    moved.parent.mkdir()
    shutil.move(path, moved)
    res = compare(apply_overrides(Config(), sets + [f"data.path={json.dumps(str(moved))}"]), ["late_fusion"], [1111],
                  out)
    run = out / "runs" / "late_fusion" / "seed1111"
    assert [r["diagnose_error"] for r in res["runs"]] == [""] and (run / "diagnostics.json").is_file()
    assert str(moved) in (out / "config.yaml").read_text()  # the comparison names where its data lies now

    def mutate(data):
        for s in data.values():
            s["regression_labels"] = -s["regression_labels"]

    other = write_mmsa(tmp_path / "c", "mosi", sizes=(40, 16, 16), mutate=mutate)
    (run / "diagnostics.json").unlink()
    # other data of the same shapes: refused before anything runs (a review averaged a run trained on one
    # file with a new seed trained on another into one row)
    before = (out / "config.yaml").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    del metrics["data_fingerprint"]  # as written before metrics.json kept it: the checkpoint's is read
    (run / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(ConfigError, match=r"seed1111 was trained on other data than .* gives now \(split 'test' has other "
                                          r"targets\); results of two datasets are never averaged"):
        compare(apply_overrides(Config(), sets + [f"data.path={other}"]), ["late_fusion"], [1111, 1112], out)
    assert not (run / "diagnostics.json").exists() and not (out / "runs" / "late_fusion" / "seed1112").exists()
    assert (out / "config.yaml").read_text() == before  # "nothing was changed" holds for config.yaml too


def test_a_comparison_keeps_the_dataset_its_runs_were_trained_as(tmp_path):
    """The dataset was inferred from the data's path at every call: a SIMS comparison continued on its file
    moved to a folder named MOSI kept its SIMS seed, trained the next under MOSI's protocol, then stopped
    calling the kept run's metrics.json damaged; --set data.options.dataset=sims was refused as another
    configuration (a review). Data that loads as another dataset is refused before anything runs, naming
    the run; the --set of the runs' dataset continues the comparison."""
    import shutil

    from data.writers import write_mmsa

    path = write_mmsa(tmp_path / "a", "sims", aligned=False, sizes=(16, 8, 8), steps=(6, 5))
    sets = ["data.source=mmsa", "train.batch_size=8", "train.max_epochs=1", "train.progress_bar=false",
            "model.d_model=8", "model.hidden=16", "model.head_hidden=8"]
    out = tmp_path / "cmp"
    compare(apply_overrides(Config(), sets + [f"data.path={path}"]), ["late_fusion"], [1111], out, diagnose=False)
    moved = tmp_path / "MOSI_backup" / path.name
    moved.parent.mkdir()
    shutil.copy(path, moved)
    run = out / "runs" / "late_fusion" / "seed1111"
    before = (out / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=rf"{moved}: this data loads as dataset 'mosi' \(mosi_mmsa, protocol mosi\), "
                                          rf"but {run} was trained as 'sims'.*--set data.options.dataset=sims"):
        compare(apply_overrides(Config(), sets + [f"data.path={moved}"]), ["late_fusion"], [1111, 1112], out,
                diagnose=False)
    assert not (run.parent / "seed1112").exists() and (out / "config.yaml").read_text() == before
    res = compare(apply_overrides(Config(), sets + [f"data.path={moved}", "data.options.dataset=sims"]),
                  ["late_fusion"], [1111, 1112], out, diagnose=False)
    assert (res["dataset"], res["protocol"]) == ("sims_mmsa", "sims") and [r["status"] for r in res["runs"]] == [
        "ok", "ok"]


def test_a_job_loads_its_data_once_for_training_and_diagnosis(tmp_path, monkeypatch):
    """Training loaded the data, then the run's diagnosis loaded it again: twice the load time of a
    multi-GB MOSEI pickle per job (review)."""
    import pase.training.run as run_module

    calls = []
    real = run_module.load_bundle

    def counting(cfg):
        calls.append(cfg.train.seed)
        return real(cfg)

    monkeypatch.setattr(run_module, "load_bundle", counting)
    monkeypatch.setattr(compare_mod, "load_bundle", counting)
    res = compare(apply_overrides(Config(), OVERRIDES + ["train.max_epochs=1"]), ["late_fusion"], [1111],
                  tmp_path / "cmp")
    assert [r["status"] for r in res["runs"]] == ["ok"] and not res["runs"][0]["diagnose_error"]
    assert calls == [1111]
    assert (tmp_path / "cmp" / "runs" / "late_fusion" / "seed1111" / "diagnostics.json").is_file()


def test_kept_alone_references_and_interrupted_runs_are_checked_against_the_data(tmp_path):
    """Two holes in the data check (a review): an --alone reference trained on other data was reused
    once the main run it was compared with was moved aside (its probe paired with a run on the new
    data), and an interrupted run refused for other data was marked FAILED, so the next call, with the
    right data as the message said, retrained it from scratch. Both are now refused before anything
    runs, naming the run; the interrupted run then continues from its checkpoint."""
    import shutil

    from data.writers import write_mmsa

    sets = ["data.source=mmsa", "data.options.dataset=mosi", "train.batch_size=8", "train.max_epochs=1",
            "train.progress_bar=false", "model.d_model=8", "model.hidden=16", "model.head_hidden=8"]
    path = write_mmsa(tmp_path / "a", "mosi", sizes=(40, 16, 16))

    def louder(data):
        for s in data.values():
            s["audio"] = s["audio"] * 2

    other = write_mmsa(tmp_path / "b", "mosi", sizes=(40, 16, 16), mutate=louder)
    here, there = (apply_overrides(Config(), sets + [f"data.path={p}"]) for p in (path, other))
    out = tmp_path / "cmp"
    compare(here, ["late_fusion"], [1111], out, alone=True, noise_levels=[0])
    shutil.rmtree(out / "runs" / "late_fusion" / "seed1111")
    with pytest.raises(ConfigError, match=r"alone/audio/seed1111 was trained on other data than .* gives now \(split "
                                          r"'\w+': modality 'audio' has other feature values\)"):
        compare(there, ["late_fusion"], [1111], out, alone=True, noise_levels=[0])
    assert not (out / "runs" / "late_fusion" / "seed1111").exists()

    run = out / "runs" / "late_fusion" / "seed1111"
    compare(here, ["late_fusion"], [1111], out, diagnose=False)
    (run / "metrics.json").unlink()  # interrupted after its last checkpoint
    with pytest.raises(ConfigError, match=r"seed1111 was trained on other data than .* point data.path at the "):
        compare(there, ["late_fusion"], [1111], out, diagnose=False)
    assert not (run / "FAILED.txt").exists()
    res = compare(here, ["late_fusion"], [1111], out, diagnose=False)
    assert [r["status"] for r in res["runs"]] == ["ok"] and (run / "metrics.json").is_file()
    assert not list(run.parent.glob(".seed1111.failed-*"))  # continued, not set aside and retrained


def test_no_diagnose_keeps_the_record_of_a_failed_diagnosis(tmp_path, monkeypatch):
    """A --no-diagnose call removed DIAGNOSE_FAILED.txt although it diagnosed nothing: the report then
    showed (n=1) cells without their reason (a review). It goes once a diagnosis exists."""
    import pase.evaluation.compare as cmp_module
    from tiny import TINY

    cfg = apply_overrides(Config(), TINY + ["train.max_epochs=1"])
    out = tmp_path / "cmp"

    def broken(*a, **k):
        raise RuntimeError("diagnosis broke")

    monkeypatch.setattr(cmp_module, "diagnose", broken)
    compare(cfg, ["late_fusion"], [1111], out, noise_levels=[0])
    record = out / "runs" / "late_fusion" / "seed1111" / "DIAGNOSE_FAILED.txt"
    assert record.read_text().strip() == "RuntimeError: diagnosis broke"
    compare(cfg, ["late_fusion"], [1111], out, diagnose=False)
    assert record.is_file()
    monkeypatch.undo()
    compare(cfg, ["late_fusion"], [1111], out, noise_levels=[0])
    assert not record.exists() and (record.parent / "diagnostics.json").is_file()


def test_a_failed_reference_of_a_seed_this_comparison_does_not_cover_is_not_its_failure(tmp_path, capsys):
    """`pase compare --alone --seeds 1` exited 1 for a leftover alone/text/seed1112/FAILED.txt while its
    summary listed no failure (a review); only this comparison's seeds count."""
    from pase.evaluation.cli import _problems

    for seed in (1111, 1112):
        (tmp_path / "alone" / "text" / f"seed{seed}").mkdir(parents=True)
    (tmp_path / "alone" / "text" / "seed1112" / "FAILED.txt").write_text("RuntimeError: x\n")
    assert _problems("pase compare", {"runs": [], "seeds": [1111]}, tmp_path, alone=True) == []
    lines = _problems("pase compare", {"runs": [], "seeds": [1111, 1112]}, tmp_path, alone=True)
    assert len(lines) == 1 and "1 unimodal reference(s) failed" in lines[0] and "seed1112" in lines[0]
    capsys.readouterr()


def test_the_other_data_message_names_the_keys_that_locate_the_data():
    """'point data.path at the run's data' was said of data that data.options.label_path and
    feature_root locate (gcnet has no data.path; a review)."""
    from pase.training.run import data_location_keys

    gc = apply_overrides(Config(), ["data.source=gcnet", "data.options.label_path=/d/labels.pkl",
                                    "data.options.feature_root=/d/features", "data.options.fold=1"])
    assert data_location_keys(gc) == "data.options.label_path / data.options.feature_root"
    assert data_location_keys(apply_overrides(Config(), ["data.source=mmsa", "data.path=/d/x.pkl"])) == "data.path"
    assert data_location_keys(Config()) == "data.path"  # the built-in benchmark: nothing locates it


@pytest.mark.parametrize("sets", [["train.strategy=ddp", "train.devices=2"], ["train.devices=2"],
                                  ["train.devices=auto", "train.accelerator=auto"], ["train.devices='0,1'"],
                                  ["train.strategy=ddp_spawn"]])
def test_compare_and_crossval_refuse_a_multi_process_run_before_writing_anything(tmp_path, sets):
    """Under DDP Lightning re-runs the whole command on rank 1, which ran a comparison of its own: it
    found the runs locked, wrote a summary of failures, and the main process was killed (exit 137; a
    review). Both commands now refuse, naming the keys and advice the command takes: compare's --jobs,
    and for crossval, which has no --jobs (it advised one: a review), pase train of one fold."""
    from pase.evaluation.folds import cross_validate

    cfg = apply_overrides(Config(), sets)
    with pytest.raises(ConfigError, match=r"^pase compare trains each run in one process \(train.devices=.*set "
                                          r"train.devices=1 and train.strategy=auto, and use --jobs N"):
        compare(cfg, ["late_fusion"], [1111], tmp_path / "cmp")
    with pytest.raises(ConfigError, match=r"^pase crossval trains each run in one process") as refused:
        cross_validate(cfg, tmp_path / "cv", folds=[1])
    assert "--jobs" not in str(refused.value)
    assert str(refused.value).endswith("set train.devices=1 and train.strategy=auto, and train one fold on several "
                                       "devices with pase train and --set data.options.fold=F (nothing was written)")
    assert not (tmp_path / "cmp").exists() and not (tmp_path / "cv").exists()
    for one in (["train.devices=[0]"], ["train.devices='0,'"], ["train.devices=auto", "train.accelerator=cpu"],
                ["train.devices=1"]):  # one device: fine ('0,' and auto on the CPU were refused; a review)
        compare_mod.check_one_process(apply_overrides(Config(), one), "x", "y")


def test_compare_expands_a_tilde_in_its_folder(tmp_path, monkeypatch):
    """compare(out_dir="~/c") wrote config.yaml, compare.json and each run's log.csv / metrics.json
    into ./~/c and the runs' checkpoints under $HOME (Lightning expands `~`; a review)."""
    from pase.evaluation.report import load_comparison

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    summary = compare(apply_overrides(Config(), OVERRIDES), "late_fusion", [1111], "~/c", diagnose=False)
    run = home / "c" / "runs" / "late_fusion" / "seed1111"
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "log.csv", "metrics.json", "checkpoints"}
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert {"config.yaml", "compare.json", "summary.csv"} <= {p.name for p in (home / "c").iterdir()}
    assert [r["status"] for r in summary["runs"]] == ["ok"]
    assert load_comparison("~/c")["runs"] == summary["runs"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]  # no folder named ~


def test_a_first_call_killed_while_writing_compare_json_continues_with_the_same_command(tmp_path, runs_about_to_start):
    """A first call killed while writing compare.json left config.yaml and .compare.json.*.tmp: the same
    command then refused the folder as 'not a comparison folder (no compare.json; it holds
    .compare.json.gcvdpuej.tmp)'. The partial writes of the comparison's first files are ignored, and
    removed once the command goes ahead."""
    from pase.config import save_config

    Reached = runs_about_to_start
    cfg = apply_overrides(Config(), OVERRIDES)
    out = tmp_path / "cmpA"
    out.mkdir()
    save_config(cfg, out / "config.yaml")
    (out / ".compare.json.gcvdpuej.tmp").write_text('{"methods": ')
    (out / ".config.yaml.k2j4h5g6.tmp").write_text("data:\n")
    with pytest.raises(Reached):  # every check passed, the runs were about to start
        compare(cfg, ["late_fusion"], [1111], out, diagnose=False)
    assert sorted(p.name for p in out.iterdir()) == ["compare.json", "config.yaml"]
    assert json.loads((out / "compare.json").read_text())["methods"] == ["late_fusion"]
    other = tmp_path / "cmpB"  # a partial write of another file is no comparison's first call
    other.mkdir()
    (other / ".summary.md.abcdefgh.tmp").write_text("x")
    with pytest.raises(ConfigError, match=r"cmpB is not a comparison folder \(no compare.json; it holds "
                                          r"\.summary\.md\.abcdefgh\.tmp\); pass a new or empty --out"):
        compare(cfg, ["late_fusion"], [1111], other, diagnose=False)


def test_a_run_killed_between_its_first_epochs_writes_restarts_in_place(tmp_path, monkeypatch):
    """A run killed at the end of its first epoch (log.csv and best.ckpt written, last.ckpt not yet, a
    partial write of it left), or while writing its config.yaml, was set aside as .seed<N>.failed-<time>
    (about 1 MB per kill, never cleaned) and retrained, counted as a failure; pase train --resume restarts
    the first in place. Now both train in their folder; a folder that is not such a leftover is set aside
    as before."""
    calls = []
    monkeypatch.setattr(compare_mod, "train",
                        lambda cfg, run, resume=False, quiet=False, bundle=None: calls.append((run.name, resume)))
    cfg = apply_overrides(Config(), OVERRIDES)
    run = tmp_path / "seed1111"
    (run / "checkpoints").mkdir(parents=True)
    (run / ".lock").touch()
    (run / "config.yaml").write_text("method: late_fusion\n")
    (run / "log.csv").write_text("epoch,train/loss\n0,1.0\n")
    torch_save = __import__("torch").save
    torch_save({"epoch": 0, "state_dict": {}}, run / "checkpoints" / "best.ckpt")
    (run / "checkpoints" / ".last.ckpt.x1y2z3w4.tmp").write_bytes(b"partial")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    compare_mod._train_into(cfg, run)
    assert calls == [("seed1111", True)]  # a resume without last.ckpt: train restarts it in place
    assert [p.name for p in tmp_path.iterdir()] == ["seed1111"]
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    fresh = tmp_path / "seed1112"
    fresh.mkdir()
    (fresh / ".lock").touch()
    (fresh / ".config.yaml.abcdefgh.tmp").write_text("data:\n")
    calls.clear()
    compare_mod._train_into(cfg, fresh)
    assert calls == [("seed1112", False)] and sorted(p.name for p in tmp_path.iterdir()) == ["seed1111", "seed1112"]
    (run / "log.csv").write_text("epoch,train/loss\n0,1.0\n1,0.9\n")  # two epochs but no last.ckpt: not a kill
    calls.clear()
    compare_mod._train_into(cfg, run)
    assert calls == [("seed1111", False)]
    assert len([p for p in tmp_path.iterdir() if p.name.startswith(".seed1111.failed-")]) == 1


def test_a_failed_run_holding_only_its_error_is_set_aside_with_it(tmp_path, monkeypatch):
    """A failed run's folder holding nothing but FAILED.txt (it failed as it loaded its data) was deleted,
    its error line with it, though docs/evaluation.md says a failed run's old folder is set aside, not
    deleted (a review). It is set aside with its FAILED.txt now; an empty folder is still removed."""
    calls = []
    monkeypatch.setattr(compare_mod, "train",
                        lambda cfg, run, resume=False, quiet=False, bundle=None: calls.append((run.name, resume)))
    cfg = apply_overrides(Config(), OVERRIDES)
    run = tmp_path / "seed1111"
    run.mkdir()
    (run / ".lock").touch()
    (run / "FAILED.txt").write_text("FileNotFoundError: aligned_50.pkl: no such file\n")
    compare_mod._train_into(cfg, run)
    assert calls == [("seed1111", False)]
    aside = [p for p in tmp_path.iterdir() if p.name.startswith(".seed1111.failed-")]
    assert len(aside) == 1
    assert (aside[0] / "FAILED.txt").read_text() == "FileNotFoundError: aligned_50.pkl: no such file\n"
    empty = tmp_path / "seed1112"
    (empty / "tensorboard").mkdir(parents=True)  # nothing of the run's own: removed, not set aside
    compare_mod._train_into(cfg, empty)
    assert calls[-1] == ("seed1112", False) and not [p for p in tmp_path.iterdir() if p.name.startswith(".seed1112")]


def test_a_full_disk_stops_the_comparison_with_the_runs_own_error_and_marks_no_run_failed(tmp_path, monkeypatch):
    """On a full disk a run's CheckpointWriteError was recorded and FAILED.txt written on the same full
    disk: that write's FileWriteError escaped instead (the checkpoint's line and its advice lost), and a
    FAILED.txt written would have made the next call set the run aside and retrain it from scratch. Now
    a full disk, quota or file-size limit stops the comparison with the run's own error (in one process
    or from a --jobs worker) and writes no FAILED.txt; a FAILED.txt that cannot be written does not hide
    a run's own error."""
    import errno
    from concurrent.futures import Future

    from pase.io import FileWriteError
    from pase.training.checkpoint import CheckpointWriteError

    monkeypatch.setattr(compare_mod, "load_bundle", lambda cfg: None)
    cfg = apply_overrides(Config(), OVERRIDES)
    jobs = [compare_mod._Job("run", "late_fusion", s, str(tmp_path / f"seed{s}"), cfg, False, ()) for s in SEEDS]
    out = tmp_path / "seed1111"
    errors = [CheckpointWriteError(f"{out}/checkpoints/best.ckpt: the checkpoint could not be written (0 MiB free "
                                   f"on its disk; ...); the previous one is kept", "free space", str(out)),
              FileWriteError(errno.ENOSPC, f"{out}/log.csv: could not be written (No space left on device)"),
              OSError(errno.EDQUOT, "Disk quota exceeded"), OSError(errno.EFBIG, "File too large")]
    for err in errors:
        def full(cfg, run, resume=False, quiet=False, bundle=None):
            raise err

        monkeypatch.setattr(compare_mod, "train", full)
        with pytest.raises(type(err)) as got:
            compare_mod._execute(jobs[0])
        assert not (out / "FAILED.txt").exists()
        if isinstance(err, CheckpointWriteError):  # the advice of the whole comparison, not one run's resume
            assert str(got.value) == (f"{out}/checkpoints/best.ckpt: the checkpoint could not be written (0 MiB free on "
                                      "its disk; ...); the previous one is kept: free space, then run the same pase "
                                      "compare command again to continue (finished runs are kept)")
        else:
            assert got.value is err

    class FullPool:  # --jobs: the worker's _execute raised it
        def __init__(self, *a, **k):
            pass

        def submit(self, fn, job):
            fut = Future()
            fut.set_exception(errors[0])
            return fut

        def shutdown(self, wait=True, cancel_futures=False):
            pass

    monkeypatch.setattr(compare_mod, "ProcessPoolExecutor", FullPool)
    with pytest.raises(CheckpointWriteError, match=r"seed1111/checkpoints/best.ckpt: the checkpoint could not be"
                                                   r".*free space, then run the same pase compare command again"):
        compare_mod._run_jobs(jobs, 2, None)
    assert not list(tmp_path.rglob("FAILED.txt"))

    def diverged(cfg, run, resume=False, quiet=False, bundle=None):
        raise RuntimeError("diverged")

    def no_space(path, text):
        raise FileWriteError(errno.ENOSPC, f"{path}: could not be written (No space left on device)")

    monkeypatch.setattr(compare_mod, "train", diverged)
    monkeypatch.setattr(compare_mod, "atomic_write_text", no_space)
    rec = compare_mod._execute(jobs[1])
    assert (rec["status"], rec["error"]) == ("failed", "RuntimeError: diverged")


def test_a_diagnosis_error_is_kept_when_its_record_cannot_be_written(tmp_path, monkeypatch):
    """On a full disk the write of DIAGNOSE_FAILED.txt raised its own error, which replaced the
    diagnosis's (the pattern fixed for FAILED.txt; a review): the diagnosis's error is reported."""
    import errno

    import pase.evaluation.compare as cmp_module
    from tiny import TINY

    from pase.io import FileWriteError

    cfg = apply_overrides(Config(), TINY + ["train.max_epochs=1"])

    def broken(*a, **k):
        raise RuntimeError("diagnosis broke")

    real = cmp_module.atomic_write_text

    def full(path, text):
        if Path(path).name == "DIAGNOSE_FAILED.txt":
            raise FileWriteError(errno.ENOSPC, f"{path}: could not be written (No space left on device)")
        return real(path, text)

    monkeypatch.setattr(cmp_module, "diagnose", broken)
    monkeypatch.setattr(cmp_module, "atomic_write_text", full)
    lines = []
    res = compare(cfg, ["late_fusion"], [1111], tmp_path / "c", noise_levels=[0], progress=lines.append)
    assert [r["status"] for r in res["runs"]] == ["ok"]  # the trained run stands; it was a crash of compare
    assert any("diagnostics failed: RuntimeError: diagnosis broke" in line for line in lines), lines
    assert not (tmp_path / "c" / "runs" / "late_fusion" / "seed1111" / "diagnostics.json").exists()


@pytest.mark.parametrize("sets, match", [
    (["train.accelerator=cpu", "train.devices='0,'"], r"^train.accelerator=cpu, train.devices=0,, .*Lightning cannot "
                                                      r"run these on this machine \(.*\); change the setting it names"),
    (["train.accelerator=cpu", "train.devices=[0]"], r"^train.accelerator=cpu, train.devices=\[0\], .*Lightning cannot"),
    (["pase.binning=sgn"], r"^pase.binning='sgn' is not one of sign, polarity, round7, classes"),
    # a valid choice PaSE's prototypes cannot take on the built-in benchmark's regression labels: every PaSE run
    # failed at model build, after config.yaml was written and late fusion had trained
    (["pase.binning=classes"], r"^pase.binning='classes' takes the class ids of classification data; data source "
                               r"'synthetic' gives continuous labels \(regression\): bin them with one of sign, "
                               r"polarity, round7 \(method pase bins"),
    (["data.options.seed=abc"], r"^config key 'data.options.seed' must be int, got str 'abc'"),
    # the built-in benchmark's loader takes **options, so the name and type of a generator option were checked
    # only as each run loaded its data, after config.yaml was saved (a review); pase train refused them at once
    (["data.options.sed=1"], r"^data.options.sed is not an option of the built-in benchmark; did you mean "
                             r"data.options.seed\? .* \(nothing was written\)$"),
    (["data.options.sizes=abc"], r"^synthetic option 'sizes' must be a list of whole numbers .* got 'abc' "
                                 r"\(nothing was written\)$"),
    # checks the method, the model and the optimiser made only as each run built them: every run failed after
    # config.yaml was saved (a review)
    (["train.loss=foo"], r"^train.loss='foo' is not one of auto, l1, mse \(nothing was written\)$"),
    (["train.optimizer=foo"], r"^train.optimizer='foo' is not one of adam, adamw, sgd \(nothing was written\)$"),
    (["model.encoder=foo"], r"^config key 'model.encoder': unknown encoder 'foo'; valid: auto, bert, lstm, mlp, "
                            r"transformer \(nothing was written\)$"),
    (["model.text_encoder=bret"], r"^config key 'model.text_encoder': unknown encoder 'bret'; did you mean 'bert'\? "
                                  r"valid: auto, bert, lstm, mlp, transformer \(nothing was written\)$"),
    # a typo of the default got no hint: auto was not among the names (a review)
    (["model.encoder=atuo"], r"^config key 'model.encoder': unknown encoder 'atuo'; did you mean 'auto'\? "),
])
def test_a_setting_every_run_would_fail_on_is_refused_before_anything_is_written(tmp_path, sets, match,
                                                                                 runs_about_to_start):
    """compare saved config.yaml and compare.json before each method's configuration was built (PaSE's
    pase.* choices) and before Lightning met the devices ('0,' and [0] on the CPU): every run failed, and
    the corrected command was refused as 'another configuration' for good (a review). These are refused
    now as pase train refuses them, with nothing written; the corrected command goes ahead."""

    Reached = runs_about_to_start
    out = tmp_path / "cmp"
    with pytest.raises(ConfigError, match=match):
        compare(apply_overrides(Config(), OVERRIDES + sets), ["late_fusion", "pase"], [1111], out, diagnose=False)
    assert not out.exists()
    with pytest.raises(Reached):  # the corrected command: every check passed, the runs were about to start
        compare(apply_overrides(Config(), OVERRIDES), ["late_fusion", "pase"], [1111], out, diagnose=False)
    assert sorted(p.name for p in out.iterdir()) == ["compare.json", "config.yaml"]


def test_alone_without_configured_modalities_refuses_a_bad_setting_before_it_loads_the_data(tmp_path, monkeypatch,
                                                                                           capsys):
    """--alone without data.modalities loads the data for its modality list, and that load came before the
    checks that read no data: a method's bad setting (PMR's pase.binning) or a typo in train.optimizer was
    refused only after a full data load. The cheap checks come first now; the plan loads only once they pass
    (and the CLI refuses an unknown method name before either)."""
    from pase.cli import main

    loads = []

    def loader(cfg, *args, **kwargs):
        loads.append(cfg.data.source)
        raise AssertionError("the data was loaded")

    monkeypatch.setattr(compare_mod, "load_bundle", loader)
    out = tmp_path / "cmp"
    for methods, sets, match in (
            (["late_fusion", "pmr"], ["pase.binning=sighn"], r"^pase.binning='sighn' is not one of .* \(method pmr"),
            (["late_fusion"], ["train.optimizer=adamm"], r"^train.optimizer='adamm' is not one of adam, adamw, sgd")):
        with pytest.raises(ConfigError, match=match):
            compare(apply_overrides(Config(), OVERRIDES + sets), methods, [1111], out, alone=True)
        assert loads == [] and not out.exists()
    assert main(["compare", "--alone", "--methods", "late_fusion,pmrr", "--seeds", "1", "--out", str(out)]) == 2
    assert "unknown method 'pmrr'; did you mean 'pmr'?" in capsys.readouterr().err
    assert loads == [] and not out.exists()
    # the corrected command plans the references from the data (its one load here), then goes on
    with pytest.raises(AssertionError, match="the data was loaded"):
        compare(apply_overrides(Config(), OVERRIDES), ["late_fusion", "pmr"], [1111], out, alone=True)
    assert loads == ["synthetic"]


def test_a_regression_loss_on_classification_labels_is_refused_before_anything_is_written(tmp_path,
                                                                                         runs_about_to_start):
    """train.loss=l1 on a source whose labels are classes (IEMOCAP, told by the label file's name, nothing read)
    failed every run as its method was built, after config.yaml was saved; Method.check_config, which the
    method's build runs, is run for every method up front with the kind the source tells."""
    out = tmp_path / "cmp"
    sets = ["data.source=gcnet", f"data.options.label_path={tmp_path / 'IEMOCAP_features_raw_4way.pkl'}"]
    with pytest.raises(ConfigError, match=r"^train.loss='l1' is a regression loss, but this data's targets are "
                                          r"classification: use train.loss=auto \(cross-entropy\) \(nothing was "
                                          r"written\)$"):
        compare(apply_overrides(Config(), sets + ["train.loss=l1"]), ["late_fusion", "agm"], [1111], out,
                diagnose=False)
    assert not out.exists()
    with pytest.raises(runs_about_to_start):  # the default loss goes ahead (the data is read by the runs)
        compare(apply_overrides(Config(), sets), ["late_fusion", "agm"], [1111], out, diagnose=False)


def test_up_front_checks_take_plug_in_methods_and_sources_as_they_are(tmp_path, monkeypatch):
    """check_methods_can_start called check_config on every registered method: a plug-in method registered as
    a factory function stopped compare and crossval with AttributeError; OGM-GE's one-modality check read any
    source's data.options.modalities as a list of names: a plug-in source's count gave TypeError (a review).
    A method's own check names it; a check every method shares names none."""
    from pase.evaluation.compare import _chosen_modalities, check_methods_can_start
    from pase.methods.base import METHODS, LateFusion, Method

    class Picky(Method):
        @classmethod
        def check_config(cls, cfg, task_kind=None):
            super().check_config(cfg, task_kind)
            if cfg.train.lr > 0.5:
                raise ValueError(f"train.lr={cfg.train.lr} is too large for picky")

    monkeypatch.setitem(METHODS._items, "factory_lf", lambda cfg, task, model: LateFusion(cfg, task, model))
    monkeypatch.setitem(METHODS._items, "picky", Picky)
    cfg = Config()
    check_methods_can_start(cfg, ["late_fusion", "factory_lf", "picky"], {})  # no AttributeError
    with pytest.raises(ConfigError, match=r"^train.lr=0.9 is too large for picky \(method picky; nothing was written\)$"):
        check_methods_can_start(apply_overrides(cfg, ["train.lr=0.9"]), ["factory_lf", "picky"], {})
    with pytest.raises(ConfigError, match=r"^train.loss='foo' is not one of auto, l1, mse \(nothing was written\)$"):
        check_methods_can_start(apply_overrides(cfg, ["train.loss=foo"]), ["factory_lf", "picky"], {})
    assert _chosen_modalities(cfg, {"modalities": 3}) is None  # a count: only the data tells
    assert _chosen_modalities(cfg, {"modalities": "text"}) == ["text"]
    assert _chosen_modalities(cfg, {"modalities": ["text", "audio"]}) == ["text", "audio"]


def test_a_filesystem_without_locks_runs_the_comparison_unlocked(tmp_path, flock_unsupported, caplog):
    """Every failure of flock was read as 'another pase compare is running': on a filesystem without locks
    (ENOLCK) compare could never run there (a review). Only a held lock refuses; otherwise a warning."""
    import errno
    import fcntl

    from pase.evaluation.compare import lock_comparison

    monkeypatch = flock_unsupported
    with caplog.at_level("WARNING", logger="pase"):
        assert lock_comparison(tmp_path) is None
    assert "cannot lock it (No locks available); running without a lock" in caplog.text

    def held(fd, op):
        raise BlockingIOError(errno.EWOULDBLOCK, "Resource temporarily unavailable")

    monkeypatch.setattr(fcntl, "flock", held)
    with pytest.raises(ConfigError, match="another pase compare, crossval or report is running in"):
        lock_comparison(tmp_path)


def test_a_second_compare_into_a_running_comparisons_folder_is_refused(tmp_path, monkeypatch, runs_about_to_start):
    """Two compares started into one --out at once: the second (same configuration, other methods and seeds)
    replaced the first's compare.json, trained its runs there and wrote its summaries over the first's (a
    review; reproduced with two pase compare processes). compare holds an exclusive lock on .compare.lock
    while it runs (and removes the file as it ends): a second one is refused with nothing written, and the
    lock of a process that ended blocks nothing (the OS released it; its file is taken over)."""
    import re
    import subprocess
    import sys

    Reached = runs_about_to_start
    out = tmp_path / "cmp"
    cfg = apply_overrides(Config(), OVERRIDES)
    second = []

    def first_runs(jobs, workers, progress):  # the first compare, its runs under way: a second one starts
        if [j.method for j in jobs] != ["late_fusion"]:
            pytest.fail(f"the second compare wrote {(out / 'compare.json').read_text()} and started its runs")
        before = (out / "compare.json").read_bytes()
        with pytest.raises(ConfigError, match=rf"^another pase compare, crossval or report is running in {re.escape(str(out))} \(it "
                                              rf"holds {re.escape(str(out / '.compare.lock'))}\); wait for it to "
                                              r"end, or pass another --out \(nothing was written\)$"):
            compare(cfg, ["agm"], [1112], out, diagnose=False)
        second.append((out / "compare.json").read_bytes() == before and not (out / "runs").exists()
                      and (out / ".compare.lock").is_file())
        raise Reached()

    monkeypatch.setattr(compare_mod, "_run_jobs", first_runs)
    with pytest.raises(Reached):
        compare(cfg, ["late_fusion"], [1111], out, diagnose=False)
    assert second == [True]
    # a process holding the lock, then gone: refused while it lives, then the comparison goes ahead
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
                               "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
                               str(out / ".compare.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(ConfigError, match=r"^another pase compare, crossval or report is running in "):
            compare(cfg, ["agm"], [1112], out, diagnose=False)
    finally:
        holder.kill()
        holder.wait()
    monkeypatch.setattr(compare_mod, "_run_jobs", lambda jobs, workers, progress: second.append("ran"))
    # report.py first: importing it under the stand-in bound `summarize` to it for every later test (review k7)
    monkeypatch.setattr("pase.evaluation.report.write_summary", lambda summary, out: None)
    monkeypatch.setattr(compare_mod, "summarize", lambda *a: {})
    compare(cfg, ["agm"], [1112], out, diagnose=False)
    assert second[-1] == "ran" and json.loads((out / "compare.json").read_text())["methods"] == ["agm"]
    assert not (out / ".compare.lock").exists()  # the dead holder's file was taken over, then removed


def test_ogm_ge_with_one_configured_modality_is_refused_before_anything_is_written(tmp_path, runs_about_to_start):
    """With data.modalities=[text] every OGM-GE run failed at its start (it balances two or more), after
    config.yaml was written and late fusion had trained; the corrected command was then refused as
    another configuration (a review). Refused up front when the modalities are configured."""

    Reached = runs_about_to_start
    out = tmp_path / "cmp"
    one = apply_overrides(Config(), OVERRIDES + ["data.modalities=[text]"])
    with pytest.raises(ConfigError, match=r"^method=ogm_ge balances two or more modalities; this data has one "
                                          r"\(text\): use method=late_fusion \(nothing was written\)$"):
        compare(one, ["late_fusion", "ogm_ge"], [1111], out, diagnose=False)
    assert not out.exists()
    with pytest.raises(Reached):  # late fusion alone on one modality goes ahead
        compare(one, ["late_fusion"], [1111], out, diagnose=False)


@pytest.mark.parametrize("sets, one", [
    (["data.source=mosi_bclstm", "data.options.modalities=[text]"], "text"),
    (["data.source=gcnet", "data.options.label_path=nowhere/CMUMOSI_features_raw_2way.pkl",
      "data.options.features.audio=null", "data.options.features.vision=null"], "text"),
    (["data.source=gcnet", "data.options.label_path=nowhere/IEMOCAP_features_raw_4way.pkl",
      "data.options.features.text=null", "data.options.features.vision=null"], "audio")])
def test_ogm_ge_with_one_modality_chosen_by_the_data_options_is_refused_up_front(tmp_path, sets, one):
    """data.options.modalities (load_bundle's other way to choose modalities) or a GCNet features map leaving
    one modality: late fusion trained, then every OGM-GE run failed at its start (review). Told from the
    configuration, without reading any data (the data files here do not exist)."""
    out = tmp_path / "cmp"
    cfg = apply_overrides(Config(), [o for o in OVERRIDES if not o.startswith("data.")] + sets)
    with pytest.raises(ConfigError, match=rf"^method=ogm_ge balances two or more modalities; this data has one "
                                          rf"\({one}\): use method=late_fusion \(nothing was written\)$"):
        compare(cfg, ["late_fusion", "ogm_ge"], [1111], out, diagnose=False)
    assert not out.exists()


def test_a_comparison_whose_every_run_failed_takes_the_corrected_configuration(tmp_path, caplog):
    """A data option a loader refuses as it loads (data.options.seed=-1) fails every run after config.yaml
    is saved (it needs the data, which compare does not load before its runs); the corrected command was
    then refused as 'another configuration' for good (a review). With no run to keep, it replaces
    config.yaml with a note and trains; once a run finished, another configuration is refused again."""
    import logging

    from pase.config import load_config

    out = tmp_path / "cmp"
    bad = compare(apply_overrides(Config(), OVERRIDES + ["data.options.seed=-1"]), ["late_fusion"], [1111], out,
                  diagnose=False)
    assert [(r["status"], r["error"][:60]) for r in bad["runs"]] == [
        ("failed", "ValueError: data.options.seed=-1 is outside the seed range (")]
    with caplog.at_level(logging.WARNING, logger="pase"):
        res = compare(apply_overrides(Config(), OVERRIDES + ["data.options.seed=0"]), ["late_fusion"], [1111], out,
                      diagnose=False)
    assert [r["status"] for r in res["runs"]] == ["ok"]
    assert any("every run of the comparison there failed, so this configuration replaces it (data.options.seed: "
               "-1 there, 0 now); the failed runs start afresh" in r.getMessage() for r in caplog.records)
    assert load_config(out / "config.yaml").data.options["seed"] == 0
    with pytest.raises(ConfigError, match=r"holds a comparison of another configuration \(data.options.seed: 0 "
                                          r"there, 1 now\)"):
        compare(apply_overrides(Config(), OVERRIDES + ["data.options.seed=1"]), ["late_fusion"], [1111], out,
                diagnose=False)


def test_a_comparison_with_no_run_yet_keeps_its_configuration(tmp_path, runs_about_to_start):
    """A comparison with no run folder yet counted as one whose every run failed, so a second compare of
    another configuration, started while the first one's runs were still loading their data, replaced its
    config.yaml (a review). No run yet is refused as another configuration; once every run there has
    failed (FAILED.txt in each folder), the corrected configuration still replaces it."""
    from pase.config import load_config, save_config

    Reached = runs_about_to_start
    out = tmp_path / "c"
    out.mkdir()
    save_config(apply_overrides(Config(), OVERRIDES + ["data.options.seed=0"]), out / "config.yaml")
    (out / "compare.json").write_text("{}")  # what the first compare writes before its runs start
    other = apply_overrides(Config(), OVERRIDES + ["data.options.seed=1"])
    with pytest.raises(ConfigError, match=r"holds a comparison of another configuration \(data.options.seed: 0 "
                                          r"there, 1 now\)"):
        compare(other, ["late_fusion"], [1111], out, diagnose=False)
    assert load_config(out / "config.yaml").data.options["seed"] == 0
    run = out / "runs" / "late_fusion" / "seed1111"
    run.mkdir(parents=True)
    (run / "FAILED.txt").write_text("ValueError: data.options.seed=0 ...\n")
    with pytest.raises(Reached):  # every run there failed: the corrected configuration is taken
        compare(other, ["late_fusion"], [1111], out, diagnose=False)
    assert load_config(out / "config.yaml").data.options["seed"] == 1


def test_hardware_settings_are_checked_only_when_a_run_will_train(comparison_copy, tmp_path, monkeypatch):
    """The up-front check of the accelerator / devices ran also when every run was finished, so a comparison
    trained on a GPU could not be re-summarised on a machine without one (a review). Lightning's refusal is
    stood in for: a finished comparison is summarised, a new one is refused before anything is written."""
    def no_such_hardware(cfg):
        raise ConfigError("train.accelerator=gpu: Lightning cannot run these on this machine")

    monkeypatch.setattr(compare_mod, "check_trainer_settings", no_such_hardware)
    cfg = apply_overrides(Config(), OVERRIDES)
    summary = compare(cfg, OK_METHODS, SEEDS, comparison_copy, diagnose=False)
    assert summary["reported"] == OK_METHODS
    with pytest.raises(ConfigError, match="Lightning cannot run these"):
        compare(cfg, OK_METHODS, SEEDS, tmp_path / "new", diagnose=False)
    assert not (tmp_path / "new").exists()


def test_an_unreadable_config_of_a_comparison_whose_every_run_failed_is_replaced(tmp_path, caplog):
    """A comparison saved by older code with a pase.* choice its runs all failed on (config.yaml now refused
    as unreadable) could not take the corrected configuration (a review); with every run failed it is
    replaced, with one warning. A comparison with a run that did not fail keeps refusing."""
    import shutil

    import yaml

    from pase.config import to_dict

    cfg = apply_overrides(Config(), OVERRIDES)
    out = tmp_path / "c"
    bad = to_dict(cfg)
    bad["pase"]["shapley_utility"] = "foo"
    run = out / "runs" / "late_fusion" / "seed1111"
    run.mkdir(parents=True)
    (run / "FAILED.txt").write_text("ValueError: unknown utility 'foo'")
    (out / "config.yaml").write_text(yaml.safe_dump(bad))
    (out / "compare.json").write_text("{}")
    keep = tmp_path / "keep"
    shutil.copytree(out, keep)
    (keep / "runs" / "late_fusion" / "seed1111" / "FAILED.txt").unlink()
    with pytest.raises(ConfigError, match="not a readable pase configuration"):
        compare(cfg, ["late_fusion"], [1111], keep, diagnose=False)
    summary = compare(cfg, ["late_fusion"], [1111], out, diagnose=False)
    assert summary["reported"] == ["late_fusion"] and (run / "metrics.json").is_file()
    assert yaml.safe_load((out / "config.yaml").read_text())["pase"]["shapley_utility"] == cfg.pase.shapley_utility
    assert any("every run of the comparison there failed" in r.getMessage() for r in caplog.records)


def test_a_metric_of_exactly_zero_on_a_seed_is_averaged_not_dropped(tmp_path):
    """A seed whose metric is 0.0 (Corr of uncorrelated predictions, an accuracy of 0) is a value:
    mean (0 + 0.2) / 2 = 0.1 over n = 2, and its pair counts in the paired difference."""
    from eval_setup import fake_comparison, mosi_metrics

    out = fake_comparison(tmp_path / "c", {("late_fusion", 1): mosi_metrics(Corr=0.0),
                                           ("late_fusion", 2): mosi_metrics(Corr=0.2),
                                           ("agm", 1): mosi_metrics(Corr=0.1), ("agm", 2): mosi_metrics(Corr=0.4)},
                          [1, 2])
    s = summarize(out)
    assert s["stats"]["late_fusion"]["Corr"]["n"] == 2
    assert s["stats"]["late_fusion"]["Corr"]["mean"] == pytest.approx(0.1)
    assert s["paired"]["agm"]["Corr"]["n"] == 2 and s["paired"]["agm"]["Corr"]["mean"] == pytest.approx(0.15)


def test_failed_and_missing_runs_are_listed_and_a_failed_reference_pairs_nothing(tmp_path):
    """A run whose FAILED.txt holds its error is 'failed', one with no folder at all 'missing'; both
    are listed with their seed. With every reference run failed there is no paired table, and a
    method without a finished run is not reported."""
    from eval_setup import fake_comparison, mosi_metrics

    out = fake_comparison(tmp_path / "c", {("late_fusion", 1): None, ("late_fusion", 2): None,
                                           ("agm", 1): mosi_metrics(), ("pase", 1): None}, [1, 2])
    s = summarize(out, methods=["late_fusion", "agm", "pase"])
    status = {(r["method"], r["seed"]): r["status"] for r in s["runs"]}
    assert status == {("late_fusion", 1): "failed", ("late_fusion", 2): "failed", ("agm", 1): "ok",
                      ("agm", 2): "missing", ("pase", 1): "failed", ("pase", 2): "missing"}
    assert [(f["method"], f["seed"]) for f in s["failed"]] == [("late_fusion", 1), ("late_fusion", 2), ("agm", 2),
                                                               ("pase", 1), ("pase", 2)]
    assert s["failed"][0]["error"] == "RuntimeError: late_fusion | 1 failed"
    assert s["reported"] == ["agm"] and s["paired"] == {}


def test_the_selection_mode_is_that_of_the_runs_monitor(tmp_path):
    """Runs selected on a higher-is-better monitor (train.monitor=Has0_acc_2) were selected at its
    maximum: the summary says mode max, not the protocol default's (MAE: min)."""
    from eval_setup import fake_comparison, mosi_metrics
    from pase.evaluation.report import summary_markdown

    out = fake_comparison(tmp_path / "c", {("late_fusion", 1): mosi_metrics()}, [1], monitor="Has0_acc_2")
    s = summarize(out)
    assert (s["monitor"], s["mode"]) == ("Has0_acc_2", "max")
    assert "best valid/Has0_acc_2, mode max" in summary_markdown(s)


def test_the_saved_reference_pairs_a_re_summarised_comparison(tmp_path):
    """summarize (pase report) of a comparison run with --reference agm pairs against agm, as the
    comparison did, not against late fusion."""
    from eval_setup import fake_comparison, mosi_metrics

    out = fake_comparison(tmp_path / "c", {("late_fusion", 1): mosi_metrics(MAE=0.6), ("agm", 1): mosi_metrics(MAE=0.9)},
                          [1], reference="agm")
    s = summarize(out)
    assert s["reference"] == "agm" and list(s["paired"]) == ["late_fusion"]
    assert s["paired"]["late_fusion"]["MAE"]["mean"] == pytest.approx(0.6 - 0.9)



def test_a_diagnosis_that_failed_after_writing_its_files_feeds_no_condition_rows(tmp_path):
    """A run holding diagnostics.json and robustness.csv and also DIAGNOSE_FAILED.txt (its diagnosis
    failed after them) is listed as a failed diagnosis: its robustness rows are not read into the
    condition tables, those of the diagnosed run are."""
    from eval_setup import fake_comparison, mosi_metrics

    diag = {("pase", s): {"modalities": ["text", "audio"]} for s in (1, 2)}
    out = fake_comparison(tmp_path / "c", {("pase", 1): mosi_metrics(), ("pase", 2): mosi_metrics()}, [1, 2],
                          diagnostics=diag)
    for s in (1, 2):
        (out / "runs" / "pase" / f"seed{s}" / "robustness.csv").write_text(
            "kind,condition,modality,sigma,Has0_acc_2\nmissing,text,,0,0.6\n")
    (out / "runs" / "pase" / "seed2" / "DIAGNOSE_FAILED.txt").write_text("RuntimeError: boom\n")
    s = summarize(out)
    assert [len(r["robustness_rows"]) for r in s["runs"]] == [1, 0]
    assert s["runs"][1]["diagnose_error"] == "RuntimeError: boom"


def test_the_ground_truth_is_renormalised_over_the_compared_modalities(tmp_path):
    """With data.modalities a subset of the benchmark's (text and audio of text 0.5, audio 0.3, vision
    0.2) the truth the r2 shares are held against is 0.5 / 0.8 = 0.625 and 0.3 / 0.8 = 0.375, and the
    errors are share - truth per seed: text 0.6 - 0.625 and 0.65 - 0.625 (mean 0), audio 0.4 - 0.375
    and 0.35 - 0.375 (mean 0), so the largest mean error is 0 and the verdict 'within 0.05'."""
    from eval_setup import fake_comparison, mosi_metrics

    truth = {"text": 0.5, "audio": 0.3, "vision": 0.2}
    shares = {1: {"text": 0.6, "audio": 0.4}, 2: {"text": 0.65, "audio": 0.35}}
    diag = {("pase", s): {"modalities": ["text", "audio"], "ground_truth_shares": truth,
                          "shapley": {"r2": {"shares": shares[s]}}} for s in (1, 2)}
    out = fake_comparison(tmp_path / "c", {("pase", 1): mosi_metrics(), ("pase", 2): mosi_metrics()}, [1, 2],
                          diagnostics=diag)
    st = summarize(out)["share_truth"]
    assert st["truth"] == pytest.approx({"text": 0.625, "audio": 0.375})
    assert st["error"]["pase"]["text"]["mean"] == pytest.approx(0.0, abs=1e-12)
    assert st["max_abs_error"]["pase"] == pytest.approx(0.0, abs=1e-12) and st["within_0.05"]["pase"] is True


def test_a_failed_diagnosis_is_left_out_of_the_diagnostic_tables_even_with_its_diagnostics_file(tmp_path):
    """A run with DIAGNOSE_FAILED.txt is listed as left out of the diagnostic tables; a diagnostics.json beside
    it still entered the share means. Seed 1's share error is text 0.6 - 0.5 = +0.1; seed 2's (failed) would
    pull the mean to (0.1 + 0.3) / 2 = 0.2."""
    from eval_setup import fake_comparison, mosi_metrics

    truth = {"text": 0.5, "audio": 0.5}
    shares = {1: {"text": 0.6, "audio": 0.4}, 2: {"text": 0.8, "audio": 0.2}}
    diag = {("pase", s): {"modalities": ["text", "audio"], "ground_truth_shares": truth,
                          "shapley": {"r2": {"shares": shares[s]}}} for s in (1, 2)}
    out = fake_comparison(tmp_path / "c", {("pase", 1): mosi_metrics(), ("pase", 2): mosi_metrics()}, [1, 2],
                          diagnostics=diag)
    (out / "runs" / "pase" / "seed2" / "DIAGNOSE_FAILED.txt").write_text("RuntimeError: probe failed\n")
    s = summarize(out)
    err = s["share_truth"]["error"]["pase"]["text"]
    assert err["n"] == 1 and err["mean"] == pytest.approx(0.1)
    assert s["shares"]["r2"]["pase"]["text"]["mean"] == pytest.approx(0.6)
    assert [r["diagnose_error"] for r in s["runs"]] == ["", "RuntimeError: probe failed"]


def test_a_run_trained_longer_after_its_diagnosis_is_listed_as_not_diagnosed(tmp_path, capsys):
    """pase train --resume of a finished run sets its diagnosis aside (diagnostics.epochs2.json); pase report
    then averaged every diagnostic table over the other seed and said nothing (a review). The run is listed as
    not diagnosed, with what to run, in the failed-diagnosis table and on stderr; in a diagnosed comparison a
    run whose diagnosis was cut short is too, and a --no-diagnose comparison lists none."""
    from eval_setup import fake_comparison, mosi_metrics
    from pase.cli import main

    diag = {("pase", s): {"modalities": ["text", "audio"], "shapley": {"neg_loss": {"shares": shares}}}
            for s, shares in ((1, {"text": 0.6, "audio": 0.4}), (2, {"text": 0.8, "audio": 0.2}))}
    out = fake_comparison(tmp_path / "c", {("pase", 1): mosi_metrics(), ("pase", 2): mosi_metrics()}, [1, 2],
                          diagnostics=diag)
    run = out / "runs" / "pase" / "seed2"
    (run / "diagnostics.json").rename(run / "diagnostics.epochs2.json")
    s = summarize(out)
    assert s["shares"]["neg_loss"]["pase"]["text"]["n"] == 1
    err = s["runs"][1]["diagnose_error"]
    assert err.startswith("not diagnosed: trained longer with pase train --resume after its diagnosis (kept as "
                          "diagnostics.epochs2.json)") and f"rerun pase compare --out {out} " in err, err
    assert main(["report", str(out)]) == 0
    line = next(x for x in capsys.readouterr().err.splitlines() if "diagnostics" in x)
    assert line == f"pase report: diagnostics failed or missing for 1 run(s), for example pase seed 2: {err}"
    failed = (out / "report.md").read_text().split("## Failed diagnoses")[1]
    assert "| pase | 2 | not diagnosed: trained longer" in failed
    (run / "diagnostics.epochs2.json").unlink()  # a diagnosis cut short: nothing set aside
    meta = json.loads((out / "compare.json").read_text())
    (out / "compare.json").write_text(json.dumps({**meta, "diagnose": True}))
    assert summarize(out)["runs"][1]["diagnose_error"].startswith("not diagnosed (no diagnostics.json")
    (out / "compare.json").write_text(json.dumps({**meta, "diagnose": False}))
    assert [r["diagnose_error"] for r in summarize(out)["runs"]] == ["", ""]


def test_the_share_verdict_is_on_the_largest_absolute_mean_error(tmp_path):
    """Truth text 0.5, audio 0.3, vision 0.2. Method a's shares 0.46, 0.33, 0.21 err by -0.04, +0.03,
    +0.01: its largest absolute error is 0.04 (the negative one), within 0.05. Method b's 0.44, 0.35,
    0.21 err by -0.06, +0.05, +0.01: 0.06, not within."""
    from eval_setup import fake_comparison, mosi_metrics

    truth = {"text": 0.5, "audio": 0.3, "vision": 0.2}
    shares = {"a": {"text": 0.46, "audio": 0.33, "vision": 0.21}, "b": {"text": 0.44, "audio": 0.35, "vision": 0.21}}
    diag = {(m, 1): {"modalities": ["text", "audio", "vision"], "ground_truth_shares": truth,
                     "shapley": {"r2": {"shares": shares[m]}}} for m in ("a", "b")}
    out = fake_comparison(tmp_path / "c", {("a", 1): mosi_metrics(), ("b", 1): mosi_metrics()}, [1], diagnostics=diag)
    st = summarize(out)["share_truth"]
    assert st["max_abs_error"] == pytest.approx({"a": 0.04, "b": 0.06})
    assert st["within_0.05"] == {"a": True, "b": False}


def test_only_the_failed_references_of_the_compared_seeds_are_listed(tmp_path):
    """A leftover alone/<m>/seed<s>/FAILED.txt of a seed this comparison does not cover (an earlier
    --seeds) is not listed among its failed unimodal references; one of a compared seed is."""
    from eval_setup import fake_comparison, mosi_metrics

    out = fake_comparison(tmp_path / "c", {("late_fusion", 1): mosi_metrics()}, [1])
    for seed in (1, 2):
        ref = out / "alone" / "text" / f"seed{seed}"
        ref.mkdir(parents=True)
        (ref / "FAILED.txt").write_text(f"RuntimeError: seed {seed}\n")
    assert summarize(out)["failed_alone"] == [{"modality": "text", "seed": "1", "error": "RuntimeError: seed 1"}]


def test_an_interrupted_pool_counts_only_the_runs_that_finished(tmp_path, monkeypatch):
    """Of three runs handed to the pool, one finished, one was interrupted (its RunInterrupted) and
    one never started (cancelled): the message says 1 of 3, not every future that is done."""
    from concurrent.futures import Future

    from pase.errors import RunInterrupted

    class Queued(Future):
        def cancel(self):  # as the executor does for a queued job: cancelled and its waiters told at once
            return super().cancel() and not self.set_running_or_notify_cancel()  # (a plain Future's waiters
            # wait until then: the stop's grace and then its 120 s wait ran out, 2 minutes of the suite)

    class Pool:
        _processes = {}

        def __init__(self, *a, **k):
            self.n = 0

        def submit(self, fn, job):
            self.n += 1
            fut = Queued()
            if self.n == 1:
                fut.set_result({"label": job.label, "status": "trained", "error": "", "diagnose_error": ""})
            elif self.n == 2:
                fut.set_exception(RunInterrupted("training interrupted by SIGINT in epoch 1"))
            return fut  # the third stays pending: cancelled by the stop

        def shutdown(self, wait=True, cancel_futures=False):
            pass

    monkeypatch.setattr(compare_mod, "ProcessPoolExecutor", Pool)
    monkeypatch.setattr(compare_mod, "INTERRUPT_GRACE_S", 0.1)
    jobs = [compare_mod._Job("run", "late_fusion", s, str(tmp_path / f"seed{s}"), Config(), False, ()) for s in (1, 2, 3)]
    with pytest.raises(RunInterrupted, match=r"comparison interrupted by SIGINT after 1 of 3 runs"):
        compare_mod._run_jobs(jobs, 2, None)


def test_progress_counts_the_finished_runs_from_one(tmp_path, monkeypatch):
    """One line per finished run: '[k/N] <label>: <status>', k from 1 to N, with the error of a failed run."""
    def execute(job):
        failed = job.seed == 2
        return {"label": job.label, "status": "failed" if failed else "trained",
                "error": "RuntimeError: boom" if failed else "", "diagnose_error": ""}

    monkeypatch.setattr(compare_mod, "_execute", execute)
    jobs = [compare_mod._Job("run", "agm", s, str(tmp_path / f"seed{s}"), Config(), False, ()) for s in (1, 2)]
    lines = []
    compare_mod._run_jobs(jobs, 1, lines.append)
    assert lines == ["[1/2] agm seed 1: trained", "[2/2] agm seed 2: failed: RuntimeError: boom"]


def test_a_run_of_another_configuration_is_left_out_of_every_table_and_named(tmp_path, capsys):
    """pase compare refuses a folder holding a run trained longer (pase train --resume --set
    train.max_epochs=3) before it trains; pase report averaged that 3-epoch seed with the 2-epoch ones
    without a word (a review). The run is left out of every table, listed with the difference and
    what to do, and counted on stderr; runs of the comparison's configuration (another method and seed
    are not differences) stay in."""
    import dataclasses

    from eval_setup import fake_comparison, mosi_metrics
    from pase.cli import main
    from pase.config import Config, save_config

    diag = {("pase", s): {"modalities": ["text", "audio"], "shapley": {"neg_loss": {"shares": {"text": t, "audio": 1 - t}}}}
            for s, t in ((1, 0.6), (2, 0.8))}
    out = fake_comparison(tmp_path / "c", {("pase", 1): mosi_metrics(Has0_acc_2=0.7), ("pase", 2): mosi_metrics(Has0_acc_2=0.9)},
                          [1, 2], diagnostics=diag)
    base = dataclasses.replace(Config(), train=dataclasses.replace(Config().train, max_epochs=2))
    save_config(base, out / "config.yaml")
    for s in (1, 2):
        run_cfg = dataclasses.replace(base, method="pase", train=dataclasses.replace(base.train, seed=s))
        save_config(run_cfg, out / "runs" / "pase" / f"seed{s}" / "config.yaml")
    s = summarize(out)
    assert [r["status"] for r in s["runs"]] == ["ok", "ok"] and s["stats"]["pase"]["Has0_acc_2"]["n"] == 2
    longer = dataclasses.replace(base, method="pase", train=dataclasses.replace(base.train, seed=2, max_epochs=3))
    save_config(longer, out / "runs" / "pase" / "seed2" / "config.yaml")
    s = summarize(out)
    assert [r["status"] for r in s["runs"]] == ["ok", "other configuration"]
    assert s["stats"]["pase"]["Has0_acc_2"]["mean"] == pytest.approx(0.7) and s["stats"]["pase"]["Has0_acc_2"]["n"] == 1
    assert s["shares"]["neg_loss"]["pase"]["text"]["n"] == 1
    err = s["failed"][0]["error"]
    assert err.startswith(f"trained with another configuration than the comparison's {out / 'config.yaml'} "
                          "(train.max_epochs: 3 in this run, 2 in the comparison: trained longer") and "move the run folder out of runs/" in err, err
    assert main(["report", str(out)]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert any(x.startswith("pase report: 1 run(s) left out of the tables (1 other configuration), for example pase "
                            "seed 2: trained with another configuration") for x in lines), lines
    assert "| pase | 2 | trained with another configuration" in (out / "report.md").read_text()
    # a comparison config.yaml (or a run's) this code cannot read is no reason to refuse the report: not compared
    run_yaml = out / "runs" / "pase" / "seed2" / "config.yaml"
    for bad in (out / "config.yaml", run_yaml):
        kept = bad.read_text()
        bad.write_text("train: {no_such_key: 1}\n")
        assert [r["status"] for r in summarize(out)["runs"]] == ["ok", "ok"], bad
        bad.write_text(kept)


class _SignalInFinalizer:
    """Sends SIGINT (or ``name``) to this process from its ``__del__``, as a Ctrl-C that lands while a finished
    run's Trainer is collected (Lightning's ``Profiler.__del__``): the handler's KeyboardInterrupt is raised
    inside the finalizer, which Python prints as "Exception ignored" and drops."""

    def __init__(self, name="SIGINT"):
        self.name = name

    def __del__(self):
        import signal

        signal.raise_signal(getattr(signal, self.name))


@pytest.mark.parametrize("stage, sig, status", [("train", "SIGINT", 130), ("diagnose", "SIGINT", 130),
                                               ("diagnose", "SIGTERM", 143)])
def test_a_signal_a_finalizer_drops_still_stops_the_comparison(tmp_path, monkeypatch, capsys, stage, sig, status):
    """Ctrl-C while a finished run was wrapped up (its training, or its diagnosis) was lost: pase compare
    trained the next run and exited 0 after a traceback (a review). The signal is recorded and stops the
    comparison at the next safe point: the one interruption line, status 130, the next run not started."""
    from pase.cli import main
    from tiny import TINY

    real = getattr(compare_mod, stage)

    def then_collected(*a, **k):
        res = real(*a, **k)
        _SignalInFinalizer(sig)  # collected at once
        return res

    monkeypatch.setattr(compare_mod, stage, then_collected)
    out = tmp_path / "cmp"
    sets = [a for o in TINY + ["train.max_epochs=1"] for a in ("--set", o)]
    rc = main(["compare", *sets, "--methods", "late_fusion", "--seeds", "1111,1112", "--out", str(out),
               "--noise-levels", "0"])
    err = capsys.readouterr().err
    assert rc == status
    assert err.startswith(f"pase: interrupted: comparison interrupted by {sig} after late_fusion seed 1111 was "
                          "trained; run the same pase compare command again") and len(err.splitlines()) == 1
    assert (out / "runs" / "late_fusion" / "seed1111" / "metrics.json").is_file()
    # after its training: its diagnosis is left for the next call
    assert (out / "runs" / "late_fusion" / "seed1111" / "diagnostics.json").is_file() == (stage == "diagnose")
    assert not (out / "runs" / "late_fusion" / "seed1112").exists()  # not started


def test_a_signal_a_finalizer_drops_in_the_pools_parent_stops_the_pool(tmp_path, monkeypatch):
    """With --jobs N the parent's own Ctrl-C could be dropped the same way (here in the progress line of the
    first finished run): it stops the pool as a Ctrl-C does, instead of waiting for every run."""
    from concurrent.futures import Future

    from pase.errors import RunInterrupted

    class Pool:
        _processes = {}

        def __init__(self, *a, **k):
            pass

        def submit(self, fn, job):
            fut = Future()
            fut.set_result({"label": job.label, "status": "trained", "error": "", "diagnose_error": ""})
            return fut

        def shutdown(self, wait=True, cancel_futures=False):
            pass

    monkeypatch.setattr(compare_mod, "ProcessPoolExecutor", Pool)
    lines = []

    def progress(line):
        lines.append(line)
        _SignalInFinalizer()

    jobs = [compare_mod._Job("run", "late_fusion", s, str(tmp_path / f"seed{s}"), Config(), False, ()) for s in (1, 2, 3)]
    with pytest.raises(RunInterrupted, match=r"comparison interrupted by SIGINT after 3 of 3 runs"):
        compare_mod._run_jobs(jobs, 2, progress)
    assert len(lines) == 1


def test_progress_says_what_a_call_did_to_a_run_it_did_not_train(tmp_path):
    """A call that only diagnosed a finished run (after a --no-diagnose call), or probed an --alone reference,
    printed "skipped" for it (a review): "diagnosed" and "probed" now, "skipped" only when nothing was done."""
    from tiny import TINY

    cfg = apply_overrides(Config(), TINY + ["train.max_epochs=1", "data.modalities=[text,audio]"])
    out = tmp_path / "cmp"

    def lines(**kw):
        got = []
        compare(cfg, ["late_fusion"], [1111], out, noise_levels=[0], progress=got.append, **kw)
        return got

    assert lines(diagnose=False) == ["[1/1] late_fusion seed 1111: trained"]
    assert lines() == ["[1/1] late_fusion seed 1111: diagnosed"]
    assert (out / "runs" / "late_fusion" / "seed1111" / "diagnostics.json").is_file()
    assert lines() == ["[1/1] late_fusion seed 1111: skipped"]
    assert lines(alone=True)[1:] == ["[2/3] text alone seed 1111: trained", "[3/3] audio alone seed 1111: trained"]
    (out / "alone" / "audio" / "seed1111" / "probe.json").unlink()
    assert lines(alone=True) == ["[1/3] late_fusion seed 1111: skipped", "[2/3] text alone seed 1111: skipped",
                                 "[3/3] audio alone seed 1111: probed"]
    assert (out / "alone" / "audio" / "seed1111" / "probe.json").is_file()
