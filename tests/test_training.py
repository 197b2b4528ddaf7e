"""End-to-end runs of the public API and the CLI on a tiny synthetic problem."""

import csv
import json
import os
from pathlib import Path

import pytest
import yaml
import torch

from tiny import TINY, as_an_older_pase_saved
from pase.cli import main
from pase.config import Config, apply_overrides
from pase.training import RunDirError, evaluate, predict, train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "lf"
    cfg = apply_overrides(Config(), TINY)
    return out, train(cfg, out, quiet=True)


def test_run_directory_contents(run):
    out, result = run
    assert {p.name for p in out.iterdir()} >= {"config.yaml", "metrics.json", "log.csv", "checkpoints"}
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["protocol"] == "mosi" and saved["dataset"] == "synthetic" and saved["method"] == "late_fusion"
    assert saved["seed"] == 1111 and saved["elapsed_s"] > 0 and "pase_version" in saved
    assert set(saved["test"]) == {"Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score", "Mult_acc_5",
                                  "Mult_acc_7", "MAE", "Corr"}
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["train"]["max_epochs"] == 3 and cfg["data"]["options"]["sizes"] == [192, 64, 64]
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert {"train/loss", "valid/MAE", "diag/share_text", "diag/shapley_audio"} <= set(rows[0])
    # the selected epoch is the validation optimum (MAE: lowest)
    best = min(rows, key=lambda r: float(r["valid/MAE"]))
    assert int(best["epoch"]) == saved["best_epoch"]
    assert abs(float(best["valid/MAE"]) - saved["valid"]["MAE"]) < 1e-5


def test_evaluate_reproduces_test_metrics(run):
    out, result = run
    res = evaluate(out / result["checkpoint"])
    for k, v in result["test"].items():
        assert abs(res["test"][k] - v) < 1e-6, k


def test_predict_writes_rows_and_never_overwrites(run, tmp_path):
    out, result = run
    dest = tmp_path / "pred.csv"
    assert predict(out / result["checkpoint"], dest) == 64
    rows = list(csv.DictReader(open(dest)))
    assert len(rows) == 64 and set(rows[0]) == {"id", "prediction", "label"}
    before = dest.read_bytes()
    with pytest.raises(RunDirError, match="exists; choose another --output"):
        predict(out / result["checkpoint"], dest)
    assert dest.read_bytes() == before
    with pytest.raises(RunDirError, match=r"--output .*pred\.csv/p\.csv: .*pred\.csv is a file, not a folder"):
        predict(out / result["checkpoint"], dest / "p.csv")
    assert predict(out / result["checkpoint"], tmp_path / "new" / "sub" / "p.csv") == 64  # new folders are made


def test_predictions_read_back_give_the_metrics_of_metrics_json(run, tmp_path):
    """pase predict wrote "%.6f": a prediction in (-5e-7, 0) read back as -0.0 (counted >= 0), and MAE and
    Corr recomputed from the file differed from metrics.json's in the 6th decimal (a review). Every value
    now reads back as the float32 the model gave, so the metrics recomputed from the CSV are metrics.json's."""
    import numpy as np

    from pase.metrics import mosi_metrics

    out, result = run
    predict(out / result["checkpoint"], tmp_path / "p.csv")
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    preds, labels = (np.array([float(r[k]) for r in rows]) for k in ("prediction", "label"))
    assert (preds.astype(np.float32).astype(np.float64) == preds).all()  # float32 values, not rounded ones
    assert mosi_metrics(preds.astype(np.float32), labels.astype(np.float32)) == result["test"]


def test_existing_run_dir_is_not_overwritten(run):
    out, _ = run
    before = (out / "metrics.json").read_bytes()
    with pytest.raises(RunDirError, match="already holds files"):
        train(apply_overrides(Config(), TINY), out, quiet=True)
    assert (out / "metrics.json").read_bytes() == before


def test_same_seed_same_metrics(run, tmp_path):
    out, result = run
    again = train(apply_overrides(Config(), TINY), tmp_path / "again", quiet=True)
    assert again["test"] == result["test"] and again["valid"] == result["valid"]


def test_pase_runs_both_phases(tmp_path):
    cfg = apply_overrides(Config(), TINY + ["method=pase", "pase.switch_max_epoch=1"])
    result = train(cfg, tmp_path / "p", quiet=True)
    rows = list(csv.DictReader(open(tmp_path / "p" / "log.csv")))
    assert [float(r["diag/phase"]) for r in rows] == [1.0, 2.0, 2.0]
    assert result["diagnostics"]["switch_epoch"] == 1
    assert (result["diagnostics"]["phase"], result["diagnostics"]["sgm_epochs"]) == (2, 2)
    import torch  # the selected checkpoint's own state, not the last epoch's
    saved = torch.load(tmp_path / "p" / result["checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    sgm = max(0, result["best_epoch"] + 1 - int(saved["method.switch_epoch"]))  # epochs 0..best trained with SGM
    assert result["diagnostics_selected"] == {
        "phase": 2 if sgm else 1, "switch_epoch": int(saved["method.switch_epoch"]) if sgm else -1, "sgm_epochs": sgm,
        # what SGM applies: the smoothed coefficients divided by their largest
        "sgm_coeffs": {m: float(c) for m, c in zip(("text", "audio", "vision"),
                                                   saved["method.coeffs"] / saved["method.coeffs"].max())}}
    assert all(0 < float(rows[-1][f"diag/sgm_coeff_{m}"]) <= 1 for m in ("text", "audio", "vision"))
    assert max(float(rows[-1][f"diag/sgm_coeff_{m}"]) for m in ("text", "audio", "vision")) == 1.0


def test_a_switch_decided_in_the_last_epoch_is_not_reported_as_trained(tmp_path):
    """The switch is decided in the validation of the epoch before the first SGM epoch, so a run
    ending there reported phase 2 and switch_epoch 2 for a model no SGM epoch trained."""
    cfg = apply_overrides(Config(), TINY + ["method=pase", "pase.switch_max_epoch=2", "train.max_epochs=2"])
    result = train(cfg, tmp_path / "p", quiet=True)
    rows = list(csv.DictReader(open(tmp_path / "p" / "log.csv")))
    assert [float(r["diag/phase"]) for r in rows] == [1.0, 1.0] and float(rows[-1]["diag/switch_epoch"]) == 2
    for key in ("diagnostics", "diagnostics_selected"):
        state = result[key]
        assert (state["phase"], state["switch_epoch"], state["sgm_epochs"]) == (1, -1, 0), key


def test_stale_epochs_count_at_the_precision_the_checkpoint_compares(tmp_path, monkeypatch):
    """Validation values lower in float64 but equal in float32 (as Lightning's ModelCheckpoint and
    EarlyStopping see a logged float) are not an improvement for the phase switch either: the
    switch after patience 1 and the selected epoch 0 must agree (the stale count was reset by a
    float64 gain the checkpoint never saw, so the switch came at switch_max_epoch instead)."""
    from pase.metrics.stateful import MetricAccumulator

    orig, valid_maes = MetricAccumulator.compute, iter([0.5, 0.5 - 1e-9, 0.5 - 2e-9, 0.5 - 3e-9])

    def compute(self):
        values = orig(self)
        if len(self._preds) and sum(len(p) for p in self._preds) == 48:  # the valid split, 48 samples
            values["MAE"] = next(valid_maes, 0.5)  # then the selected checkpoint's evaluation
        return values

    monkeypatch.setattr(MetricAccumulator, "compute", compute)
    cfg = apply_overrides(Config(), TINY + ["data.options.sizes=[192,48,32]", "method=pase", "train.max_epochs=4",
                                            "pase.switch_patience=1", "pase.switch_max_epoch=30"])
    result = train(cfg, tmp_path / "p", quiet=True)
    rows = list(csv.DictReader(open(tmp_path / "p" / "log.csv")))
    assert [float(r["valid/MAE"]) for r in rows] == [0.5] * 4
    assert result["best_epoch"] == 0
    assert [float(r["diag/phase"]) for r in rows] == [1.0, 1.0, 2.0, 2.0]  # switch after 1 stale epoch


def test_a_nan_monitor_is_a_stale_epoch_for_the_switch_as_for_early_stopping(tmp_path):
    """Constant predictions (inputs scaled to 1e-30) make valid Corr NaN in every epoch. Each NaN
    epoch counted as an improvement for PaSE's switch (it never switched) while early stopping
    counted it as stale, and best_epoch was null though best.ckpt (epoch 0) was tested."""
    from pase.training.checkpoint import safe_load_checkpoint

    cfg = apply_overrides(Config(), TINY + ["method=pase", "train.max_epochs=6", "train.monitor=Corr",
                                            "data.options.scales=[1e-30,1e-30,1e-30]", "pase.switch_patience=1",
                                            "train.early_stop_patience=2"])
    result = train(cfg, tmp_path / "p", quiet=True)
    rows = list(csv.DictReader(open(tmp_path / "p" / "log.csv")))
    assert [r["valid/Corr"] for r in rows] == ["nan", "nan"]  # early stopping: 2 stale epochs
    assert [float(r["diag/phase"]) for r in rows] == [1.0, 2.0]  # the switch after 1 stale epoch
    assert result["best_epoch"] == safe_load_checkpoint(tmp_path / "p" / "checkpoints" / "best.ckpt")["epoch"] == 0


def test_a_monitor_never_finite_is_not_reported_as_a_validation_selection(tmp_path, capsys, caplog, run):
    """Valid Corr NaN in every epoch (constant predictions): the run line said "selected on valid/Corr,
    epoch 0" and metrics.json nothing, though no epoch was chosen (a review). One warning naming the
    monitor and the kept checkpoint, the run line and metrics.json's "selection" say so."""
    args = ["train", "--out", str(tmp_path / "c"), "--quiet"] + [
        x for s in TINY + ["train.max_epochs=2", "train.monitor=Corr", "data.options.scales=[1e-30,1e-30,1e-30]"]
        for x in ("--set", s)]
    import logging

    with caplog.at_level(logging.WARNING, logger="pase"):
        assert main(args) == 0
    out = capsys.readouterr().out
    saved = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert saved["selection"] == "none: valid/Corr never finite" and saved["best_epoch"] == 0
    said = [r.getMessage() for r in caplog.records if "no validation selection" in r.getMessage()]
    assert len(said) == 1 and "valid/Corr was not finite in any of the 2 epochs" in said[0]
    assert "(checkpoints/best.ckpt, epoch 0)" in said[0]
    title = out.splitlines()[0]
    assert title.endswith("(no validation selection, valid/Corr never finite: epoch 0 kept)") and "selected on" not in title
    assert "selection" not in json.loads((run[0] / "metrics.json").read_text())  # a validation-selected run: absent


def test_cli_train_prints_table_and_errors_are_one_line(tmp_path, capsys):
    args = ["train", "--out", str(tmp_path / "c"), "--quiet"] + [x for s in TINY for x in ("--set", s)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| test |" in printed and "Has0_acc_2" in printed
    assert main(["train", "--set", "train.lrr=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["pase: error: unknown config key 'train.lrr'; did you mean 'train.lr'? valid keys under train: "
                   + ", ".join(Config().train.__dataclass_fields__)]
    assert main(["evaluate", "--checkpoint", str(tmp_path / "missing.ckpt")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_ddp_worker_names_its_rank_in_an_error_line(capsys, monkeypatch):
    """Under DDP every rank printed the same 'pase: error: ...' line: two identical lines, or a
    worker's own failure that looked like rank 0's (review). Rank 0 stays 'pase'."""
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert main(["train", "--set", "train.lrr=1"]) == 2
    assert capsys.readouterr().err.startswith("pase (rank 1): error: unknown config key 'train.lrr'")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert main(["train", "--set", "train.lrr=1"]) == 2
    assert capsys.readouterr().err.startswith("pase: error: unknown config key 'train.lrr'")


GLOO_PEER_GONE = ("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer "
                  "[127.0.0.1]:14749. This is typically caused by a remote worker crashing. Check the logs of the remote "
                  "worker before reporting an error. GLHF! \U0001f3d6\ufe0f")


def test_a_ddp_ranks_error_is_one_actionable_line_on_every_rank(tmp_path, capsys, monkeypatch):
    """An error on one DDP rank: the other rank printed gloo's raw 'Connection closed by peer ... GLHF!' line,
    naming neither the cause nor how to continue, and the failing rank's line did not say how to resume (a
    review). The peer failure is now 'another process stopped, its error above', and both lines carry the
    advice pase.training.train attaches to an error that stopped a DDP run (tests/reliability/test_ddp.py
    runs it in a real 2-process run)."""
    import pase.training
    from pase.errors import RESUME_ADVICE

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    errors = []

    def fails(cfg, out, **kw):
        e = errors.pop(0)
        setattr(e, RESUME_ADVICE, f"the checkpoint of the last finished epoch is kept; continue with pase train "
                                  f"--resume {out}")
        raise e
    monkeypatch.setattr(pase.training, "train", fails)
    args = ["train", "--quiet", "--out", str(run)] + [x for s in TINY for x in ("--set", s)]
    advice = f"the checkpoint of the last finished epoch is kept; continue with pase train --resume {run}"
    errors[:] = [RuntimeError(GLOO_PEER_GONE), RuntimeError("injected failure on rank 1")]
    assert main(args) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"pase: error: another process of this DDP run stopped (its error is printed above); {advice}"]
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert main(args) == 2
    assert capsys.readouterr().err.splitlines() == [f"pase (rank 1): error: injected failure on rank 1; {advice}"]
    monkeypatch.delenv("LOCAL_RANK")

    def fails_alone(cfg, out, **kw):  # one process: train attaches no DDP advice, the error is its own
        raise RuntimeError("Connection closed by peer [10.0.0.2]:443 while reading the features")
    monkeypatch.setattr(pase.training, "train", fails_alone)
    assert main(args) == 2
    assert capsys.readouterr().err.splitlines() == [
        "pase: error: Connection closed by peer [10.0.0.2]:443 while reading the features"]


@pytest.mark.parametrize("override, line", [
    ("model.encoder=cnn", "config key 'model.encoder': unknown encoder 'cnn'; valid: auto, bert, lstm, mlp, transformer"),
    # audio and vision got a BERT, which failed naming the text modality's width (review)
    ("model.encoder=bert", "config key 'model.encoder': encoder 'bert' reads text token ids, but modality 'audio' "
                           "holds features; set model.text_encoder=bert (or leave it auto)"),
    # torch's 'hidden_size must be greater than zero' (review)
    ("model.encoder=lstm --set model.hidden=1", "the LSTM encoder needs model.hidden of at least 2"),
    ("model.text_encoder=cnn", "config key 'model.text_encoder': unknown encoder 'cnn'; valid:"),
    ("pase.binning=round5", "pase.binning='round5' is not one of sign, polarity, round7, classes"),
    # 'classes' on regression labels said num_bins needs num_classes (review)
    ("pase.binning=classes", "config key 'pase.binning': 'classes' takes the class ids of classification data; these "
                             "labels are continuous (regression): bin them with one of sign, polarity, round7"),
    ("method=nonsense", "config key 'method': unknown method 'nonsense'; valid: agm, late_fusion, ogm_ge, pase"),
    # the paper's spelling got no hint (difflib finds 'PaSE' too far from 'pase'; review)
    ("method=PaSE", "config key 'method': unknown method 'PaSE'; did you mean 'pase'? valid: agm, late_fusion"),
])
def test_an_unknown_name_is_named_with_its_config_key(tmp_path, capsys, override, line):
    """'unknown encoder' did not say whether model.encoder or model.text_encoder held it (review)."""
    args = ["train", "--out", str(tmp_path / "r"), "--quiet", "--set", "method=pase"]
    sets = TINY + override.split(" --set ")
    assert main(args + [x for s in sets for x in ("--set", s)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pase: error: " + line), err
    assert not (tmp_path / "r").exists()  # nothing written


def test_sgd_is_heavy_ball_with_the_configured_momentum():
    from pase.training.lightning_module import build_optimizer
    import torch
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = build_optimizer([{"params": [p]}], {"optimizer": "sgd", "lr": 0.1, "weight_decay": 0.0, "momentum": 0.5})
    expect, buf = torch.tensor([1.0, -2.0]), torch.zeros(2)
    for _ in range(3):  # loss = |p|^2 / 2, gradient p; buf <- 0.5 buf + g (first step buf = g); p <- p - 0.1 buf
        opt.zero_grad()
        (p.pow(2).sum() / 2).backward()
        buf = 0.5 * buf + expect
        expect = expect - 0.1 * buf
        opt.step()
    assert torch.allclose(p.detach(), expect, atol=1e-7)
    with pytest.raises(ValueError, match=r"train.optimizer='lbfgs' is not one of adam, adamw, sgd"):
        build_optimizer([{"params": [p]}], {"optimizer": "lbfgs", "lr": 0.1, "weight_decay": 0.0})


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
def test_adam_is_torchs_multi_tensor_one_and_updates_bitwise_as_the_per_parameter_loop(name, dtype):
    """build_optimizer asks Adam and AdamW for foreach (on the CPU torch's default is a loop over the
    parameters, 76 more dispatched calls per real-MOSI step): over steps with weight decay, two groups
    of different learning rates and a parameter without a gradient in some steps (an absent
    modality), every parameter and the optimizer's state equal the loop implementation's to the bit.
    SGD stays the loop (its foreach version rounds bfloat16 differently)."""
    import torch
    from pase.training.lightning_module import build_optimizer

    dt = getattr(torch, dtype)
    g = torch.Generator().manual_seed(0)
    init = [torch.randn(6, 4, generator=g).to(dt), torch.randn(4, generator=g).to(dt), torch.randn(3, 6, generator=g).to(dt)]
    tc = {"optimizer": name, "lr": 0.01, "weight_decay": 0.01, "momentum": 0.9}
    params = {}
    opts = {}
    for impl in ("ours", "loop"):
        ps = [torch.nn.Parameter(t.clone()) for t in init]
        groups = [{"params": ps[:2]}, {"params": ps[2:], "lr": 0.03}]
        if impl == "ours":
            opts[impl] = build_optimizer(groups, tc)
            assert opts[impl].defaults["foreach"] is (None if name == "sgd" else True)
        else:
            cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[name]
            extra = {"momentum": 0.9} if name == "sgd" else {}
            opts[impl] = cls(groups, lr=0.01, weight_decay=0.01, foreach=False, **extra)
        params[impl] = ps
    gg = torch.Generator().manual_seed(1)
    for step in range(12):
        grads = [torch.randn(t.shape, generator=gg).to(dt) for t in init]
        for impl in ("ours", "loop"):
            for i, (p, gr) in enumerate(zip(params[impl], grads)):
                p.grad = None if (i == 2 and step % 3 == 1) else gr.clone()
            opts[impl].step()
    for a, b in zip(params["ours"], params["loop"]):
        assert a.dtype == dt and torch.equal(a, b)
    for a, b in zip(params["ours"], params["loop"]):
        sa, sb = opts["ours"].state[a], opts["loop"].state[b]
        assert sa.keys() == sb.keys() and all(torch.equal(torch.as_tensor(sa[k]), torch.as_tensor(sb[k])) for k in sa)


def test_unknown_optimizer_stops_before_training(tmp_path):
    cfg = apply_overrides(Config(), TINY + ["train.optimizer=rmsprop"])
    with pytest.raises(ValueError, match="train.optimizer='rmsprop' is not one of adam, adamw, sgd"):
        train(cfg, tmp_path / "r", quiet=True)
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_train_losses_are_batch_size_weighted_epoch_means(tmp_path, monkeypatch):
    """log.csv's train/loss is sum_b n_b loss_b / sum_b n_b over the epoch's steps (the last batch
    is smaller here, so an unweighted mean of batch means would differ)."""
    import lightning as L
    import pase.training.run as run_module

    seen = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append((trainer.current_epoch, float(outputs["loss"]), len(batch)))

    real = run_module._trainer
    monkeypatch.setattr(run_module, "_trainer", lambda cfg, out, cbs, quiet: real(cfg, out, list(cbs) + [Record()], quiet))
    sets = [s for s in TINY if not s.startswith("data.options.sizes")] + ["data.options.sizes=[200,80,64]",
                                                                          "method=pase"]
    train(apply_overrides(Config(), sets), tmp_path / "w", quiet=True)
    rows = list(csv.DictReader(open(tmp_path / "w" / "log.csv")))
    assert len(rows) == 3 and {"train/task_loss", "train/pcl_loss", "train/ot_loss"} <= set(rows[0])
    for e, row in enumerate(rows):
        steps = [(loss, n) for ep, loss, n in seen if ep == e]
        assert [n for _, n in steps] == [64, 64, 64, 8]
        expect = sum(loss * n for loss, n in steps) / sum(n for _, n in steps)
        assert float(row["train/loss"]) == pytest.approx(expect, rel=1e-6)
        assert abs(expect - sum(loss for loss, _ in steps) / len(steps)) > 1e-6  # weighting matters here
    # valid/loss of the last epoch is the L1 loss of the last checkpoint over the whole valid split
    from pase.training.run import _outputs, load_checkpoint
    module, cfg, bundle = load_checkpoint(tmp_path / "w" / "checkpoints" / "last.ckpt")
    _, logits, target = _outputs(module, bundle, cfg, "valid")
    l1 = float((logits.squeeze(-1) - target).abs().mean())
    assert float(rows[-1]["valid/loss"]) == pytest.approx(l1, rel=1e-5)


@pytest.mark.parametrize("strategy, devices", [("ddp", "2"), ("auto", "2"), ("auto", "'2'"), ("ddp_spawn", "2")])
def test_ddp_with_fewer_batches_than_devices_stops_with_one_line(tmp_path, capsys, strategy, devices):
    """Checked before Lightning launches any rank, and before anything is written to the run folder;
    also for DDP asked for as strategy=auto with devices 2 or '2' (a review saw two raw lines and a
    gloo error), and ddp_spawn is refused ('bad value(s) in fds_to_keep' before)."""
    args = ["train", "--quiet", "--out", str(tmp_path / "d")] + [x for s in TINY + [
        f"train.strategy={strategy}", f"train.devices={devices}", "train.accelerator=cpu"] for x in ("--set", s)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    if strategy == "ddp_spawn":
        assert err == ["pase: error: train.strategy=ddp_spawn starts its processes by spawn, which pase does not "
                       "support (its run folder lock and loaders are per process); use train.strategy=ddp"]
    else:
        assert len(err) == 1 and "split 'valid' has 64 samples = 1 batch(es) of train.batch_size=64" in err[0], err
        assert "runs 2 processes" in err[0] and "use fewer devices or a smaller train.batch_size" in err[0]
    assert not (tmp_path / "d").exists() or not any((tmp_path / "d").iterdir())  # nothing written


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the setting would run")
@pytest.mark.parametrize("accelerator", ["gpu", "nonsense"])
def test_an_accelerator_this_machine_lacks_is_one_line_naming_the_key(tmp_path, capsys, accelerator):
    """Lightning's "No supported gpu backend found!" named no setting (a review)."""
    args = ["train", "--quiet", "--out", str(tmp_path / "d")] + [x for s in TINY + [
        f"train.accelerator={accelerator}"] for x in ("--set", s)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"pase: error: train.accelerator={accelerator}, train.devices=1, "
                                               "train.strategy=auto, train.precision=32-true: Lightning cannot run "
                                               "these on this machine ("), err
    assert err[0].endswith("change the setting it names (train.accelerator=auto runs on any machine; a GPU needs a "
                           "CUDA build of torch)")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: fsdp would start")
def test_a_sharding_strategy_the_cpu_cannot_run_names_the_strategies_that_can(tmp_path, capsys):
    """train.strategy=fsdp on a CPU was told 'train.accelerator=auto runs on any machine', which leaves
    fsdp refused (a review): the hint names the strategies that run anywhere."""
    args = ["train", "--quiet", "--out", str(tmp_path / "d")] + [x for s in TINY + [
        "train.strategy=fsdp"] for x in ("--set", s)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.strategy=fsdp" in err[0] and "requires a GPU accelerator" in err[0], err
    assert err[0].endswith("change the setting it names (train.strategy=auto (one process) or ddp run on any "
                           "machine)")



@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the setting would run")
def test_an_accelerator_this_machine_lacks_is_named_whatever_the_strategy(tmp_path, capsys):
    """With train.accelerator=gpu and a strategy other than auto the hint sent the user to the strategy
    (train.strategy=auto ... run on any machine), which left the GPU refused (a review): the strategy is
    named only when the same settings run with train.strategy=auto."""
    args = ["train", "--quiet", "--out", str(tmp_path / "d")] + [x for s in TINY + [
        "train.accelerator=gpu", "train.strategy=single_device"] for x in ("--set", s)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("(train.accelerator=auto runs on any machine; a GPU needs a CUDA "
                                             "build of torch)"), err


@pytest.mark.parametrize("devices, shown", [("-1", "-1"), ("[0]", "[0]"), ("'0,1'", "0,1")])
def test_devices_the_cpu_accelerator_refuses_are_one_line_naming_the_keys(tmp_path, capsys, devices, shown):
    """pase takes -1, [0] and "0,1"; Lightning's CPU accelerator raises a TypeError for them, which
    printed as "`devices` selected with `CPUAccelerator` should be an int > 0.", naming no key (review)."""
    args = ["train", "--quiet", "--out", str(tmp_path / "d")] + [x for s in TINY + [
        f"train.devices={devices}"] for x in ("--set", s)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"pase: error: train.accelerator=cpu, train.devices={shown}, "
                                               "train.strategy=auto, train.precision=32-true: Lightning cannot run "
                                               "these on this machine (`devices` selected with `CPUAccelerator` "
                                               "should be an int > 0.); change the setting it names"), err
    assert not (tmp_path / "d" / "config.yaml").exists()


@pytest.mark.parametrize("values, mode, best", [
    (["nan", "0.30", "0.50"], "max", 2), (["0.10", "nan", "0.50"], "max", 2), (["0.4", "nan", "0.2"], "min", 2),
    (["0.5", "0.5", "0.1"], "max", 0),  # a tie keeps the earlier epoch, as ModelCheckpoint does
    (["nan", "nan"], "max", None),
])
def test_best_epoch_skips_a_nan_monitor(tmp_path, values, mode, best):
    from pase.training.run import _best_epoch

    log = tmp_path / "log.csv"
    log.write_text("epoch,valid/Corr\n" + "".join(f"{i},{v}\n" for i, v in enumerate(values)))
    assert _best_epoch(log, "valid/Corr", mode) == best


def test_evaluate_and_predict_apply_set_to_the_checkpoints_own_config(run, tmp_path, capsys):
    out, result = run
    ckpt = str(out / result["checkpoint"])
    assert main(["evaluate", "--checkpoint", ckpt, "--set", "data.source=nope"]) == 2  # no longer ignored
    assert "nope" in capsys.readouterr().err
    assert main(["predict", "--checkpoint", ckpt, "--output", str(tmp_path / "p.csv"), "--set", "no.such=1"]) == 2
    assert "unknown config key 'no'" in capsys.readouterr().err and not (tmp_path / "p.csv").exists()
    res = evaluate(ckpt, overrides=["train.batch_size=7"])  # a harmless change evaluates the same
    assert res["test"] == pytest.approx(result["test"], abs=1e-6)


def test_evaluate_json_is_one_strict_json_object_on_stdout(run, capsys, monkeypatch):
    import json

    import pase.training

    out, result = run
    ckpt = str(out / result["checkpoint"])
    assert main(["evaluate", "--checkpoint", ckpt, "--splits", "test", "--json"]) == 0
    printed = capsys.readouterr()
    assert json.loads(printed.out)["test"] == pytest.approx(result["test"], abs=1e-6)
    assert {k: json.loads(printed.out)[k] for k in ("dataset", "protocol")} == \
        {"dataset": result["dataset"], "protocol": result["protocol"]}  # every result names its protocol
    assert "Has0_acc_2" in printed.err and f"protocol {result['protocol']}" in printed.err  # the table
    fake = {"test": {"MAE": 1.0, "Corr": float("nan")}}  # a constant prediction has no correlation
    monkeypatch.setattr(pase.training, "evaluate", lambda *a, **k: fake)
    assert main(["evaluate", "--checkpoint", ckpt, "--json"]) == 0
    assert json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(c)) == \
        {"dataset": None, "protocol": None, "test": {"MAE": 1.0, "Corr": None}}


def test_evaluate_with_another_config_that_changes_the_inputs_is_refused(run, tmp_path, capsys):
    """--config on evaluate / predict replaced the checkpoint's configuration wholesale: a config
    without the run's data settings scored the weights on other inputs, silently. Settings of the
    evaluation itself (here train.max_epochs) may differ; what the model sees may not."""
    import yaml

    out, result = run
    ckpt = str(out / result["checkpoint"])
    saved = yaml.safe_load((out / "config.yaml").read_text())
    same = tmp_path / "same.yaml"
    same.write_text(yaml.safe_dump({**saved, "train": {**saved["train"], "max_epochs": 99}}))
    assert main(["evaluate", "--checkpoint", ckpt, "--config", str(same), "--splits", "test", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test"] == pytest.approx(result["test"], rel=1e-12)
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**saved, "data": {**saved["data"], "standardize": True}}))
    for cmd in (["evaluate"], ["predict", "--output", str(tmp_path / "p.csv")]):
        assert main([*cmd, "--checkpoint", ckpt, "--config", str(other)]) == 2
        err = capsys.readouterr().err
        assert err == (f"pase: error: {ckpt}: the given --config changes what the checkpoint was trained with "
                       "(data.standardize: False there, True now); drop --config to use the checkpoint's own, and "
                       "--set only what moved (for example --set data.path=NEW/PLACE) or the evaluation batch size "
                       "(train.batch_size; evaluate, predict and diagnose run on the CPU)\n")
        # --set alone went unchecked: the same change scored the weights on other inputs, exit 0
        assert main([*cmd, "--checkpoint", ckpt, "--set", "data.standardize=true"]) == 2
        assert "the given --set changes what the checkpoint was trained with (data.standardize: False there, " \
               "True now)" in capsys.readouterr().err
    assert not (tmp_path / "p.csv").exists()
    # a config for another dataset is named by its source, not by the first of its many sorted differences
    mosi = tmp_path / "mosi.yaml"
    mosi.write_text(yaml.safe_dump({**saved, "data": {**saved["data"], "source": "mosi_bclstm", "options": {}}}))
    assert main(["evaluate", "--checkpoint", ckpt, "--config", str(mosi)]) == 2
    assert "(data.source: 'synthetic' there, 'mosi_bclstm' now)" in capsys.readouterr().err


def test_noise_levels_must_be_numbers(capsys):
    for bad in (",", "a,b", "-1", "nan"):
        with pytest.raises(SystemExit):
            main(["diagnose", "--checkpoint", "x.ckpt", "--out", "d", "--noise-levels", bad])
        assert "expected non-negative numbers" in capsys.readouterr().err


def test_unknown_split_and_mismatched_weights_are_one_clear_line(run, capsys):
    out, result = run
    ckpt = str(out / result["checkpoint"])
    assert main(["evaluate", "--checkpoint", ckpt, "--splits", "valid,tset"]) == 2
    assert capsys.readouterr().err == "pase: error: split 'tset' not in the data; valid: train, valid, test\n"
    assert main(["evaluate", "--checkpoint", ckpt, "--set", "model.hidden=8"]) == 2  # refused before loading
    assert "the given --set changes what the checkpoint was trained with (model.hidden: 32 there, 8 now)" in \
        capsys.readouterr().err
    # weights that do not fit the checkpoint's own configuration (an edited file) are one line too
    import torch

    state = torch.load(ckpt, weights_only=True)
    state["hyper_parameters"]["config"]["model"]["hidden"] = 8
    edited = out.parent / "edited.ckpt"
    torch.save(state, edited)
    assert main(["evaluate", "--checkpoint", str(edited)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pase: error: {edited}: its weights do not fit the model of this configuration (")
    assert err.endswith("(drop --config / --set)\n") and err.count("\n") == 1


def test_resume_takes_no_out_or_config_and_out_is_never_a_file(run, tmp_path, capsys):
    out, _ = run
    assert main(["train", "--resume", str(out), "--out", str(tmp_path / "x")]) == 2
    assert "drop --out" in capsys.readouterr().err and not (tmp_path / "x").exists()
    (tmp_path / "empty").mkdir()
    assert main(["train", "--resume", str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err == (f"pase: error: {tmp_path / 'empty'}: no config.yaml, so not a pase run folder "
                                       "to resume; start a new run with --out\n")
    afile = tmp_path / "afile.txt"
    afile.write_text("mine")
    with pytest.raises(RunDirError, match="is a file, not a run folder"):
        train(apply_overrides(Config(), TINY), afile, quiet=True)
    assert afile.read_text() == "mine"


def test_an_out_below_a_file_is_one_line_before_the_data_loads(tmp_path, capsys, monkeypatch):
    """`--out runs/r0/config.yaml/x` stopped after the data loaded with "[Errno 20] Not a directory",
    naming no option (review)."""
    import pase.training.run as run_module

    afile = tmp_path / "afile.txt"
    afile.write_text("mine")
    monkeypatch.setattr(run_module, "load_bundle", lambda cfg: pytest.fail("the data was loaded"))
    assert main(["train", "--quiet", "--out", str(afile / "x" / "y")]) == 2
    assert capsys.readouterr().err == (f"pase: error: --out {afile / 'x' / 'y'}: {afile} is a file, not a folder; "
                                       "pass another --out (nothing was written)\n")
    assert afile.read_text() == "mine"


def test_a_resume_of_a_file_or_below_one_is_told_to_pass_the_run_folder(tmp_path, capsys, monkeypatch):
    """`pase train --resume notes.txt/run` said "--out notes.txt/run: ... pass another --out", advice
    --resume refuses ("drop --out"; a review); a --resume that is a file was told to pass a new --out."""
    import pase.training.run as run_module

    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    monkeypatch.setattr(run_module, "load_bundle", lambda cfg: pytest.fail("the data was loaded"))
    assert main(["train", "--quiet", "--resume", "notes.txt/run"]) == 2
    assert capsys.readouterr().err == (f"pase: error: --resume notes.txt/run: {tmp_path / 'notes.txt'} is a file, "
                                       "not a run folder; pass the run folder to continue (nothing was changed)\n")
    assert main(["train", "--quiet", "--resume", "notes.txt"]) == 2
    assert capsys.readouterr().err == ("pase: error: --resume notes.txt is a file, not a run folder; pass the run "
                                       "folder to continue (nothing was changed)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"] and (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("flag, fix", [("--resume", "the run folder to continue"),
                                       ("--out", "a new run folder, or no --out for runs/")])
def test_an_empty_resume_or_out_is_refused(tmp_path, capsys, monkeypatch, flag, fix):
    """`--resume "$RUN"` with RUN unset trained a new run of the defaults; `--out ""` wrote to
    runs/<method>-<date> (an empty string was taken as "not given"; review)."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--quiet", flag, ""]) == 2
    assert capsys.readouterr().err == f"pase: error: {flag} '': an empty path; pass {fix} (nothing was written)\n"
    assert list(tmp_path.iterdir()) == []


def test_a_tilde_in_a_path_option_is_the_home_folder(tmp_path, capsys, monkeypatch):
    """`--out=~/runs/a` (a `~` the shell leaves) put the checkpoints under $HOME and the rest in a
    folder named `~` (review)."""
    home = tmp_path / "home"
    (home / "empty").mkdir(parents=True)
    (home / "afile").write_text("mine")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--quiet", "--resume", "~/empty"]) == 2
    assert capsys.readouterr().err.startswith(f"pase: error: {home / 'empty'}: no config.yaml, so not a pase run ")
    assert main(["train", "--quiet", "--out=~/afile/x"]) == 2
    assert capsys.readouterr().err.startswith(f"pase: error: --out {home / 'afile' / 'x'}: {home / 'afile'} is a file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]  # no folder named ~


def test_the_python_api_expands_a_tilde_in_its_folders(tmp_path, monkeypatch):
    """train(cfg, "~/x") put the checkpoints under $HOME (Lightning expands `~`) and config.yaml,
    log.csv and metrics.json in ./~/x; diagnose wrote into ./~ too (a review: only the CLI expanded)."""
    from pase.evaluation.shapley_report import diagnose

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    result = train(apply_overrides(Config(), TINY + ["train.max_epochs=1"]), "~/run", quiet=True)
    run = home / "run"
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "log.csv", "metrics.json", "checkpoints"}
    assert (run / result["checkpoint"]).is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    res = diagnose("~/run/checkpoints/best.ckpt", "~/diag", probes=False)
    saved = json.loads((home / "diag" / "diagnostics.json").read_text())
    assert saved["shapley"] == res["shapley"] and saved["checkpoint"] == str(run / "checkpoints" / "best.ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]  # no folder named ~


def test_a_folder_named_like_a_tilde_without_a_user_is_kept_as_written(tmp_path, monkeypatch):
    """`~r2` names no user: the shell and the CLI keep it as written, but Path.expanduser, which the
    Python API used, raised "Could not determine home directory" (a review)."""
    from pase.io import user_path

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_path("~no_such_user_r2/x") == Path("~no_such_user_r2/x")
    assert user_path("~/x") == tmp_path / "home" / "x" and user_path(Path("rel")) == Path("rel")
    train(apply_overrides(Config(), TINY + ["train.max_epochs=1"]), "~no_such_user_r2", quiet=True)
    assert (tmp_path / "~no_such_user_r2" / "metrics.json").is_file()


def test_checkpoints_and_the_competition_probes_expand_a_tilde(tmp_path, monkeypatch):
    """probe_deficit trained its joint run into $HOME/c (train() expands `~`) and then read ~/c/joint
    literally; safe_load_checkpoint took `~` literally too (a review)."""
    from pase.evaluation.competition import probe_deficit
    from pase.training.checkpoint import safe_load_checkpoint

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    res = probe_deficit(apply_overrides(Config(), TINY + ["train.max_epochs=1"]), ["audio"], "~/c")
    assert "audio" in res and (home / "c" / "joint" / "metrics.json").is_file()
    assert "state_dict" in safe_load_checkpoint("~/c/joint/checkpoints/best.ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


def test_evaluate_predict_and_load_checkpoint_expand_a_tilde(run, tmp_path, monkeypatch):
    """evaluate / predict / load_checkpoint called from Python took a leading `~` literally where the CLI
    and train / compare expand it: predict wrote its CSV into ./~ (a review)."""
    import shutil

    from pase.config import ConfigError
    from pase.training.run import load_checkpoint

    out, result = run
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(out / result["checkpoint"], home / "best.ckpt")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    res = evaluate("~/best.ckpt", splits=("test",))
    for k, v in result["test"].items():
        assert abs(res["test"][k] - v) < 1e-6, k
    assert predict("~/best.ckpt", "~/pred/p.csv") == 64
    assert len(list(csv.DictReader(open(home / "pred" / "p.csv")))) == 64
    with pytest.raises(RunDirError, match=f"{home / 'pred' / 'p.csv'} exists"):
        predict("~/best.ckpt", "~/pred/p.csv")
    module, _, _ = load_checkpoint("~/best.ckpt")
    assert not module.training
    torch.save({"state_dict": {}}, home / "other.ckpt")  # no pase configuration: its message names the file read
    with pytest.raises(ConfigError, match=f"^{home / 'other.ckpt'}: not a pase checkpoint"):
        load_checkpoint("~/other.ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]  # no folder named ~


def test_a_ddp_worker_without_out_uses_the_folder_rank_0_chose(tmp_path, capsys, monkeypatch):
    """Without --out each process named runs/<method>-<time> from its own clock; a DDP worker starts
    tens of seconds later, so its messages pointed at a folder that did not exist (a review). Rank 0
    passes its choice on in the environment the workers inherit."""
    import pase.cli as cli
    import pase.training as training

    seen = []

    def fake_train(cfg, out, resume=False, quiet=False):
        seen.append(Path(out))
        return {"dataset": "d", "method": "late_fusion", "seed": 1, "protocol": "mosi", "monitor": "MAE",
                "best_epoch": 0, "valid": {}, "test": {}, "elapsed_s": 0.0}

    monkeypatch.setattr(training, "train", fake_train)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(cli._DEFAULT_RUN_ENV, "x")  # restored to unset afterwards
    monkeypatch.delenv(cli._DEFAULT_RUN_ENV)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert main(["train", "--quiet"]) == 0
    chosen = seen[-1]
    assert chosen.parent == Path("runs") and chosen.name.startswith("late_fusion-")
    assert os.environ[cli._DEFAULT_RUN_ENV] == str(chosen)
    monkeypatch.setenv(cli._DEFAULT_RUN_ENV, "runs/late_fusion-20260101-000000")  # as rank 0 left it
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert main(["train", "--quiet"]) == 0
    assert seen[-1] == Path("runs/late_fusion-20260101-000000")
    assert main(["train", "--quiet", "--out", "mine"]) == 0 and seen[-1] == Path("mine")  # --out wins
    capsys.readouterr()


@pytest.mark.parametrize("override, message", [
    ("train.loss=MSE", "train.loss='MSE' is not one of auto, l1, mse"),
    ("model.encoder=transformer", "model.hidden=30 is not divisible by model.heads=4; choose heads that divide it "
                                  "(for example 3)"),
    ("data.path=/elsewhere/mosi-bclstm", "data.path is not used by the built-in benchmark"),
])
def test_settings_that_would_be_ignored_or_crash_stop_before_training(tmp_path, override, message):
    sets = TINY + [override] + (["model.hidden=30"] if "hidden" in message else [])
    with pytest.raises(ValueError) as e:
        train(apply_overrides(Config(), sets), tmp_path / "r", quiet=True)
    assert message in str(e.value) and not (tmp_path / "r").exists()


def test_compiled_training_step_trains_as_eager_does(tmp_path, monkeypatch):
    """train.compile: the captured step (the banks' EMA, the OT warm start, the Shapley and SGM
    bookkeeping inside it) trains the same model as the eager step. Captured with torch.compile's
    aot_eager backend (the same graph capture, no C++ compilation: inductor's kernels are checked
    against eager in benchmarks/compile_probe.py --whole, BENCHMARKS.md)."""
    import warnings

    import torch._dynamo

    from pase.training import lightning_module

    monkeypatch.setattr(lightning_module, "COMPILE_BACKEND", "aot_eager")
    sets = TINY + ["method=pase", "pase.switch_max_epoch=1", "model.dropout=0.2"]
    eager = train(apply_overrides(Config(), sets), tmp_path / "eager", quiet=True)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    monkeypatch.setattr(torch._dynamo.utils, "warn_once_cache", set())  # Dynamo warns once per process
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled = train(apply_overrides(Config(), sets + ["train.compile=true"]), tmp_path / "compiled", quiet=True)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # the step was captured, not run eagerly
    assert not [str(w.message) for w in caught if "lru_cache" in str(w.message)]  # "potential silent incorrectness"
    torch._dynamo.reset()
    rows = [list(csv.DictReader(open(tmp_path / d / "log.csv"))) for d in ("eager", "compiled")]
    assert [r["diag/phase"] for r in rows[1]] == ["1.0", "2.0", "2.0"] and len(rows[0]) == len(rows[1])
    for a, b in zip(*rows):
        for k in a:
            if k != "epoch" and a[k] and not k.startswith("time"):
                assert float(b[k]) == pytest.approx(float(a[k]), rel=1e-4, abs=1e-6), k
    assert compiled["test"] == pytest.approx(eager["test"], rel=1e-4, abs=1e-6)


def test_compiled_ot_and_shapley_helpers_do_not_warn_and_equal_eager(monkeypatch):
    """Every train.compile run of pase printed two warnings of Dynamo's "potential silent incorrectness"
    (as ``pase: warning:``): the OT pair index and the Shapley weights came from functools.lru_cache'd
    helpers called inside the captured step (a review). They are now made in the traced graph without
    the cache wrapper: no warning, and the same numbers as eager."""
    import warnings

    import torch._dynamo

    from pase.ot import ot_alignment_loss_stacked
    from pase.shapley import exact_shapley

    def step(centroids, prototypes, utilities):
        loss, diag = ot_alignment_loss_stacked(centroids, prototypes, torch.ones(3, 2, dtype=torch.bool), solver="auto")
        return loss, diag["pair_cost"], exact_shapley(utilities)

    g = torch.Generator().manual_seed(0)
    args = (torch.randn(3, 2, 4, generator=g), torch.randn(3, 2, 4, generator=g), torch.randn(8, 5, generator=g))
    want = step(*args)
    monkeypatch.setattr(torch._dynamo.utils, "warn_once_cache", set())  # Dynamo warns once per process
    torch._dynamo.reset()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = torch.compile(step, backend="aot_eager", fullgraph=True)(*args)  # PaSE's K = 2 closed form
    torch._dynamo.reset()
    assert not [str(w.message) for w in caught if "lru_cache" in str(w.message)]
    for a, b in zip(want, got):
        assert torch.equal(a, b)


def test_compile_without_a_cpp_compiler_stops_before_training(tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("TORCHINDUCTOR_CPP_COMPILER", raising=False)
    with pytest.raises(ValueError, match="train.compile=true on the CPU needs a C\\+\\+ compiler"):
        train(apply_overrides(Config(), TINY + ["train.compile=true"]), tmp_path / "r", quiet=True)
    assert not (tmp_path / "r" / "metrics.json").exists()


def test_metrics_record_the_precision_that_ran(tmp_path):
    """On a CPU Lightning runs 16-mixed as bf16-mixed: the record says what ran, beside what was asked."""
    result = train(apply_overrides(Config(), TINY + ["train.precision=16-mixed", "train.max_epochs=1"]),
                   tmp_path / "r", quiet=True)
    assert (result["precision_effective"], result["accelerator_effective"]) == ("bf16-mixed", "CPUAccelerator")
    saved = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert saved["precision_effective"] == "bf16-mixed"
    assert yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())["train"]["precision"] == "16-mixed"


def test_a_batch_holding_the_whole_training_split_is_named(tmp_path, caplog):
    """train.batch_size=100000 trained silently with one optimiser step per epoch."""
    import logging

    with caplog.at_level(logging.WARNING, logger="pase"):
        train(apply_overrides(Config(), TINY + ["train.batch_size=100000", "train.max_epochs=1"]), tmp_path / "one",
              quiet=True)
        train(apply_overrides(Config(), TINY + ["train.max_epochs=1"]), tmp_path / "many", quiet=True)
    said = [r.getMessage() for r in caplog.records if "holds the whole training split" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("train.batch_size=100000 holds the whole training split (")


def test_a_transformer_model_scores_data_with_other_sequence_lengths(tmp_path, capsys):
    """The position table was sized from the data being scored, so pase evaluate on a file whose
    longest sequence differed (shorter too) failed with 'weights do not fit ... drop --set' (review).
    It keeps the trained size: shorter sequences score, longer ones are refused with one line."""
    from data.writers import write_mmsa

    train_path = write_mmsa(tmp_path / "a", "mosi", aligned=False, sizes=(24, 8, 8), steps=(12, 10))
    run = tmp_path / "run"
    sets = ["data.source=mmsa", f"data.path={train_path}", "model.encoder=transformer", "train.max_epochs=1",
            "train.batch_size=8", "model.d_model=8", "model.hidden=16", "model.head_hidden=8", "train.progress_bar=false"]
    result = train(apply_overrides(Config(), sets), run, quiet=True)
    ckpt = run / result["checkpoint"]
    shorter = write_mmsa(tmp_path / "b", "mosi", aligned=False, sizes=(24, 8, 8), steps=(9, 10), seed=3)
    res = evaluate(ckpt, overrides=[f"data.path={shorter}"])
    assert set(res) == {"valid", "test"} and 0 <= res["test"]["Has0_acc_2"] <= 1
    assert evaluate(ckpt)["test"] == pytest.approx(result["test"], abs=1e-6)  # its own data as before
    longer = write_mmsa(tmp_path / "c", "mosi", aligned=False, sizes=(24, 8, 8), steps=(14, 10), seed=3)
    assert main(["evaluate", "--checkpoint", str(ckpt), "--set", f"data.path={longer}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["pase: error: sequences of 14 steps are longer than the 12 this transformer encoder has positions "
                   "for (the longest in the data it was built for); cut the sequences to 12 steps"]


def test_a_run_resumed_from_a_checkpoint_saved_with_adams_loop_takes_the_foreach_step(tmp_path):
    """Loading the optimiser state put back the saved foreach=None of a checkpoint written before
    foreach was the default, so a resumed old run kept the per-parameter loop (a review)."""
    run = tmp_path / "r"
    train(apply_overrides(Config(), TINY + ["train.max_epochs=1"]), run, quiet=True)
    last = run / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=False)
    for group in state["optimizer_states"][0]["param_groups"]:
        group["foreach"] = None  # as saved before
    torch.save(state, last)
    (run / "metrics.json").unlink()
    train(apply_overrides(Config(), TINY + ["train.max_epochs=2", "train.early_stop_patience=100"]), run, resume=True,
          quiet=True)
    groups = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["optimizer_states"][0]["param_groups"]
    assert [g["foreach"] for g in groups] == [True] * len(groups)


def test_a_run_keeps_the_dataset_it_was_trained_as_when_its_data_moves(tmp_path, capsys):
    """The dataset was inferred from the path at every load: a SIMS run evaluated from a folder named MOSI was
    scored under MOSI's protocol, and from a folder naming none it was refused, as was the --set
    data.options.dataset=sims the refusal asked for (a review). A run records the dataset its path resolved
    to; an older run's (its metrics.json's) refuses data that loads as another, and takes that --set."""
    import shutil

    from data.writers import write_mmsa

    path = write_mmsa(tmp_path / "data", "sims", aligned=False, sizes=(16, 8, 8), steps=(6, 5))
    run = tmp_path / "run"
    sets = ["data.source=mmsa", f"data.path={path}", "train.max_epochs=1", "train.batch_size=8", "model.d_model=8",
            "model.hidden=16", "model.head_hidden=8", "train.progress_bar=false"]
    result = train(apply_overrides(Config(), sets), run, quiet=True)
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["options"]["dataset"] == "sims"
    ckpt = run / result["checkpoint"]
    for folder in ("MOSI/Processed", "chinese/Processed"):  # names another dataset, and none
        moved = tmp_path / folder / path.name
        moved.parent.mkdir(parents=True)
        shutil.copy(path, moved)
        res = evaluate(ckpt, overrides=[f"data.path={moved}"])
        assert (res.dataset, res.protocol) == ("sims_mmsa", "sims")
        assert res["test"] == pytest.approx(result["test"], abs=1e-6)
    as_an_older_pase_saved(run)
    moved = tmp_path / "MOSI/Processed" / path.name
    assert main(["evaluate", "--checkpoint", str(ckpt), "--set", f"data.path={moved}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"pase: error: {moved}: this data loads as dataset 'mosi' (mosi_mmsa, protocol mosi), but {ckpt} "
                   "was trained as 'sims': its path names another dataset (the dataset is read from the file and "
                   "folder names when data.options.dataset is not set); pass --set data.options.dataset=sims to "
                   "read it as the run's dataset, or point data.path at the run's data (nothing was changed)")
    for folder in ("MOSI/Processed", "chinese/Processed"):
        res = evaluate(ckpt, overrides=[f"data.path={tmp_path / folder / path.name}", "data.options.dataset=SIMS"])
        assert (res.dataset, res.protocol) == ("sims_mmsa", "sims")
    with pytest.raises(ValueError, match=r"changes what the checkpoint was trained with \(data.options.dataset: "
                                         r"'sims' there, 'mosi' now\)"):
        evaluate(ckpt, overrides=[f"data.path={moved}", "data.options.dataset=mosi"])
    assert evaluate(ckpt)["test"] == pytest.approx(result["test"], abs=1e-6)  # an older run on its own data


def test_a_run_scored_on_a_file_whose_path_names_another_dataset_warns(tmp_path, caplog):
    """A MOSI run evaluated on a SIMS file was read, and scored, as MOSI without a word, since the run names
    its dataset (a review). It is still read as the run's dataset (not refused: a run's own data moved to a
    folder named after another dataset is why the dataset is recorded), with one warning naming the file, the
    dataset its path names, the run's and that the scores use the run's protocol; its own data moved there
    says nothing."""
    import logging
    import shutil

    from data.writers import write_mmsa

    path = write_mmsa(tmp_path / "a", "mosi", sizes=(16, 8, 8))
    sims = write_mmsa(tmp_path / "b", "sims", aligned=False, sizes=(16, 8, 8), seed=1)
    sets = ["data.source=mmsa", f"data.path={path}", "data.modalities=[text]", "train.max_epochs=1",
            "train.batch_size=8", "model.d_model=8", "model.hidden=16", "model.head_hidden=8",
            "train.progress_bar=false"]
    run = tmp_path / "run"
    ckpt = run / train(apply_overrides(Config(), sets), run, quiet=True)["checkpoint"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pase"):
        res = evaluate(ckpt, overrides=[f"data.path={sims}"])
    assert (res.dataset, res.protocol) == ("mosi_mmsa", "mosi")
    said = [r.getMessage() for r in caplog.records if "path names" in r.getMessage()]
    assert said == [f"{sims}: its path names dataset 'sims', but {ckpt} was trained as 'mosi': the file is read as "
                    "'mosi' (mosi_mmsa), and its scores use the run's protocol 'mosi', whatever the path names"]
    moved = tmp_path / "SIMS" / "Processed" / path.name  # the run's own data, in a folder named SIMS
    moved.parent.mkdir(parents=True)
    shutil.copy(path, moved)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pase"):
        res = evaluate(ckpt, overrides=[f"data.path={moved}"])
    assert (res.dataset, res.protocol) == ("mosi_mmsa", "mosi")
    assert [r.getMessage() for r in caplog.records if "path names" in r.getMessage()] == []


def test_a_relative_data_path_from_the_runs_config_is_named_as_such_when_missing(tmp_path, capsys, monkeypatch):
    """config.yaml keeps data.path as typed, so pase evaluate from another folder than training ran in said only
    "no such file; check the path" of a path the user never typed (a review). The message says where the path
    came from, that a relative one is read from the current folder, and the --set that points at the data."""
    from data.writers import write_mmsa

    write_mmsa(tmp_path / "data", "mosi", sizes=(16, 8, 8))
    monkeypatch.chdir(tmp_path)
    rel = "data/MOSI/Processed/aligned_50.pkl"
    sets = ["data.source=mmsa", f"data.path={rel}", "train.max_epochs=1", "train.batch_size=8", "model.d_model=8",
            "model.hidden=16", "model.head_hidden=8", "train.progress_bar=false"]
    run = tmp_path / "run"
    ckpt = run / train(apply_overrides(Config(), sets), run, quiet=True)["checkpoint"]
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    for args, what in ((["evaluate", "--checkpoint", str(ckpt)], ckpt),
                       (["train", "--resume", str(run), "--quiet", "--set", "train.max_epochs=2"], run)):
        assert main(args) == 2
        assert capsys.readouterr().err.strip().splitlines()[-1] == (
            f"pase: error: {rel}: no such file or folder; data.path comes from the configuration {what} was trained "
            f"with (its run's config.yaml); a relative path is read from the current folder ({tmp_path / 'elsewhere'}),"
            " not the one training ran in: pass --set data.path=NEW with where the data lies now (nothing is "
            "downloaded for you)")
    assert main(["evaluate", "--checkpoint", str(ckpt), "--set", f"data.path={tmp_path / rel}"]) == 0
    assert main(["evaluate", "--checkpoint", str(ckpt), "--set", "data.path=nowhere.pkl"]) == 2  # typed: as before
    assert capsys.readouterr().err.strip().splitlines()[-1] == ("pase: error: nowhere.pkl: no such file; check the "
                                                                "path (nothing is downloaded for you)")
