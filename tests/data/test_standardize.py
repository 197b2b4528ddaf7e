"""``contract.standardize``: train-split z-scores, and features that are constant on train."""

from __future__ import annotations

import logging

import numpy as np
import torch

from pase.data.contract import DataBundle, MultimodalDataset, TaskSpec, standardize


def _split(rng, n, split, constants):
    """(N, 4) audio and (N, 3) vision; ``constants`` maps (modality, column) -> the value it holds."""
    feats = {"audio": rng.standard_normal((n, 4)).astype(np.float32),
             "vision": rng.standard_normal((n, 3)).astype(np.float32)}
    for (m, col), value in constants.items():
        feats[m][:, col] = value
    return MultimodalDataset(feats, rng.uniform(-3, 3, n).astype(np.float32), [f"{split}{i}" for i in range(n)],
                             split=split)


def test_a_column_constant_on_train_is_centred_not_divided_by_eps(caplog):
    """A feature constant on train (an unused Facet / COVAREP channel) has std 0 there: it is centred with
    scale 1, so test's 5.3 against train's 5.0 becomes 0.3 (divided by eps = 1e-6 it was 300000)."""
    rng = np.random.default_rng(0)
    train = {("audio", 2): 5.0, ("vision", 0): 0.0, ("vision", 1): -1.0}
    bundle = DataBundle("t", TaskSpec("regression", 1, "mosi", (-3.0, 3.0)), {
        "train": _split(rng, 50, "train", train),
        "valid": _split(rng, 10, "valid", train),
        "test": _split(rng, 10, "test", {("audio", 2): 5.3, ("vision", 0): 0.25, ("vision", 1): -1.0})})
    with caplog.at_level(logging.INFO, logger="pase.data"):
        out = standardize(bundle)
    test = out.splits["test"].features
    torch.testing.assert_close(test["audio"][:, 0, 2], torch.full((10,), 0.3), rtol=0, atol=1e-6)  # 5.3 - 5.0
    torch.testing.assert_close(test["vision"][:, 0, 0], torch.full((10,), 0.25), rtol=0, atol=0)
    assert (test["vision"][:, 0, 1] == 0).all() and (out.splits["train"].features["audio"][:, 0, 2] == 0).all()
    for m, cols in (("audio", [0, 1, 3]), ("vision", [2])):  # the others: z-scores against numpy's train stats
        raw = bundle.splits["train"].features[m][:, 0, cols].double()
        mean, std = raw.mean(0), raw.std(0, unbiased=False)
        want = (bundle.splits["test"].features[m][:, 0, cols].double() - mean) / std
        torch.testing.assert_close(test[m][:, 0, cols].double(), want, rtol=1e-5, atol=1e-5)  # float32 round-off
    lines = [r.getMessage() for r in caplog.records if "standardize" in r.getMessage()]
    assert lines == ["standardize: 3 feature columns are constant on the train split (std <= 1e-06 x RMS; audio 1, "
                     "vision 2); they are centred, not scaled"]


def test_z_scores_do_not_depend_on_the_features_units():
    """A feature of scale 1e-7 (std below the old absolute 1e-6) was taken for constant and left at
    about 1e-7 after z-scoring, so a model saw another input than at scale 1 (a review: audio's share
    fell from 0.21 to 0.01). The test is relative to the column's RMS: every positive rescaling gives
    the same z-scores, and a constant column (zeros included) is still only centred."""

    def bundle(scale):
        splits = {}
        for s, n in (("train", 50), ("valid", 10), ("test", 10)):
            d = _split(np.random.default_rng({"train": 0, "valid": 1, "test": 2}[s]), n, s, {("vision", 1): 0.0})
            feats = dict(d.features)
            feats["audio"] = feats["audio"] * scale
            splits[s] = MultimodalDataset({m: x[:, 0, :] for m, x in feats.items()}, d.target, d.ids, split=s)
        return DataBundle("t", TaskSpec("regression", 1, "mosi", (-3.0, 3.0)), splits)

    ref = standardize(bundle(1.0)).splits["test"].features
    for scale in (1e-7, 1e-12, 1e5):
        got = standardize(bundle(scale)).splits["test"].features
        torch.testing.assert_close(got["audio"], ref["audio"], rtol=1e-4, atol=1e-4)
        assert float(got["audio"].std()) > 0.5  # z-scored, not left at the input's scale
    assert (ref["vision"][:, 0, 1] == 0).all()  # the zero column: centred, unscaled


def test_statistics_come_from_the_real_steps_only():
    """Sequences padded with zeros after their lengths: the train mean and std are those of the real
    steps (the padding would pull the mean to 0), and the padding stays zero in every split."""
    rng = np.random.default_rng(0)
    splits = {}
    for s, n in (("train", 40), ("valid", 8), ("test", 8)):
        lengths = rng.integers(1, 6, n)
        x = (rng.standard_normal((n, 5, 2)) * [1.0, 3.0] + [4.0, -2.0]).astype(np.float32)
        x[np.arange(5)[None, :] >= lengths[:, None]] = 0.0
        splits[s] = MultimodalDataset({"audio": x}, np.zeros(n, np.float32), [f"{s}{i}" for i in range(n)],
                                      lengths={"audio": lengths}, split=s)
    bundle = DataBundle("t", TaskSpec("regression", 1, "mosi", (-3.0, 3.0)), splits)
    out = standardize(bundle)
    train = bundle.splits["train"]
    real = train.features["audio"][torch.arange(5)[None, :] < train.lengths["audio"][:, None]].double()  # (steps, D)
    mean, std = real.mean(0), real.std(0, unbiased=False)
    for s in ("train", "test"):
        d, z = bundle.splits[s], out.splits[s].features["audio"]
        mask = torch.arange(5)[None, :] < d.lengths["audio"][:, None]
        torch.testing.assert_close(z[mask].double(), (d.features["audio"][mask].double() - mean) / std,
                                   rtol=1e-5, atol=1e-5)
        assert (z[~mask] == 0).all()
