"""GCNet / MoMKE utterance features round-trip through ``create_data("gcnet", ...)``."""

from __future__ import annotations

import logging
import os
import pickle
import re
import shutil

import numpy as np
import pytest
import torch

from pase.data import create_data
from pase.data.gcnet import iemocap_folds
from pase.data.validate import DataFormatError

from .writers import write_gcnet


def _labels(path):
    with open(path, "rb") as fh:
        return pickle.load(fh)


def _load(path, **kw):
    return create_data("gcnet", label_path=path, feature_root=path.parent / "features", **kw)


def test_iemocap_round_trip(tmp_path, untouched):
    path = write_gcnet(tmp_path, "iemocap4")
    check = untouched(tmp_path)
    bundle = _load(path)
    check()
    videos, labels, speakers, _, train, test = _labels(path)
    assert bundle.name == "iemocap4_gcnet"
    assert (bundle.task.kind, bundle.task.num_classes, bundle.task.protocol) == ("classification", 4, "multiclass")
    assert bundle.dims() == {"text": 1024, "audio": 512, "vision": 1024}
    split_vids = {s: sorted({i.rsplit("_", 1)[0] for i in d.ids}) for s, d in bundle.splits.items()}
    assert split_vids["test"] == sorted(test)
    assert sorted(split_vids["train"] + split_vids["valid"]) == sorted(train)
    assert len(split_vids["valid"]) == 1  # round(0.1 * 8 dialogues)
    every = sorted(train | test)
    for s, ds in bundle.splits.items():
        vids = split_vids[s]
        assert ds.ids == [u for v in vids for u in videos[v]]  # utterances in video order
        assert ds.target.dtype == torch.long
        assert ds.target.tolist() == [y for v in vids for y in labels[v]]
        assert ds.groups.tolist() == [every.index(v) for v in vids for _ in videos[v]]
        assert ds.positions.tolist() == [i for v in vids for i in range(len(videos[v]))]
        assert list(ds.extra["speakers"]) == [a for v in vids for a in speakers[v]]
        assert ds.features["audio"].shape == (len(ds), 1, 512)


def test_the_task_kind_is_told_from_the_label_files_name_without_reading_it(tmp_path):
    """source_task_kind (pase compare's check of pase.binning=classes) gives the kind the data loads as,
    from the label file's name or data.options.dataset, reading nothing; None when neither tells."""
    from pase.data.registry import source_task_kind

    for dataset in ("iemocap4", "mosi"):
        path = write_gcnet(tmp_path / dataset, dataset, faces=False)
        assert source_task_kind("gcnet", label_path=str(path)) == _load(path).task.kind
    assert source_task_kind("gcnet", label_path="labels.pkl", dataset="IEMOCAP6") == "classification"
    assert source_task_kind("gcnet", label_path=str(tmp_path / "absent" / "mosei_labels.pkl")) == "regression"
    assert source_task_kind("gcnet", label_path="labels.pkl") is None  # the loader names that


@pytest.mark.parametrize("dataset", ["iemocap4", "mosi"])
def test_pooling_of_2d_files_and_face_folders(tmp_path, dataset):
    """IEMOCAP: a face folder gives its speaking actor's files (the writer names them face_F000 /
    face_M001); MOSI / MOSEI: the mean over all its files, as GCNet's dataloader_cmumosi."""
    path = write_gcnet(tmp_path, dataset)
    bundle = _load(path)
    ds = bundle.splits["test"]
    root = path.parent / "features"
    speaker = dict(zip(ds.ids, ds.extra["speakers"]))
    folders = 0
    for i, utt in enumerate(ds.ids):
        audio = np.load(root / "wav2vec-large-c-UTT" / f"{utt}.npy")
        torch.testing.assert_close(ds.features["audio"][i, 0], torch.as_tensor(audio.mean(axis=0)))
        face_dir = root / "manet_UTT" / utt
        if face_dir.is_dir():
            folders += 1
            files = sorted(face_dir.glob("*.npy"))
            if dataset.startswith("iemocap"):
                files = [f for f in files if speaker[utt] in f.stem]
                assert len(files) == 1
            faces = np.stack([np.load(f) for f in files])
            torch.testing.assert_close(ds.features["vision"][i, 0], torch.as_tensor(faces.mean(axis=0)))
    assert folders


def _face_folders(path, files):
    """Replace the vision .npy of some utterances by folders: ``files`` maps utterance -> {file
    name: (D,) array} in GCNet's layout (compress_F.npy / compress_M.npy, or <frame>_F.npy)."""
    faces = path.parent / "features" / "manet_UTT"
    for utt, named in files.items():
        (faces / f"{utt}.npy").unlink()
        (faces / utt).mkdir()
        for name, x in named.items():
            np.save(faces / utt / name, x)
    return faces


def _vision(bundle):
    return {u: x[0] for ds in bundle.splits.values() for u, x in zip(ds.ids, ds.features["vision"])}


def test_iemocap_face_folders_give_the_speaking_actors_face_as_gcnet(tmp_path, caplog):
    """GCNet's feature_compressed_iemocap writes manet_UTT/<utt>/compress_F.npy and compress_M.npy (one
    face per actor); dataloader_iemocap.read_data keeps them apart (a file is F's when its name holds
    F) and generate_inputs takes the one of the utterance's speaker (videoSpeakers: F -> host, M ->
    guest). The loader averaged both actors' faces (review)."""
    rng = np.random.default_rng(2)
    face = {a: rng.standard_normal(1024).astype(np.float32) for a in ("F", "M", "F2", "M2")}

    def swap_one(d):  # videoSpeakers, not the name, says who speaks (they agree in GCNet's pickles)
        d["videoSpeakers"]["Ses01F_impro00"][0] = "M"
        d["videoSpeakers"]["Ses02F_impro00"] = None  # not a list: the name tells
    path = write_gcnet(tmp_path, "iemocap4", faces=False, mutate=swap_one)
    videos, _, speakers, _, _, _ = _labels(path)
    f_utt, m_utt, swapped, by_name = videos["Ses01F_impro00"][2], videos["Ses01F_impro00"][1], \
        videos["Ses01F_impro00"][0], videos["Ses02F_impro00"][1]
    assert (f_utt[-4], m_utt[-4], swapped[-4], by_name[-4]) == ("F", "M", "F", "M")
    assert speakers["Ses01F_impro00"][:3] == ["M", "M", "F"]
    compress = {"compress_F.npy": face["F"], "compress_M.npy": face["M"]}
    frames = {"000001_F.npy": face["F"], "000001_M.npy": face["M"], "000002_F.npy": face["F2"],
              "000002_M.npy": face["M2"]}  # the uncompressed manet/<utt>/<frame>_<actor>.npy layout
    _face_folders(path, {f_utt: compress, m_utt: compress, swapped: compress, by_name: frames})
    with caplog.at_level(logging.INFO, logger="pase.data"):
        vision = _vision(_load(path, fold=1))
    assert torch.equal(vision[f_utt], torch.as_tensor(face["F"]))
    assert torch.equal(vision[m_utt], torch.as_tensor(face["M"]))
    assert torch.equal(vision[swapped], torch.as_tensor(face["M"]))
    torch.testing.assert_close(vision[by_name], torch.as_tensor((face["M"] + face["M2"]) / 2))
    assert "speaking actor" not in caplog.text  # every folder holds its speaker's face


def test_a_missing_or_all_zero_face_of_the_speaker_gives_zeros_with_a_warning(tmp_path, caplog):
    """As GCNet: no file of the speaking actor, or its all-zero compress file (np.zeros(D), written for a
    face not found), gives zeros, whatever the listener's face holds; one warning each names the count."""
    path = write_gcnet(tmp_path, "iemocap4", faces=False)
    videos = _labels(path)[0]["Ses01F_impro00"]
    real = np.random.default_rng(1).standard_normal(1024).astype(np.float32) + 3.0
    zero = np.zeros(1024, np.float32)
    placeholder, listener_only, seen = videos[0], videos[1], videos[2]  # speakers F, M, F
    _face_folders(path, {placeholder: {"compress_F.npy": zero, "compress_M.npy": real},
                         listener_only: {"compress_F.npy": real},
                         seen: {"compress_F.npy": real, "compress_M.npy": zero}})
    with caplog.at_level(logging.INFO, logger="pase.data"):
        vision = _vision(_load(path, fold=1))
    assert torch.equal(vision[placeholder], torch.zeros(1024))
    assert torch.equal(vision[listener_only], torch.zeros(1024))
    assert torch.equal(vision[seen], torch.as_tensor(real))  # the speaker's face exactly, not half of it
    warned = [r.getMessage().split(": ", 1)[1] for r in caplog.records if "speaking actor" in r.getMessage()]
    assert warned == [
        f"1 utterance folders hold no 'vision' file of their speaking actor (for example {listener_only!r}, speaker "
        f"M; a file is an actor's when its name holds F / M, as GCNet's compress_F.npy / compress_M.npy); their "
        f"features are zeros, as in GCNet, fused as observed",
        "1 utterances have an all-zero 'vision' file of their speaking actor (GCNet's compress_F / compress_M "
        "placeholder for a face not found); their features are zeros, as in GCNet, fused as observed"]
    assert all(r.levelname == "WARNING" for r in caplog.records if "speaking actor" in r.getMessage())
    assert "empty folder" not in caplog.text  # a folder without the speaker's face is not an empty one


@pytest.mark.parametrize("name, message", [
    ("face.npy", "names neither F nor M"), ("FACE_M.npy", "names both F and M")])
def test_a_face_file_that_names_no_single_actor_is_refused(tmp_path, name, message):
    """GCNet asserts a face file names F or M (and takes F when it names both)."""
    path = write_gcnet(tmp_path, "iemocap4", faces=False)
    utt = _labels(path)[0]["Ses01F_impro00"][0]
    _face_folders(path, {utt: {"compress_F.npy": np.ones(1024, np.float32), name: np.ones(1024, np.float32)}})
    with pytest.raises(DataFormatError, match=rf"manet_UTT/{utt}/{name}: face file of utterance '{utt}' "
                                              rf"{message}; GCNet's IEMOCAP face files name their actor"):
        _load(path)


def test_a_face_folder_of_an_utterance_whose_speaker_is_unknown_is_refused(tmp_path):
    def unnamed(d):
        d["videoIDs"]["Ses01F_impro00"][0] = "Ses01F_impro00_X000"
        d["videoSpeakers"]["Ses01F_impro00"][0] = "?"
    path = write_gcnet(tmp_path, "iemocap4", faces=False, mutate=unnamed)
    faces = path.parent / "features" / "manet_UTT"
    (faces / "Ses01F_impro00_F000.npy").unlink()
    (faces / "Ses01F_impro00_X000").mkdir()
    np.save(faces / "Ses01F_impro00_X000" / "compress_F.npy", np.ones(1024, np.float32))
    for feat in ("wav2vec-large-c-UTT", "deberta-large-4-UTT"):
        (path.parent / "features" / feat / "Ses01F_impro00_F000.npy").rename(
            path.parent / "features" / feat / "Ses01F_impro00_X000.npy")
    with pytest.raises(DataFormatError, match=r"Ses01F_impro00_X000: cannot tell whose face to read for utterance "
                                              r"'Ses01F_impro00_X000': its videoSpeakers entry is not 'F' / 'M'"):
        _load(path)


@pytest.mark.parametrize("shape, width", [((5, 1), 1), ((1, 1), 1), ((1, 5, 1), 5), ((5, 1, 8), 8), ((1, 8, 1), 8)])
def test_a_one_wide_feature_is_pooled_over_its_frames(tmp_path, shape, width):
    """(T, 1) is one value per frame: pooled to width 1 (squeezing it made a T-wide vector, and (1, 1)
    was refused as shape ())."""
    path = write_gcnet(tmp_path, "iemocap4")
    rng = np.random.default_rng(0)
    for f in (path.parent / "features" / "wav2vec-large-c-UTT").glob("*.npy"):
        np.save(f, rng.standard_normal(shape).astype(np.float32))
    bundle = _load(path)
    ds = bundle.splits["test"]
    assert bundle.dims()["audio"] == width  # higher-dimensional arrays keep their singleton-free shape, as before
    for i, utt in enumerate(ds.ids):
        x = np.load(path.parent / "features" / "wav2vec-large-c-UTT" / f"{utt}.npy")
        x = x.squeeze().reshape(-1, width) if x.ndim > 2 else x
        torch.testing.assert_close(ds.features["audio"][i, 0], torch.as_tensor(x.mean(axis=0)))


def test_one_training_video_without_valvids_says_what_helps(tmp_path):
    """No valid_fraction can carve validation from one video; the message said to lower it."""
    def one(d):
        d["trainVids"] = sorted(d["trainVids"])[:1]
        del d["valVids"]
    path = write_gcnet(tmp_path, "mosi", mutate=one, as_tuple=False)
    with pytest.raises(DataFormatError, match=r"cannot carve validation videos from 1 training video\(s\); .* list "
                                              r"the validation videos in the file \(valVids\) or add training videos"):
        create_data("gcnet", label_path=str(path), valid_fraction=1e-9)


def test_a_valid_fraction_that_takes_every_training_video_is_named(tmp_path):
    """round(0.9 * 2) = 2 of 2 training videos: the fraction is named, not an empty training split."""
    def two(d):
        d["trainVids"] = sorted(d["trainVids"])[:2]
        del d["valVids"]
    path = write_gcnet(tmp_path, "mosi", mutate=two, as_tuple=False)
    with pytest.raises(DataFormatError, match=r"cannot carve 2 validation videos from 2 training videos; lower "
                                              r"valid_fraction=0\.9"):
        create_data("gcnet", label_path=str(path), valid_fraction=0.9)
    assert len(create_data("gcnet", label_path=str(path), valid_fraction=0.5).splits["valid"]) > 0


def test_dict_layout_equals_tuple_layout(tmp_path):
    a = _load(write_gcnet(tmp_path / "a", "iemocap6"))
    b = _load(write_gcnet(tmp_path / "b", "iemocap6", as_tuple=False))
    assert a.task.num_classes == 6
    for s in a.splits:
        assert a.splits[s].ids == b.splits[s].ids
        torch.testing.assert_close(a.splits[s].features["text"], b.splits[s].features["text"])


def test_mosi_uses_val_vids(tmp_path):
    path = write_gcnet(tmp_path, "mosi")
    assert path.name == "CMUMOSI_features_raw_2way.pkl"
    bundle = _load(path)
    *_, val, test = _labels(path)
    assert (bundle.task.kind, bundle.task.protocol) == ("regression", "mosi")
    assert bundle.splits["valid"].ids[0].startswith(val[0])
    assert bundle.splits["test"].target.dtype == torch.float32
    assert "valVids" in bundle.info["split_rule"]


def test_options_a_pickle_with_valvids_ignores_are_named_in_a_warning(tmp_path, caplog):
    """valid_fraction / seed carve validation only from a pickle without valVids; with valVids they were
    ignored without a word (review)."""
    path = write_gcnet(tmp_path, "mosi")
    with caplog.at_level(logging.WARNING, logger="pase.data"):
        default = _load(path)
    assert "ignored" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="pase.data"):
        given = _load(path, valid_fraction=0.5, seed=7)
    assert given.splits["valid"].ids == default.splits["valid"].ids  # the pickle's valVids, as documented
    assert "data.options valid_fraction=0.5 and seed=7 ignored: the validation split is the pickle's valVids" \
        in caplog.text


def test_leave_one_session_out(tmp_path):
    path = write_gcnet(tmp_path, "iemocap4", videos_per_session=3)
    folds = list(iemocap_folds(path, path.parent / "features"))
    assert [b.info["fold"] for b in folds] == [1, 2, 3, 4, 5]
    n_total = None
    for f, b in enumerate(folds, start=1):
        sessions = {s: {i[:5] for i in d.ids} for s, d in b.splits.items()}
        assert sessions["test"] == {f"Ses0{f}"}
        assert f"Ses0{f}" not in sessions["train"] | sessions["valid"]
        ids = {s: set(d.ids) for s, d in b.splits.items()}
        assert not (ids["train"] & ids["valid"]) and not (ids["train"] & ids["test"])
        total = sum(len(v) for v in ids.values())
        assert n_total in (None, total)
        n_total = total
    again = _load(path, fold=3)
    assert again.splits["valid"].ids == folds[2].splits["valid"].ids  # deterministic carve
    other = _load(path, fold=3, seed=5)
    assert set(other.splits["test"].ids) == set(again.splits["test"].ids)


def test_fold_arguments_are_checked(tmp_path):
    mosi = write_gcnet(tmp_path / "m", "mosi")
    with pytest.raises(ValueError, match="fold=1 is for IEMOCAP"):
        _load(mosi, fold=1)
    iemocap = write_gcnet(tmp_path / "i", "iemocap4")
    with pytest.raises(ValueError, match=r"fold=6; IEMOCAP folds are 1\.\.5"):
        _load(iemocap, fold=6)
    with pytest.raises(ValueError, match="iemocap_folds needs an IEMOCAP label pickle"):
        iemocap_folds(mosi, mosi.parent / "features")
    nowhere = tmp_path / "no-features"  # argument errors come before any feature is read
    with pytest.raises(ValueError, match=r"valid_fraction=0\.0; it must lie in \(0, 1\)"):
        create_data("gcnet", label_path=iemocap, feature_root=nowhere, valid_fraction=0.0)
    with pytest.raises(ValueError, match="fold=0"):
        create_data("gcnet", label_path=iemocap, feature_root=nowhere, fold=0)


def test_feature_subset_and_empty_face_folder(tmp_path, caplog):
    path = write_gcnet(tmp_path, "iemocap4")
    ds0 = _load(path).splits["train"]
    utt = ds0.ids[0]
    face_dir = path.parent / "features" / "manet_UTT" / utt
    assert face_dir.is_dir()
    shutil.rmtree(face_dir)
    face_dir.mkdir()
    with caplog.at_level(logging.INFO, logger="pase.data"):
        bundle = _load(path, features={"audio": None, "text": None})  # None leaves a modality out
    assert bundle.modalities == ["vision"]
    assert (bundle.splits["train"].features["vision"][0] == 0).all()
    assert [r.levelname for r in caplog.records if "empty folder" in r.getMessage()] == ["WARNING"]
    assert "utterances have an empty folder; their 'vision' features are zeros (as in GCNet), fused as observed" \
        in caplog.text and " 1 of " in caplog.text


def test_data_modalities_leave_an_absent_feature_folder_unread(tmp_path):
    """data.modalities without vision still required GCNet's vision folder (the loader has no
    modalities argument), with a fix naming a Python dict (review)."""
    from pase.config import Config, apply_overrides
    from pase.training.run import load_bundle

    path = write_gcnet(tmp_path, "iemocap4")
    shutil.rmtree(path.parent / "features" / "manet_UTT")
    sets = ["data.source=gcnet", f"data.options.label_path={path}"]
    with pytest.raises(Exception, match="feature folder of modality 'vision' not found"):
        load_bundle(apply_overrides(Config(), sets))
    bundle = load_bundle(apply_overrides(Config(), sets + ["data.modalities=[text,audio]"]))
    assert bundle.modalities == ["text", "audio"]
    # a name that is no modality is still named as such (the mapping blamed 'features' for a moment)
    with pytest.raises(ValueError, match=r"has no modality 'video' \(found: text, audio\); fix data.modalities"):
        load_bundle(apply_overrides(Config(), sets + ["data.modalities=[text,video]",
                                                      "data.options.features={vision: null}"]))


def test_audio_minus_inf_frames_are_zeroed_before_pooling(tmp_path):
    """As MMSA sets audio -inf (log of silence) to 0: a (T, D) file with -inf in one frame pools to the
    mean with that frame at 0, not to a whole column of 0 (pooled first, the column was -inf)."""
    path = write_gcnet(tmp_path, "mosi")
    utt = _load(path).splits["test"].ids[0]
    x = np.ones((4, 512), np.float32)
    x[0, :10] = -np.inf
    np.save(path.parent / "features" / "wav2vec-large-c-UTT" / f"{utt}.npy", x)
    ds = _load(path).splits["test"]
    got = ds.features["audio"][ds.ids.index(utt), 0]
    torch.testing.assert_close(got[:10], torch.full((10,), 0.75))
    torch.testing.assert_close(got[10:], torch.ones(502))


def test_labels_one_per_utterance_in_a_list_load_and_one_hot_rows_are_named(tmp_path):
    def bracketed(d):
        for v in d["videoLabels"]:
            d["videoLabels"][v] = [[y] for y in d["videoLabels"][v]]

    plain = _load(write_gcnet(tmp_path / "a", "mosi"))
    wrapped = _load(write_gcnet(tmp_path / "b", "mosi", mutate=bracketed))
    for s in plain.splits:
        assert wrapped.splits[s].target.shape == (len(plain.splits[s]),)
        assert torch.equal(wrapped.splits[s].target, plain.splits[s].target)

    def one_hot(d):
        for v in d["videoLabels"]:
            d["videoLabels"][v] = [list(np.eye(4, dtype=int)[y]) for y in d["videoLabels"][v]]

    with pytest.raises(Exception, match=r"videoLabels of video '[^']+' \(split 'train'\) hold a label of shape \(4,\), "
                                        r"expected one number per utterance.*one-hot rows\? store each utterance's "
                                        r"class index"):
        _load(write_gcnet(tmp_path / "c", "iemocap4", mutate=one_hot))

    # one video's labels bracketed or one-hot, the others plain: read per utterance ("ragged ... pad it to
    # one (N, T, D) float64 array" before)
    def first_only(wrap):
        def mutate(d):
            v = sorted(d["trainVids"])[0]
            d["videoLabels"][v] = [wrap(y) for y in d["videoLabels"][v]]
        return mutate

    mixed = _load(write_gcnet(tmp_path / "d", "mosi", mutate=first_only(lambda y: [y])))
    assert all(torch.equal(mixed.splits[s].target, plain.splits[s].target) for s in plain.splits)
    with pytest.raises(Exception, match=r"videoLabels of video '[^']+' \(split 'train'\) hold a label of shape \(4,\)"
                                        r".*one-hot rows\?"):
        _load(write_gcnet(tmp_path / "e", "iemocap4", mutate=first_only(lambda y: list(np.eye(4, dtype=int)[y]))))
    # a (no, yes) pair per utterance of a regression file: named too, not numpy's reshape error
    with pytest.raises(DataFormatError, match=r"videoLabels of video '[^']+' \(split 'train'\) hold a label of shape "
                                              r"\(2,\), expected one number per utterance"):
        _load(write_gcnet(tmp_path / "f", "mosi", mutate=first_only(lambda y: [0.0, y])))


def test_speakers_that_do_not_fit_their_video_are_none(tmp_path):
    """A video whose videoSpeakers list is longer (or shorter) than its utterances gets None speakers:
    extra stays one entry per sample, in order."""
    def long_speakers(d):
        v = sorted(d["trainVids"])[0]
        d["videoSpeakers"][v] = d["videoSpeakers"][v] + ["F"]

    path = write_gcnet(tmp_path, "iemocap4", mutate=long_speakers)
    videos, _, speakers, *_ = _labels(path)
    bundle = _load(path)
    first = sorted(set(videos) - {i for i in videos if i.startswith("Ses05")})[0]
    for ds in bundle.splits.values():
        assert len(ds.extra["speakers"]) == len(ds)
        for utt, who in zip(ds.ids, ds.extra["speakers"]):
            video = utt.rsplit("_", 1)[0]
            assert who == (None if video == first else speakers[video][videos[video].index(utt)]), utt


def test_a_negative_seed_is_refused_before_any_file_is_read(tmp_path):
    """numpy's "expected non-negative integer" named no key (a review)."""
    with pytest.raises(ValueError, match=r"^seed=-1 \(data\.options\.seed\) must be at least 0"):
        create_data("gcnet", label_path=tmp_path / "nothing.pkl", seed=-1)


def test_an_utterance_in_train_and_test_is_refused(tmp_path):
    """Disjoint dialogue lists are checked already; an utterance name listed under a train and a test
    dialogue would still put one sample in both splits."""
    def share(d):
        test_vid, train_vid = sorted(d["testVids"])[0], sorted(d["trainVids"])[0]
        d["videoIDs"][test_vid][0] = d["videoIDs"][train_vid][0]

    with pytest.raises(Exception, match=r"sample id\(s\) occur in both split 'train' and split 'test'"):
        _load(write_gcnet(tmp_path, "iemocap4", mutate=share))


def test_the_split_rule_says_where_valid_came_from(tmp_path):
    """MOSI-style valVids, IEMOCAP fold 1: valVids of the test session are dropped; with none left,
    validation is carved from training, and the provenance note says so."""
    def val_in_session_1(d):
        d["valVids"] = [v for v in sorted(d["trainVids"]) if v.startswith("Ses01")][:1]
        d["trainVids"] = set(d["trainVids"]) - set(d["valVids"])

    path = write_gcnet(tmp_path, "iemocap4", as_tuple=False, mutate=val_in_session_1)
    assert _load(path).info["split_rule"].endswith("valid: the pickle's valVids")
    assert _load(path, fold=2).info["split_rule"].endswith("valid: the pickle's valVids outside the test session")
    assert "valid: 0.1 of training dialogues (seed 0)" in _load(path, fold=1).info["split_rule"]

    def val_in_sessions_1_and_2(d):  # fold 1 keeps the session-2 one: still the pickle's valVids
        d["valVids"] = [[v for v in sorted(d["trainVids"]) if v.startswith(f"Ses0{k}")][0] for k in (1, 2)]
        d["trainVids"] = set(d["trainVids"]) - set(d["valVids"])

    path = write_gcnet(tmp_path / "b", "iemocap4", as_tuple=False, mutate=val_in_sessions_1_and_2)
    bundle = _load(path, fold=1)
    assert {i[:5] for i in bundle.splits["valid"].ids} == {"Ses02"}
    assert bundle.info["split_rule"].endswith("valid: the pickle's valVids outside the test session")


def test_video_tables_that_are_not_dicts_are_named(tmp_path):
    def as_list(d):  # the per-video lists without their video ids
        d["videoIDs"] = list(d["videoIDs"].values())

    with pytest.raises(Exception, match=r"videoIDs is list, expected a dict video id -> list with one entry per "
                                        r"utterance \(GCNet's layout\); fix the label pickle"):
        _load(write_gcnet(tmp_path, "iemocap4", mutate=as_list))


def test_sanitize_zeroes_non_finite_values_before_pooling(tmp_path, caplog):
    """sanitize=True sets one NaN to 0 where it is, then pools: over the frames of a (T, D) file and over
    the speaking actor's frame files of a face folder. Pooled first, the NaN made its whole pooled
    column NaN and then 0."""
    path = write_gcnet(tmp_path, "iemocap4")
    ds0 = _load(path).splits["train"]
    ids = ds0.ids
    feats = path.parent / "features"
    x = np.full((3, 512), 2.0, np.float32)
    x[0, 5] = np.nan
    np.save(feats / "wav2vec-large-c-UTT" / f"{ids[0]}.npy", x)
    face = next(u for u in ids if (feats / "manet_UTT" / u).is_dir())
    speaker = ds0.extra["speakers"][ids.index(face)]
    for f in (feats / "manet_UTT" / face).glob("*.npy"):
        f.unlink()
    y = np.full(1024, 2.0, np.float32)
    y[7] = np.inf
    np.save(feats / "manet_UTT" / face / f"000001_{speaker}.npy", y)  # two frames of the speaker's face
    np.save(feats / "manet_UTT" / face / f"000002_{speaker}.npy", np.full(1024, 4.0, np.float32))
    np.save(feats / "manet_UTT" / face / f"000001_{'MF'['FM'.index(speaker)]}.npy",  # the listener's: not read
            np.full(1024, 9.0, np.float32))
    with caplog.at_level(logging.WARNING, logger="pase.data"):
        ds = _load(path, sanitize=True).splits["train"]
    audio = ds.features["audio"][ds.ids.index(ids[0]), 0]
    assert float(audio[5]) == pytest.approx(4 / 3) and float(audio[4]) == 2.0  # (0 + 2 + 2) / 3
    vision = ds.features["vision"][ds.ids.index(face), 0]
    assert float(vision[7]) == 2.0 and float(vision[6]) == 3.0  # (0 + 4) / 2, (2 + 4) / 2
    assert "wav2vec-large-c-UTT: sanitize=True set 1 NaN / inf values to 0 in the 'audio' files" in caplog.text
    assert "manet_UTT: sanitize=True set 1 NaN / inf values to 0 in the 'vision' files" in caplog.text


@pytest.mark.parametrize("value", [-1e39, 1e39])
def test_a_float64_value_beyond_float32_is_named_not_zeroed(tmp_path, value):
    """-1e39 in a float64 audio file is finite: it must not become -inf and then 0 as COVAREP's log(0)."""
    path = write_gcnet(tmp_path, "iemocap4")
    utt = _load(path).splits["train"].ids[1]
    f = path.parent / "features" / "wav2vec-large-c-UTT" / f"{utt}.npy"
    x = np.ones((1, 512))
    x[0, 5] = value
    np.save(f, x)
    shown = re.escape(f"{value:g}")
    with pytest.raises(DataFormatError, match=rf"^{re.escape(str(f))}: utterance '{utt}' \(modality 'audio'\) holds "
                                              rf"{shown} at index \(0, 5\) \(1 such values\), beyond the range of "
                                              r"float32 \(about ±3\.4e\+38\): loaded, it would become inf; rescale "
                                              r"or fix that feature in the file$"):
        _load(path)


def test_features_replace_named_folders_and_refuse_other_modalities(tmp_path):
    """data.options.features replaced the whole default mapping: naming one modality's folder
    dropped the other two silently, and a misspelt modality ('audo') was read as a new one."""
    path = write_gcnet(tmp_path, "iemocap4")
    feats = path.parent / "features"
    shutil.copytree(feats / "wav2vec-large-c-UTT", feats / "my-audio")
    bundle = _load(path, features={"audio": "my-audio"})
    assert sorted(bundle.modalities) == ["audio", "text", "vision"]
    assert bundle.info["features"] == {"audio": "my-audio", "text": "deberta-large-4-UTT", "vision": "manet_UTT"}
    with pytest.raises(ValueError, match="unknown modality 'audo'; did you mean 'audio'"):
        _load(path, features={"audo": "my-audio"})
    with pytest.raises(ValueError, match="leaves every modality out"):
        _load(path, features={"audio": None, "text": None, "vision": None})
    # an empty name read the features folder itself as the modality's folder ('missing feature of
    # utterance' in <root>/<utt>.npy); refused as inspect's --features vision= is, null leaves it out
    with pytest.raises(ValueError, match=r"features: modality 'vision' has an empty folder name; name its folder "
                                         r"\(data.options.features.vision=<folder>\), or null to leave vision out"):
        _load(path, features={"vision": ""})
    # the features folder defaults to the label pickle's folder / features, as data inspect says
    assert create_data("gcnet", label_path=path).splits["train"].ids == bundle.splits["train"].ids


def test_a_modality_with_no_file_at_all_is_named(tmp_path):
    """Every utterance folder of a modality empty: the error says no .npy was found (it read
    'have widths no files')."""
    path = write_gcnet(tmp_path, "iemocap4")
    face_root = path.parent / "features" / "manet_UTT"
    for p in list(face_root.iterdir()):
        if p.is_dir():
            shutil.rmtree(p)
            p.mkdir()
        else:
            p.unlink()
            (face_root / p.stem).mkdir()
    with pytest.raises(DataFormatError, match=r"manet_UTT: no \.npy feature file of modality 'vision' was found "
                                              r"for any of the \d+ utterances .* or leave vision out with --set "
                                              r"'data.modalities=\[audio, text\]' \(pase data inspect: --features "
                                              r"vision=null\)"):
        _load(path)


def test_a_validation_list_under_another_name_is_refused_and_unlisted_videos_are_named(tmp_path, caplog):
    """A dict label pickle with devVids instead of valVids loaded without a word: valid was carved
    from train and the dev videos were in no split (review)."""
    def rename(d):
        d["devVids"] = d.pop("valVids")

    path = write_gcnet(tmp_path / "a", "mosi", as_tuple=False, mutate=rename)
    with pytest.raises(DataFormatError, match=r"key 'devVids' is not a split list this loader reads .* rename it "
                                              r"to valVids"):
        _load(path)

    def drop(d):
        d["valVids"] = []  # its one video is now in no list: valid is carved from train, the video unused

    path = write_gcnet(tmp_path / "b", "mosi", as_tuple=False, mutate=drop)
    with caplog.at_level(logging.WARNING, logger="pase.data"):
        bundle = _load(path)
    assert re.search(r"1 of 8 videos in videoIDs are in no split list \(for example 'vid_5_f'\)", caplog.text)
    assert not any(i.startswith("vid_5_f") for s in bundle.splits.values() for i in s.ids)


def test_a_class_without_a_training_sample_is_one_warning_and_the_data_still_loads(tmp_path, caplog, monkeypatch):
    """A class train lacks (relabelled, a bad fold, a 4-way file read as iemocap6) loaded silently, and
    UA / Macro_F1 then measured the data (review): one warning line names the classes, their counts per
    split and the fixes; training must stay possible (a rare class may be absent from a fold)."""
    def no_class_3_in_train(d):
        for v in d["trainVids"]:
            d["videoLabels"][v] = [0 if y == 3 else y for y in d["videoLabels"][v]]

    path = write_gcnet(tmp_path, "iemocap4", videos_per_session=3, mutate=no_class_3_in_train)
    with caplog.at_level(logging.WARNING, logger="pase.data"):
        bundle = _load(path)
    counts = {s: int((d.target == 3).sum()) for s, d in bundle.splits.items()}
    assert counts["train"] == 0 and counts["test"] > 0  # the file as the test needs it
    lines = [r.getMessage() for r in caplog.records if "no training sample" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert (f"IEMOCAP_features_raw_4way.pkl (iemocap4_gcnet): class 3 of K=4 has no training sample (per split: "
            f"train 0, valid {counts['valid']}, test {counts['test']})") in lines[0]
    assert "data.options.dataset" in lines[0] and "iemocap6" in lines[0] and "data.options.fold" in lines[0]
    caplog.clear()  # once per process and file (pase compare loads the data once per run), never on a DDP rank > 0
    with caplog.at_level(logging.WARNING, logger="pase.data"):
        _load(path)
    assert "no training sample" not in caplog.text
    st = path.stat()  # the file written again (changed, then changed back): it warns again (review m5)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with caplog.at_level(logging.WARNING, logger="pase.data"):
        _load(path)
    assert caplog.text.count("no training sample") == 1
    caplog.clear()
    monkeypatch.setenv("LOCAL_RANK", "1")
    with caplog.at_level(logging.WARNING, logger="pase.data"):
        _load(write_gcnet(tmp_path / "r1", "iemocap4", videos_per_session=3, mutate=no_class_3_in_train))
    assert "no training sample" not in caplog.text
    monkeypatch.delenv("LOCAL_RANK")
    with caplog.at_level(logging.WARNING, logger="pase.data"):  # a fold's bundle names its fold
        _load(write_gcnet(tmp_path / "f", "iemocap4", videos_per_session=3, mutate=no_class_3_in_train), fold=5)
    assert "IEMOCAP_features_raw_4way.pkl (iemocap4_gcnet, fold 5): class 3 of K=4" in caplog.text

    caplog.clear()  # a 4-way file read as 6-way: classes 4 and 5 occur nowhere
    with caplog.at_level(logging.WARNING, logger="pase.data"):
        six = _load(write_gcnet(tmp_path / "b", "iemocap4", videos_per_session=3), dataset="iemocap6")
    assert six.task.num_classes == 6
    lines = [r.getMessage() for r in caplog.records if "no training sample" in r.getMessage()]
    assert len(lines) == 1 and "classes 4, 5 of K=6 have no training sample (per split: 4: train 0, valid 0, " \
        "test 0; 5: train 0, valid 0, test 0); no split holds any, so K=6 may be too large" in lines[0], lines

    caplog.clear()  # every class in train: nothing said
    with caplog.at_level(logging.WARNING, logger="pase.data"):
        _load(write_gcnet(tmp_path / "c", "iemocap4", videos_per_session=3))
    assert "no training sample" not in caplog.text


@pytest.mark.parametrize("name", ["Ses06F_impro01", "Ses00M_script02", "Ses10F_impro01"])
def test_a_dialogue_outside_sessions_1_to_5_is_refused_for_session_folds(tmp_path, name):
    """The session pattern took any digit, so a dialogue named Ses06... (a malformed pickle) was trained on in every
    fold and tested in none, and pase crossval reported a fold mean over 58 of 63 utterances without a word (a
    review); the message already said Ses01..Ses05."""
    from pase.data.gcnet import check_folds

    def rename(d):  # a session-1 dialogue of the train set (a set, as GCNet's) renamed
        old = sorted(d["trainVids"])[0]
        for key in ("videoIDs", "videoLabels", "videoSpeakers", "videoSentences"):
            d[key][name] = d[key].pop(old)
        d["trainVids"] = (d["trainVids"] - {old}) | {name}

    path = write_gcnet(tmp_path, "iemocap4", videos_per_session=2, mutate=rename)
    with pytest.raises(DataFormatError, match=f"video '{name}' does not start with 'Ses01'..'Ses05'"):
        check_folds(path, [1, 2, 3, 4, 5])
    check_folds(write_gcnet(tmp_path / "ok", "iemocap4", videos_per_session=2), [1, 2, 3, 4, 5])  # the real names
