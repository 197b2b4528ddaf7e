"""MMSA pickles round-trip through ``create_data("mmsa", ...)``."""

from __future__ import annotations

import logging
import pickle
import re

import numpy as np
import pytest
import torch

from pase.data import create_data
from pase.data.folds import parse_clip_id
from pase.data.validate import DataFormatError

from .writers import write_mmsa

SIZES = (9, 6, 6)


def _raw(path):
    with open(path, "rb") as fh:  # our own test file: plain pickle is fine here
        return pickle.load(fh)


@pytest.mark.parametrize("aligned", [True, False])
def test_round_trip(tmp_path, aligned, untouched):
    path = write_mmsa(tmp_path, "mosi", aligned=aligned, sizes=SIZES)
    check = untouched(tmp_path)
    bundle = create_data("mmsa", path=path)
    check()
    raw = _raw(path)
    assert bundle.name == "mosi_mmsa"
    assert (bundle.task.kind, bundle.task.protocol, bundle.task.label_range) == ("regression", "mosi", (-3.0, 3.0))
    assert bundle.dims() == {"text": 768, "audio": 5, "vision": 20}
    for split, n in zip(("train", "valid", "test"), SIZES):
        ds, r = bundle.splits[split], raw[split]
        assert len(ds) == n and ds.ids == list(r["id"])
        torch.testing.assert_close(ds.target, torch.as_tensor(r["regression_labels"]))  # exact copy
        torch.testing.assert_close(ds.features["vision"], torch.as_tensor(r["vision"]))
        audio = np.where(np.isneginf(r["audio"]), 0.0, r["audio"]).astype(np.float32)
        torch.testing.assert_close(ds.features["audio"], torch.as_tensor(audio))
        assert ds.lengths["text"].tolist() == r["text_bert"][:, 1].sum(1).astype(int).tolist()
        assert ds.lengths["audio"].tolist() == list(r["audio_lengths"])
        assert ds.lengths["vision"].tolist() == list(r["vision_lengths"])
        assert list(ds.extra["raw_text"]) == list(r["raw_text"])


def test_groups_are_videos_and_positions_clip_order(tmp_path):
    bundle = create_data("mmsa", path=write_mmsa(tmp_path, "mosi", sizes=SIZES))
    seen = {}
    for ds in bundle.splits.values():
        clips = [parse_clip_id(i) for i in ds.ids]
        for (video, clip), g, p in zip(clips, ds.groups.tolist(), ds.positions.tolist()):
            assert seen.setdefault(video, g) == g  # one group per video, across splits
            same = [int(c) for v, c in clips if v == video]
            assert p == sorted(same).index(int(clip))
    assert len(set(seen.values())) == len(seen)


def test_neg_inf_audio_is_zeroed_and_logged(tmp_path, caplog):
    path = write_mmsa(tmp_path, "mosi")
    with caplog.at_level(logging.INFO, logger="pase.data"):
        bundle = create_data("mmsa", path=path)
    assert "split 'train', key 'audio': set 1 -inf values to 0" in caplog.text
    assert all(torch.isfinite(d.features["audio"]).all() for d in bundle.splits.values())


def test_bert_text(tmp_path):
    path = write_mmsa(tmp_path, "mosi")
    bundle = create_data("mmsa", path=path, text="bert")
    raw = _raw(path)["train"]["text_bert"]
    x = bundle.splits["train"].features["text"]
    assert x.shape == (SIZES[0], 8, 3)  # (N, 3, L) -> (N, L, 3)
    torch.testing.assert_close(x, torch.as_tensor(raw.transpose(0, 2, 1), dtype=torch.float32))
    assert bundle.splits["train"].lengths["text"].tolist() == raw[:, 1].sum(1).astype(int).tolist()


def test_sims_keeps_unimodal_labels(tmp_path):
    path = write_mmsa(tmp_path, "sims", aligned=False)
    assert path.name == "unaligned_39.pkl"
    bundle = create_data("mmsa", path=path)
    assert (bundle.task.protocol, bundle.task.label_range) == ("sims", (-1.0, 1.0))
    assert bundle.dims() == {"text": 768, "audio": 33, "vision": 709}
    raw = _raw(path)["valid"]
    for m in "TAV":
        np.testing.assert_array_equal(bundle.splits["valid"].extra[f"regression_labels_{m}"],
                                      raw[f"regression_labels_{m}"])


def test_sims_v2_is_scored_with_the_sims_protocol(tmp_path):
    """SIMS v2 labels lie in [-1, 1] and are scored as SIMS (Mult_acc_*), not as MOSI (Has0/Non0)."""
    path = write_mmsa(tmp_path, "sims", aligned=False)
    bundle = create_data("mmsa", path=path, dataset="simsv2")
    assert bundle.name == "simsv2_mmsa"
    assert (bundle.task.protocol, bundle.task.label_range) == ("sims", (-1.0, 1.0))


def test_numpy1_file_loads_the_same(tmp_path):
    new = create_data("mmsa", path=write_mmsa(tmp_path / "a", "mosi"))
    old = create_data("mmsa", path=write_mmsa(tmp_path / "b", "mosi", numpy1=True))
    for s in new.splits:
        torch.testing.assert_close(new.splits[s].features["text"], old.splits[s].features["text"])
        assert new.splits[s].ids == old.splits[s].ids


def test_modalities_subset_and_dataset_argument(tmp_path, capsys):
    path = write_mmsa(tmp_path, "mosei")
    bundle = create_data("mmsa", path=path, modalities=("text", "audio"))
    assert bundle.modalities == ["text", "audio"] and bundle.task.protocol == "mosei"
    renamed = tmp_path / "features.pkl"
    renamed.write_bytes(path.read_bytes())
    with pytest.raises(DataFormatError, match=r"features.pkl: cannot tell the dataset from the path; set "
                                              r"data.options.dataset \(pase data inspect: --dataset; Python: "
                                              r"dataset=\) to one of "):
        create_data("mmsa", path=renamed)
    # a mistyped path is named as missing, not as a name without a dataset in it
    with pytest.raises(FileNotFoundError, match=r"mine_nothere.pkl: no such file; check the path"):
        create_data("mmsa", path=tmp_path / "mine_nothere.pkl")
    from pase.cli import main
    assert main(["data", "inspect", str(renamed)]) == 1  # the path does not tell
    assert main(["data", "inspect", str(renamed), "--dataset", "mosei"]) == 0
    assert main(["data", "inspect", str(renamed), "--dataset", "MOSEI"]) == 0  # any case, as the loader
    capsys.readouterr()
    assert main(["data", "inspect", str(renamed), "--dataset", "bogus"]) == 1  # a problem with the input
    assert "dataset='bogus'; valid: mosi, mosei, sims, simsv2" in capsys.readouterr().out
    assert create_data("mmsa", path=renamed, dataset="mosei").name == "mosei_mmsa"
    with pytest.raises(ValueError, match="dataset='iemocap'; valid: mosi, mosei, sims, simsv2"):
        create_data("mmsa", path=renamed, dataset="iemocap")
    with pytest.raises(ValueError, match=r"modalities='text' \(data.options.modalities\) must be a list"):
        create_data("mmsa", path=path, modalities="text")  # not the letters t, e, x, t


def test_checksum_is_recorded(tmp_path, caplog):
    path = write_mmsa(tmp_path, "mosi")  # named MOSI/Processed/aligned_50.pkl, like the release
    bundle = create_data("mmsa", path=path)
    assert bundle.info["published_sha256"].startswith("d3994fd2")
    with caplog.at_level(logging.WARNING, logger="pase.data"):
        bundle = create_data("mmsa", path=path, verify_checksum=True)
    assert bundle.info["checksum"] == "mismatch" and "differs from the published" in caplog.text


def test_batches_come_out_in_one_indexing(tmp_path):
    ds = create_data("mmsa", path=write_mmsa(tmp_path, "mosi", aligned=False)).splits["train"]
    batch = ds.__getitems__([0, 2])
    assert batch.inputs["audio"].shape == (2, 12, 5) and batch.ids == [ds.ids[0], ds.ids[2]]
    assert batch.mask("audio").sum(1).tolist() == ds.lengths["audio"][[0, 2]].tolist()


def test_extras_that_are_not_one_row_per_sample_are_left_out(tmp_path):
    path = write_mmsa(tmp_path, "mosi", mutate=lambda d: d["train"].update(raw_text=None, annotations=3))
    bundle = create_data("mmsa", path=path)
    assert sorted(bundle.splits["train"].extra) == ["classification_labels"]
    assert sorted(bundle.splits["valid"].extra) == ["annotations", "classification_labels", "raw_text"]


@pytest.mark.parametrize("source", ["mmsa", "mult"])
def test_a_sample_in_two_splits_is_refused(tmp_path, source):
    """A test sample that is also a training sample would leak its label into the score."""
    from .writers import write_mult

    def share(data):  # the first test sample gets the id of a training sample
        data["test"]["id"] = data["test"]["id"].astype(object)
        data["test"]["id"][0] = data["train"]["id"][2]

    path = (write_mmsa if source == "mmsa" else write_mult)(tmp_path, "mosi", mutate=share)
    with pytest.raises(DataFormatError, match=r"1 sample id\(s\) occur in both split 'train' and split 'test' \(for "
                                              r"example .*\); a sample in two splits leaks its label"):
        create_data(source, path=path)


def test_another_datasets_widths_under_a_pinned_dataset_warn(tmp_path, caplog):
    """A SIMS file read with dataset='mosi' (what configs/paper/mosi.yaml pins) loads, but says so."""
    path = write_mmsa(tmp_path, "sims")
    with caplog.at_level(logging.WARNING, logger="pase.data"):
        create_data("mmsa", path=path, dataset="mosi")
    assert "differ from the published mosi widths" in caplog.text
    assert "they are sims's: set data.options.dataset=sims if this is its file" in caplog.text


def test_ids_as_one_column_load_as_ids_and_a_broken_bert_mask_is_named(tmp_path):
    plain = create_data("mmsa", path=write_mmsa(tmp_path / "a", "mosi"))
    column = create_data("mmsa", path=write_mmsa(tmp_path / "b", "mosi",
                                                 mutate=lambda d: [d[s].update(id=d[s]["id"][:, None]) for s in d]))
    for s in plain.splits:  # not "['vid$_$1']"
        assert column.splits[s].ids == plain.splits[s].ids

    def nan_mask(d):
        d["train"]["text_bert"] = d["train"]["text_bert"].astype(np.float64)
        d["train"]["text_bert"][2, 1, 0] = np.nan

    with pytest.raises(DataFormatError, match=r"key 'text_bert': the attention mask \(row 1 of \(N, 3, L\)\) of "
                                              r"sample row 2 holds values other than 0 and 1"):
        create_data("mmsa", path=write_mmsa(tmp_path / "c", "mosi", mutate=nan_mask))

    def counting_mask(d):  # a mask of 2s (another row of the export) would double the text lengths
        d["train"]["text_bert"][3, 1] *= 2

    with pytest.raises(DataFormatError, match=r"sample row 3 holds values other than 0 and 1"):
        create_data("mmsa", path=write_mmsa(tmp_path / "d", "mosi", mutate=counting_mask))


def _bert_as_rows(data):  # text_bert stored (N, L, 3) instead of (N, 3, L)
    for s in data:
        data[s]["text_bert"] = data[s]["text_bert"].transpose(0, 2, 1).copy()


@pytest.mark.parametrize("fault, logged", [
    (_bert_as_rows, r"key 'text_bert' has shape \(9, 8, 3\), expected \(N, 3, L\) token ids / mask / segment ids; "
                    r"ignored \(text='features' does not need it\): every text step counts"),
    (lambda d: d["train"].update(text_bert=None), r"key 'text_bert' is NoneType None, expected one row per sample.*"
                                                  r"; ignored \(text='features' does not need it\)"),
    (lambda d: d["train"].update(text_bert=np.array(["ids"] * 9)), r"key 'text_bert' holds text such as 'ids'.*"
                                                                   r"; ignored \(text='features' does not need it\)"),
])
def test_a_malformed_text_bert_is_ignored_when_text_uses_the_features(tmp_path, caplog, fault, logged):
    """text='features' does not need text_bert: a malformed one is logged and left out (every text step
    counts), the text features load as stored; text='bert' needs it and still refuses it."""
    path = write_mmsa(tmp_path, "mosi", aligned=False, mutate=fault)
    with caplog.at_level(logging.WARNING, logger="pase.data"):
        bundle = create_data("mmsa", path=path)
    assert re.search(r"unaligned_50\.pkl: split 'train', " + logged, caplog.text)
    ds, raw = bundle.splits["train"], _raw(path)["train"]
    assert ds.lengths["text"].tolist() == [8] * SIZES[0]
    torch.testing.assert_close(ds.features["text"], torch.as_tensor(raw["text"]))  # exact copy
    with pytest.raises(DataFormatError, match=r"^unaligned_50\.pkl: split 'train', key 'text_bert' "):
        create_data("mmsa", path=path, text="bert")


@pytest.mark.parametrize("text", ["features", "bert"])
def test_a_text_bert_with_another_row_count_is_named(tmp_path, text):
    def extra_row(d):
        d["train"]["text_bert"] = np.concatenate([d["train"]["text_bert"], d["train"]["text_bert"][:1]])

    with pytest.raises(DataFormatError, match=r"^unaligned_50\.pkl: split 'train': key 'text_bert' has 10 rows "
                                              r"\(shape \(10, 3, 8\)\) but 'id' has 9 \(shape \(9,\)\); every key "
                                              r"needs one row per sample$"):
        create_data("mmsa", path=write_mmsa(tmp_path, "mosi", aligned=False, mutate=extra_row), text=text)


def test_an_empty_split_says_it_is_empty(tmp_path):
    """Rows are counted before any key is parsed: an empty split is named as such, not as a bad shape."""
    def empty(d):
        d["test"].update({k: [] for k in ("text", "audio", "vision", "regression_labels", "id", "text_bert",
                                          "audio_lengths", "vision_lengths")})

    with pytest.raises(DataFormatError, match=r"^unaligned_50\.pkl: split 'test' is empty \(0 samples in id, "
                                              r"regression_labels, text, audio, vision, text_bert, audio_lengths, "
                                              r"vision_lengths\); every split needs at least one sample"):
        create_data("mmsa", path=write_mmsa(tmp_path, "mosi", aligned=False, mutate=empty))


def test_an_all_zero_bert_mask_is_logged(tmp_path, caplog):
    def no_tokens(d):
        d["train"]["text_bert"][[0, 4], 1] = 0

    path = write_mmsa(tmp_path, "mosi", mutate=no_tokens)
    with caplog.at_level(logging.WARNING, logger="pase.data"):
        ds = create_data("mmsa", path=path).splits["train"]
    assert ds.lengths["text"][[0, 4]].tolist() == [1, 1]
    assert ("aligned_50.pkl: split 'train', key 'text_bert': 2 samples have an all-zero attention mask (no "
            "tokens; for example row 0); their text length is set to 1") in caplog.text


def test_a_key_that_is_not_a_string_is_ignored(tmp_path):
    """A split key such as 7 is left out by the loader, and inspect describes it instead of raising."""
    from pase.data.inspect import inspect_path

    path = write_mmsa(tmp_path, "mosi", mutate=lambda d: d["train"].update({7: np.zeros(9)}))
    bundle = create_data("mmsa", path=path)
    assert bundle.info["lengths_from"] == ["text_bert mask (audio, vision aligned to the text)"]
    report = inspect_path(path, checksum=False)
    assert report.ok, report.text
    assert re.search(r"^    7 +\(9,\) +float64$", report.text, flags=re.MULTILINE)


def _left_pad(key, rows=None):
    """Move the first L steps of ``key`` to the end (zeros first), in every split or in ``rows`` of train."""
    def mutate(d):
        for s in d:
            x, ln = d[s][key], np.asarray(d[s][f"{key}_lengths"])
            for i in (range(len(x)) if rows is None else rows if s == "train" else []):
                real = x[i, :ln[i]].copy()
                x[i] = 0
                x[i, x.shape[1] - ln[i]:] = real
    return mutate


def test_left_padded_sequences_with_lengths_are_refused(tmp_path, monkeypatch):
    """*_lengths mean "the first L steps are real" (MMSA); a left-padded file would have its real steps
    masked as padding. Most padded samples look left-padded: one error naming the file, split, key and fix;
    the same in chunks of one row."""
    import pase.data.mmsa as M

    path = write_mmsa(tmp_path, "mosi", aligned=False, mutate=_left_pad("vision"))
    raw = _raw(path)["train"]
    padded = int((np.asarray(raw["vision_lengths"]) < 10).sum())
    message = (rf"^unaligned_50\.pkl: split 'train', key 'vision': {padded} of {padded} padded samples are zero over "
               r"their first T - L steps and not zero after step L \(T = 10; for example sample '.+', L = \d+\): "
               r"the data look left-padded, but 'vision_lengths' counts the real steps at the start \(as MMSA's "
               r"models read it\); re-pad each sample to the right \(real steps first, zeros after\) or delete the "
               r"'vision_lengths' key \(every step then counts\)\. If the padding is not zeros, or 'vision_lengths' "
               r"counts fewer steps than are real, fix that instead$")
    with pytest.raises(DataFormatError, match=message):
        create_data("mmsa", path=path)
    monkeypatch.setattr(M, "_PAD_CHUNK", 10 * 20)  # one (T, D) row per chunk
    with pytest.raises(DataFormatError, match=message):
        create_data("mmsa", path=path)

    def without_lengths(d):
        _left_pad("vision")(d)
        for s in d:
            del d[s]["vision_lengths"]

    dropped = write_mmsa(tmp_path / "b", "mosi", aligned=False, mutate=without_lengths)
    ds = create_data("mmsa", path=dropped).splits["train"]  # the documented fix: every step counts
    assert ds.lengths["vision"].tolist() == [10] * SIZES[0]


def test_a_few_left_padded_looking_samples_load(tmp_path):
    """Right-padded data whose first steps happen to be zero in a minority of samples are not refused."""
    ln = np.asarray(_raw(write_mmsa(tmp_path / "a", "mosi", aligned=False))["train"]["audio_lengths"])
    few = [int(i) for i in np.flatnonzero(ln < 12)[:2]]
    path = write_mmsa(tmp_path / "b", "mosi", aligned=False, mutate=_left_pad("audio", rows=few))
    assert len(create_data("mmsa", path=path).splits["train"]) == SIZES[0]


def test_aligned_audio_and_vision_take_the_text_lengths_as_mmsa_does(tmp_path):
    """MMSA's aligned models read audio and vision with the text mask's lengths; an aligned file's
    '*_lengths' (here the full step count) must not count the word-aligned padding as real."""
    T = 8
    path = write_mmsa(tmp_path, "mosi", text_len=T, mutate=lambda d: [
        d[s].update(audio_lengths=[T] * len(d[s]["id"]), vision_lengths=[T] * len(d[s]["id"])) for s in d])
    bundle = create_data("mmsa", path=path)
    raw = pickle.load(open(path, "rb"))
    for s in ("train", "valid", "test"):
        mask_len = raw[s]["text_bert"][:, 1].sum(axis=1).astype(int)
        assert mask_len.min() < T  # some samples are padded
        ds = bundle.splits[s]
        for m in ("text", "audio", "vision"):
            assert ds.lengths[m].tolist() == mask_len.tolist(), (s, m)
    assert bundle.info["lengths_from"] == ["text_bert mask (audio, vision aligned to the text)"]


@pytest.mark.parametrize("key", ["audio_lengths", "vision_lengths", "text_bert"])
def test_a_length_key_missing_from_one_split_is_refused(tmp_path, key):
    """Without the key the test split would count padding as real steps while train did not."""
    path = write_mmsa(tmp_path, "mosi", aligned=False, mutate=lambda d: d["test"].pop(key))
    with pytest.raises(DataFormatError, match=rf"key '{key}' is in split\(s\) 'train', 'valid' but not in 'test'"):
        create_data("mmsa", path=path)
    # in train only: valid and test would count padding, the same mismatch
    path = write_mmsa(tmp_path / "b", "mosi", aligned=False, mutate=lambda d: [d[s].pop(key) for s in ("valid", "test")])
    with pytest.raises(DataFormatError, match=rf"key '{key}' is in split\(s\) 'train' but not in 'valid', 'test'"):
        create_data("mmsa", path=path)


def test_the_text_mask_missing_from_one_split_is_refused_when_text_is_not_loaded(tmp_path):
    """Aligned audio and vision take the text mask's lengths also without text: a split without the
    mask counted padding as real steps (a review: valid lengths 8 where the real steps were 2 to 7)."""
    path = write_mmsa(tmp_path, "mosi", aligned=True, mutate=lambda d: d["valid"].pop("text_bert"))
    with pytest.raises(DataFormatError, match=r"key 'text_bert' is in split\(s\) 'train', 'test' but not in 'valid'"):
        create_data("mmsa", path=path, modalities=["audio", "vision"])
    # an unaligned file never takes the text lengths: audio and vision alone load (they did before)
    path = write_mmsa(tmp_path / "u", "mosi", aligned=False, mutate=lambda d: d["valid"].pop("text_bert"))
    assert len(create_data("mmsa", path=path, modalities=["audio", "vision"]).splits["valid"]) == 6


def test_the_lengths_of_a_modality_left_out_are_not_read(tmp_path):
    """docs/data.md: the modalities left out are neither read nor checked (a broken 'audio_lengths'
    stopped a load of text and vision)."""
    def broken(d):
        d["valid"]["audio_lengths"] = d["valid"]["audio_lengths"][:-1]
        del d["test"]["audio_lengths"]
    path = write_mmsa(tmp_path, "mosi", aligned=False, mutate=broken)
    bundle = create_data("mmsa", path=path, modalities=["text", "vision"])
    assert set(bundle.splits["valid"].features) == {"text", "vision"} and len(bundle.splits["valid"]) == 6
    with pytest.raises(DataFormatError, match=r"key 'audio_lengths' is in split\(s\) 'train', 'valid' but not in"):
        create_data("mmsa", path=path)


def test_aligned_lengths_without_the_text_modality_and_an_unaligned_coincidence(tmp_path):
    """Aligned audio takes the text mask's lengths even when text is not loaded; an unaligned file
    whose audio happens to have as many steps as the text keeps its own 'audio_lengths'."""
    T = 8
    path = write_mmsa(tmp_path / "a", "mosi", text_len=T, mutate=lambda d: [
        d[s].update(audio_lengths=[T] * len(d[s]["id"])) for s in d])
    raw = pickle.load(open(path, "rb"))
    only = create_data("mmsa", path=path, modalities=("audio", "vision"))
    assert only.splits["train"].lengths["audio"].tolist() == raw["train"]["text_bert"][:, 1].sum(1).astype(int).tolist()
    path = write_mmsa(tmp_path / "u", "mosi", aligned=False, text_len=T, steps=(T, 10))
    raw = pickle.load(open(path, "rb"))
    assert path.name.startswith("unaligned")
    bundle = create_data("mmsa", path=path)
    for s in ("train", "test"):
        assert bundle.splits[s].lengths["audio"].tolist() == list(raw[s]["audio_lengths"])
    assert bundle.info["lengths_from"] == ["audio_lengths", "vision_lengths"]


def test_aligned_audio_takes_the_mask_lengths_in_a_file_without_text_features(tmp_path):
    """An aligned file that stores only the token ids (no 'text' features): the text steps L are the
    third axis of 'text_bert' (N, 3, L), and audio and vision loaded alone take its mask's lengths."""
    def mutate(d):
        for s in d.values():
            s.pop("text")
            s.update(audio_lengths=[8] * len(s["id"]), vision_lengths=[8] * len(s["id"]))  # the full steps

    path = write_mmsa(tmp_path, "mosi", text_len=8, mutate=mutate)
    raw = _raw(path)
    bundle = create_data("mmsa", path=path, modalities=("audio", "vision"))
    for s in ("train", "valid", "test"):
        words = raw[s]["text_bert"][:, 1].sum(1).astype(int).tolist()
        assert min(words) < 8  # some samples are padded after their words
        for m in ("audio", "vision"):
            assert bundle.splits[s].lengths[m].tolist() == words, (s, m)


def test_an_unnamed_file_keeps_the_lengths_it_stores(tmp_path):
    """In a file named neither aligned* nor unaligned*, audio with as many steps as the text and zero
    after the words still keeps its own 'audio_lengths' (module docstring: the text lengths are borrowed
    only by aligned files, or by features without their own lengths)."""
    T = 8

    def mutate(d):
        for s in d.values():
            words = s["text_bert"][:, 1].sum(axis=1).astype(int)
            for i, w in enumerate(words):
                s["audio"][i, w:] = 0.0
            s["audio_lengths"] = [int(w) - 1 if w > 1 else 1 for w in words]  # fewer than the words

    path = write_mmsa(tmp_path, "mosi", aligned=False, text_len=T, steps=(T, 10), mutate=mutate)
    path = path.rename(path.with_name("custom.pkl"))
    raw = _raw(path)
    bundle = create_data("mmsa", path=path, dataset="mosi")
    for s in ("train", "valid", "test"):
        assert bundle.splits[s].lengths["audio"].tolist() == list(raw[s]["audio_lengths"]), s
    assert "audio_lengths" in bundle.info["lengths_from"]


def test_an_aligned_file_without_a_text_mask_keeps_its_own_lengths(tmp_path):
    """No text_bert, so no word lengths: aligned audio keeps its valid 'audio_lengths' (it took the
    text's 'every step' instead), and the info does not claim a mask."""
    T = 8
    path = write_mmsa(tmp_path, "mosi", text_len=T, mutate=lambda d: [
        (d[s].pop("text_bert"), d[s].update(audio_lengths=[3] * len(d[s]["id"]))) for s in d])
    bundle = create_data("mmsa", path=path)
    assert set(bundle.splits["train"].lengths["audio"].tolist()) == {3}
    assert bundle.info["lengths_from"] == ["audio_lengths", "vision_lengths"]


@pytest.mark.parametrize("name,zero_after_words,borrows", [
    ("unaligned_50.pkl", False, False), ("unaligned_50.pkl", True, False),
    ("custom.pkl", False, False), ("custom.pkl", True, True)])
def test_text_lengths_are_borrowed_only_where_the_frames_after_the_words_are_padding(
        tmp_path, name, zero_after_words, borrows):
    """Without 'audio_lengths', audio with as many steps as the text took the text mask's lengths,
    even in a file named unaligned* whose frames after the words were real: those frames were cut
    without a word (review). A file named unaligned* never borrows; an unnamed one only where the
    steps after the words are zeros; otherwise every step counts."""
    T = 8

    def mutate(d):
        rng = np.random.default_rng(1)
        for s in d.values():
            n, words = len(s["id"]), s["text_bert"][:, 1].sum(axis=1).astype(int)
            s["audio"] = rng.standard_normal((n, T, 5)).astype(np.float32) + 3.0  # no zero frame
            if zero_after_words:
                for i, w in enumerate(words):
                    s["audio"][i, w:] = 0.0
            s.pop("audio_lengths", None)

    path = write_mmsa(tmp_path, "mosi", aligned=False, text_len=T, steps=(T, 10), mutate=mutate)
    path = path.rename(path.with_name(name))
    raw = pickle.load(open(path, "rb"))
    assert (raw["train"]["text_bert"][:, 1].sum(1) < T).any()  # some samples have padding after the words
    bundle = create_data("mmsa", path=path, dataset="mosi")
    for s in ("train", "valid", "test"):
        words = raw[s]["text_bert"][:, 1].sum(1).astype(int).tolist()
        assert bundle.splits[s].lengths["audio"].tolist() == (words if borrows else [T] * len(words)), s
    assert ("text_bert mask (audio aligned to the text)" in bundle.info["lengths_from"]) == borrows


def test_the_aligned_vote_is_the_training_splits_for_every_split(tmp_path):
    """The zero-padding vote ran per split: a test split whose frames after the words were not zero
    read audio with every step while train read it with the text lengths (review)."""
    T = 8

    def mutate(d):
        rng = np.random.default_rng(2)
        for name, s in d.items():
            n, words = len(s["id"]), s["text_bert"][:, 1].sum(axis=1).astype(int)
            s["audio"] = rng.standard_normal((n, T, 5)).astype(np.float32) + 3.0
            if name == "train":
                for i, w in enumerate(words):
                    s["audio"][i, w:] = 0.0
            s.pop("audio_lengths", None)

    path = write_mmsa(tmp_path, "mosi", aligned=False, text_len=T, steps=(T, 10), mutate=mutate)
    path = path.rename(path.with_name("custom.pkl"))
    raw = pickle.load(open(path, "rb"))
    assert (raw["test"]["text_bert"][:, 1].sum(1) < T).any()
    bundle = create_data("mmsa", path=path, dataset="mosi")
    for s in ("train", "valid", "test"):
        words = raw[s]["text_bert"][:, 1].sum(1).astype(int).tolist()
        assert bundle.splits[s].lengths["audio"].tolist() == words, s


@pytest.mark.parametrize("value, message", [
    (np.nan, r"the label of sample '.+' is NaN \(not a number\) \(1 such samples\); every label must be a finite "
             r"number: fix the file$"),
    (7.0, r"label 7 of sample '.+' is outside \[-1, 1\] \(1 such samples\); sims labels lie in \[-1, 1\]; fix the "
          r"file, or delete the key \(no method in pase uses it\)$"),
])
def test_sims_unimodal_labels_are_checked_as_the_target_is(tmp_path, value, message):
    """SIMS's regression_labels_T/A/V are carried in dataset.extra and used by no method; a NaN or
    out-of-range one loaded silently, and inspect passed the file (a review). They are checked as
    regression_labels is, and the message names the key."""
    assert set(create_data("mmsa", path=write_mmsa(tmp_path / "ok", "sims", aligned=False)).splits["train"].extra) >= {
        "regression_labels_T", "regression_labels_A", "regression_labels_V"}

    def bad(d):
        d["valid"]["regression_labels_A"][1] = value

    path = write_mmsa(tmp_path / "bad", "sims", aligned=False, mutate=bad)
    with pytest.raises(DataFormatError, match=r"^unaligned_39\.pkl: split 'valid', key 'regression_labels_A': "
                                              + message):
        create_data("mmsa", path=path)
