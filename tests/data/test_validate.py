"""The shared checks and their one-line messages."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from pase.data.contract import MultimodalDataset
from pase.data.validate import (DataFormatError, as_array, check_class_labels, check_dims, check_disjoint_splits,
                                check_label_range, check_rows, check_sequences, check_unique_ids, clip_lengths,
                                fix_non_finite, infer_dataset, is_rows, require_keys, require_splits, resolve_source)


def test_missing_key_message_matches_the_house_example():
    split = {"text": np.zeros((2, 3, 4)), "audio": np.zeros((2, 3, 4))}
    with pytest.raises(DataFormatError) as err:
        require_keys(split, ["text", "audio", "vision"], "mosei_senti_data.pkl", "valid",
                     modalities=("text", "audio", "vision"), other_format="gcnet")
    assert str(err.value) == ("mosei_senti_data.pkl: split 'valid' has no key 'vision' (found: text, audio); "
                              "pass modalities=('text', 'audio') (--set 'data.modalities=[text, audio]') or use the "
                              "'gcnet' format")


def test_missing_split_lists_found_splits():
    with pytest.raises(DataFormatError, match=r"f\.pkl: no split 'valid' \(found: train, test\)"):
        require_splits({"train": {}, "test": {}}, "f.pkl", "MMSA")
    with pytest.raises(DataFormatError, match="expected a dict of splits"):
        require_splits([1, 2], "f.pkl", "MMSA")


def test_rows_must_agree():
    with pytest.raises(DataFormatError, match=r"key 'audio' has 3 rows \(shape \(3, 2\)\) but 'text' has 4"):
        check_rows({"text": np.zeros((4, 2)), "audio": np.zeros((3, 2))}, "f.pkl", "train")
    assert check_rows({"a": [1, 2], "b": np.zeros((2, 5))}, "f.pkl", "train") == 2


def test_ragged_rows_are_named():
    with pytest.raises(DataFormatError, match=r"key 'audio' is ragged.*pad it to one \(N, T, D\)"):
        as_array([np.zeros((2, 3)), np.zeros((4, 3))], "f.pkl", "train", "audio")


def test_neg_inf_in_audio_becomes_zero_and_is_logged(caplog):
    x = np.ones((3, 2, 2), np.float32)
    x[1, 0, 0] = -np.inf
    with caplog.at_level(logging.INFO, logger="pase.data"):
        y = fix_non_finite(x, "f.pkl", "train", "audio", ["a", "b", "c"], neg_inf_to_zero=True)
    assert y[1, 0, 0] == 0 and np.isfinite(y).all() and x[1, 0, 0] == -np.inf  # input untouched
    assert "set 1 -inf values to 0" in caplog.text


@pytest.mark.parametrize("key, value, audio", [("vision", np.nan, False), ("audio", np.inf, True),
                                               ("vision", -np.inf, False), ("audio", np.nan, True)])
def test_other_non_finite_values_name_the_sample(key, value, audio):
    x = np.ones((3, 2), np.float32)
    x[2, 1] = value
    with pytest.raises(DataFormatError, match=rf"f\.pkl: split 'test', key '{key}': .* at sample 'c' "
                                              rf"\(row 2; .*\); fix the file or pass sanitize=True"):
        fix_non_finite(x, "f.pkl", "test", key, ["a", "b", "c"], neg_inf_to_zero=audio)


def test_sanitize_sets_zero_and_logs(caplog):
    x = np.ones((2, 3), np.float32)
    x[0, 0], x[1, 2] = np.nan, np.inf
    with caplog.at_level(logging.WARNING, logger="pase.data"):
        y = fix_non_finite(x, "f.pkl", "train", "vision", ["a", "b"], sanitize=True)
    assert y[0, 0] == 0 and y[1, 2] == 0 and y.sum() == 4
    assert "1 NaN, 1 +inf, 0 -inf" in caplog.text


def test_label_checks():
    with pytest.raises(DataFormatError, match=r"label 3.5 of sample 'b' is outside \[-3, 3\]"):
        check_label_range(np.array([0.0, 3.5]), -3, 3, "f.pkl", "train", ["a", "b"], fix="x")
    with pytest.raises(DataFormatError, match=r"label 4 of sample 'b' is not a class index in \[0, 4\)"):
        check_class_labels(np.array([0, 4]), 4, "f.pkl", "train", ["a", "b"], fix="x")
    assert check_class_labels(np.array([0.0, 3.0]), 4, "f.pkl", "train", ["a", "b"], fix="x").dtype == np.int64
    with pytest.raises(DataFormatError, match=r"label 1\.5 of sample 'b' is not a class index in \[0, 4\)"):
        check_class_labels(np.array([0.0, 1.5]), 4, "f.pkl", "train", ["a", "b"], fix="x")  # not truncated to 1


@pytest.mark.parametrize("pair", [("train", "valid"), ("valid", "test"), ("train", "test")])
def test_a_sample_in_any_two_splits_is_refused(pair):
    ids = {"train": ["a", "b"], "valid": ["c"], "test": ["d", "e"]}
    ids[pair[1]] = ids[pair[1]] + [ids[pair[0]][0]]
    with pytest.raises(DataFormatError, match=rf"f\.pkl: 1 sample id\(s\) occur in both split '{pair[0]}' and split "
                                              rf"'{pair[1]}' \(for example '{ids[pair[0]][0]}'\)"):
        check_disjoint_splits(ids, "f.pkl")


def test_feature_widths_must_equal_the_configured_ones():
    feats = {"audio": np.zeros((2, 3, 5)), "text": np.zeros((2, 3, 8))}
    check_dims(feats, {"audio": 5, "vision": 7}, "f.pkl", "train")  # a modality not loaded is not checked
    for d in (4, 6):  # narrower and wider
        with pytest.raises(DataFormatError, match=rf"f\.pkl: split 'train': modality 'audio' has width 5 \(shape "
                                                  rf"\(2, 3, 5\)\) but {d} was configured"):
            check_dims(feats, {"audio": d}, "f.pkl", "train")


def test_unique_ids():
    with pytest.raises(DataFormatError, match=r"sample id 'a' occurs more than once \(rows 0 and 2\)"):
        check_unique_ids(["a", "b", "a"], "f.pkl", "train")


def test_lengths_are_clipped_and_logged(caplog):
    with caplog.at_level(logging.INFO, logger="pase.data"):
        ln = clip_lengths([0, 3, 5], 5, "f.pkl", "train", "audio_lengths")
    assert ln.tolist() == [1, 3, 5]
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "f.pkl: split 'train', key 'audio_lengths': clipped 1 of 3 lengths to [1, 5] (for example 0 at row 0)")]


def test_any_length_past_the_steps_warns_in_one_line(caplog):
    """Lengths past T were an INFO note unless most of the split's were (a review: 14 of 30 lengths counted at
    twice the frame rate); any one is a warning now, one line per key and split."""
    with caplog.at_level(logging.INFO, logger="pase.data"):
        assert clip_lengths([0, 3, 9, 7], 5, "f.pkl", "train", "audio_lengths").tolist() == [1, 3, 5, 5]
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "f.pkl: split 'train', key 'audio_lengths': clipped 3 of 4 lengths to [1, 5] (for example 0 at "
                    "row 0); 2 exceed the stored steps: check the key")]


def test_most_lengths_past_the_steps_warn_and_a_negative_length_is_refused(caplog):
    """Lengths counted at another frame rate (every one past T) were clipped at the INFO level, which
    the command line does not show, and a negative length was read as 1."""
    with caplog.at_level(logging.INFO, logger="pase.data"):
        assert clip_lengths([7, 9, 3], 5, "f.pkl", "test", "audio_lengths").tolist() == [5, 5, 3]
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert caplog.records[0].getMessage() == (
        "f.pkl: split 'test', key 'audio_lengths': clipped 2 of 3 lengths to [1, 5] (for example 7 at row 0); most "
        "exceed the stored steps: are they counted at another frame rate? check the key")
    with pytest.raises(DataFormatError, match=r"f.pkl: split 'train', key 'audio_lengths': length -5 at row 1 is "
                                              r"negative \(1 such rows\); fix the file or delete the key"):
        clip_lengths([3, -5, 2], 5, "f.pkl", "train", "audio_lengths")
    with pytest.raises(DataFormatError, match=r"length -1 at row 0 is negative"):  # not clipped to 1
        clip_lengths([-1, 2], 5, "f.pkl", "train", "audio_lengths")


def test_no_modality_is_refused_before_the_file_is_read(tmp_path):
    with pytest.raises(ValueError, match=r"^modalities=\(\); choose from \('text', 'audio', 'vision'\)"):
        resolve_source(tmp_path / "nothing.pkl", None, [], ("text", "audio", "vision"), (("mosi", "mosi"),), ["mosi"])


def test_infer_dataset_uses_name_then_folders(tmp_path):
    pats = (("sims", "sims"), ("mosei", "mosei"), ("mosi", "mosi"))
    assert infer_dataset(tmp_path / "MOSEI" / "Processed" / "aligned_50.pkl", pats) == "mosei"
    assert infer_dataset(tmp_path / "x" / "mosi_data.pkl", pats) == "mosi"
    with pytest.raises(DataFormatError, match=r"set data.options.dataset \(pase data inspect: --dataset; Python: dataset=\) to one of sims, mosei, mosi"):
        infer_dataset("/nowhere/aligned_50.pkl", pats)


def test_finiteness_check_in_chunks_finds_a_value_in_any_chunk(monkeypatch):
    """The chunked check (small chunks forced here) agrees with np.isfinite(...).all(), wherever
    the bad value sits, including the last, partial chunk; a clean array comes back as is."""
    import pase.data.validate as V

    monkeypatch.setattr(V, "_FINITE_CHUNK", 7)  # 7 elements: 2 rows of (3, 1) per chunk
    x = np.zeros((11, 3, 1), dtype=np.float32)
    assert V._all_finite(x) and V.fix_non_finite(x, "f.pkl", "train", "text", list("abcdefghijk")) is x
    for row in range(11):
        y = x.copy()
        y[row, 2, 0] = np.nan
        assert not V._all_finite(y)
        with pytest.raises(DataFormatError, match=f"NaN at sample '{'abcdefghijk'[row]}'"):
            V.fix_non_finite(y, "f.pkl", "train", "text", list("abcdefghijk"))


def test_a_non_finite_label_or_feature_is_named_for_what_it_is():
    """A NaN label was "outside [-3, 3]" with a hint to check the dataset, and a -inf feature was called "inf"
    (a review). A non-finite label says NaN / +inf / -inf without the dataset hint; -inf is -inf."""
    ids = ["a", "b", "c"]
    for value, what in ((np.nan, r"NaN \(not a number\)"), (-np.inf, "-inf"), (np.inf, r"\+inf")):
        with pytest.raises(DataFormatError, match=rf"^f\.pkl: split 'train': the label of sample 'b' is {what} \(2 "
                                                  r"such samples\); every label must be a finite number: fix the file$"):
            check_label_range(np.array([0.5, value, value]), -3, 3, "f.pkl", "train", ids, fix="check dataset=")
    x = np.zeros((3, 2, 1), dtype=np.float32)
    x[1, 1, 0] = -np.inf
    with pytest.raises(DataFormatError, match=r"^f\.pkl: split 'train', key 'text': -inf at sample 'b' \(row 1; 0 "
                                              r"NaN, 0 \+inf, 1 -inf in the split\)"):
        fix_non_finite(x, "f.pkl", "train", "text", ids)
    x[1, 0, 0] = np.inf
    with pytest.raises(DataFormatError, match=r"key 'text': inf at sample 'b' \(row 1; 0 NaN, 1 \+inf, 1 -inf"):
        fix_non_finite(x, "f.pkl", "train", "text", ids)


@pytest.mark.parametrize("value, shown", [(None, "NoneType None"), (7, "int 7"), ("abc", "str abc"),
                                          (np.array(3), "ndarray 3")])
def test_scalar_where_rows_are_expected(value, shown):
    with pytest.raises(DataFormatError, match=rf"^f\.pkl: split 'train', key 'id' is {shown}, expected one row "
                                              r"per sample"):
        check_rows({"labels": np.zeros(2), "id": value}, "f.pkl", "train")
    assert is_rows([]) and is_rows({1}) and is_rows(np.zeros((0, 2))) and not is_rows(value)


def test_text_that_is_not_a_number():
    np.testing.assert_array_equal(as_array(np.array(["1.5", "-2"]), "f.pkl", "train", "k"), [1.5, -2.0])
    with pytest.raises(DataFormatError, match=r"key 'k' holds text such as 'abc', expected float32 numbers"):
        as_array(np.array(["1.5", "abc"]), "f.pkl", "train", "k")


def test_lengths_must_be_one_finite_value_per_sample(caplog):
    with pytest.raises(DataFormatError, match=r"key 'audio_lengths' has shape \(3, 2\), expected \(N,\)"):
        clip_lengths(np.ones((3, 2)), 5, "f.pkl", "train", "audio_lengths")
    with pytest.raises(DataFormatError, match=r"key 'audio_lengths': length inf at row 1; lengths must be finite"):
        clip_lengths([2, np.inf, 3], 5, "f.pkl", "train", "audio_lengths")
    with caplog.at_level(logging.INFO, logger="pase.data"):
        np.testing.assert_array_equal(clip_lengths([[0], [9], [3]], 5, "f.pkl", "train", "a"), [1, 5, 3])
    assert "clipped 2 of 3 lengths to [1, 5]" in caplog.text


@pytest.mark.parametrize("shape, message", [
    ((2, 3), r"has shape \(2, 3\), expected \(N, T, D\)$"),
    ((2, 0, 4), r"has shape \(2, 0, 4\): no time steps \(T = 0\)"),
    ((2, 3, 0), r"has shape \(2, 3, 0\): no features \(D = 0\)"),
])
def test_sequences_need_steps_and_features(shape, message):
    with pytest.raises(DataFormatError, match=r"^f\.pkl: split 'valid', key 'audio' " + message):
        check_sequences(np.zeros(shape), "f.pkl", "valid", "audio")
    check_sequences(np.zeros((2, 1, 1)), "f.pkl", "valid", "audio")


def test_dataset_refuses_an_empty_modality():
    with pytest.raises(ValueError, match=r"split 'test': modality 'audio' has shape \(2, 1, 0\), with no time "
                                         r"steps or no features"):
        MultimodalDataset({"text": np.ones((2, 4)), "audio": np.ones((2, 0))}, np.zeros(2), ["a", "b"],
                          split="test")


def test_a_float64_value_beyond_float32_is_named_not_made_inf():
    x = np.zeros((3, 2, 4))
    x[1, 0, 3], x[2, 1, 0] = -1e39, 5e38
    with pytest.raises(DataFormatError, match=r"^f\.pkl: split 'valid', key 'audio' holds -1e\+39 at index \(1, 0, 3\) "
                                              r"\(2 such values\), beyond the range of float32 \(about ±3\.4e\+38\): "
                                              r"loaded, it would become inf; rescale or fix that feature in the file$"):
        as_array(x, "f.pkl", "valid", "audio")
    rows = np.empty(2, dtype=object)
    rows[:] = [np.array([1.0, 2.0]), np.array([3.0, 1e39])]  # an object array of rows: the same check
    with pytest.raises(DataFormatError, match=r"key 'audio' \(row 1\) holds 1e\+39 at index \(1,\) \(1 such values\)"):
        as_array(rows, "f.pkl", "valid", "audio")
    np.testing.assert_array_equal(as_array(np.array([1e39, -np.inf]), "f.pkl", "valid", "k", np.float64),
                                  [1e39, -np.inf])  # float64 holds it; inf in the file stays inf (fix_non_finite)
    assert np.isneginf(as_array(np.array([-np.inf, 1.0]), "f.pkl", "valid", "k")[0])
    from pase.data.validate import cast_checked
    with pytest.raises(DataFormatError, match=r"^k holds 1e\+39 at index \(0,\)"):  # numbers in an object array
        cast_checked(np.array([1e39, 2.0], dtype=object), np.float32, "k")


def test_text_in_an_object_array_is_named_as_text():
    labels = np.array(["0.5"] * 5 + ["pos"], dtype=object)  # labels pickled as Python strings
    with pytest.raises(DataFormatError, match=r"^f\.pkl: split 'test', key 'regression_labels' holds text such as "
                                              r"'pos', expected float32 numbers; re-export the file with numeric "
                                              r"arrays$"):
        as_array(labels, "f.pkl", "test", "regression_labels")
    np.testing.assert_array_equal(as_array(np.array(["0.5", "-2"], dtype=object), "f.pkl", "test", "k"), [0.5, -2.0])


@pytest.mark.parametrize("alias", ["val", "dev"])
def test_a_validation_split_named_otherwise_is_named_in_the_fix(alias):
    """A file with train / val / test was told to 're-export the file with all three splits'."""
    with pytest.raises(DataFormatError) as err:
        require_splits({"train": {}, alias: {}, "test": {}}, "f.pkl", "MMSA")
    assert str(err.value).endswith(f"it names it {alias!r}: rename that key to 'valid' (the MMSA layout's name)")
