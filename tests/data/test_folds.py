"""Sample-id parsing, context groups, and the CMU-MultimodalSDK standard folds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pase.data.folds import (clip_order_key, group_positions, load_standard_folds, parse_clip_id,
                             split_by_folds)
from pase.data.validate import DataFormatError

STD_FOLDS = Path("/work/shared/data/cmu_sdk_std_folds.json")


@pytest.mark.parametrize("sample, expected", [
    ("atnd_PF-Lbs$_$3", ("atnd_PF-Lbs", "3")),
    ("atnd_PF-Lbs_3", ("atnd_PF-Lbs", "3")),
    ("_0efYOjQYRc_12", ("_0efYOjQYRc", "12")),
    ("Ses01F_impro01_F003", ("Ses01F_impro01", "F003")),
    ("video_0001$_$0001", ("video_0001", "0001")),
    ("Gc_zIjqqUys", ("Gc_zIjqqUys", "")),
])
def test_parse_clip_id(sample, expected):
    assert parse_clip_id(sample) == expected


def test_clip_order_is_numeric():
    assert sorted(["10", "9", "F002", "x"], key=clip_order_key) == ["F002", "9", "10", "x"]


def test_group_positions_share_groups_across_splits():
    videos = {"train": ["a", "b", "a"], "test": ["b", "c"]}
    order = {"train": [(0, 2.0), (0, 1.0), (0, 1.0)], "test": [(0, 0.0), (0, 0.0)]}
    gp = group_positions(videos, order)
    assert gp["train"][0].tolist() == [0, 1, 0] and gp["train"][1].tolist() == [1, 0, 0]
    assert gp["test"][0].tolist() == [1, 2] and gp["test"][1].tolist() == [0, 0]


@pytest.mark.skipif(not STD_FOLDS.is_file(), reason="shared standard folds file not present")
def test_load_standard_folds_counts():
    folds = load_standard_folds(STD_FOLDS)
    assert {k: len(v) for k, v in folds["mosi"].items()} == {"train": 52, "valid": 10, "test": 31}
    assert {k: len(v) for k, v in folds["mosei"].items()} == {"train": 2250, "valid": 300, "test": 678}
    assert set(folds) == {"mosi", "mosei", "pom"}


@pytest.mark.skipif(not STD_FOLDS.is_file(), reason="shared standard folds file not present")
def test_split_by_folds_handles_underscores_in_video_ids():
    folds = load_standard_folds(STD_FOLDS)
    assert "atnd_PF-Lbs" in folds["mosi"]["valid"]
    test_video = folds["mosi"]["test"][0]
    samples = ["atnd_PF-Lbs_3", "atnd_PF-Lbs$_$3", np.array([b"atnd_PF-Lbs", b"1.0", b"2.0"]),
               "atnd_PF-Lbs", f"{test_video}_1"]
    assert split_by_folds(samples, folds, "mosi") == ["valid", "valid", "valid", "valid", "test"]


def test_unknown_videos(tmp_path):
    folds = {"train": ["a"], "valid": ["b"], "test": ["c"]}
    with pytest.raises(DataFormatError, match="sample 'z_1': its video is in none of the mosi standard folds"):
        split_by_folds(["a_1", "z_1"], folds)
    assert split_by_folds(["a_1", "z_1"], folds, unknown="none") == ["train", None]
    with pytest.raises(DataFormatError, match="video 'a' is in both the 'train' and the 'test' fold"):
        split_by_folds(["a_1"], {"train": ["a"], "valid": [], "test": ["a"]})


def test_bad_folds_file(tmp_path):
    path = tmp_path / "folds.json"
    path.write_text(json.dumps({"CMU_MOSI": {"standard_train_fold": []}}))
    with pytest.raises(DataFormatError, match=r"folds\.json: 'CMU_MOSI' has no 'standard_valid_fold'"):
        load_standard_folds(path)
