"""The real MOSI loader (bc-LSTM features): splits, checksums, errors, and an MMSA round trip."""

import pickle
import shutil

import numpy as np
import pytest
import torch

from pase.data import create_data
from pase.data.mmsa import load_mmsa
from pase.data.mosi_bclstm import MosiDataError, load_mosi_bclstm


def test_release_split_and_video_level_validation(mosi_dir):
    b = load_mosi_bclstm(path=str(mosi_dir))
    assert {s: len(d) for s, d in b.splits.items()} == {"train": 1218, "valid": 229, "test": 752}
    assert b.dims() == {"text": 100, "audio": 73, "vision": 100}
    assert b.info["checksums_verified"] == 11
    videos = {s: {i.rsplit("_", 1)[0] for i in d.ids} for s, d in b.splits.items()}
    assert len(videos["test"]) == 31 and len(videos["train"]) + len(videos["valid"]) == 62
    assert not videos["train"] & videos["valid"] and not videos["test"] & (videos["train"] | videos["valid"])
    again = load_mosi_bclstm(path=str(mosi_dir))
    assert again.splits["valid"].ids == b.splits["valid"].ids  # deterministic carve
    assert float(b.splits["test"].target.abs().max()) <= 3.0


def test_altered_file_and_missing_folder_are_one_line_errors(mosi_dir, tmp_path):
    copy = tmp_path / "mosi"
    shutil.copytree(mosi_dir, copy)
    with open(copy / "features" / "audio_test0.csv", "a") as fh:
        fh.write("\n")
    with pytest.raises(MosiDataError, match=r"audio_test0.csv: SHA-256 .* does not match SHA256SUMS"):
        load_mosi_bclstm(path=str(copy))
    with pytest.raises(MosiDataError, match=r"nowhere: no such folder; pass data.path=FOLDER"):
        load_mosi_bclstm(path=str(tmp_path / "nowhere"))


def test_export_to_mmsa_layout_reads_back_identically(mosi_dir, tmp_path):
    """The real data written in MMSA's pickle layout loads back with identical tensors and labels."""
    b = create_data("mosi_bclstm", path=str(mosi_dir))
    data = {}
    for split, d in b.splits.items():
        n = len(d)
        labels = d.target.numpy().astype(np.float32)
        data[split] = {
            "raw_text": np.array([""] * n, dtype=object),
            "text": d.features["text"].numpy(), "audio": d.features["audio"].numpy(),
            "vision": d.features["vision"].numpy(),
            "text_bert": np.ones((n, 3, 1)), "audio_lengths": [1] * n, "vision_lengths": [1] * n,
            "id": np.array([i.rsplit("_", 1)[0] + "$_$" + i.rsplit("_", 1)[1] for i in d.ids], dtype=object),
            "regression_labels": labels, "classification_labels": np.sign(labels) + 1.0,
            "annotations": np.array(["x"] * n, dtype=object),
        }
    path = tmp_path / "MOSI" / "Processed" / "unaligned_50.pkl"
    path.parent.mkdir(parents=True)
    path.write_bytes(pickle.dumps({"train": data["train"], "valid": data["valid"], "test": data["test"]}, protocol=4))
    back = load_mmsa(path, dataset="mosi")
    for split, d in b.splits.items():
        r = back.splits[split]
        assert len(r) == len(d)
        for m in ("text", "audio", "vision"):
            torch.testing.assert_close(r.features[m], d.features[m], rtol=0, atol=0)
        torch.testing.assert_close(r.target.float(), d.target.float(), rtol=0, atol=0)
