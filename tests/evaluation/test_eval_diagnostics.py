"""Per-run diagnostics: test-split Shapley values, probes, trajectories."""

import csv
import itertools
import json
import math

import pytest
import torch
from sklearn.metrics import r2_score

from eval_setup import MODALITIES, OK_METHODS, SEEDS
from pase.evaluation.shapley_report import split_coalition_utilities
from pase.methods.base import task_loss
from pase.shapley import coalition_masks
from pase.training.datamodule import make_loader
from pase.training.run import load_checkpoint

RUNS = [(m, s) for m in OK_METHODS for s in SEEDS]


def _diag(out, method, seed):
    return json.loads((out / "runs" / method / f"seed{seed}" / "diagnostics.json").read_text())


def _brute_force(mods, coalitions, utilities):
    """Mean marginal contribution over all M! orders, looked up in the same utility table."""
    v = {frozenset(c): u for c, u in zip(coalitions, utilities)}
    phi = dict.fromkeys(mods, 0.0)
    orders = list(itertools.permutations(mods))
    for order in orders:
        for k, m in enumerate(order):
            phi[m] += v[frozenset(order[: k + 1])] - v[frozenset(order[:k])]
    return {m: p / len(orders) for m, p in phi.items()}


@pytest.mark.parametrize("method, seed", RUNS)
def test_test_split_shapley_is_efficient_and_matches_brute_force(comparison, method, seed):
    d = _diag(comparison[0], method, seed)
    assert d["split"] == "test" and d["modalities"] == MODALITIES and d["protocol"] == "mosi"
    for utility in ("neg_loss", "accuracy"):
        s = d["shapley"][utility]
        u, values = s["utilities"], s["values"]
        assert s["coalitions"][0] == [] and s["coalitions"][-1] == MODALITIES and len(u) == 8
        # efficiency: sum of values = v(all) - v(empty); float64 sums of float32 losses
        assert sum(values.values()) == pytest.approx(u[-1] - u[0], abs=1e-9)
        brute = _brute_force(MODALITIES, s["coalitions"], u)
        for m in MODALITIES:
            assert values[m] == pytest.approx(brute[m], abs=1e-9)
        assert sum(s["shares"].values()) == pytest.approx(1.0, abs=1e-6)
        assert all(0 <= x <= 1 for x in s["shares"].values())


def test_coalition_utilities_equal_forward_passes_with_masked_modalities(comparison):
    out = comparison[0]
    module, cfg, bundle = load_checkpoint(out / "runs" / "agm" / "seed1112" / "checkpoints" / "best.ckpt")
    model = module.model
    table = split_coalition_utilities(model, bundle, "test", batch_size=17)  # any batching
    saved = _diag(out, "agm", 1112)["shapley"]["neg_loss"]["utilities"]
    assert table["neg_loss"].tolist() == pytest.approx(saved, abs=1e-6)  # batch size 17 vs 64: float32 sums
    with torch.no_grad():
        for c, mask in enumerate(coalition_masks(3)):
            losses, hits, n, preds, ys = 0.0, 0.0, 0, [], []
            for batch in make_loader(bundle, "test", 64, False, 0):
                logits = model(batch, present=mask).logits  # (B, 1)
                losses += float(task_loss(logits, batch.target, bundle.task, reduce_batch=False).sum())
                hits += float(((logits[:, 0] >= 0) == (batch.target >= 0)).sum())
                n += len(batch)
                preds.append(logits[:, 0].double())
                ys.append(batch.target.double())
            assert float(table["neg_loss"][c]) == pytest.approx(-losses / n, abs=1e-5)
            assert float(table["accuracy"][c]) == pytest.approx(hits / n, abs=1e-6)  # float32 batch means
            y, pred = torch.cat(ys), torch.cat(preds)
            r2 = r2_score(y.numpy(), pred.numpy())  # the reference implementation
            assert float(table["r2"][c]) == pytest.approx(r2, abs=1e-5)


@pytest.mark.parametrize("method, seed", RUNS)
def test_probes_and_diagnostics_table(comparison, method, seed):
    run = comparison[0] / "runs" / method / f"seed{seed}"
    d = _diag(comparison[0], method, seed)
    assert set(d["probes"]) == set(MODALITIES)
    assert all(0 <= p["acc2"] <= 1 and (math.isnan(p["corr"]) or -1 <= p["corr"] <= 1) for p in d["probes"].values())
    rows = list(csv.DictReader(open(run / "diagnostics.csv")))
    assert [r["modality"] for r in rows] == MODALITIES
    for r in rows:
        assert float(r["share_neg_loss"]) == pytest.approx(d["shapley"]["neg_loss"]["shares"][r["modality"]])
        assert float(r["probe_acc2"]) == pytest.approx(d["probes"][r["modality"]]["acc2"])


def test_trajectory_copies_the_contribution_columns_of_the_log(comparison):
    run = comparison[0] / "runs" / "late_fusion" / "seed1111"
    log = list(csv.DictReader(open(run / "log.csv")))
    traj = list(csv.DictReader(open(run / "trajectory.csv")))
    assert len(traj) == len(log) == 2
    cols = set(traj[0])
    assert {"epoch", "valid/MAE"} | {f"diag/{k}_{m}" for k in ("share", "shapley") for m in MODALITIES} <= cols
    assert not any(c.startswith("train/") for c in cols)
    for a, b in zip(traj, log):
        assert all(a[c] == b[c] for c in cols)


def test_copy_trajectory_expands_a_tilde(tmp_path, monkeypatch):
    """copy_trajectory called from Python took a leading `~` literally, where diagnose expands it
    (pase.io.user_path): it found no log.csv, and wrote into a folder named ~ (a review)."""
    from pase.evaluation.shapley_report import copy_trajectory

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    (home / "log.csv").write_text("epoch,train/loss,diag/share_text,diag/phase,valid/MAE\n0,1.5,0.6,1,0.9\n"
                                  "1,1.2,0.7,2,0.8\n")
    assert copy_trajectory("~/log.csv", "~/out/trajectory.csv", "MAE") == 2
    rows = list(csv.DictReader(open(home / "out" / "trajectory.csv")))
    assert rows == [{"epoch": "0", "diag/share_text": "0.6", "diag/phase": "1", "valid/MAE": "0.9"},
                    {"epoch": "1", "diag/share_text": "0.7", "diag/phase": "2", "valid/MAE": "0.8"}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]  # no folder named ~


def test_trajectory_keeps_the_phase_columns_and_the_monitor(tmp_path):
    """PaSE's phase and switch epoch are trajectory columns too; other columns (train losses, other
    validation metrics) are not."""
    from pase.evaluation.shapley_report import copy_trajectory, read_csv, write_csv

    rows = [{"epoch": str(e), "train/loss": "1.0", "diag/phase": str(min(e, 1)), "diag/switch_epoch": "1",
             "diag/share_text": "0.6", "diag/sgm_coeff_text": "0.9", "valid/MAE": "0.8", "valid/Corr": "0.1"}
            for e in range(3)]
    write_csv(tmp_path / "log.csv", rows)
    assert copy_trajectory(tmp_path / "log.csv", tmp_path / "t.csv", monitor="MAE") == 3
    got = read_csv(tmp_path / "t.csv")
    assert list(got[0]) == ["epoch", "diag/phase", "diag/switch_epoch", "diag/share_text", "diag/sgm_coeff_text",
                            "valid/MAE"]
    assert [r["diag/phase"] for r in got] == ["0", "1", "1"]


def test_diagnose_writes_into_the_run_folder_by_default(comparison_copy):
    """Without out_dir the diagnosis goes to the run folder (two levels above checkpoints/best.ckpt),
    where pase compare reads it."""
    from pase.evaluation.shapley_report import diagnose
    from pase.training.run import DIAGNOSIS_FILES

    run = comparison_copy / "runs" / "late_fusion" / "seed1111"
    for f in DIAGNOSIS_FILES:
        (run / f).unlink(missing_ok=True)
    # a killed diagnosis's unfinished writes go; a user's own hidden .tmp file stays
    leftovers = [".diagnostics.json.k1a2b3.tmp", ".robustness.csv.x9.tmp", "..diagnosis-in-progress.json.q7.tmp"]
    for name in leftovers + [".mine.tmp"]:
        (run / name).write_text("partial")
    diagnose(run / "checkpoints" / "best.ckpt", noise_levels=[0], probes=False)
    assert all((run / f).is_file() for f in DIAGNOSIS_FILES)
    assert not any((run / "checkpoints" / f).exists() for f in DIAGNOSIS_FILES)
    assert not any((run / name).exists() for name in leftovers) and (run / ".mine.tmp").read_text() == "partial"


def test_a_diagnosis_without_a_log_removes_an_earlier_trajectory(comparison, tmp_path):
    """diagnostics.json names no trajectory when the run's log.csv is not found, and no trajectory.csv
    of an earlier diagnosis is left beside it to pass for this one's."""
    import shutil

    from pase.evaluation.shapley_report import diagnose

    run = comparison[0] / "runs" / "late_fusion" / "seed1111"
    ckpt = tmp_path / "alone" / "model.ckpt"  # no log.csv next to it
    ckpt.parent.mkdir()
    shutil.copyfile(run / "checkpoints" / "best.ckpt", ckpt)
    out = tmp_path / "d"
    first = diagnose(ckpt, out, noise_levels=[0], probes=False, log_csv=run / "log.csv")
    assert first["files"]["trajectory"] == "trajectory.csv" and (out / "trajectory.csv").is_file()
    again = diagnose(ckpt, out, noise_levels=[0], probes=False)
    assert again["files"]["trajectory"] is None and not (out / "trajectory.csv").exists()


def test_diagnose_scores_the_split_asked_with_the_runs_loss(comparison, tmp_path):
    """--split valid: the probes are scored on valid as the Shapley values are; and the neg_loss utility
    is minus the run's own train.loss (here mse, set as an override) over that split."""
    from pase.evaluation.probes import probe_model
    from pase.evaluation.shapley_report import diagnose, split_shapley

    ckpt = comparison[0] / "runs" / "late_fusion" / "seed1111" / "checkpoints" / "best.ckpt"
    got = diagnose(ckpt, tmp_path / "d", split="valid", noise_levels=[0], overrides=["train.loss=mse"])
    module, _, bundle = load_checkpoint(ckpt)
    probes = probe_model(module.model, bundle, "valid")
    assert set(got["probes"]) == set(probes) == set(MODALITIES)
    for m in MODALITIES:
        assert got["probes"][m] == pytest.approx(probes[m], nan_ok=True), m
    want = split_shapley(module.model, bundle, "valid", "mse")["neg_loss"]["utilities"]
    assert got["shapley"]["neg_loss"]["utilities"] == pytest.approx(want, abs=1e-9)
    assert want != pytest.approx(split_shapley(module.model, bundle, "valid", "l1")["neg_loss"]["utilities"])


class _Pick(torch.nn.Module):
    """An 'encoder' passing its one-feature input through: (B, 1, 1) -> (B, 1)."""

    def forward(self, x, lengths):
        return x[:, 0, :]


def test_r2_shares_of_an_additive_oracle_are_the_ground_truth_shares():
    """A model that predicts y by least squares on the generator's own effects (one zero-mean term
    per modality) gets r2 Shapley shares equal to the ground-truth variance shares, and its r2
    Shapley values sum to R^2(all) - R^2(empty) = the oracle's R^2 (close to the Bayes R^2)."""
    from pase.data.contract import DataBundle, MultimodalDataset
    from pase.data.registry import create_data
    from pase.evaluation.shapley_report import split_shapley
    from pase.models.fusion_model import FusionModel

    src = create_data("synthetic", sizes=[32, 32, 20000])
    test = src.splits["test"]
    mods = ["text", "audio", "vision"]
    eff = test.effects.double()  # (N, 3), columns in the generator's modality order
    feats = {m: eff[:, [j]].float().unsqueeze(1) for j, m in enumerate(mods)}  # (N, 1, 1)
    bundle = DataBundle("oracle", src.task, {s: MultimodalDataset(feats, test.target, test.ids, split=s)
                                             for s in ("train", "valid", "test")})  # only test is read
    design = torch.cat([eff, torch.ones(len(eff), 1, dtype=torch.float64)], 1)
    coef = torch.linalg.lstsq(design, test.target.double().unsqueeze(1)).solution[:, 0]  # (4,)
    head = torch.nn.Linear(3, 1)
    with torch.no_grad():
        head.weight.copy_(coef[:3].float()[None])
        head.bias.fill_(float(coef[3]))
    model = FusionModel({m: _Pick() for m in mods}, head, d_model=1)
    got = split_shapley(model, bundle, "test")["r2"]
    truth = src.info["ground_truth_shares"]
    for m in mods:
        assert abs(got["shares"][m] - truth[m]) < 0.02, (m, got["shares"], truth)
    utils = got["utilities"]
    assert sum(got["values"].values()) == pytest.approx(utils[-1] - utils[0], abs=1e-9)  # efficiency
    assert abs(utils[0]) < 1e-3  # the empty coalition predicts the mean: R^2 ~ 0
    assert utils[-1] == pytest.approx(src.info["bayes_r2"], abs=0.01)


def test_the_ground_truth_of_a_two_modality_run_is_over_its_modalities(tmp_path, comparison):
    """A text + audio run's diagnostics.json recorded the generator's three shares (0.4, 0.35, 0.25),
    against which its two shares cannot be read; they are now renormalised over its modalities."""
    from tiny import TINY

    from pase.config import Config, apply_overrides
    from pase.evaluation.shapley_report import diagnose
    from pase.training import train

    three = _diag(comparison[0], "late_fusion", 1111)
    gen = three["ground_truth_shares_generator"]
    assert three["ground_truth_shares"] == pytest.approx(gen) and sum(gen.values()) == pytest.approx(1)
    run = tmp_path / "two"
    metrics = train(apply_overrides(Config(), TINY + ["train.max_epochs=1", "data.modalities=[text,audio]"]), run,
                    quiet=True)
    got = diagnose(run / metrics["checkpoint"], run, noise_levels=[0])
    total = gen["text"] + gen["audio"]
    assert got["ground_truth_shares"] == pytest.approx({"text": gen["text"] / total, "audio": gen["audio"] / total})
    assert got["ground_truth_shares_generator"] == gen


def test_r2_is_left_out_on_a_split_whose_labels_are_all_equal():
    """Var(y) as E[y^2] - E[y]^2 left 2e-16 of rounding for 343 labels of 1.3, so r2 utilities of about
    -6e15 and plausible-looking shares were reported (a review); the centred variance is 0 and r2 is
    left out. With varying labels r2 is each coalition's 1 - SSE / (n Var(y)), recomputed here."""
    from pase.config import Config, apply_overrides
    from pase.data.contract import DataBundle, MultimodalDataset
    from pase.models.build import build_model
    from pase.training.run import load_bundle

    cfg = apply_overrides(Config(), ["data.options.sizes=[64,32,343]", "model.d_model=8", "model.hidden=16",
                                     "model.head_hidden=8"])
    b = load_bundle(cfg)
    ds = b.splits["test"]
    torch.manual_seed(0)
    model = build_model(cfg, b)
    for target in (torch.full_like(ds.target, 1.3), ds.target):
        splits = dict(b.splits)
        splits["test"] = MultimodalDataset({m: ds.features[m] for m in ds.modalities}, target, ds.ids, split="test")
        table = split_coalition_utilities(model, DataBundle(b.name, b.task, splits, dict(b.info)), "test")
        if target is ds.target:
            with torch.no_grad():
                out = model.eval()(next(iter(make_loader(DataBundle(b.name, b.task, splits, dict(b.info)), "test",
                                                         1000, False, 0))))
                preds = model.coalition_logits(out, coalition_masks(3))[..., 0].double()
            y = target.double().numpy()
            want = [r2_score(y, p.numpy()) for p in preds]
            assert table["r2"].tolist() == pytest.approx(want, abs=1e-9)
        else:
            assert "r2" not in table and set(table) == {"neg_loss", "accuracy"}
