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

from pase.config import Config, apply_overrides
from pase.training import RunDirError, datamodule, train
from pase.training.datamodule import EpochSampler, GroupBatchSampler
from tiny import TINY

#: PaSE switches to SGM after epoch 0, so the kill lands in phase 2 with live SGM state
SETS = ["data.options.sizes=[384,64,64]", "train.max_epochs=8", "train.early_stop_patience=100",
        "train.progress_bar=false", "model.d_model=16", "model.hidden=32", "model.head_hidden=16",
        "method=pase", "pase.switch_max_epoch=1"]
TIMEOUT = 300
#: one intra-op thread per process: the runs share 2 cores, and busy-waiting OpenMP threads of
#: concurrent processes slow small models down tenfold (both runs use the same setting)
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def _pase(*args):
    cmd = [sys.executable, "-m", "pase.cli", "train", "--quiet", *args]
    return cmd + [x for s in SETS for x in ("--set", s)] if "--resume" not in args else cmd


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
    per_epoch = times[min_epoch] - times.get(min_epoch - 1, t0)
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


def test_resuming_a_finished_early_stopped_run_trains_no_more(tmp_path):
    """Killed after its stopping epoch (say, during the final test), a run resumes to the same end."""
    cfg = apply_overrides(Config(), TINY + ["train.max_epochs=40", "train.early_stop_patience=1", "train.lr=0.01"])
    first = train(cfg, tmp_path / "run", quiet=True)
    log = (tmp_path / "run" / "log.csv").read_text()
    assert first["epochs_run"] < 40, "the run should have stopped early"
    again = train(cfg, tmp_path / "run", resume=True, quiet=True)
    assert (again["epochs_run"], again["test"], again["valid"]) == (first["epochs_run"], first["test"], first["valid"])
    assert (tmp_path / "run" / "log.csv").read_text() == log


def test_resume_needs_a_last_checkpoint(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(RunDirError, match="no checkpoints/last.ckpt to resume from"):
        train(apply_overrides(Config(), TINY), tmp_path / "run", resume=True, quiet=True)


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
