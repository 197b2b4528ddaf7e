"""Every documented fault gives its one-line ``DataFormatError``, and the input files stay unchanged."""

from __future__ import annotations

import logging
import os
import pickle
import re
import shutil

import numpy as np
import pytest

from pase.data import create_data
from pase.data.inspect import inspect_path
from pase.data.safe_pickle import UnsafePickleError
from pase.data.validate import DataFormatError

from .writers import write_gcnet, write_mmsa, write_mult


def _set(split, key, row, value):
    def mutate(data):
        data[split][key][row] = value
    return mutate


def _nan_vision(data):
    data["valid"]["vision"][2, 0, 0] = np.nan


def _ragged_audio(data):
    a = data["train"]["audio"]
    data["train"]["audio"] = [a[0], a[1][:-2]] + list(a[2:])


def _huge(key, value):
    """A float64 ``value`` beyond float32's range in ``key``: finite in the file, but cast to float32 it became
    inf (vision: "inf at sample ...") or -inf (audio: silently 0, as COVAREP's log(0))."""
    def mutate(data):
        data["valid"][key] = data["valid"][key].astype(np.float64)
        data["valid"][key][1, 0, 3] = value
    return mutate


def _left_pad_mask(data):
    """One valid sample's tokens moved to the end (left padding): its length was the mask's sum, so
    the model read its padding as text."""
    bert = data["valid"]["text_bert"]
    bert[0, 1] = bert[0, 1][::-1].copy()


MMSA_CASES = {
    "missing split": (lambda d: d.pop("valid"),
                      r"^aligned_50\.pkl: no split 'valid' \(found: train, test\); the MMSA layout needs"),
    "missing key": (lambda d: d["test"].pop("vision"),
                    r"^aligned_50\.pkl: split 'test' has no key 'vision' \(found: .*\); "
                    r"pass modalities=\('text', 'audio'\) \(--set 'data.modalities=\[text, audio\]'\)$"),
    "missing labels": (lambda d: d["train"].pop("regression_labels"),
                       r"split 'train' has no key 'regression_labels' .* re-export the file with this key"),
    "ragged audio": (_ragged_audio, r"split 'train', key 'audio' is ragged .* pad it to one \(N, T, D\)"),
    "row mismatch": (lambda d: d["valid"].update(vision=d["valid"]["vision"][:-1]),
                     r"split 'valid': key 'vision' has 5 rows \(shape \(5, 8, 20\)\) but 'id' has 6"),
    "nan": (_nan_vision, r"split 'valid', key 'vision': NaN at sample 'valid_vid\w+\$_\$\d+' \(row 2; "
                         r"1 NaN, 0 \+inf, 0 -inf in the split\); fix the file or pass sanitize=True"),
    "label range": (_set("test", "regression_labels", 1, 4.5),
                    r"split 'test': label 4\.5 of sample .* is outside \[-3, 3\] \(1 such samples\); "
                    r"check dataset='mosi'"),
    "duplicate id": (lambda d: d["train"]["id"].__setitem__(3, d["train"]["id"][0]),
                     r"split 'train': sample id .* occurs more than once \(rows 0 and 3\)"),
    "scalar id": (lambda d: d["train"].update(id=7),
                  r"^aligned_50\.pkl: split 'train', key 'id' is int 7, expected one row per sample"),
    "labels None": (lambda d: d["valid"].update(regression_labels=None),
                    r"^aligned_50\.pkl: split 'valid', key 'regression_labels' is NoneType None, expected one "
                    r"row per sample"),
    "text labels": (lambda d: d["test"].update(regression_labels=np.array(["0.5"] * 5 + ["abc"])),
                    r"^aligned_50\.pkl: split 'test', key 'regression_labels' holds text such as 'abc', "
                    r"expected float32 numbers"),
    "lengths (N, 2)": (lambda d: d["train"].update(audio_lengths=np.ones((9, 2), int)),
                       r"^aligned_50\.pkl: split 'train', key 'audio_lengths' has shape \(9, 2\), expected "
                       r"\(N,\) one length per sample"),
    "lengths NaN": (_set("valid", "vision_lengths", 4, float("nan")),
                    r"^aligned_50\.pkl: split 'valid', key 'vision_lengths': length nan at row 4; lengths "
                    r"must be finite"),
    "audio T=0": (lambda d: [d[s].update(audio=d[s]["audio"][:, :0]) for s in d],
                  r"^aligned_50\.pkl: split 'train', key 'audio' has shape \(9, 0, 5\): no time steps "
                  r"\(T = 0\); .* leave it out \(modalities=\.\.\.\)$"),
    "vision 1e39": (_huge("vision", 1e39), r"^aligned_50\.pkl: split 'valid', key 'vision' holds 1e\+39 at index "
                                           r"\(1, 0, 3\) \(1 such values\), beyond the range of float32"),
    "audio -1e39": (_huge("audio", -1e39),
                    r"^aligned_50\.pkl: split 'valid', key 'audio' holds -1e\+39 at index \(1, 0, 3\) \(1 such "
                    r"values\), beyond the range of float32 \(about ±3\.4e\+38\): loaded, it would become inf; "
                    r"rescale or fix that feature in the file$"),
    "text labels (object array)": (lambda d: d["test"].update(regression_labels=np.array(["0.5"] * 5 + ["pos"],
                                                                                         dtype=object)),
                                   r"^aligned_50\.pkl: split 'test', key 'regression_labels' holds text such as "
                                   r"'pos', expected float32 numbers"),
    "vision D=0": (lambda d: [d[s].update(vision=d[s]["vision"][:, :, :0]) for s in d],
                   r"^aligned_50\.pkl: split 'train', key 'vision' has shape \(9, 8, 0\): no features "
                   r"\(D = 0\)"),
    # the review's findings (each loaded silently, or with a message that named no file or key)
    "left-padded text mask": (_left_pad_mask,
                              r"^aligned_50\.pkl: split 'valid', key 'text_bert': the attention mask \(row 1 of "
                              r"\(N, 3, L\)\) of sample row 0 has a 1 after a 0 \(1 such samples; .*re-pad the "
                              r"file's text right$"),
    "width differs between splits": (lambda d: d["test"].update(vision=d["test"]["vision"][:, :, :10]),
                                     r"^aligned_50\.pkl: split 'test', key 'vision' has width 10 \(shape "
                                     r"\(6, 8, 10\)\) but split 'train' has 20; .*re-export the file$"),
    "True/False labels": (lambda d: d["train"].update(regression_labels=d["train"]["regression_labels"] >= 0),
                          r"^aligned_50\.pkl: split 'train', key 'regression_labels' holds True/False values, "
                          r"not sentiment scores"),
}


@pytest.mark.parametrize("case", sorted(MMSA_CASES))
def test_mmsa_faults(tmp_path, untouched, case):
    mutate, message = MMSA_CASES[case]
    path = write_mmsa(tmp_path, "mosi", mutate=mutate)
    check = untouched(tmp_path)
    with pytest.raises(DataFormatError, match=message) as err:
        create_data("mmsa", path=path)
    assert "\n" not in str(err.value)
    check()


def test_nan_is_zeroed_with_sanitize(tmp_path, untouched):
    path = write_mmsa(tmp_path, "mosi", mutate=_nan_vision)
    check = untouched(tmp_path)
    bundle = create_data("mmsa", path=path, sanitize=True)
    assert bundle.splits["valid"].features["vision"][2, 0, 0] == 0
    check()


def test_expected_dims(tmp_path):
    path = write_mmsa(tmp_path, "mosi")
    with pytest.raises(DataFormatError, match=r"modality 'audio' has width 5 .* but 74 was configured"):
        create_data("mmsa", path=path, expected_dims={"audio": 74})


def test_truncated_file(tmp_path, untouched):
    path = write_mmsa(tmp_path, "mosi")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    check = untouched(tmp_path)
    with pytest.raises(DataFormatError, match=r"^aligned_50\.pkl: truncated or not a pickle"):
        create_data("mmsa", path=path)
    check()


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_unsafe_global_is_refused_and_not_run(tmp_path, untouched):
    marker = tmp_path / "pwned"
    path = write_mult(tmp_path / "data", "mosi", mutate=lambda d: d["train"].update(id=_Payload(marker)))
    check = untouched(tmp_path)
    with pytest.raises(UnsafePickleError, match=r"^mosi_data\.pkl: refused to load global '\w+\.system'"):
        create_data("mult", path=path)
    assert not marker.exists()
    check()


@pytest.mark.parametrize("protocol", [0, 1, 2, 4, 5])
def test_an_unsafe_pickle_with_bytes_after_its_end_is_refused_as_unsafe(tmp_path, protocol):
    """A newline after the pickle made the refusal read as a damaged download."""
    marker = tmp_path / "pwned"
    path = tmp_path / "mosi_data.pkl"
    path.write_bytes(pickle.dumps({"train": _Payload(marker)}, protocol=protocol) + b"\n")
    with pytest.raises(UnsafePickleError, match=r"^mosi_data\.pkl: refused to load global '\w+\.system'"):
        create_data("mult", path=path)
    assert not marker.exists()


def test_mult_missing_key_message(tmp_path, untouched):
    path = write_mult(tmp_path, "mosei", mutate=lambda d: d["valid"].pop("vision"))
    check = untouched(tmp_path)
    with pytest.raises(DataFormatError, match=r"^mosei_senti_data\.pkl: split 'valid' has no key 'vision' "
                                              r"\(found: text, audio, labels, id\); pass "
                                              r"modalities=\('text', 'audio'\) \(--set 'data.modalities=\[text, audio\]'\)$"):
        # a MulT file: no other format
        create_data("mult", path=path)
    check()


def test_an_mmsa_file_given_to_the_mult_loader_points_to_mmsa(tmp_path, untouched):
    """The MulT loader suggested the 'gcnet' format for any file without 'labels', also for an MMSA
    pickle, whose splits hold regression_labels."""
    path = write_mmsa(tmp_path, "mosi")
    check = untouched(tmp_path)
    with pytest.raises(DataFormatError, match=r"has no key 'labels' \(found: .*regression_labels.*\); re-export the "
                                              r"file with this key or use the 'mmsa' format$"):
        create_data("mult", path=path)
    check()


def test_mult_scalar_id(tmp_path, untouched):
    path = write_mult(tmp_path, "mosi", mutate=lambda d: d["train"].update(id=3))
    check = untouched(tmp_path)
    with pytest.raises(DataFormatError, match=r"^mosi_data\.pkl: split 'train', key 'id' is int 3, expected "
                                              r"one row per sample \(a list or an \(N, \.\.\.\) array\)"):
        create_data("mult", path=path)
    check()


def test_mult_label_range(tmp_path):
    path = write_mult(tmp_path, "mosi", mutate=_set("train", "labels", 0, [[-7.0]]))
    with pytest.raises(DataFormatError, match=r"mosi_data\.pkl: split 'train': label -7 of sample .* "
                                              r"is outside \[-3, 3\]"):
        create_data("mult", path=path)


def _gcnet(tmp_path, **kw):
    path = write_gcnet(tmp_path, "iemocap4", **kw)
    return path, dict(label_path=path, feature_root=path.parent / "features")


def test_gcnet_missing_npy(tmp_path, untouched):
    path, opts = _gcnet(tmp_path)
    utt = pickle.loads(path.read_bytes())[0]["Ses02F_impro00"][1]
    (path.parent / "features" / "deberta-large-4-UTT" / f"{utt}.npy").unlink()
    check = untouched(tmp_path)
    with pytest.raises(DataFormatError, match=rf"deberta-large-4-UTT/{utt}\.npy: missing feature of utterance "
                                              rf"'{utt}' \(modality 'text'\)"):
        create_data("gcnet", **opts)
    check()


def test_gcnet_missing_npy_files_are_counted_per_split_in_one_error(tmp_path, untouched):
    """Every missing file of a modality is counted before the one error (the first file alone hid whether a
    whole split was missing, and each rerun named the next one: review), with the leave-out fix."""
    path, opts = _gcnet(tmp_path)
    videos, _, _, _, train, test = pickle.loads(path.read_bytes())
    folder = path.parent / "features" / "manet_UTT"
    removed = {u for v in test for u in videos[v]} | {videos[sorted(train)[0]][0]}
    gone = [u for v in sorted(train | test) for u in videos[v] if u in removed]  # in the loader's order
    for u in gone:
        shutil.rmtree(folder / u) if (folder / u).is_dir() else (folder / f"{u}.npy").unlink()
    n_train = sum(len(videos[v]) for v in train)
    n_test = sum(len(videos[v]) for v in test)
    check = untouched(tmp_path)
    with pytest.raises(DataFormatError) as err:
        create_data("gcnet", **opts)
    check()
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{folder / gone[0]}.npy: missing feature of utterance '{gone[0]}' (modality 'vision'), and "
                          f"of {len(gone) - 1} more: {len(gone)} of {n_train + n_test} utterances lack one (per split "
                          f"of the pickle: train 1 of {n_train}, test {n_test} of {n_test}; for example "
                          f"{', '.join(repr(u) for u in gone[1:4])})"), msg
    assert msg.endswith("or leave vision out with --set 'data.modalities=[audio, text]' (pase data inspect: "
                        "--features vision=null)"), msg


@pytest.mark.parametrize("content, message", [
    (np.array(["abc"] * 4), r"cannot read utterance '{utt}' \(could not convert string to float"),
    (np.full(1024, np.nan, np.float32), r"utterance '{utt}' \(modality 'text'\) holds 1024 NaN / inf values; "
                                        r"fix the file or pass sanitize=True"),
    (np.zeros((1, 0), np.float32), r"utterance '{utt}' \(modality 'text'\) has shape \(1, 0\), no values"),
])
def test_gcnet_bad_npy_is_named(tmp_path, untouched, content, message):
    path, opts = _gcnet(tmp_path)
    utt = pickle.loads(path.read_bytes())[0]["Ses02F_impro00"][1]
    np.save(path.parent / "features" / "deberta-large-4-UTT" / f"{utt}.npy", content)
    check = untouched(tmp_path)
    with pytest.raises(DataFormatError, match=rf"deberta-large-4-UTT/{utt}\.npy: " + message.format(utt=utt)):
        create_data("gcnet", **opts)
    check()


def test_gcnet_nan_npy_with_sanitize_becomes_zero(tmp_path):
    path, opts = _gcnet(tmp_path)
    utt = pickle.loads(path.read_bytes())[0]["Ses05M_impro01"][0]
    np.save(path.parent / "features" / "deberta-large-4-UTT" / f"{utt}.npy", np.full(1024, np.nan, np.float32))
    test = create_data("gcnet", sanitize=True, **opts).splits["test"]
    assert float(test.features["text"][test.ids.index(utt)].abs().sum()) == 0.0


def test_gcnet_missing_feature_folder(tmp_path):
    path, opts = _gcnet(tmp_path)
    shutil.rmtree(path.parent / "features" / "manet_UTT")
    with pytest.raises(DataFormatError, match=r"manet_UTT: feature folder of modality 'vision' not found .*"
                                              r"name it with --set data.options.features.vision=<folder>"):
        create_data("gcnet", **opts)


@pytest.mark.parametrize("dataset, value, found, expected", [
    ("iemocap4", None, "None", r"an integer class index in \[0, 4\)"),
    ("iemocap4", "hap", "the text 'hap'", r"an integer class index in \[0, 4\)"),
    ("iemocap4", True, r"the bool True \(a True / False flag\? refused rather than read as 1\)",
     r"an integer class index in \[0, 4\)"),
    ("iemocap6", np.bool_(False), r"the bool False \(a True / False flag\? refused rather than read as 0\)",
     r"an integer class index in \[0, 6\)"),
    ("mosi", "pos", "the text 'pos'", r"a number in \[-3, 3\]"),
], ids=["none", "text", "bool", "numpy-bool", "mosi-text"])
def test_gcnet_none_text_and_bool_labels_are_named_as_what_they_are(tmp_path, dataset, value, found, expected):
    """None was read as NaN with the hint to check the dataset, text was 'expected float64 numbers', and a bool
    loaded as class 1 / 0 (review): each is named, with what videoLabels must hold."""
    def one(d):
        v = sorted(d["trainVids"])[0]
        d["videoLabels"][v][1] = value

    path = write_gcnet(tmp_path, dataset, mutate=one)
    labels = pickle.loads(path.read_bytes())
    utt = labels[0][sorted(labels[4])[0]][1]  # videoIDs of the first trainVids video
    with pytest.raises(DataFormatError, match=rf"^{re.escape(path.name)}: split 'train': label of sample '{utt}' is "
                                              rf"{found}; 1 such label\(s\) in the split; videoLabels must hold "
                                              rf"{expected} per utterance: store that in the label pickle$"):
        create_data("gcnet", label_path=path)


@pytest.mark.parametrize("value, fix", [
    (4, r"check dataset='iemocap4' \(iemocap4: 4 classes, iemocap6: 6\)$"),  # an integer >= K: the dataset hint
    (-1, r"expected an integer class index: fix that label in the file$"),
    (1.5, r"expected an integer class index: fix that label in the file$"),
    (float("nan"), r"expected an integer class index: fix that label in the file$"),
], ids=["k", "negative", "fraction", "nan"])
def test_gcnet_the_dataset_hint_is_only_for_an_integer_label_of_k_or_more(tmp_path, value, fix):
    def one(d):
        d["videoLabels"]["Ses03M_impro01"][0] = value

    path, opts = _gcnet(tmp_path, mutate=one)
    with pytest.raises(DataFormatError, match=rf"label {value:g} of sample 'Ses03M_impro01_F000' is not a class "
                                              rf"index in \[0, 4\); {fix}"):
        create_data("gcnet", **opts)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["videoLabels"]["Ses03M_impro01"].__setitem__(0, 4),
     r"split '\w+': label 4 of sample 'Ses03M_impro01_F000' is not a class index in \[0, 4\)"),
    (lambda d: d["videoLabels"]["Ses01F_impro00"].pop(),
     r"video 'Ses01F_impro00' has \d+ utterances in videoIDs but \d+ labels in videoLabels"),
    (lambda d: d["videoIDs"].pop("Ses05M_impro01"),
     r"video 'Ses05M_impro01' of testVids is missing from videoIDs"),
    (lambda d: d["trainVids"].add("Ses05M_impro01"),
     r"video 'Ses05M_impro01' is in both trainVids and testVids"),
    (lambda d: d["videoLabels"].__setitem__("Ses02M_impro01", None),
     r"^IEMOCAP_features_raw_4way\.pkl: videoLabels\['Ses02M_impro01'\] is NoneType None, expected a list "
     r"with one entry per utterance"),
    (lambda d: d.__setitem__("trainVids", None),
     r"^IEMOCAP_features_raw_4way\.pkl: trainVids is NoneType None, expected a set or list of video ids"),
    (lambda d: d["videoIDs"]["Ses01F_impro00"].__setitem__(1, d["videoIDs"]["Ses01F_impro00"][0]),
     r"sample id 'Ses01F_impro00_\w+' occurs more than once .*fix the file's 'videoIDs' entries$"),
    (lambda d: d.__setitem__("testVids", set()),
     r"^IEMOCAP_features_raw_4way\.pkl: testVids is empty; the pickle's split needs at least one video"),
])
def test_gcnet_label_faults(tmp_path, untouched, mutate, message):
    _, opts = _gcnet(tmp_path, mutate=mutate)
    check = untouched(tmp_path)
    with pytest.raises(DataFormatError, match=message) as err:
        create_data("gcnet", **opts)
    assert "\n" not in str(err.value)
    check()


def test_gcnet_not_a_label_pickle(tmp_path):
    path = tmp_path / "IEMOCAP_features_raw_4way.pkl"
    path.write_bytes(pickle.dumps((1, 2, 3)))
    with pytest.raises(DataFormatError, match=r"found a 3-tuple; a GCNet label pickle is \(videoIDs"):
        create_data("gcnet", label_path=path, feature_root=tmp_path)


def test_a_nan_in_text_bert_names_that_key(tmp_path):
    """With text=bert the message named key 'text', which was clean."""
    def nan_bert(d):
        d["train"]["text_bert"] = d["train"]["text_bert"].astype(np.float64)
        d["train"]["text_bert"][2, 0, 0] = np.nan
    path = write_mmsa(tmp_path, "mosi", mutate=nan_bert)
    with pytest.raises(DataFormatError, match=r"^aligned_50\.pkl: split 'train', key 'text_bert': NaN at sample"):
        create_data("mmsa", path=path, text="bert")


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["train"].update(labels=d["train"]["labels"] >= 0),
     r"^mosi_data\.pkl: split 'train', key 'labels' holds True/False values, not sentiment scores"),
    (lambda d: d["valid"].update(audio=d["valid"]["audio"][:, :, :3]),
     r"^mosi_data\.pkl: split 'valid', key 'audio' has width 3 \(shape \(6, 6, 3\)\) but split 'train' has 5"),
])
def test_mult_flag_labels_and_split_widths(tmp_path, untouched, mutate, message):
    path = write_mult(tmp_path, "mosi", mutate=mutate)
    check = untouched(tmp_path)
    with pytest.raises(DataFormatError, match=message):
        create_data("mult", path=path)
    check()


@pytest.mark.parametrize("mutate, message", [
    # lengths a quarter of the real frames: the model read a quarter of them, without a word
    (lambda d: d["train"].update(vision_lengths=[max(1, int(x) // 4) for x in d["train"]["vision_lengths"]]),
     r"^unaligned_50\.pkl: split 'train', key 'vision': \d+ of \d+ padded samples are not zero at the step right "
     r"after their 'vision_lengths' .*the lengths count fewer steps than are real"),
    (lambda d: d["valid"]["audio_lengths"].__setitem__(2, 3.5),
     r"^unaligned_50\.pkl: split 'valid', key 'audio_lengths': length 3\.5 at row 2 is not a whole number of steps"),
])
def test_unaligned_lengths_that_undercount_or_are_fractional_are_refused(tmp_path, untouched, mutate, message):
    path = write_mmsa(tmp_path, "mosi", aligned=False, mutate=mutate)
    check = untouched(tmp_path)
    with pytest.raises(DataFormatError, match=message):
        create_data("mmsa", path=path)
    check()


def test_unaligned_lengths_that_overcount_are_refused(tmp_path, untouched, caplog):
    """The mirror of the undercount: lengths counted at twice the frame rate ran into the zero padding, and
    every sample's mean and attention read padding as frames, with a note only where most were past T (a
    review). Most samples with a zero tail inside their length (zero at steps floor(3L/4), floor(7L/8) and L - 1,
    L >= 9) are refused; a few load, and any length past T is a warning."""
    def doubled(d):
        d["train"]["vision_lengths"] = [2 * int(x) for x in d["train"]["vision_lengths"]]

    path = write_mmsa(tmp_path / "a", "mosi", aligned=False, steps=(12, 40), mutate=doubled)
    check = untouched(tmp_path / "a")
    with pytest.raises(DataFormatError, match=r"^unaligned_50\.pkl: split 'train', key 'vision': \d+ of \d+ samples "
                                              r"\(those with a real first step and L >= 9\) are zero over the last "
                                              r"quarter of the steps their 'vision_lengths' counts \(zero at steps "
                                              r"floor\(3L/4\), floor\(7L/8\) and L - 1; for example sample '.+', "
                                              r"L = \d+, zero from step \d+ on\): the lengths count more steps than "
                                              r"are real \(counted at another frame rate\?\), so the model would read "
                                              r"the zero padding as frames; fix 'vision_lengths' to count the real "
                                              r"steps at this key's frame rate$"):
        create_data("mmsa", path=path)
    check()

    def one_past(d):
        d["train"]["vision_lengths"][0] = 11  # T = 10: one sample's length past the stored steps

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pase.data"):
        bundle = create_data("mmsa", path=write_mmsa(tmp_path / "b", "mosi", aligned=False, mutate=one_past))
    assert bundle.splits["train"].lengths["vision"][0] == 10
    said = [(r.levelname, r.getMessage()) for r in caplog.records if "'vision_lengths'" in r.getMessage()]
    assert said == [("WARNING", "unaligned_50.pkl: split 'train', key 'vision_lengths': clipped 1 of 9 lengths to "
                                "[1, 10] (for example 11 at row 0); 1 exceed the stored steps: check the key")]


def test_unaligned_lengths_with_a_zero_last_real_frame_load(tmp_path):
    """Real frames can be all zero (unvoiced COVAREP audio, Facet vision without a face): a file with right
    lengths whose last real audio frame is zero in most clips was refused as lengths into the padding (a
    review). One zero step at L - 1 is not a long zero tail, so it loads, with its lengths as stored."""
    def zero_last(d):
        for s in d.values():
            a, n = s["audio"], s["audio_lengths"]
            a[:, 0] = np.where(a[:, 0] == 0, 1.0, a[:, 0])  # a real first step
            for i in range(len(n)):
                if n[i] > 1 and i % 5 != 0:  # 80 % of the clips end on an all-zero frame
                    a[i, n[i] - 1] = 0.0

    path = write_mmsa(tmp_path, "mosi", aligned=False, sizes=(20, 10, 10), mutate=zero_last)
    bundle = create_data("mmsa", path=path)
    for split, n in zip(("train", "valid", "test"), (20, 10, 10)):
        lengths = bundle.splits[split].lengths["audio"]
        assert len(lengths) == n
    with open(path, "rb") as f:
        stored = pickle.load(f)["train"]["audio_lengths"]
    assert [int(x) for x in bundle.splits["train"].lengths["audio"]] == [int(x) for x in stored]


def test_unaligned_short_clips_ending_in_two_zero_frames_load(tmp_path):
    """Clips of 4 to 7 steps whose last two real frames are zero (a silent ending) were refused: in them the
    two probed steps, L - 1 and floor(3L/4), were one step or adjacent (a review). Clips under 9 steps are not
    probed; a zero tail over the last quarter of longer clips still is."""
    def short_silent_ends(d):
        for s in d.values():
            a = s["audio"]
            n = [4 + i % 4 for i in range(len(s["audio_lengths"]))]  # 4 to 7 steps
            a[:] = 0.0
            for i, k in enumerate(n):
                a[i, :k - 2] = 1.0 + i  # real frames, then two real all-zero ones
            s["audio_lengths"] = n

    path = write_mmsa(tmp_path, "mosi", aligned=False, sizes=(20, 10, 10), mutate=short_silent_ends)
    bundle = create_data("mmsa", path=path)
    assert [int(x) for x in bundle.splits["train"].lengths["audio"]] == [4 + i % 4 for i in range(20)]


def test_right_padded_unaligned_lengths_load_as_stored(tmp_path):
    path = write_mmsa(tmp_path, "mosi", aligned=False)
    bundle = create_data("mmsa", path=path)
    x, ln = bundle.splits["train"].features["vision"], bundle.splits["train"].lengths["vision"]
    assert all(np.abs(x[i, int(n):]).sum() == 0 and np.abs(x[i, int(n) - 1]).sum() > 0 for i, n in enumerate(ln))


@pytest.mark.parametrize("fault", ["missing", "nan"])
def test_data_modalities_reaches_the_loader(tmp_path, capsys, fault):
    """--set data.modalities=[text,audio] on a file without (or with a broken) vision stopped with
    'pass modalities=...': the setting was applied after the loader had read and checked every
    modality, so only data.options.modalities worked (review)."""
    from pase.cli import main

    def mutate(d):
        for s in d.values():
            if fault == "missing":
                s.pop("vision")
            else:
                s["vision"][0, 0, 0] = np.nan

    path = write_mmsa(tmp_path, "mosi", sizes=(24, 8, 8), mutate=mutate)
    args = ["train", "--quiet", "--out", str(tmp_path / "run"), "--set", "data.source=mmsa", "--set",
            f"data.path={path}", "--set", "train.max_epochs=1", "--set", "train.batch_size=8",
            "--set", "model.d_model=8", "--set", "model.hidden=16", "--set", "model.head_hidden=8"]
    assert main(args + ["--set", "data.modalities=[text, audio]"]) == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_slips_a_user_makes_with_a_path_or_an_old_file_are_named(tmp_path, untouched, monkeypatch):
    """Each of these had a one-line error naming the wrong cause or fix (review): a gzipped pickle
    ('truncated ... download it again'), Python 2 bytes keys ('has no key' though it is there), an
    empty or folder data.path (': cannot tell the dataset from the path'), '~' not expanded."""
    import gzip


    path = write_mmsa(tmp_path / "a", "mosi", aligned=False)
    zipped = tmp_path / "unaligned_50.pkl"
    zipped.write_bytes(gzip.compress(path.read_bytes()))
    check = untouched(tmp_path)
    with pytest.raises(DataFormatError, match=r"unaligned_50.pkl.*gzip-compressed \(decompress it first: gunzip\)"):
        create_data("mmsa", path=zipped, dataset="mosi")
    with pytest.raises(ValueError, match=r"^data.path is empty; pass the data file"):
        create_data("mmsa", path="", dataset="mosi")
    with pytest.raises(IsADirectoryError, match=r"is a folder, but a pickle file is expected here \(pass one of the "
                                                r"pickles in it: Processed/unaligned_50.pkl\)"):
        create_data("mmsa", path=path.parent.parent)
    monkeypatch.setenv("HOME", str(tmp_path / "a"))
    assert create_data("mmsa", path="~/MOSI/Processed/unaligned_50.pkl").name.startswith("mosi")
    check()
    old = write_mmsa(tmp_path / "b", "mosi", aligned=False,
                     mutate=lambda d: [d[s].update({b"text": d[s].pop("text")}) for s in d])
    with pytest.raises(DataFormatError, match=r"split 'train' has no key 'text' \(found: .*\); it is stored as bytes "
                                              r"b'text': re-save the file with str keys \(Python 3\)"):
        create_data("mmsa", path=old)
    # every key bytes (a file re-saved after pickle.load(..., encoding="bytes")): the same fix one level up,
    # and inspect names the format (it said "not a known format", the loader "re-export with all three splits")
    raw = write_mmsa(tmp_path / "c", "mosi", aligned=False, mutate=lambda d: d.update(
        {s.encode(): {k.encode(): v for k, v in d.pop(s).items()} for s in list(d)}))
    for source in ("mmsa", "mult"):
        with pytest.raises(DataFormatError, match=r"no split 'train' \(found: .*\); .*; it is stored as bytes b'train': "
                                                  r"re-save the file with str keys \(Python 3\)$"):
            create_data(source, path=raw, dataset="mosi")
    report = inspect_path(raw)
    assert report.format == "mmsa" and "stored as bytes b'train'" in " ".join(report.problems)


def test_a_mosi_bclstm_segment_of_no_split_and_gcnet_bytes_names_are_named(tmp_path):
    """A typo in bclstm_split ('Test') dropped the segment from both splits and was then blamed on
    bclstm_row; GCNet utterance names stored as bytes were looked up as "b'...'.npy" (review)."""
    from .writers import write_mosi_bclstm

    def typo(text):
        lines = text.splitlines(keepends=True)
        lines[-1] = lines[-1].replace(",test,", ",Test,")
        return "".join(lines)

    root = write_mosi_bclstm(tmp_path / "m", edit={"mosi_index.csv": typo})
    with pytest.raises(ValueError, match=r"mosi_index.csv: line \d+ \(segment .*\): bclstm_split is 'Test', expected "
                                         r"'train' or 'test'; restore the file"):
        create_data("mosi_bclstm", path=root, verify=False)

    def as_bytes(d):
        d["videoIDs"] = {v: [u.encode() for u in us] for v, us in d["videoIDs"].items()}

    label = write_gcnet(tmp_path / "g", "iemocap4", mutate=as_bytes)
    bundle = create_data("gcnet", label_path=label)
    assert all(isinstance(i, str) and not i.startswith("b'") for i in bundle.splits["test"].ids)
