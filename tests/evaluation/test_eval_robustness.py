"""Robustness: missing-modality and noise conditions, the relative summary, the noise itself."""

import csv
import json
import types

import numpy as np
import pytest
import torch

from eval_setup import MODALITIES, OK_METHODS, SEEDS
from pase.data.contract import MultimodalDataset, collate_batches
from pase.evaluation.robustness import (DEFAULT_NOISE_LEVELS, add_noise, aggregate_conditions, feature_std,
                                        headline_metric, robustness_summary)

CONDITIONS = ["text+audio+vision", "text+audio", "text+vision", "audio+vision", "text", "audio", "vision"]
RUNS = [(m, s) for m in OK_METHODS for s in SEEDS]


def _rows(out, method, seed):
    return list(csv.DictReader(open(out / "runs" / method / f"seed{seed}" / "robustness.csv")))


@pytest.mark.parametrize("method, seed", RUNS)
def test_all_modalities_present_equals_the_runs_test_metrics(comparison, method, seed):
    out = comparison[0]
    test = json.loads((out / "runs" / method / f"seed{seed}" / "metrics.json").read_text())["test"]
    rows = _rows(out, method, seed)
    full = rows[0]
    assert (full["kind"], full["condition"]) == ("missing", "text+audio+vision")
    # every row names its dataset, protocol and split (PASE_SPEC section 6; they named neither, review)
    assert {(r["dataset"], r["protocol"], r["split"]) for r in rows} == {("synthetic", "mosi", "test")}
    with open(out / "runs" / method / f"seed{seed}" / "diagnostics.csv") as fh:
        assert next(csv.reader(fh))[:3] == ["dataset", "protocol", "split"]
    clean = [r for r in rows if r["kind"] == "noise" and float(r["sigma"]) == 0]
    for r in [full] + clean:  # sigma = 0 is the clean input too
        for k, v in test.items():
            assert float(r[k]) == pytest.approx(v, abs=1e-5), k  # float32 sums in another batch order


def test_every_condition_is_present(comparison):
    rows = _rows(comparison[0], "agm", 1111)
    assert [r["condition"] for r in rows if r["kind"] == "missing"] == CONDITIONS
    noise = [(r["modality"], float(r["sigma"])) for r in rows if r["kind"] == "noise"]
    assert noise == [(m, s) for m in MODALITIES for s in DEFAULT_NOISE_LEVELS]
    d = json.loads((comparison[0] / "runs" / "agm" / "seed1111" / "diagnostics.json").read_text())
    summary = robustness_summary(rows, "Has0_acc_2", MODALITIES)
    assert d["robustness"]["metric"] == "Has0_acc_2"
    assert d["robustness"]["missing_relative"] == pytest.approx(summary["missing_relative"])


def test_robustness_summary_closed_form():
    rows = [{"kind": "missing", "condition": c, "acc": a} for c, a in
            [("a+b", 0.8), ("a", 0.6), ("b", 0.4)]]
    rows += [{"kind": "noise", "modality": m, "sigma": s, "acc": a} for m, s, a in
             [("a", 0.0, 0.8), ("a", 1.0, 0.4), ("a", 2.0, 0.2), ("b", 0.0, 0.8), ("b", 1.0, 0.8)]]
    s = robustness_summary(rows, "acc", ["a", "b"])
    assert s["full"] == 0.8
    assert s["missing_relative"] == pytest.approx((0.6 / 0.8 + 0.4 / 0.8) / 2)
    assert s["missing_relative_a"] == pytest.approx(0.75)
    assert s["noise_relative_a"] == pytest.approx((0.5 + 0.25) / 2) and s["noise_relative_b"] == 1.0
    assert s["noise_relative"] == pytest.approx((0.375 + 1.0) / 2)


def test_headline_metric_per_protocol():
    assert headline_metric("mosi") == "Has0_acc_2"
    assert headline_metric("sims") == "Mult_acc_2"
    assert headline_metric("multiclass") == "WF1"
    assert headline_metric("iemocap_mult") == "Mean_F1"


def _dataset(gen):
    x = torch.randn(4000, 3, 2, generator=gen) * torch.tensor([1.0, 5.0])  # (N, T, D), feature stds 1 and 5
    lengths = torch.randint(1, 4, (4000,), generator=gen)
    x = x * (torch.arange(3)[None, :, None] < lengths[:, None, None])  # zero padding
    return MultimodalDataset({"audio": x, "text": torch.randn(4000, 4, generator=gen)}, torch.zeros(4000),
                             [str(i) for i in range(4000)], lengths={"audio": lengths})


def test_feature_std_uses_real_steps_only(gen):
    ds = _dataset(gen)

    class _B:  # a bundle-like holder: feature_std reads bundle.splits[split]
        splits = {"train": ds}

    std = feature_std(_B())["audio"]
    real = ds.features["audio"][torch.arange(3)[None, :] < ds.lengths["audio"][:, None]].numpy()
    np.testing.assert_allclose(std.numpy(), real.std(0), rtol=1e-5)


def test_add_noise_scales_with_the_feature_std_and_keeps_padding(gen):
    ds = _dataset(gen)
    batch = collate_batches(ds.__getitems__(list(range(4000))))
    std = torch.tensor([1.0, 5.0])
    noisy = add_noise(batch, "audio", 0.5, std, seed=0)
    delta = noisy.inputs["audio"] - batch.inputs["audio"]  # (N, T, D)
    mask = batch.mask("audio")  # (N, T)
    assert torch.equal(delta[~mask], torch.zeros_like(delta[~mask]))
    # sample std of ~8000 normals per feature: within 5% of sigma * std
    np.testing.assert_allclose(delta[mask].std(0).numpy(), [0.5, 2.5], rtol=0.05)
    assert noisy.inputs["text"] is batch.inputs["text"] and torch.equal(batch.inputs["audio"], ds.features["audio"])


def test_a_noise_cell_does_not_depend_on_the_batch_size(comparison):
    """One generator per condition drew the noise batch by batch, so `pase diagnose --set
    train.batch_size=7` scored other noise than 256 (noise:text@1 MAE 1.1394 against 1.1596, a review);
    each sample's noise is now seeded by the seed and its id: the same draw in any batch, another
    for another sample or seed."""
    from pase.evaluation.robustness import evaluate_condition, sample_noise
    from pase.training import load_checkpoint

    module, _, bundle = load_checkpoint(comparison[0] / "runs" / "late_fusion" / "seed1111" / "checkpoints" / "best.ckpt")
    noise = {"modality": "text", "sigma": 1.0, "std": feature_std(bundle)["text"]}
    at = {b: evaluate_condition(module.model, bundle, noise=noise, batch_size=b) for b in (256, 7, 97)}
    clean = evaluate_condition(module.model, bundle)
    for b in (7, 97):
        assert at[b] == pytest.approx(at[256], abs=1e-5), b
    assert abs(at[256]["MAE"] - clean["MAE"]) > 1e-4  # the noise is there
    a, b2 = sample_noise(["x", "y"], (2, 3, 4), 0), sample_noise(["y", "x"], (2, 3, 4), 0)
    assert torch.equal(a[0], b2[1]) and torch.equal(a[1], b2[0]) and not torch.equal(a[0], a[1])
    assert not torch.equal(a, sample_noise(["x", "y"], (2, 3, 4), 1))


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_a_negative_or_non_finite_noise_level_is_refused_by_the_python_functions(comparison, bad):
    """The CLI refused them; diagnose(noise_levels=...) and robustness_rows scored -1 as much noise as 1
    and NaN as none, each under its own name (a review)."""
    from pase.evaluation.robustness import robustness_rows, unique_levels
    from pase.training import load_checkpoint

    with pytest.raises(ValueError, match=r"noise_levels: .* is not a noise level; give non-negative numbers"):
        unique_levels([0, bad])
    module, _, bundle = load_checkpoint(comparison[0] / "runs" / "late_fusion" / "seed1111" / "checkpoints" / "best.ckpt")
    with pytest.raises(ValueError, match="is not a noise level"):
        robustness_rows(module.model, bundle, noise_levels=[0.5, bad])


def test_noise_levels_are_one_ascending_set_and_a_record_matches_in_any_order():
    """Levels were kept in the order given, so 0.5,0.1 and 0.1,0.5 wrote other rows and records and a
    comparison diagnosed with one order refused to resume with the other (a review)."""
    from pase.evaluation.robustness import same_levels, unique_levels

    assert unique_levels([0.5, 0.1, 2, 0.1]) == unique_levels([2, 0.1, 0.5]) == [0.1, 0.5, 2.0]
    assert str(unique_levels([-0.0, 1])) == "[0.0, 1.0]"  # not -0.0, named noise:<m>@-0
    assert same_levels([0.5, 0.1], [0.1, 0.5]) and same_levels([1, 0.5, 1], [0.5, 1.0])
    assert not same_levels([0.5], [0.1, 0.5]) and not same_levels("0.1", [0.1]) and not same_levels(None, [0.1])


def test_aggregate_conditions_over_seeds():
    seed1 = [{"kind": "missing", "condition": "a", "modality": "", "sigma": "", "acc": "0.5"},
             {"kind": "noise", "condition": "noise:a@1", "modality": "a", "sigma": "1.0", "acc": "0.25"}]
    seed2 = [{"kind": "missing", "condition": "a", "modality": "", "sigma": "", "acc": "0.7"},
             {"kind": "noise", "condition": "noise:a@1", "modality": "a", "sigma": "1.0", "acc": "nan"}]
    missing, noise = aggregate_conditions([seed1, seed2], "acc")
    assert (missing["condition"], missing["n"]) == ("a", 2)
    assert missing["mean"] == pytest.approx(0.6) and missing["sd"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert (noise["modality"], noise["sigma"], noise["n"], noise["mean"]) == ("a", "1.0", 1, 0.25)


def test_a_repeated_noise_level_is_scored_once(comparison):
    from pase.evaluation.robustness import robustness_rows
    from pase.training import load_checkpoint

    module, _, bundle = load_checkpoint(comparison[0] / "runs" / "late_fusion" / "seed1111" / "checkpoints" / "best.ckpt")
    rows = robustness_rows(module.model, bundle, noise_levels=[0, 1, 1.0])
    noise = [(r["modality"], r["sigma"]) for r in rows if r["kind"] == "noise"]
    assert noise == [(m, s) for m in MODALITIES for s in (0.0, 1.0)]


def test_a_present_list_naming_no_modality_of_the_model_is_refused(comparison):
    """present=['txt'] scored the empty coalition (every modality masked) without a word, and a bare
    string was read letter by letter."""
    from pase.evaluation.robustness import evaluate_condition
    from pase.training import load_checkpoint

    module, _, bundle = load_checkpoint(comparison[0] / "runs" / "late_fusion" / "seed1111" / "checkpoints" / "best.ckpt")
    for bad, named in ((["txt"], "'txt'"), (["text", "face"], "'face'"), ("text", "'text'")):
        with pytest.raises(ValueError, match=f"present: {named} is not a list of the model's modalities "
                                             r"\(text, audio, vision\); pass a list of them"):
            evaluate_condition(module.model, bundle, present=bad)
    assert evaluate_condition(module.model, bundle, present=["text"]) != evaluate_condition(module.model, bundle,
                                                                                            present=[])


def test_a_token_id_input_gets_no_noise_rows(comparison):
    """BERT text is token ids: Gaussian noise made them negative and the embedding lookup failed, so the
    whole diagnosis of a BERT run was lost. Such an encoder (``TOKEN_IDS``) gets no noise rows; the
    others keep theirs, and its missing-modality rows stay."""
    from pase.evaluation.robustness import robustness_rows
    from pase.training import load_checkpoint

    module, _, bundle = load_checkpoint(comparison[0] / "runs" / "late_fusion" / "seed1111" / "checkpoints" / "best.ckpt")
    from pase.models.bert import BertTextEncoder

    assert BertTextEncoder.TOKEN_IDS
    module.model.encoders["text"].TOKEN_IDS = True  # as BertTextEncoder declares (transformers is not installed here)
    rows = robustness_rows(module.model, bundle, noise_levels=[0, 1])
    assert [(r["modality"], r["sigma"]) for r in rows if r["kind"] == "noise"] == \
        [(m, s) for m in MODALITIES if m != "text" for s in (0.0, 1.0)]
    assert sum(r["kind"] == "missing" for r in rows) == 2 ** len(MODALITIES) - 1


def test_a_modality_constant_on_train_gets_no_noise_rows(comparison):
    """Noise is scaled by each feature's train std: for a modality all zeros on train (absent from a
    dataset) it added nothing, and its rows counted as perfect robustness (noise_relative_audio 1.0,
    raising the mean). It now gets no noise rows; its ratio is NaN and left out of the mean."""
    from pase.evaluation.robustness import robustness_rows
    from pase.training import load_checkpoint

    module, _, bundle = load_checkpoint(comparison[0] / "runs" / "late_fusion" / "seed1111" / "checkpoints" / "best.ckpt")
    for split in ("train", "test"):
        bundle.splits[split].features["audio"].zero_()
    rows = robustness_rows(module.model, bundle, noise_levels=[0, 1])
    assert [(r["modality"], r["sigma"]) for r in rows if r["kind"] == "noise"] == \
        [(m, s) for m in MODALITIES if m != "audio" for s in (0.0, 1.0)]
    summary = robustness_summary(rows, "Has0_acc_2", MODALITIES)
    assert np.isnan(summary["noise_relative_audio"])
    assert summary["noise_relative"] == pytest.approx((summary["noise_relative_text"]
                                                       + summary["noise_relative_vision"]) / 2)


def test_the_noise_seed_changes_the_draw(comparison):
    """``seed`` (with each sample's id) seeds the noise: the same seed scores the same, another seed
    another draw, in evaluate_condition and in robustness_rows alike."""
    from pase.evaluation.robustness import evaluate_condition, robustness_rows
    from pase.training import load_checkpoint

    module, _, bundle = load_checkpoint(comparison[0] / "runs" / "late_fusion" / "seed1111" / "checkpoints" / "best.ckpt")
    noise = {"modality": "text", "sigma": 1.0, "std": feature_std(bundle)["text"]}
    at = {s: evaluate_condition(module.model, bundle, noise=noise, seed=s) for s in (0, 1)}
    assert evaluate_condition(module.model, bundle, noise=noise, seed=0) == at[0]
    assert at[0]["MAE"] != at[1]["MAE"]
    rows = {s: [r for r in robustness_rows(module.model, bundle, noise_levels=[1], seed=s) if r["kind"] == "noise"]
            for s in (0, 1)}
    assert rows[0][0]["condition"] == "noise:text@1" and rows[0][0]["MAE"] == pytest.approx(at[0]["MAE"], abs=1e-6)
    assert [r["MAE"] for r in rows[0]] != [r["MAE"] for r in rows[1]]


def test_a_modality_with_one_constant_feature_keeps_its_noise_rows(comparison):
    """Only a modality constant in every feature goes without noise rows; one constant column (an unused
    channel) leaves the others to be perturbed."""
    from pase.evaluation.robustness import robustness_rows
    from pase.training import load_checkpoint

    module, _, bundle = load_checkpoint(comparison[0] / "runs" / "late_fusion" / "seed1111" / "checkpoints" / "best.ckpt")
    bundle.splits["train"].features["audio"][..., 0] = 0.0
    assert float(feature_std(bundle)["audio"][0]) == 0.0
    rows = robustness_rows(module.model, bundle, noise_levels=[0, 1])
    assert [(r["modality"], r["sigma"]) for r in rows if r["kind"] == "noise"] == \
        [(m, s) for m in MODALITIES for s in (0.0, 1.0)]


class _WholeGroups(torch.nn.Module):
    """A stand-in context model: it reads each video whole, so a batch that splits a group is an error
    (a real one would score that group's samples without their neighbours); predicts the label."""

    context = "whole groups"

    def __init__(self, bundle):
        super().__init__()
        self.modalities = list(bundle.modalities)
        self.sizes = {}
        for ds in bundle.splits.values():
            for g in ds.groups.tolist():
                self.sizes[(ds.split, g)] = self.sizes.get((ds.split, g), 0) + 1
        self.where = {i: ds.split for ds in bundle.splits.values() for i in ds.ids}

    def forward(self, batch, present=None):
        split = self.where[batch.ids[0]]
        for g in set(batch.groups.tolist()):
            assert int((batch.groups == g).sum()) == self.sizes[(split, g)], f"group {g} split across batches"
        return types.SimpleNamespace(logits=batch.target[:, None].float())


def test_a_context_model_is_scored_on_whole_groups():
    """With by_group every condition, the missing-modality ones too, is scored on whole videos
    (batches of 7 samples would split them)."""
    from pase.config import load_config
    from pase.evaluation.robustness import robustness_rows
    from pase.training.run import load_bundle

    import tiny

    bundle = tiny.grouped(load_bundle(load_config(None, tiny.TINY)))
    rows = robustness_rows(_WholeGroups(bundle), bundle, noise_levels=[0, 1], batch_size=7, by_group=True)
    assert sum(r["kind"] == "missing" for r in rows) == 7 and all(r["Has0_acc_2"] == 1.0 for r in rows)
