"""Exact resume: a run killed with SIGKILL mid-epoch and resumed equals an uninterrupted run.

The orders of the loaders are functions of (seed, epoch) and everything else that evolves
(model, optimiser, prototype banks, SGM buffers, random states, callback states, best value,
``log.csv`` rows) is in ``last.ckpt``, saved at the end of every epoch. On CPU with
``deterministic=True`` the resumed run's ``metrics.json`` metrics, ``log.csv`` and final
checkpoint are bit for bit those of the uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from pase.config import Config, ConfigError, apply_overrides
from pase.training import RunDirError, datamodule, train
from pase.training.datamodule import EpochSampler, GroupBatchSampler
from tiny import TINY, as_an_older_pase_saved

#: PaSE switches to SGM after epoch 0, so the kill lands in phase 2 with live SGM state
SETS = ["data.options.sizes=[384,64,64]", "train.max_epochs=20", "train.early_stop_patience=100",
        "train.progress_bar=false", "model.d_model=16", "model.hidden=32", "model.head_hidden=16",
        "method=pase", "pase.switch_max_epoch=1"]
TIMEOUT = 300
#: one intra-op thread per process: the runs share 2 cores, and busy-waiting OpenMP threads of
#: concurrent processes slow small models down tenfold (both runs use the same setting)
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def _pase(*args):
    cmd = [sys.executable, "-m", "pase.cli", "train", "--quiet", *args]
    return cmd + [x for s in SETS for x in ("--set", s)] if "--resume" not in args else cmd


def _default_sigint() -> None:
    """In the child before it runs: SIGINT as a terminal delivers it. A test session started in the
    background of a non-interactive shell (``pytest ... &``) ignores SIGINT, and a child inherits
    that, so the Ctrl-C tests saw a run finish (exit 0) or a comparison never stop."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _saved_epoch(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)["epoch"]
    except (FileNotFoundError, RuntimeError, EOFError):
        return -1


def _kill_mid_epoch(proc, run, min_epoch=1):
    """Wait until last.ckpt holds epoch >= ``min_epoch``, then SIGKILL a fraction of an epoch later."""
    last, t0, times = run / "checkpoints" / "last.ckpt", time.time(), {}
    while time.time() - t0 < TIMEOUT and proc.poll() is None:
        epoch = _saved_epoch(last)
        times.setdefault(epoch, time.time())
        if epoch >= min_epoch:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed; give it more epochs"
    first = min(times)  # on an idle machine an epoch can pass between two polls: estimate from what was seen
    per_epoch = (times[epoch] - times[first]) / max(epoch - first, 1)
    time.sleep(0.3 * per_epoch)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return _saved_epoch(last)


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path, env=ENV)
    ref = subprocess.Popen(_pase("--out", str(full)), **quiet)
    victim = subprocess.Popen(_pase("--out", str(killed)), **quiet)
    saved = _kill_mid_epoch(victim, killed)
    assert victim.returncode == -signal.SIGKILL and saved >= 1
    assert not (killed / "metrics.json").exists()
    resumed = subprocess.run(_pase("--resume", str(killed)), capture_output=True, text=True, cwd=tmp_path,
                             env=ENV, timeout=TIMEOUT)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert ref.wait(timeout=TIMEOUT) == 0, ref.stderr.read().decode()[-2000:]

    a, b = (json.loads((d / "metrics.json").read_text()) for d in (full, killed))
    for key in ("valid", "test", "best_epoch", "epochs_run", "diagnostics", "checkpoint"):
        assert a[key] == b[key], f"{key}: uninterrupted {a[key]} != resumed {b[key]} (killed after epoch {saved})"
    assert (full / "log.csv").read_text() == (killed / "log.csv").read_text()
    ca, cb = (torch.load(d / "checkpoints" / "last.ckpt", weights_only=True) for d in (full, killed))
    assert ca["epoch"] == cb["epoch"] and ca["global_step"] == cb["global_step"]
    for k, v in ca["state_dict"].items():  # model, prototype banks, SGM buffers
        assert torch.equal(v, cb["state_dict"][k]), k
    for sa, sb in zip(ca["optimizer_states"][0]["state"].values(), cb["optimizer_states"][0]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not list(killed.rglob(".*.tmp")), "a temporary file survived the resume"


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_training_with_one_line_and_a_resumable_folder(tmp_path, sig, code):
    """Lightning turns Ctrl-C into exit 1 and SIGTERM into exit 0, both silent: pase names the
    signal and the resume command, and exits as a shell expects (128 + signal)."""
    run = tmp_path / "run"
    proc = subprocess.Popen(_pase("--out", str(run)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=_default_sigint,
                            cwd=tmp_path, env=ENV, text=True)
    last, t0 = run / "checkpoints" / "last.ckpt", time.time()
    while _saved_epoch(last) < 0 and proc.poll() is None and time.time() - t0 < TIMEOUT:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted; give it more epochs"
    proc.send_signal(sig)
    err = proc.communicate(timeout=TIMEOUT)[1]
    lines = [line for line in err.splitlines() if line.startswith("pase:")]
    assert proc.returncode == code, err[-2000:]
    assert len(lines) == 1 and lines[0].startswith(f"pase: interrupted: training interrupted by {sig.name}"), err[-2000:]
    assert lines[0].endswith(f"continue with pase train --resume {run}")
    assert not (run / "metrics.json").exists() and _saved_epoch(last) >= 0


def test_resuming_a_finished_early_stopped_run_trains_no_more(tmp_path):
    """Killed after its stopping epoch (during the final test: no metrics.json yet), a run resumes to the same end."""
    cfg = apply_overrides(Config(), TINY + ["train.max_epochs=40", "train.early_stop_patience=1", "train.lr=0.01"])
    first = train(cfg, tmp_path / "run", quiet=True)
    log = (tmp_path / "run" / "log.csv").read_text()
    assert first["epochs_run"] < 40, "the run should have stopped early"
    (tmp_path / "run" / "metrics.json").unlink()  # the kill came before metrics.json was written
    again = train(cfg, tmp_path / "run", resume=True, quiet=True)
    assert (again["epochs_run"], again["test"], again["valid"]) == (first["epochs_run"], first["test"], first["valid"])
    assert (tmp_path / "run" / "log.csv").read_text() == log


def test_a_finished_run_is_not_resumed_and_left_as_it_was(tmp_path):
    run = tmp_path / "run"
    cfg = apply_overrides(Config(), TINY + ["train.max_epochs=2"])
    train(cfg, run, quiet=True)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(RunDirError, match=r"is a finished run \(2 epochs; train.max_epochs=2 is reached"):
        train(cfg, run, resume=True, quiet=True)
    with pytest.raises(ConfigError, match=r"another configuration \(train.lr: 0.001 there, 0.5 now\)"):
        train(apply_overrides(cfg, ["train.lr=0.5"]), run, resume=True, quiet=True)
    with pytest.raises(ConfigError, match="train.max_epochs=1, but .* has already trained 2 epochs"):
        train(apply_overrides(cfg, ["train.max_epochs=1"]), run, resume=True, quiet=True)
    with pytest.raises(ValueError, match="no_such_strategy"):  # a resumable setting the trainer refuses
        train(apply_overrides(cfg, ["train.max_epochs=4", "train.strategy=no_such_strategy"]), run, resume=True,
              quiet=True)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_finished_run_without_its_last_checkpoint_is_not_trained_again(tmp_path):
    run = tmp_path / "run"
    cfg = apply_overrides(Config(), TINY + ["train.max_epochs=2"])
    train(cfg, run, quiet=True)
    (run / "checkpoints" / "last.ckpt").unlink()  # deleted to save disk
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(RunDirError, match=r"holds a finished run \(metrics.json\) but no checkpoints/last.ckpt"):
        train(apply_overrides(cfg, ["train.max_epochs=4"]), run, resume=True, quiet=True)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_resume_follows_the_checkpoint_not_an_edited_config_and_refusing_removes_nothing(tmp_path):
    """config.yaml edited by hand after the run: the checkpoint's own configuration decides, and a
    refused resume leaves every file (partial writes included) and metrics.json where they were."""
    run = tmp_path / "run"
    cfg = apply_overrides(Config(), TINY + ["train.max_epochs=2"])
    train(cfg, run, quiet=True)
    edited = (run / "config.yaml").read_text().replace("lr: 0.001", "lr: 0.5")
    assert edited != (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(edited)
    (run / ".metrics.json.abc.tmp").write_text("a write of another process")
    (run / "checkpoints" / ".last.ckpt.xyz.tmp").write_text("a write of another process")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    longer = apply_overrides(cfg, ["train.lr=0.5", "train.max_epochs=4"])  # what the CLI reads from config.yaml
    with pytest.raises(ConfigError, match=r"last.ckpt was trained with another configuration .*"
                                          r"\(train.lr: 0.001 there, 0.5 now\)"):
        train(longer, run, resume=True, quiet=True)
    with pytest.raises(ConfigError, match=r"another configuration \(model.d_model"):
        train(apply_overrides(longer, ["model.d_model=8"]), run, resume=True, quiet=True)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_run_configured_with_tuples_in_python_resumes_from_its_config_yaml(tmp_path):
    """The checkpoint keeps the tuple, config.yaml a list: the same configuration."""
    from pase.config import load_config

    run = tmp_path / "run"
    sets = [s for s in TINY if not s.startswith("data.options.sizes")] + ["train.max_epochs=1"]
    cfg = apply_overrides(Config(), sets)
    cfg = cfg.__class__(**{**cfg.__dict__, "data": cfg.data.__class__(
        **{**cfg.data.__dict__, "options": {"sizes": (192, 64, 64)}})})
    train(cfg, run, quiet=True)
    again = train(load_config(run / "config.yaml", ["train.max_epochs=2"]), run, resume=True, quiet=True)
    assert again["epochs_run"] == 2


def test_a_checkpoint_that_does_not_fit_the_data_is_refused_before_anything_moves(tmp_path):
    run = tmp_path / "run"
    cfg = apply_overrides(Config(), TINY + ["train.max_epochs=2"])
    train(cfg, run, quiet=True)
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    key = next(k for k in state["state_dict"] if k.startswith("model.encoders.audio") and k.endswith("weight"))
    state["state_dict"][key] = state["state_dict"][key][:, :-1]  # as if the audio features lost a column
    torch.save(state, run / "checkpoints" / "last.ckpt")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match=r"last.ckpt does not fit the model .* has the data changed"):
        train(apply_overrides(cfg, ["train.max_epochs=4"]), run, resume=True, quiet=True)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_run_folder_another_process_is_writing_is_refused(tmp_path):
    """Two resumes of one folder (or two new runs into it) at once: the second stops at the first write."""
    fcntl = pytest.importorskip("fcntl")
    run = tmp_path / "run"
    cfg = apply_overrides(Config(), TINY + ["train.max_epochs=1"])
    train(cfg, run, quiet=True)
    (run / ".log.csv.a1b2c3.tmp").write_text("another process's write in flight")  # pase's atomic-write name
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with open(run / ".lock", "a") as other:  # the other process's lock
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RunDirError, match=r"another process is writing .*run"):
            train(apply_overrides(cfg, ["train.max_epochs=2"]), run, resume=True, quiet=True)
        assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
        (tmp_path / "new").mkdir()
        (tmp_path / "new" / ".lock").touch()
        with open(tmp_path / "new" / ".lock", "a") as other_new:
            fcntl.flock(other_new, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with pytest.raises(RunDirError, match="another process is writing"):
                train(cfg, tmp_path / "new", quiet=True)
        assert [p.name for p in (tmp_path / "new").iterdir()] == [".lock"]
    longer = train(apply_overrides(cfg, ["train.max_epochs=2"]), run, resume=True, quiet=True)  # released
    assert longer["epochs_run"] == 2 and not (run / ".log.csv.a1b2c3.tmp").exists()
    assert train(cfg, tmp_path / "new", quiet=True)["epochs_run"] == 1  # a folder holding only a lock is free


def test_a_resume_whose_folder_changed_after_its_checks_stops(tmp_path, monkeypatch):
    """Another process finished an epoch between this resume's checks and its lock: stop, change nothing."""
    import pase.training.run as run_mod

    run = tmp_path / "run"
    cfg = apply_overrides(Config(), TINY + ["train.max_epochs=1"])
    train(cfg, run, quiet=True)
    lock = run_mod.lock_run

    def late_lock(out):  # the other process's write lands just before this one locks
        os.utime(run / "checkpoints" / "last.ckpt", ns=(1, 1))
        return lock(out)

    monkeypatch.setattr(run_mod, "lock_run", late_lock)
    metrics = (run / "metrics.json").read_bytes()
    with pytest.raises(RunDirError, match="changed while this resume was starting"):
        train(apply_overrides(cfg, ["train.max_epochs=2"]), run, resume=True, quiet=True)
    assert (run / "metrics.json").read_bytes() == metrics and not (run / "metrics.epochs1.json").exists()


def test_a_relative_run_folder_names_its_checkpoint_relative(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = train(apply_overrides(Config(), TINY + ["train.max_epochs=1"]), "runs/a", quiet=True)
    assert result["checkpoint"] == "checkpoints/best.ckpt"
    assert json.loads((tmp_path / "runs" / "a" / "metrics.json").read_text())["checkpoint"] == "checkpoints/best.ckpt"


def test_a_moved_run_trained_longer_equals_one_long_run(tmp_path):
    """Lightning keeps absolute checkpoint paths: a moved folder must still select and test its own best."""
    sets = TINY + ["train.early_stop_patience=100", "train.lr=0.01"]
    straight = train(apply_overrides(Config(), sets + ["train.max_epochs=4"]), tmp_path / "straight", quiet=True)
    short = train(apply_overrides(Config(), sets + ["train.max_epochs=2"]), tmp_path / "a", quiet=True)
    (tmp_path / "a").rename(tmp_path / "b")
    longer = train(apply_overrides(Config(), sets + ["train.max_epochs=4"]), tmp_path / "b", resume=True, quiet=True)
    assert straight["best_epoch"] >= 2, "pick settings whose best epoch comes after the move"
    for key in ("best_epoch", "epochs_run", "valid", "test"):
        assert longer[key] == straight[key], key
    assert longer["checkpoint"] == "checkpoints/best.ckpt"  # inside the moved folder
    assert (tmp_path / "b" / "log.csv").read_text() == (tmp_path / "straight" / "log.csv").read_text()
    kept = json.loads((tmp_path / "b" / "metrics.epochs2.json").read_text())
    assert kept["test"] == short["test"]  # the finished run's results are kept, not overwritten
    # ... and so is the model they describe: the longer run replaced best.ckpt
    assert kept["checkpoint"] == "checkpoints/best.epochs2.ckpt"
    assert longer["best_epoch"] != short["best_epoch"], "pick settings whose best.ckpt changes"
    from pase.training import evaluate
    again = evaluate(tmp_path / "b" / kept["checkpoint"])
    assert again["valid"] == pytest.approx(short["valid"]) and again["test"] == pytest.approx(short["test"])


def test_training_longer_sets_aside_the_diagnosis_and_finishes_an_interrupted_keep(tmp_path):
    """The run folder's diagnosis describes the replaced model: it is set aside with metrics.json.
    A copy of the selected checkpoint left by an interrupted keep is finished, not refused; a
    foreign file of that name is refused and nothing moves."""
    import shutil

    sets = TINY + ["train.early_stop_patience=100"]
    run = tmp_path / "r"
    train(apply_overrides(Config(), sets + ["train.max_epochs=1"]), run, quiet=True)
    (run / "diagnostics.json").write_text('{"of": "the one-epoch model"}')
    (run / "robustness.csv").write_text("a,b\n")
    copy = run / "checkpoints" / "best.epochs1.ckpt"
    copy.write_bytes(b"somebody's file")
    longer = apply_overrides(Config(), sets + ["train.max_epochs=2"])
    with pytest.raises(RunDirError, match="best.epochs1.ckpt exists; move it aside"):
        train(longer, run, resume=True, quiet=True)
    assert (run / "metrics.json").is_file() and (run / "diagnostics.json").is_file()
    shutil.copy2(run / "checkpoints" / "best.ckpt", copy)  # as an interrupted keep left it
    result = train(longer, run, resume=True, quiet=True)
    assert result["epochs_run"] == 2 and not (run / "diagnostics.json").exists()
    assert (run / "diagnostics.epochs1.json").read_text() == '{"of": "the one-epoch model"}'
    assert (run / "robustness.epochs1.csv").is_file()
    assert json.loads((run / "metrics.epochs1.json").read_text())["checkpoint"] == "checkpoints/best.epochs1.ckpt"


def test_a_resume_that_changes_where_it_trains_keeps_the_config_its_earlier_epochs_ran_with(tmp_path):
    """A resume on another number of devices (under DDP: another global batch) rewrote config.yaml, and nothing
    in the folder said that the earlier epochs ran otherwise (a review): the config.yaml they ran with is kept as
    config.epochs<N>.yaml. A resume that changes none of those settings keeps none; one kept stays."""
    import yaml

    sets = TINY + ["train.early_stop_patience=100"]
    run = tmp_path / "r"
    train(apply_overrides(Config(), sets + ["train.max_epochs=1", "train.devices=1"]), run, quiet=True)
    before = (run / "config.yaml").read_text()
    train(apply_overrides(Config(), sets + ["train.max_epochs=2", "train.devices=auto"]), run, resume=True, quiet=True)
    assert (run / "config.epochs1.yaml").read_text() == before  # epoch 0 ran with devices 1
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["devices"] == "auto"
    assert (run / "metrics.epochs1.json").is_file()  # beside the record of the run it was
    train(apply_overrides(Config(), sets + ["train.max_epochs=3", "train.devices=auto"]), run, resume=True, quiet=True)
    assert not (run / "config.epochs2.yaml").exists()  # nothing that changes the numbers changed
    assert (run / "config.epochs1.yaml").read_text() == before


def test_a_changed_patience_decides_from_the_stale_epochs():
    from pase.training.callbacks import early_stopped

    stopped = {"stopped": True, "wait_count": 10, "patience": 10}
    running = {"stopped": False, "wait_count": 8, "patience": 10}
    assert early_stopped(stopped, 10) and not early_stopped(stopped, 15) and early_stopped(stopped, 5)
    assert not early_stopped(running, 10) and early_stopped(running, 5) and not early_stopped(running, 9)
    # patience 0 stops as 1 does (Lightning counts a stale epoch first): a run whose last epoch
    # improved goes on when resumed with patience 0 (it ended at once before)
    improving = {"stopped": False, "wait_count": 0, "patience": 10}
    assert not early_stopped(improving, 0) and early_stopped({**improving, "wait_count": 1}, 0)


def test_a_stop_lifted_by_more_patience_leaves_no_record_of_it():
    """Resumed with a raised patience, an early-stopped run trains on, but its callback still said it had
    stopped at the old epoch ('did not improve ... Signaling Trainer to stop') in every later checkpoint (a
    review); a stop the new patience keeps keeps its record. Lightning before 2.6 has no stopping reason
    (pyproject allows >= 2.4): there the stop itself is checked (run with 2.4.0 once, docs/reliability.md)."""
    try:
        from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
    except ImportError:  # Lightning 2.4 / 2.5
        EarlyStoppingReason = None

    from pase.training.callbacks import ResumableEarlyStopping

    saved = ResumableEarlyStopping(monitor="valid/MAE", patience=3)
    saved.wait_count, saved.stopped_epoch, saved.stopped = 3, 5, True
    if EarlyStoppingReason is not None:
        saved.stopping_reason = EarlyStoppingReason.PATIENCE_EXHAUSTED
        saved.stopping_reason_message = "did not improve"
    state = saved.state_dict()
    lifted = ResumableEarlyStopping(monitor="valid/MAE", patience=10)
    lifted.load_state_dict(state)
    assert not lifted.stopped and lifted.stopped_epoch == 0 and lifted.wait_count == 3
    kept = ResumableEarlyStopping(monitor="valid/MAE", patience=3)
    kept.load_state_dict(state)
    assert kept.stopped and kept.stopped_epoch == 5
    if EarlyStoppingReason is not None:
        assert lifted.stopping_reason == EarlyStoppingReason.NOT_STOPPED and lifted.stopping_reason_message is None
        assert kept.stopping_reason_message == "did not improve"


def test_more_patience_on_resume_is_the_patience_used(tmp_path):
    """train.early_stop_patience may change on resume: the new value decides, as in one run with it
    (Lightning's EarlyStopping restored the checkpoint's patience)."""
    sets = TINY + ["train.lr=0", "train.max_epochs=8"]  # lr 0: never improves after epoch 0
    one = train(apply_overrides(Config(), sets + ["train.early_stop_patience=4"]), tmp_path / "one", quiet=True)
    assert one["epochs_run"] == 5
    first = train(apply_overrides(Config(), sets + ["train.early_stop_patience=2"]), tmp_path / "r", quiet=True)
    assert first["epochs_run"] == 3  # stopped by early stopping
    more = train(apply_overrides(Config(), sets + ["train.early_stop_patience=4"]), tmp_path / "r", resume=True,
                 quiet=True)
    assert more["epochs_run"] == one["epochs_run"]
    with pytest.raises(RunDirError, match="early stopping ended it after 4 epochs without improvement; raise "
                                          "train.early_stop_patience"):  # the same patience again: finished
        train(apply_overrides(Config(), sets + ["train.early_stop_patience=4"]), tmp_path / "r", resume=True,
              quiet=True)


def test_checkpoint_state_follows_a_moved_folder(tmp_path):
    """Lightning drops the best score of a moved folder (a worse epoch then overwrites best.ckpt)
    and keeps the old best path (a copy would test the original's checkpoint)."""
    from pase.training.callbacks import RelocatableCheckpoint

    old, new = tmp_path / "a" / "checkpoints", tmp_path / "b" / "checkpoints"
    saved = RelocatableCheckpoint(dirpath=str(old), filename="best", monitor="valid/MAE", mode="min")
    saved.best_model_path, saved.best_model_score = str(old / "best.ckpt"), torch.tensor(0.7)
    saved.best_k_models, saved.kth_best_model_path = {str(old / "best.ckpt"): torch.tensor(0.7)}, str(old / "best.ckpt")
    saved.last_model_path = str(old / "best.ckpt")
    moved = RelocatableCheckpoint(dirpath=str(new), filename="best", monitor="valid/MAE", mode="min")
    moved.load_state_dict(saved.state_dict())
    assert moved.best_model_score == torch.tensor(0.7)
    assert moved.best_model_path == str(new / "best.ckpt") == moved.kth_best_model_path == moved.last_model_path
    assert moved.best_k_models == {str(new / "best.ckpt"): torch.tensor(0.7)}
    same = RelocatableCheckpoint(dirpath=str(old), filename="best", monitor="valid/MAE", mode="min")
    same.load_state_dict(saved.state_dict())
    assert same.best_model_path == str(old / "best.ckpt") and same.best_model_score == torch.tensor(0.7)


def test_a_resumed_log_drops_the_rows_after_its_checkpoint(tmp_path):
    """A run killed after writing an epoch's row but before that epoch's checkpoint: the resumed run
    rewrites log.csv from the checkpoint's rows at its start, so the row of the epoch it re-runs goes."""
    import types

    from pase.training.callbacks import EpochCSVLog

    log = EpochCSVLog(tmp_path / "log.csv")
    log.rows = [{"epoch": 0.0, "valid/MAE": 0.9}, {"epoch": 1.0, "valid/MAE": 0.8}, {"epoch": 2.0, "valid/MAE": 0.7}]
    log._write()
    state = {"rows": log.rows[:2]}  # the last checkpoint holds epochs 0 and 1
    resumed = EpochCSVLog(tmp_path / "log.csv")
    resumed.load_state_dict(state)
    resumed.on_train_start(types.SimpleNamespace(is_global_zero=True), None)
    assert (tmp_path / "log.csv").read_text().splitlines() == ["epoch,valid/MAE", "0,0.9", "1,0.8"]


def test_resume_needs_a_run_folder(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(RunDirError, match="no config.yaml, so not a pase run folder"):
        train(apply_overrides(Config(), TINY), tmp_path / "run", resume=True, quiet=True)


def test_a_run_killed_in_its_first_epoch_restarts_in_place(tmp_path):
    cfg = apply_overrides(Config(), TINY)
    fresh = train(cfg, tmp_path / "fresh", quiet=True)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".lock").touch()  # taken before config.yaml is written: a killed run leaves both
    (tmp_path / "run" / "config.yaml").write_text((tmp_path / "fresh" / "config.yaml").read_text())
    again = train(cfg, tmp_path / "run", resume=True, quiet=True)  # no last.ckpt: from the first epoch
    assert (again["valid"], again["test"]) == (fresh["valid"], fresh["test"])


# ---------------------------------------------------------------------- the orders behind it
def test_epoch_order_depends_on_the_epoch_only():
    """Epoch k's order is the same reached by iterating or by ``set_epoch(k)`` (as after a resume)."""
    walked = EpochSampler(50, shuffle=True, seed=7)
    orders = [list(walked) for _ in range(4)]
    assert len({tuple(o) for o in orders}) == 4 and all(sorted(o) == list(range(50)) for o in orders)
    jumped = EpochSampler(50, shuffle=True, seed=7)
    jumped.set_epoch(3)
    assert list(jumped) == orders[3]
    groups = torch.arange(40) // 3
    gw, gj = GroupBatchSampler(groups, 8, True, seed=7), GroupBatchSampler(groups, 8, True, seed=7)
    walked_batches = [list(gw) for _ in range(3)]
    gj.sampler.set_epoch(2)  # Lightning finds it as batch_sampler.sampler
    assert list(gj) == walked_batches[2] and walked_batches[1] != walked_batches[2]


def test_consecutive_seeds_do_not_share_their_epoch_orders():
    """With the seed seed + epoch, seed 1112 replayed seed 1111's shuffles one epoch late (a review: 59 of
    59 epoch orders equal), so the seeds of a comparison were not independent in their data order. Every
    (seed, epoch) order of five MMSA seeds over 20 epochs is now distinct, for samples and for groups, and
    still a pure function of the pair (the resume test above)."""
    from pase.training.datamodule import epoch_seed

    orders = {}
    for seed in range(1111, 1116):
        s = EpochSampler(60, shuffle=True, seed=seed)
        for e in range(20):
            orders[(seed, e)] = tuple(s)
    assert len(set(orders.values())) == len(orders) == 100
    assert len({epoch_seed(s, e) for s, e in orders}) == 100 and epoch_seed(1111, 3) == epoch_seed(1111, 3)
    assert all(0 <= epoch_seed(s, e) < 2**63 for s, e in orders)  # torch.Generator.manual_seed's range
    groups = torch.arange(40) // 3
    a, b = GroupBatchSampler(groups, 8, True, seed=1111), GroupBatchSampler(groups, 8, True, seed=1112)
    a.sampler.set_epoch(3)
    b.sampler.set_epoch(2)
    assert list(a) != list(b)


@pytest.mark.parametrize("n", [64, 61])
def test_ranks_together_see_the_single_process_batches(monkeypatch, n):
    """With W ranks and batch b, global batch j is single-process batch j of size b W."""
    world, b = 2, 8
    order = torch.tensor(EpochSampler(n, True, seed=3).order())
    single = [sorted(x.tolist()) for x in torch.split(order, b * world)]
    shards = []
    for rank in range(world):
        monkeypatch.setattr(datamodule, "dist_info", lambda rank=rank: (rank, world))
        s = EpochSampler(n, True, seed=3, shard=True)
        idx = list(s)
        assert len(idx) == len(s) == -(-n // world)  # equal counts: every rank steps equally often
        shards.append([idx[i:i + b] for i in range(0, len(idx), b)])
    merged = [sorted(shards[0][j] + shards[1][j]) for j in range(len(shards[0]))]
    if n % world == 0:
        assert merged == single
    else:  # the last global batch is padded by wrap-around
        assert merged[:-1] == single[:-1] and set(single[-1]) <= set(merged[-1])


@pytest.mark.parametrize("world, n", [(3, 61), (3, 62), (4, 61), (2, 61)])
def test_every_rank_steps_equally_often_for_any_world_size(monkeypatch, world, n):
    """The epoch order is padded by wrap-around to a multiple of W (W - N mod W extra positions): each
    rank yields ``len(sampler)`` samples, and the ranks together cover every sample."""
    shards = []
    for rank in range(world):
        monkeypatch.setattr(datamodule, "dist_info", lambda rank=rank: (rank, world))
        s = EpochSampler(n, True, seed=3, shard=True)
        shards.append(list(s))
        assert len(shards[-1]) == len(s) == -(-n // world), rank
    flat = [i for sh in shards for i in sh]
    assert set(flat) == set(range(n)) and len(flat) == world * -(-n // world)


def _grouped_bundle(n=61, size=3):
    from pase.data.contract import DataBundle, MultimodalDataset, TaskSpec

    splits = {s: MultimodalDataset({"a": torch.arange(n, dtype=torch.float32)[:, None]}, torch.zeros(n),
                                   [f"{s}{i}" for i in range(n)], groups=torch.arange(n) // size,
                                   positions=torch.arange(n) % size, split=s) for s in ("train", "valid", "test")}
    return DataBundle("t", TaskSpec("regression", 1, "mosi"), splits)


@pytest.mark.parametrize("by_group", [False, True])
def test_evaluation_ranks_together_see_every_batch_once(monkeypatch, by_group):
    """Evaluation shards are unpadded: the ranks' batches are the single-process batches, each exactly
    once, and each rank's loader length is the number of batches it yields (an odd count here)."""
    from pase.training.datamodule import make_loader

    bundle = _grouped_bundle()
    single = [b.ids for b in make_loader(bundle, "test", 10, False, 0, by_group=by_group)]
    assert len(single) % 2 == 1 and sorted(i for b in single for i in b) == sorted(bundle.splits["test"].ids)
    seen = []
    for rank in range(2):
        monkeypatch.setattr(datamodule, "dist_info", lambda rank=rank: (rank, 2))
        loader = make_loader(bundle, "test", 10, False, 0, by_group=by_group, shard=True)
        mine = [b.ids for b in loader]
        assert len(loader) == len(mine), rank
        seen += mine
    assert sorted(seen) == sorted(single)


@pytest.mark.parametrize("by_group", [False, True])
def test_the_training_order_follows_the_seed_and_changes_every_epoch(by_group):
    """train.seed picks the shuffles (another seed, another order; the same seed, the same orders), and
    the order changes from one epoch to the next, for sample and for group batches."""
    from pase.training.datamodule import make_loader

    bundle = _grouped_bundle(n=90)

    def orders(seed):
        loader = make_loader(bundle, "train", 8, True, seed, by_group=by_group)
        return [[i for b in loader for i in b.ids] for _ in range(3)]  # three epochs

    a = orders(1)
    assert a == orders(1) and a != orders(2)
    assert a[0] != a[1] != a[2] and sorted(a[0]) == sorted(bundle.splits["train"].ids)


def test_the_interruption_pickles_for_worker_processes():
    import pickle

    from pase.errors import RunInterrupted

    e = pickle.loads(pickle.dumps(RunInterrupted("training interrupted by SIGTERM in epoch 2", "SIGTERM",
                                                 "continue with pase train --resume RUN")))
    assert (str(e), e.signal, isinstance(e, KeyboardInterrupt)) == (
        "training interrupted by SIGTERM in epoch 2; continue with pase train --resume RUN", "SIGTERM", True)
    # pase compare replaces the run's advice with its own from these fields (no parsing of the text)
    assert (e.message, e.advice) == ("training interrupted by SIGTERM in epoch 2",
                                     "continue with pase train --resume RUN")


def test_ctrl_c_to_a_parallel_comparison_stops_running_runs_and_starts_no_queued_one(tmp_path):
    """``pase compare --jobs 2`` interrupted by a SIGINT that reaches the parent process alone (kill -INT):
    before, the queued runs trained on before the command exited. Now the running runs stop at their
    last checkpoint (the signal is passed on to the workers), the queued ones never start, the command
    exits 130 with one line, and rerunning it would continue the stopped runs."""
    sets = ["data.options.sizes=[512,64,64]", "train.max_epochs=400", "train.early_stop_patience=400",
            "train.progress_bar=false", "model.d_model=16", "model.hidden=32", "model.head_hidden=16"]
    out = tmp_path / "cmp"
    cmd = [sys.executable, "-m", "pase.cli", "compare", "--methods", "late_fusion,pase", "--seeds", "2",
           "--jobs", "2", "--no-diagnose", "--out", str(out)] + [x for s in sets for x in ("--set", s)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path, env=ENV, text=True,
                            preexec_fn=_default_sigint,
                            start_new_session=True)  # its own process group: the workers are killed with it below
    try:
        _interrupt_comparison(proc, out)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _interrupt_comparison(proc, out):
    lasts, t0 = [out / "runs" / "late_fusion" / f"seed{s}" / "checkpoints" / "last.ckpt" for s in (1111, 1112)], time.time()
    while min(_saved_epoch(p) for p in lasts) < 0 and proc.poll() is None and time.time() - t0 < TIMEOUT:
        time.sleep(0.2)
    assert proc.poll() is None, "the runs ended before they could be interrupted; give them more epochs"
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    lines = [line for line in err.splitlines() if line.startswith("pase:")]
    assert proc.returncode == 130, err[-2000:]
    assert len(lines) == 1 and lines[0].startswith("pase: interrupted: comparison interrupted by SIGINT after 0 of 4 "
                                                   "runs"), err[-2000:]
    assert "run the same pase compare command again" in lines[0] and "Traceback" not in err, err[-2000:]
    assert not (out / "runs" / "pase").exists(), "a queued run started after the interrupt"
    for last in lasts:
        assert _saved_epoch(last) >= 0 and not (last.parent.parent / "metrics.json").exists()
        assert not (last.parent.parent / "FAILED.txt").exists()


def test_a_resume_without_last_checkpoint_refuses_a_folder_that_is_not_a_killed_first_epoch(tmp_path):
    """--resume with no last.ckpt restarts a run killed in its first epoch in place; any other folder
    with a config.yaml (the user's notes, another run's best.ckpt, a comparison) was trained over, its
    log.csv and best.ckpt replaced."""
    cfg = apply_overrides(Config(), TINY + ["train.max_epochs=2"])
    done = tmp_path / "done"
    train(cfg, done, quiet=True)
    cases = {"notes": {".lock": b"", "config.yaml": None, "notes.txt": b"mine"},
             "later best": {".lock": b"", "config.yaml": None,
                            "checkpoints/best.ckpt": (done / "checkpoints" / "last.ckpt")},
             "comparison": {".lock": b"", "config.yaml": None, "compare.json": b"{}"},
             "long log": {".lock": b"", "config.yaml": None, "log.csv": (done / "log.csv")},
             # the user's own config.yaml in a folder no run wrote (no lock): it was rewritten, comments lost
             "own config": {"config.yaml": b"# my notes\n" + (done / "config.yaml").read_bytes()}}
    for name, files in cases.items():
        run = tmp_path / name.replace(" ", "_")
        (run / "checkpoints").mkdir(parents=True)
        for rel, content in files.items():
            src = done / rel if content is None else content
            (run / rel).write_bytes(src.read_bytes() if isinstance(src, type(done)) else src)
        before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
        with pytest.raises(RunDirError, match=r"not a run interrupted in its first epoch \((it holds|its|it has no "
                                             r"\.lock, which a run writes before its config\.yaml)"):
            train(cfg, run, resume=True, quiet=True)
        assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before, name
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / ".lock").touch()
    (killed / "config.yaml").write_bytes((done / "config.yaml").read_bytes())
    (killed / "tensorboard").mkdir()  # the TensorBoard logger writes from the first step when it is installed
    (killed / "tensorboard" / "events.out.tfevents.1.host").write_bytes(b"x")
    assert train(cfg, killed, resume=True, quiet=True)["test"] == json.loads((done / "metrics.json").read_text())["test"]


def test_a_resume_may_move_the_data(tmp_path, capsys):
    """config.yaml keeps data.path as given (relative to where the run started): a run whose data
    moved, or resumed from another folder, could not be resumed, and --set data.path=NEW was refused
    as another configuration. It may move now, as for pase evaluate; nothing else may."""
    import shutil

    from data.writers import write_mmsa

    path = write_mmsa(tmp_path / "a", "mosi")
    sets = ["method=late_fusion", "data.source=mmsa", f"data.path={path}", "train.batch_size=8",
            "train.progress_bar=false", "model.d_model=8", "model.hidden=16", "model.head_hidden=8"]
    whole = train(apply_overrides(Config(), sets + ["train.max_epochs=2"]), tmp_path / "whole", quiet=True)
    train(apply_overrides(Config(), sets + ["train.max_epochs=1"]), tmp_path / "run", quiet=True)
    moved = tmp_path / "b" / "mosi_aligned.pkl"
    moved.parent.mkdir()
    shutil.move(path, moved)
    from pase.cli import main

    args = ["train", "--resume", str(tmp_path / "run"), "--quiet", "--set", "train.max_epochs=2"]
    assert main(args + ["--set", f"data.path={moved}"]) == 0, capsys.readouterr().err
    again = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (again["test"], again["best_epoch"]) == (whole["test"], whole["best_epoch"])
    assert main(args[:3] + ["--quiet", "--set", "train.max_epochs=3", "--set", f"data.path={moved}",
                            "--set", "train.lr=0.5"]) == 2
    assert "was trained with another configuration (train.lr" in capsys.readouterr().err


def _sims_run_and_its_file_moved(tmp_path):
    """``(run, path, places)``: a one-epoch late-fusion run (``tmp_path/run``) on a tiny SIMS file ``path``, and
    copies of that file under a folder naming no dataset (``places["chinese"]``) and one named MOSI
    (``places["MOSI"]``)."""
    import shutil

    from data.writers import write_mmsa

    path = write_mmsa(tmp_path / "a", "sims", aligned=False, sizes=(16, 8, 8), steps=(6, 5))
    sets = ["method=late_fusion", "data.source=mmsa", f"data.path={path}", "train.batch_size=8",
            "train.progress_bar=false", "model.d_model=8", "model.hidden=16", "model.head_hidden=8",
            "train.max_epochs=1"]
    run = tmp_path / "run"
    train(apply_overrides(Config(), sets), run, quiet=True)
    places = {}
    for folder in ("chinese", "MOSI"):
        places[folder] = tmp_path / folder / "Processed" / path.name
        places[folder].parent.mkdir(parents=True)
        shutil.copy(path, places[folder])
    return run, path, places


def test_a_resume_keeps_the_dataset_the_run_was_trained_as(tmp_path, capsys):
    """The dataset was inferred from the data's path at every load: a SIMS run resumed on its file moved to a
    folder named MOSI trained on and rewrote its metrics.json as MOSI's, and one moved to a folder naming no
    dataset could not be resumed, --set data.options.dataset=sims included (a review). A run records the
    dataset; an older run's (its metrics.json's) refuses data that loads as another, and takes that --set."""
    from pase.cli import main

    run, path, places = _sims_run_and_its_file_moved(tmp_path)
    args = ["train", "--resume", str(run), "--quiet"]
    assert main(args + ["--set", "train.max_epochs=2", "--set", f"data.path={places['chinese']}"]) == 0, \
        capsys.readouterr().err
    assert json.loads((run / "metrics.json").read_text())["dataset"] == "sims_mmsa"
    as_an_older_pase_saved(run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    moved = ["--set", "train.max_epochs=3", "--set", f"data.path={places['MOSI']}"]
    assert main(args + moved) == 2
    err = capsys.readouterr().err
    assert f"{places['MOSI']}: this data loads as dataset 'mosi' (mosi_mmsa, protocol mosi), but {run} was " \
           "trained as 'sims'" in err and "pass --set data.options.dataset=sims" in err, err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert main(args + moved + ["--set", "data.options.dataset=sims"]) == 0, capsys.readouterr().err
    again = json.loads((run / "metrics.json").read_text())
    assert (again["dataset"], again["protocol"], again["epochs_run"]) == ("sims_mmsa", "sims", 3)


def test_an_older_interrupted_run_keeps_its_dataset_when_its_data_moves(tmp_path, capsys):
    """An older pase's run (config.yaml names no dataset) interrupted before metrics.json, resumed on its file
    moved to a folder named MOSI, finished as MOSI: its log.csv mixed SIMS and MOSI columns, and config.yaml then
    recorded 'mosi' as the dataset it was trained as (a review). The resume is refused when log.csv was scored
    under another protocol than the data loads as, naming the run, both datasets and the --set that fixes it;
    a resume does not record a dataset the path inferred over such a run, and takes that --set."""
    import csv

    import yaml

    from pase.cli import main

    run, path, places = _sims_run_and_its_file_moved(tmp_path)
    as_an_older_pase_saved(run)
    (run / "metrics.json").unlink()  # interrupted after epoch 0: last.ckpt, no metrics.json
    args = ["train", "--resume", str(run), "--quiet"]
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    moved = ["--set", "train.max_epochs=2", "--set", f"data.path={places['MOSI']}"]
    assert main(args + moved) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"pase: error: {run}: its log.csv was scored as dataset 'sims' (valid/ columns F1_score, Mult_acc_2, "
        "Mult_acc_3), but this data loads as dataset 'mosi' (mosi_mmsa, protocol mosi): its path names another "
        "dataset, and the run's config.yaml does not record its own (a pase before that record); pass --set "
        "data.options.dataset=sims to resume it as the run's dataset, or point data.path at the run's data "
        "(nothing was changed)")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    # a path that names none is read only with the --set (as before); its own path resumes, and records none
    assert main(args + ["--set", "train.max_epochs=2", "--set", f"data.path={places['chinese']}"]) == 2
    assert "cannot tell the dataset from the path" in capsys.readouterr().err
    assert main(args + ["--set", "train.max_epochs=2", "--set", f"data.path={path}"]) == 0, capsys.readouterr().err
    assert "dataset" not in yaml.safe_load((run / "config.yaml").read_text())["data"]["options"]
    (run / "metrics.json").unlink()  # interrupted again after epoch 1
    assert main(args + ["--set", "train.max_epochs=3", "--set", f"data.path={places['MOSI']}", "--set",
                        "data.options.dataset=sims"]) == 0, capsys.readouterr().err
    done = json.loads((run / "metrics.json").read_text())
    assert (done["dataset"], done["protocol"], done["epochs_run"]) == ("sims_mmsa", "sims", 3)
    with open(run / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"] and all(r["valid/Mult_acc_3"] for r in rows)
    assert not any(r.get("valid/Has0_acc_2") for r in rows)


@pytest.mark.parametrize("change", ["features", "labels"])
def test_a_resume_refuses_other_data_of_the_same_shape(tmp_path, capsys, change):
    """Data may move for a resume, but only the same data: a file of the same shapes with other
    features (another extractor) or other labels passed the checkpoint's shape check and trained on."""
    from data.writers import write_mmsa

    from pase.cli import main

    path = write_mmsa(tmp_path / "a", "mosi")

    def mutate(data):
        for s in data.values():
            if change == "features":
                s["audio"] = s["audio"][::-1].copy()  # the same values, other samples: sum |r_i| agrees
            else:
                s["regression_labels"] = -s["regression_labels"]

    other = write_mmsa(tmp_path / "b", "mosi", mutate=mutate)
    sets = ["method=late_fusion", "data.source=mmsa", f"data.path={path}", "train.batch_size=8",
            "train.progress_bar=false", "model.d_model=8", "model.hidden=16", "model.head_hidden=8",
            "data.standardize=true", "train.max_epochs=1"]
    train(apply_overrides(Config(), sets), tmp_path / "run", quiet=True)
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    args = ["train", "--resume", str(tmp_path / "run"), "--quiet", "--set", "train.max_epochs=2"]
    assert main(args + ["--set", f"data.path={other}"]) == 2
    err = capsys.readouterr().err
    assert "was trained on other data" in err and ("feature values" if change == "features" else "targets") in err
    # the same files read differently by another pase version are refused too: the message says so (a review)
    assert "if the files are the same, this pase reads them differently" in err and "docs/data.md" in err
    assert {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()} == before
    assert main(args) == 0, capsys.readouterr().err  # the run's own data resumes


def test_elapsed_time_counts_every_process_of_a_resumed_run(tmp_path):
    cfg = apply_overrides(Config(), TINY + ["train.max_epochs=1"])
    first = train(cfg, tmp_path / "run", quiet=True)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    saved = state["pase_state"]["elapsed_s"]
    assert 0 < saved <= first["elapsed_s"]
    state["pase_state"]["elapsed_s"] = saved + 1000.0  # as if the first process had taken 1000 s longer
    torch.save(state, tmp_path / "run" / "checkpoints" / "last.ckpt")
    again = train(apply_overrides(cfg, ["train.max_epochs=2"]), tmp_path / "run", resume=True, quiet=True)
    assert again["elapsed_s"] > saved + 1000.0


def test_a_best_checkpoint_one_epoch_ahead_of_the_last_is_not_tested_as_a_shorter_runs(tmp_path):
    """best.ckpt is written before last.ckpt; killed between the two, best.ckpt is one epoch ahead, and
    a resume with train.max_epochs at last.ckpt's count trained nothing and tested that later epoch's
    model as the shorter run's (best_epoch 2 of a 2-epoch run; a review). Refused, naming the fix."""
    from pase.io import atomic_save

    sets = TINY + ["train.early_stop_patience=100"]
    run = tmp_path / "r"
    train(apply_overrides(Config(), sets + ["train.max_epochs=2"]), run, quiet=True)
    (run / "metrics.json").unlink()  # killed before its metrics.json
    best = run / "checkpoints" / "best.ckpt"
    state = torch.load(best, weights_only=False)
    state["epoch"] = 2  # as saved at the end of epoch 3, just before that epoch's last.ckpt
    atomic_save(best, lambda t: torch.save(state, t))
    before = sorted(p.name for p in run.rglob("*"))
    with pytest.raises(ConfigError, match=r"best.ckpt is of epoch 3, after .*last.ckpt's 2 \(the run was stopped "
                                          r"between the two writes\): pass train.max_epochs of at least 3"):
        train(apply_overrides(Config(), sets + ["train.max_epochs=2"]), run, resume=True, quiet=True)
    assert sorted(p.name for p in run.rglob("*")) == before


def test_setting_a_finished_run_aside_on_a_full_disk_is_one_line_and_leaves_no_partial_copy(tmp_path, monkeypatch):
    """Before a finished run trains longer its selected checkpoint is copied aside; the copy bypassed
    the atomic writer, so a full disk printed a bare "[Errno 27] File too large" and left a partial
    temporary file (a review). It is a FileWriteError naming the file; the run is as it was."""
    import errno
    import shutil

    from pase.io import FileWriteError

    sets = TINY + ["train.early_stop_patience=100"]
    run = tmp_path / "r"
    train(apply_overrides(Config(), sets + ["train.max_epochs=1"]), run, quiet=True)
    before = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}

    def full(src, dst):
        with open(dst, "wb") as fh:
            fh.write(b"part")
        raise OSError(errno.EFBIG, "File too large")

    monkeypatch.setattr(shutil, "copy2", full)
    with pytest.raises(FileWriteError, match=r"best.epochs1.ckpt"):
        train(apply_overrides(Config(), sets + ["train.max_epochs=2"]), run, resume=True, quiet=True)
    after = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before  # no partial copy, metrics.json and the checkpoints as they were


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_worker_ends_when_its_parent_is_killed(tmp_path):
    """pase compare --jobs N killed with SIGKILL left its spawn workers alive for good (a review):
    each worker now watches its parent's sentinel. A parent that starts such a child is killed here;
    the child is gone within seconds, where without the watch it would sleep a minute."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import multiprocessing as mp, sys, time\n"
        "def child():\n"
        "    from pase.parent_watch import exit_with_parent\n"
        "    assert exit_with_parent()\n"
        "    time.sleep(60)\n"
        "if __name__ == '__main__':\n"
        "    from pase.parent_watch import exit_with_parent\n"
        "    assert not exit_with_parent()  # the main process has no parent to watch\n"
        "    p = mp.get_context('spawn').Process(target=child)\n"
        "    p.start()\n"
        "    print(p.pid, flush=True)\n"
        "    time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        pid = int(parent.stdout.readline())
        time.sleep(1.0)  # the child has started its watch
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.time() + 15
        while time.time() < deadline:
            try:  # gone, or a zombie its new parent has not reaped yet (state Z)
                if open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            except (FileNotFoundError, ProcessLookupError):
                break
            time.sleep(0.2)
        else:
            os.kill(pid, signal.SIGKILL)
            pytest.fail("the child outlived its killed parent by 15 s")
    finally:
        if parent.poll() is None:
            parent.kill()


def test_a_run_killed_while_writing_its_config_starts_again_in_its_folder(tmp_path):
    """A run killed in its first write leaves its .lock and the partial write .config.yaml.*.tmp: the same
    command refused the folder ('already holds files; ... or --resume it') and --resume refused it too (no
    config.yaml), each pointing at the other. A new run takes it as empty and removes the partial write;
    any other file still makes the folder not a new run's."""
    cfg = apply_overrides(Config(), TINY + ["train.max_epochs=1"])
    mine = tmp_path / "mine"
    (mine / ".cache.tmp").mkdir(parents=True)  # a folder, not a partial write
    with pytest.raises(RunDirError, match="mine already holds files; pass a new --out"):
        train(cfg, mine, quiet=True)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / ".draft.tmp").write_text("my notes")  # a user's hidden file, not pase's: refused, kept (a review)
    with pytest.raises(RunDirError, match="notes already holds files; pass a new --out"):
        train(cfg, notes, quiet=True)
    assert (notes / ".draft.tmp").read_text() == "my notes"
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").touch()
    (run / ".config.yaml.okxtcid5.tmp").write_text("data:\n  source: synth")
    result = train(cfg, run, quiet=True)
    assert result["epochs_run"] == 1 and (run / "metrics.json").is_file()
    assert not list(run.glob(".*.tmp")) and "max_epochs: 1\n" in (run / "config.yaml").read_text()


def test_a_resume_from_a_checkpoint_of_the_old_data_order_is_told_so(tmp_path, caplog):
    """Checkpoints saved before 7f4e1ae lack pase_state["data_order"]: their epochs were shuffled with
    seed + e, and a resume switched to SeedSequence(seed, e) mid-run without a word. Those saved between
    7f4e1ae and the record lack it too but resume exactly, so the warning names both cases (a review)."""
    cfg = apply_overrides(Config(), TINY + ["train.max_epochs=1"])
    train(cfg, tmp_path / "run", quiet=True)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["pase_state"]["data_order"] == datamodule.DATA_ORDER
    with caplog.at_level("WARNING", logger="pase"):
        train(apply_overrides(cfg, ["train.max_epochs=2"]), tmp_path / "run", resume=True, quiet=True)
    assert "data order" not in caplog.text and "seed + e" not in caplog.text  # the current order: no word
    del state["pase_state"]["data_order"]  # as saved by an older pase
    torch.save(state, last)
    (tmp_path / "run" / "metrics.json").unlink()
    caplog.clear()
    with caplog.at_level("WARNING", logger="pase"):
        train(apply_overrides(cfg, ["train.max_epochs=2"]), tmp_path / "run", resume=True, quiet=True)
    said = caplog.text  # it cannot tell a run started before 7f4e1ae from one after it (both lack the record)
    assert "records no data order" in said and "before commit 7f4e1ae shuffled epoch e with train.seed + e" in said
    assert "retrain it in a new --out" in said and "a run started at or after 7f4e1ae resumes exactly" in said


def test_epoch_seed_runs_under_numpy_1s_integer_rules(monkeypatch):
    """pyproject allows numpy >= 1.24, whose uint64 has no right shift by a Python int (the pair is
    promoted to float64: TypeError), and epoch_seed shifted the uint64 state, so every run stopped at
    its first epoch on numpy 1.x (checked here with numpy 1.26.4: the old line raises, the new one
    gives the same seed as numpy 2). numpy 1's rule is emulated on the state's element; the seed is
    the SeedSequence state's top 63 bits, as before."""
    import numpy as np

    from pase.training.datamodule import epoch_seed

    class _Uint64Numpy1(int):  # numpy 1.x: uint64 >> Python int raises
        def __rshift__(self, other):
            raise TypeError("ufunc 'right_shift' not supported for the input types")

    real = np.random.SeedSequence
    expected = int(real([1111, 3]).generate_state(1, np.uint64)[0]) >> 1

    class _Seq:
        def __init__(self, entropy):
            self.seq = real(entropy)

        def generate_state(self, n, dtype):
            return [_Uint64Numpy1(int(x)) for x in self.seq.generate_state(n, dtype)]

    monkeypatch.setattr(np.random, "SeedSequence", _Seq)
    assert epoch_seed(1111, 3) == expected and 0 <= expected < 2**63
