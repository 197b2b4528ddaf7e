"""MulT pickles round-trip through ``create_data("mult", ...)``."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest
import torch

from pase.data import create_data
from pase.data.validate import DataFormatError

from .writers import write_mult

SIZES = (9, 6, 6)


def _raw(path):
    with open(path, "rb") as fh:
        return pickle.load(fh)


def test_mosi_round_trip(tmp_path, untouched):
    path = write_mult(tmp_path, "mosi", sizes=SIZES)
    assert path.name == "mosi_data.pkl"
    check = untouched(tmp_path)
    bundle = create_data("mult", path=path)
    check()
    raw = _raw(path)
    assert bundle.name == "mosi_mult" and bundle.task.protocol == "mosi" and bundle.task.kind == "regression"
    assert bundle.dims() == {"text": 300, "audio": 5, "vision": 20}
    for split, n in zip(("train", "valid", "test"), SIZES):
        ds, r = bundle.splits[split], raw[split]
        assert len(ds) == n and ds.target.shape == (n,)
        torch.testing.assert_close(ds.target, torch.as_tensor(r["labels"].reshape(-1)))  # (N, 1, 1) -> (N,)
        torch.testing.assert_close(ds.features["text"], torch.as_tensor(r["text"]))
        audio = np.where(np.isneginf(r["audio"]), 0.0, r["audio"]).astype(np.float32)
        torch.testing.assert_close(ds.features["audio"], torch.as_tensor(audio))
        assert (ds.lengths["audio"] == r["audio"].shape[1]).all()
        rows = [[x.decode() for x in row] for row in r["id"]]
        assert ds.ids == [f"{v}$_${a}_{b}" for v, a, b in rows]
        for (v, a, _), g, p in zip(rows, ds.groups.tolist(), ds.positions.tolist()):
            starts = sorted(float(row[1]) for row in rows if row[0] == v)
            assert p == starts.index(float(a))  # position = order of start time in the video
            assert all(g2 == g for (v2, _, _), g2 in zip(rows, ds.groups.tolist()) if v2 == v)


def test_iemocap_is_multilabel(tmp_path):
    path = write_mult(tmp_path, "iemocap", sizes=SIZES, id_style="strings")
    bundle = create_data("mult", path=path)
    task = bundle.task
    assert (task.kind, task.num_classes, task.protocol) == ("multilabel", 4, "iemocap_mult")
    assert task.class_names == ("neutral", "happy", "sad", "angry")
    raw = _raw(path)["test"]["labels"]
    target = bundle.splits["test"].target
    assert target.shape == (SIZES[2], 4) and target.dtype == torch.long
    assert target.tolist() == raw.argmax(-1).tolist()


def test_the_task_kind_is_told_from_the_name_without_reading_the_file(tmp_path):
    """source_task_kind (pase compare's check of pase.binning=classes) gives the kind the file loads as,
    from its name or data.options.dataset, reading nothing; None when neither tells."""
    from pase.data.registry import source_task_kind

    for dataset in ("mosi", "iemocap"):
        path = write_mult(tmp_path / dataset, dataset, sizes=SIZES)
        assert source_task_kind("mult", path=str(path)) == create_data("mult", path=path).task.kind
    assert source_task_kind("mult", path=str(tmp_path / "absent" / "iemocap_data.pkl")) == "multilabel"
    assert source_task_kind("mult", path="data.pkl", dataset="MOSEI") == "regression"
    assert source_task_kind("mult", path="data.pkl") is None  # the loader names that
    assert source_task_kind("mult", path="data.pkl", dataset="sims") is None


def test_unaligned_and_mosei_names(tmp_path):
    path = write_mult(tmp_path, "mosei", aligned=False)
    assert path.name == "mosei_senti_data_noalign.pkl"
    bundle = create_data("mult", path=path)
    assert bundle.task.protocol == "mosei" and bundle.info["aligned"] is False
    assert bundle.max_steps() == {"text": 6, "audio": 9, "vision": 7}


def test_missing_ids_are_generated(tmp_path):
    bundle = create_data("mult", path=write_mult(tmp_path, "mosi", id_style="none"))
    assert bundle.splits["valid"].ids[:2] == ["valid_0", "valid_1"]
    assert bundle.splits["valid"].groups is None


def test_ids_in_some_splits_only_give_no_groups(tmp_path):
    """MulT treats 'id' as optional: a file with ids in train and valid but none in test loads, and
    no split gets context groups (they would exist for some splits only)."""
    bundle = create_data("mult", path=write_mult(tmp_path, "mosi", mutate=lambda d: d["test"].pop("id")))
    assert bundle.splits["test"].ids[:2] == ["test_0", "test_1"]
    assert "$_$" in bundle.splits["train"].ids[0]
    assert all(ds.groups is None and ds.positions is None for ds in bundle.splits.values())


def test_duplicate_ids_are_made_unique_and_logged(tmp_path, caplog):
    def dup(data):
        data["train"]["id"][1] = data["train"]["id"][0]
    path = write_mult(tmp_path, "mosi", mutate=dup)
    with caplog.at_level(logging.WARNING, logger="pase.data"):
        ids = create_data("mult", path=path).splits["train"].ids
    assert ids[0].endswith("#0") and ids[1].endswith("#1") and len(set(ids)) == len(ids)
    assert "1 ids occur more than once" in caplog.text


def test_a_segment_repeated_in_train_and_also_in_test_is_a_leak(tmp_path):
    """The '#row' suffixes that make repeated ids unique came before the cross-split check and hid
    the test copy of a segment that train holds twice."""
    def leak(data):
        data["train"]["id"][1] = data["train"]["id"][0]
        test = data["test"]["id"].astype(data["train"]["id"].dtype)  # as wide as the train ids
        test[0] = data["train"]["id"][0]
        data["test"]["id"] = test
    with pytest.raises(DataFormatError, match=r"1 sample id\(s\) occur in both split 'train' and split 'test'"):
        create_data("mult", path=write_mult(tmp_path, "mosi", mutate=leak))


def test_labels_must_be_one_hot_pairs(tmp_path):
    def bad(data):
        data["valid"]["labels"][2, 1] = [1.0, 1.0]
    path = write_mult(tmp_path, "iemocap", mutate=bad)
    with pytest.raises(DataFormatError, match=r"iemocap_data\.pkl: split 'valid': labels of sample .* are not "
                                              r"one-hot \(no, yes\) pairs"):
        create_data("mult", path=path)


def test_iemocap_labels_stored_as_one_value_per_emotion(tmp_path):
    """(N, 4) or (N, 4, 1) 0/1 labels load as the target itself; a value other than 0 or 1 is refused."""
    plain = create_data("mult", path=write_mult(tmp_path / "a", "iemocap"))
    for k, shape in enumerate([(-1, 4), (-1, 4, 1)]):
        path = write_mult(tmp_path / f"b{k}", "iemocap",
                          mutate=lambda d: [d[s].update(labels=d[s]["labels"].argmax(-1).reshape(shape)) for s in d])
        bundle = create_data("mult", path=path)
        for s in plain.splits:
            assert bundle.splits[s].target.tolist() == plain.splits[s].target.tolist(), (shape, s)

    def two(d):
        for s in d:
            d[s]["labels"] = d[s]["labels"].argmax(-1).astype(np.float32)
        d["test"]["labels"][1, 2] = 2.0

    with pytest.raises(DataFormatError, match=r"split 'test': labels of sample .* are not one-hot"):
        create_data("mult", path=write_mult(tmp_path / "c", "iemocap", mutate=two))


def test_sentiment_labels_with_iemocap_shape(tmp_path):
    path = write_mult(tmp_path, "iemocap")
    with pytest.raises(DataFormatError, match=r"'labels' has shape \(9, 4, 2\), expected \(N, 1, 1\)"):
        create_data("mult", path=path, dataset="mosi")


def test_meta_rows_with_a_singleton_axis_read_as_rows(tmp_path):
    """id (N, 1, 3) is the (N, 3) meta layout with an extra axis: the same ids, groups and positions."""
    plain = create_data("mult", path=write_mult(tmp_path / "a", "mosi", sizes=SIZES))

    def boxed(data):
        for s in ("train", "valid", "test"):
            data[s]["id"] = data[s]["id"][:, None, :]
    bundle = create_data("mult", path=write_mult(tmp_path / "b", "mosi", sizes=SIZES, mutate=boxed))
    for split in ("train", "valid", "test"):
        a, b = plain.splits[split], bundle.splits[split]
        assert b.ids == a.ids and "$_$" in b.ids[0]
        assert b.groups.tolist() == a.groups.tolist() and b.positions.tolist() == a.positions.tolist()


@pytest.mark.parametrize("ragged", [
    lambda d: [(b"v", b"1", b"2")] * 8 + [(b"v", b"1")],  # a list of tuples
    lambda d: np.array([tuple(r) for r in d["train"]["id"][:-1]] + [(b"v", b"1")], dtype=object),  # object rows
])
def test_ragged_id_rows_are_named(tmp_path, ragged):
    """One meta row shorter than the others: one line naming the file, split and key, not numpy's error."""
    path = write_mult(tmp_path, "mosi", mutate=lambda d: d["train"].update(id=ragged(d)))
    with pytest.raises(DataFormatError, match=r"^mosi_data\.pkl: split 'train', key 'id' has rows of different "
                                              r"lengths \(2, 3 entries\); expected \(N, 3\) rows \(video, start, "
                                              r"end\) or \(N,\) strings, fix the file's 'id' entries or delete the "
                                              r"key \(ids then become train_0, train_1, \.\.\.\)$"):
        create_data("mult", path=path)


def test_positions_follow_the_start_times_not_the_end_times(tmp_path):
    """A segment that starts first is first in its video even when it ends last (MulT's meta rows are
    video, start, end)."""
    def nested(d):  # in each video: starts ascending, ends descending
        for s in d:
            rows = d[s]["id"].astype(object)
            for i, r in enumerate(rows):
                r[1], r[2] = f"{i:.2f}".encode(), f"{100 - i:.2f}".encode()
            d[s]["id"] = np.array(rows.tolist())

    bundle = create_data("mult", path=write_mult(tmp_path, "mosi", mutate=nested))
    ds = bundle.splits["train"]
    for g in set(ds.groups.tolist()):
        rows = [i for i, x in enumerate(ds.groups.tolist()) if x == g]
        assert [ds.positions[i].item() for i in rows] == list(range(len(rows)))  # rows are in start order


def test_id_rows_in_an_object_array_read_as_rows(tmp_path):
    plain = create_data("mult", path=write_mult(tmp_path / "a", "mosi"))

    def as_objects(data):
        for s in data:
            rows = np.empty(len(data[s]["id"]), dtype=object)
            rows[:] = [tuple(r) for r in data[s]["id"]]
            data[s]["id"] = rows
    boxed = create_data("mult", path=write_mult(tmp_path / "b", "mosi", mutate=as_objects))
    for s in plain.splits:
        assert boxed.splits[s].ids == plain.splits[s].ids


def test_an_emotion_without_a_positive_training_sample_is_one_warning(tmp_path, caplog):
    """An emotion every train row says no to cannot be learned; it loaded silently (review)."""
    def no_angry_in_train(data):
        data["train"]["labels"][:, 3] = [1.0, 0.0]  # (no, yes) = no

    path = write_mult(tmp_path, "iemocap", sizes=(12, 8, 8), mutate=no_angry_in_train)
    with caplog.at_level(logging.WARNING, logger="pase.data"):
        bundle = create_data("mult", path=path)
    pos = {s: int(d.target[:, 3].sum()) for s, d in bundle.splits.items()}
    assert pos["train"] == 0 and pos["valid"] + pos["test"] > 0
    lines = [r.getMessage() for r in caplog.records if "no positive training sample" in r.getMessage()]
    assert len(lines) == 1, lines
    assert (f"iemocap_data.pkl (iemocap_mult): label 3 (angry) of 4 has no positive training sample (per split: "
            f"train 0, valid {pos['valid']}, test {pos['test']})") in lines[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pase.data"):
        create_data("mult", path=write_mult(tmp_path / "b", "iemocap", sizes=(12, 8, 8)))
    assert "training sample" not in caplog.text
