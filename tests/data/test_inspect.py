"""``inspect_path``: detects each format, describes it, and lists problems without raising."""

from __future__ import annotations

import os
import pickle
import shutil

import numpy as np
import pytest

from pase.data.inspect import detect_format, inspect_path

from .writers import write_gcnet, write_mmsa, write_mult


@pytest.mark.parametrize("writer, fmt, loads_as", [
    (lambda d: write_mmsa(d, "mosi", aligned=False), "mmsa", "'mosi_mmsa': regression, protocol 'mosi'"),
    (lambda d: write_mult(d, "iemocap"), "mult", "'iemocap_mult': multilabel, protocol 'iemocap_mult'"),
    (lambda d: write_gcnet(d, "iemocap4"), "gcnet", "'iemocap4_gcnet': classification, protocol 'multiclass'"),
])
def test_clean_files(tmp_path, untouched, writer, fmt, loads_as):
    path = writer(tmp_path)
    check = untouched(tmp_path)
    report = inspect_path(path)
    check()
    assert report.ok and report.format == fmt, report.text
    assert loads_as in report.text and report.text.endswith("no problems found")


def test_describes_shapes_non_finite_and_labels(tmp_path):
    report = inspect_path(write_mmsa(tmp_path, "mosi", aligned=False))
    assert "split 'train': 9 samples" in report.text
    assert "(9, 12, 5)" in report.text and "-inf: 1" in report.text
    assert "labels: min" in report.text
    assert "differs from the published 78e0f8b5" in report.text  # named like the release, other bytes


def test_nan_is_a_problem(tmp_path):
    def nan(data):
        data["test"]["text"][0, 0, 0] = np.nan
    report = inspect_path(write_mmsa(tmp_path, "mosi", mutate=nan), checksum=False)
    assert not report.ok and report.format == "mmsa"
    assert "NaN: 1" in report.text
    assert "split 'test', key 'text': NaN at sample" in report.problems[0]
    assert "problems:" in report.text


class _Evil:
    def __reduce__(self):
        return (os.system, ("true",))


def test_unsafe_pickle_is_a_problem(tmp_path):
    path = tmp_path / "mosi_data.pkl"
    path.write_bytes(pickle.dumps({"train": _Evil()}))
    report = inspect_path(path)
    assert not report.ok and report.format == "unknown"
    assert "refused to load global" in report.problems[0]


def test_unknown_structure_and_missing_file(tmp_path):
    path = tmp_path / "thing.pkl"
    path.write_bytes(pickle.dumps({"a": 1}))
    report = inspect_path(path)
    assert not report.ok and "not a known format (found: a)" in report.problems[0]
    assert not inspect_path(tmp_path / "absent.pkl").ok


def test_gcnet_labels_only_when_features_are_absent(tmp_path):
    path = write_gcnet(tmp_path, "mosi")
    shutil.rmtree(path.parent / "features")
    report = inspect_path(path)
    assert report.ok and "features not checked" in report.text
    assert "valid: 1 videos" in report.text


def test_gcnet_missing_npy_is_a_problem(tmp_path):
    path = write_gcnet(tmp_path, "iemocap4")
    next((path.parent / "features" / "deberta-large-4-UTT").glob("*.npy")).unlink()
    report = inspect_path(path)
    assert not report.ok and "missing feature of utterance" in report.problems[0]


def test_detect_format():
    assert detect_format({"train": {"regression_labels": []}, "test": {"regression_labels": []}}) == "mmsa"
    assert detect_format({"train": {"labels": []}}) == "mult"
    assert detect_format(({}, {}, {}, {}, set(), set())) == "gcnet"
    assert detect_format({"videoIDs": {}}) == "gcnet"
    assert detect_format([1, 2]) == "unknown"
