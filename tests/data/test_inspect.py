"""``inspect_path``: detects each format, describes it, and lists problems without raising."""

from __future__ import annotations

import os
import pickle
import shutil

import numpy as np
import pytest

from pase.data import create_data
from pase.data.inspect import detect_format, inspect_path

from .writers import write_gcnet, write_mmsa, write_mosi_bclstm, write_mult


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
    assert report.ok and f"features not checked: {path.parent / 'features'} does not exist" in report.text
    assert "valid: 1 videos" in report.text
    # a --feature-root the user named that is no folder is a problem (exit 1), not a note with "no problems
    # found"; --features is checked all the same (review)
    (tmp_path / "feats.txt").write_text("x")
    report = inspect_path(path, feature_root=tmp_path / "feats.txt")
    assert not report.ok and report.problems == [f"--feature-root {tmp_path / 'feats.txt'} is a file, not a folder; "
                                                 "the features were not checked: pass the folder that holds the "
                                                 "feature folders (as data.options.feature_root)"]
    report = inspect_path(path, feature_root=tmp_path / "absent")
    assert not report.ok and f"--feature-root {tmp_path / 'absent'} does not exist" in report.problems[0]
    report = inspect_path(path, features={"visoin": None, "text": None})
    assert not report.ok and "unknown modality 'visoin'" in report.problems[0], report.problems


def test_gcnet_folders_with_other_names_are_inspected_through_the_command(tmp_path, capsys):
    """Renamed feature folders were a problem with a fix ('pass features=...') the command could not
    take; --features and --feature-root pass them as data.options.features / feature_root do."""
    from pase.cli import main

    path = write_gcnet(tmp_path / "g", "iemocap4")
    feats = tmp_path / "feats"
    (path.parent / "features").rename(feats)
    names = {}
    for folder in sorted(feats.iterdir()):
        names[folder.name] = "my-" + folder.name
        folder.rename(feats / names[folder.name])
    assert main(["data", "inspect", str(path), "--feature-root", str(feats)]) == 1
    assert "feature folder of modality" in capsys.readouterr().err
    from pase.data.gcnet import DEFAULT_FEATURES  # modality -> default folder name
    spec = ",".join(f"{m}={names[d]}" for m, d in DEFAULT_FEATURES.items() if d in names)
    assert main(["data", "inspect", str(path), "--feature-root", str(feats), "--features", spec]) == 0
    assert "no problems found" in capsys.readouterr().out
    assert main(["data", "inspect", str(path), "--features", "audio"]) == 2
    assert "is not MODALITY=FOLDER pairs" in capsys.readouterr().err


def test_gcnet_without_a_modality_folder_is_inspected_with_that_modality_left_out(tmp_path, capsys):
    """A dataset without manet_UTT trains with data.modalities=[text, audio], but inspect could not
    leave vision out: --features vision=null looked for a folder 'null', vision= was refused, and
    the error's fix was a Python dict (review)."""
    from pase.cli import main

    path = write_gcnet(tmp_path, "iemocap4")
    shutil.rmtree(path.parent / "features" / "manet_UTT")
    assert main(["data", "inspect", str(path)]) == 1
    err = capsys.readouterr().err
    assert "feature folder of modality 'vision' not found" in err and "features={" not in err
    assert "--set data.options.features.vision=<folder> (pase data inspect: --features vision=<folder>)" in err
    assert "leave vision out with --set 'data.modalities=[audio, text]' (pase data inspect: --features " \
        "vision=null)" in err
    for null in ("null", "~", "NULL"):
        assert main(["data", "inspect", str(path), "--features", f"vision={null}"]) == 0
        out = capsys.readouterr().out
        assert "widths {'text': 1024, 'audio': 512}" in out and out.endswith("no problems found\n")
    # the advice of the message, taken as written, also trains
    from pase.config import Config, apply_overrides
    from pase.training.run import load_bundle
    cfg = apply_overrides(Config(), ["data.source=gcnet", f"data.options.label_path={path}",
                                     "data.modalities=[audio, text]"])
    assert load_bundle(cfg).dims() == {"audio": 512, "text": 1024}
    assert main(["data", "inspect", str(path), "--features", "vision="]) == 2
    assert "--features 'vision=': modality 'vision' has no folder name; name its folder, or vision=null to " \
        "leave it out" in capsys.readouterr().err


def test_a_feature_root_that_is_no_folder_fails_the_command(tmp_path, capsys):
    from pase.cli import main

    path = write_gcnet(tmp_path, "mosi")
    assert main(["data", "inspect", str(path), "--feature-root", str(tmp_path / "nonexist")]) == 1
    captured = capsys.readouterr()
    assert f"pase: error: --feature-root {tmp_path / 'nonexist'} does not exist" in captured.err
    assert "no problems found" not in captured.out


def test_repeated_features_flags_are_merged_and_a_modality_named_twice_is_refused(tmp_path, capsys):
    """--features vision=null --features audio=null read as the last flag alone: vision was read, with
    'no problems found' (review); vision=null,vision=manet_UTT kept the last silently."""
    from pase.cli import main

    path = write_gcnet(tmp_path, "iemocap4")
    assert main(["data", "inspect", str(path), "--features", "vision=null", "--features", "audio=null"]) == 0
    assert "widths {'text': 1024}" in capsys.readouterr().out  # both left out
    for args in (["--features", "vision=null,vision=manet_UTT"], ["--features", "vision=null", "--features",
                                                                   "audio=null,vision=manet_UTT"]):
        assert main(["data", "inspect", str(path)] + args) == 2
        assert "--features names modality 'vision' twice" in capsys.readouterr().err


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


def test_a_split_without_its_label_key_is_named_and_loader_notes_are_listed(tmp_path):
    """One split without 'regression_labels' (MulT: 'labels') made the whole file 'not a known
    format'; lengths the loader clips (logged at INFO, so a training run shows nothing) were not
    mentioned: 'no problems found'."""
    path = write_mmsa(tmp_path, "mosi", aligned=False, mutate=lambda d: d["valid"].pop("regression_labels"))
    report = inspect_path(path, checksum=False)
    assert report.format == "mmsa" and report.problems == [
        "unaligned_50.pkl: split 'valid' has no key 'regression_labels' (found: " + report.problems[0].split("(found: ")[1]]
    mult = write_mult(tmp_path / "m", "mosi", mutate=lambda d: d["test"].pop("labels"))
    report = inspect_path(mult)
    assert report.format == "mult" and "split 'test' has no key 'labels'" in report.problems[0]

    def long(d):
        d["train"]["audio_lengths"] = [n + 100 for n in d["train"]["audio_lengths"]]  # past T = 12 for every sample
        d["train"]["audio"] = d["train"]["audio"] + 1.0  # every step real (else refused: lengths into the padding)

    report = inspect_path(write_mmsa(tmp_path / "l", "mosi", aligned=False, mutate=long), checksum=False)
    assert report.ok, report.text
    notes = [line for line in report.lines if line.startswith("  note: ") and "lengths" in line]
    assert len(notes) == 1 and notes[0].startswith("  note: unaligned_50.pkl: split 'train', key 'audio_lengths': "
                                                   "clipped 9 of 9 lengths to [1, 12]")
    assert "  note: unaligned_50.pkl: split 'test', key 'audio': set 1 -inf values to 0 (as MMSA and MulT do)" in \
        report.lines  # the writer puts a COVAREP -inf in each split


def test_the_largest_value_is_found_chunk_by_chunk(monkeypatch):
    """The magnitude check read the whole array's |x| and its mask at once (twice a MOSEI-sized key in
    memory; review); it goes over row chunks now, with the same answer, NaN and inf left out."""
    import pase.data.inspect as inspect_mod

    import pase.data.validate as validate_mod

    monkeypatch.setattr(validate_mod, "_FINITE_CHUNK", 7)  # chunks of 2 rows of 3 (validate.row_chunks)
    x = np.arange(30, dtype=np.float32).reshape(10, 3) - 15
    x[4, 1], x[8, 0], x[9, 2] = np.nan, np.inf, -1e30
    assert inspect_mod._largest(x) == np.abs(x[np.isfinite(x)]).max() == np.float32(1e30)
    assert inspect_mod._largest(np.array([1, 2])) == 0.0 and inspect_mod._largest(np.float32(3.0)) == 3.0


def test_features_that_overflow_float32_are_a_problem_and_training_names_the_split(tmp_path, capsys):
    """Vision features of 1e20 (finite float32): inspect found no problem, and training ended with
    'preds contains 1 NaN value(s)', naming neither the split nor a remedy (review)."""
    from pase.cli import main

    path = write_mmsa(tmp_path, "mosi", aligned=False,
                      mutate=lambda d: [d[s].update(vision=(d[s]["vision"] * 1e20).astype(np.float32)) for s in d])
    report = inspect_path(path, checksum=False)
    assert [p.split(":")[0] for p in report.problems] == ["split 'train', key 'vision'", "split 'valid', key 'vision'",
                                                          "split 'test', key 'vision'"]
    from pase.data.inspect import overflow_bound

    d_v = int(report.problems[0].split(" features overflows")[0].rsplit(" ", 1)[1])  # MOSI's vision width, 20
    assert d_v == 20 and f"past {overflow_bound(20):.3g} where a sum of squares over its 20 features overflows " \
        "float32" in report.problems[0] and "rescale the features or train with data.standardize=true" in \
        report.problems[0]
    assert (0.999 * overflow_bound(20)) ** 2 * 20 <= np.finfo(np.float32).max < (1.001 * overflow_bound(20)) ** 2 * 20
    # values of 1e17 in 20 features are no problem (a fixed 1e17 threshold flagged files that train fine)
    fine = write_mmsa(tmp_path / "fine", "mosi", aligned=False,
                      mutate=lambda d: [d[s].update(vision=(d[s]["vision"] * 1e17).astype(np.float32)) for s in d])
    assert inspect_path(fine, checksum=False).ok
    rc = main(["train", "--set", "data.source=mmsa", "--set", f"data.path={path}", "--set", "train.max_epochs=1",
               "--quiet", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2 and err.startswith("pase: error: the model's predictions on the ") and \
        "NaN / inf value(s): it overflowed or diverged on these inputs" in err and "data.standardize=true" in err


@pytest.mark.parametrize("mutate, problem", [
    (lambda d: d["train"].update(regression_labels=None),
     "split 'train', key 'regression_labels' is NoneType None, expected one row per sample"),
    (lambda d: d["valid"].update(regression_labels=np.array(["x"] * 6)),
     "split 'valid', key 'regression_labels' holds text such as 'x', expected float32 numbers"),
    (lambda d: [d[s].update(audio=d[s]["audio"][:, :0]) for s in d],
     "split 'train', key 'audio' has shape (9, 0, 5): no time steps (T = 0)"),
    (lambda d: [d[s].update(vision=d[s]["vision"][:, :, :0]) for s in d],
     "split 'train', key 'vision' has shape (9, 10, 0): no features (D = 0)"),
    (lambda d: d["test"].update(audio_lengths=np.full(6, np.nan)),
     "split 'test', key 'audio_lengths': length nan at row 0; lengths must be finite"),
])
def test_bad_labels_empty_modalities_and_lengths_are_problems(tmp_path, untouched, mutate, problem):
    path = write_mmsa(tmp_path, "mosi", aligned=False, mutate=mutate)
    check = untouched(tmp_path)
    report = inspect_path(path, checksum=False)
    check()
    assert not report.ok and report.format == "mmsa", report.text
    assert len(report.problems) == 1, report.problems
    assert report.problems[0].startswith(f"unaligned_50.pkl: {problem}"), report.problems


def test_a_folder_is_a_problem_that_says_so(tmp_path):
    write_mmsa(tmp_path, "mosi")
    report = inspect_path(tmp_path / "MOSI")
    assert not report.ok
    assert report.problems == [f"{tmp_path / 'MOSI'}: is a folder, but a pickle file is expected here (pass "
                               f"one of the pickles in it: Processed/aligned_50.pkl)"]


def test_a_mosi_bclstm_folder_is_loaded_and_described(tmp_path, untouched):
    mosi = write_mosi_bclstm(tmp_path / "mosi-bclstm")
    check = untouched(mosi)
    report = inspect_path(mosi)
    check()
    assert report.ok and report.format == "mosi_bclstm", report.text
    assert f"7 files match SHA256SUMS; load with --set data.source=mosi_bclstm --set data.path={mosi}" in report.text
    assert "train 9 / valid 3 / test 6" in report.text
    # each split described as a pickle's is (docs/data.md: "described the same way"; it printed none: a review)
    bundle = create_data("mosi_bclstm", path=str(mosi))
    lines = report.text.splitlines()
    for s in ("train", "valid", "test"):
        ds = bundle.splits[s]
        at = lines.index(f"  split {s!r}: {len(ds)} samples")
        y = ds.target.numpy()
        for i, m in enumerate(ds.modalities):
            assert lines[at + 1 + i].split()[:1] == [m] and str(tuple(ds.features[m].shape)) in lines[at + 1 + i]
        stats = lines[at + 2 + len(ds.modalities)]
        assert stats.startswith("    labels: min") and (f"(negative {(y < 0).sum()} / zero {(y == 0).sum()} / "
                                                        f"positive {(y > 0).sum()})") in stats, stats
    assert inspect_path(mosi, dataset="MOSI").ok  # the one dataset it holds, in any case, as the loaders take it
    bad = write_mosi_bclstm(tmp_path / "bad", edit={"mosi_index.csv": lambda t: t.replace("bclstm_split", "x", 1)})
    report = inspect_path(bad)
    assert not report.ok and report.problems[0].startswith(f"{bad / 'mosi_index.csv'}: no column 'bclstm_split'")
    # one file of the folder (the index, a feature CSV) was read as a damaged pickle: "download it again"
    for one in [mosi / "mosi_index.csv", *sorted(mosi.glob("*/*.csv"))[:1]]:
        report = inspect_path(one)
        assert report.problems == [f"{one} is one file of the mosi-bclstm folder {mosi}; inspect the folder: "
                                   f"pase data inspect {mosi}"], report.text
    assert len(list(mosi.glob("*/*.csv"))) > 0


@pytest.mark.parametrize("mutate, problem", [
    (lambda d: d.__setitem__("testVids", set()), "testVids is empty"),
    (lambda d: d["videoLabels"]["Ses01F_impro00"].__setitem__(0, "happy"),
     "split 'train': label of sample 'Ses01F_impro00_F000' is the text 'happy'; 1 such label(s) in the split; "
     "videoLabels must hold an integer class index in [0, 4) per utterance"),
])
def test_gcnet_label_problems_without_features(tmp_path, mutate, problem):
    path = write_gcnet(tmp_path, "iemocap4", mutate=mutate)
    shutil.rmtree(path.parent / "features")
    report = inspect_path(path)
    assert not report.ok and report.format == "gcnet", report.text
    assert report.problems[0].startswith(f"IEMOCAP_features_raw_4way.pkl: {problem}"), report.problems


def test_ragged_mult_ids_are_reported_with_the_loaders_message(tmp_path):
    ragged = [(b"v", b"1", b"2")] * 8 + [(b"v", b"1")]
    report = inspect_path(write_mult(tmp_path, "mosi", mutate=lambda d: d["train"].update(id=ragged)))
    assert not report.ok and report.format == "mult"
    assert report.problems == ["mosi_data.pkl: split 'train', key 'id' has rows of different lengths (2, 3 "
                               "entries); expected (N, 3) rows (video, start, end) or (N,) strings, fix the file's "
                               "'id' entries or delete the key (ids then become train_0, train_1, ...)"]


def test_a_loader_failure_of_any_type_is_reported_not_raised(tmp_path, monkeypatch):
    """inspect never raises on bad data: a gap in a loader's checks (here a TypeError) is still a problem line."""
    import pase.data.mmsa as M

    def broken(*args, **kwargs):
        raise TypeError("unhashable type: 'list'")

    monkeypatch.setattr(M, "_from_raw", broken)
    report = inspect_path(write_mmsa(tmp_path, "mosi"), checksum=False)
    assert not report.ok and report.format == "mmsa"
    assert report.problems == ["aligned_50.pkl: the mmsa loader failed with TypeError: unhashable type: 'list' (a "
                               "layout it does not name yet); please report it with this line"]


def test_a_text_bert_that_text_bert_loading_refuses_is_a_problem(tmp_path):
    """inspect checked the file as text='features' only: a (N, L, 3) text_bert passed ('no problems
    found', exit 0) though the paper's configs (data.options.text=bert) refuse it (review)."""
    def transpose(data):
        for s in data.values():
            s["text_bert"] = np.ascontiguousarray(s["text_bert"].transpose(0, 2, 1))

    assert inspect_path(write_mmsa(tmp_path / "ok", "mosi"), checksum=False).ok
    report = inspect_path(write_mmsa(tmp_path / "bad", "mosi", mutate=transpose), checksum=False)
    assert not report.ok
    assert report.problems[0].startswith("with data.options.text=bert: aligned_50.pkl: split 'train', key "
                                         "'text_bert' has shape (9, 8, 3), expected (N, 3, L)"), report.problems


@pytest.mark.parametrize("writer, args, problem", [
    (lambda d: write_mmsa(d, "mosi", aligned=False), ["--features", "audio=x", "--feature-root", "feats"],
     "--feature-root and --features: do not apply to format mmsa (an MMSA pickle, and only GCNet label pickles "
     "read feature folders); the file was inspected without them, drop them"),
    (lambda d: write_mult(d, "iemocap"), ["--feature-root", "feats"],
     "--feature-root: does not apply to format mult (a MulT pickle, and only GCNet label pickles read feature "
     "folders); the file was inspected without it, drop it"),
    (lambda d: write_mosi_bclstm(d / "mosi-bclstm"), ["--dataset", "sims"],
     "--dataset sims: does not apply to format mosi_bclstm (a mosi-bclstm folder, always MOSI); the file was "
     "inspected without it, drop it"),
])
def test_flags_the_format_does_not_read_are_a_problem(tmp_path, capsys, writer, args, problem):
    """--features / --feature-root on an MMSA pickle (and --dataset on the MOSI-only folder) were
    ignored without a word, so the clean report read as a check of the folders named (review)."""
    from pase.cli import main

    path = writer(tmp_path)
    assert main(["data", "inspect", str(path)]) == 0
    capsys.readouterr()
    assert main(["data", "inspect", str(path), *args]) == 1
    out, err = capsys.readouterr()
    assert err == f"pase: error: {problem}\n"
    assert "  loads as " in out  # the file is still described


def test_a_class_without_a_training_sample_is_a_problem(tmp_path, capsys):
    """inspect printed the class counts and then 'no problems found' for a class train lacks (review):
    now a problem (exit 1), with the features, labels only, and for a MulT emotion."""
    from pase.cli import main

    def no_class_3_in_train(d):
        for v in d["trainVids"]:
            d["videoLabels"][v] = [0 if y == 3 else y for y in d["videoLabels"][v]]

    path = write_gcnet(tmp_path / "g", "iemocap4", videos_per_session=3, mutate=no_class_3_in_train)
    report = inspect_path(path)
    assert not report.ok and len(report.problems) == 1, report.text
    assert report.problems[0].startswith("IEMOCAP_features_raw_4way.pkl (iemocap4_gcnet): class 3 of K=4 has no "
                                         "training sample (per split: train 0, valid 0, test "), report.problems
    assert main(["data", "inspect", str(path)]) == 1
    assert "class 3 of K=4 has no training sample" in capsys.readouterr().err
    shutil.rmtree(path.parent / "features")
    report = inspect_path(path)  # labels only
    assert not report.ok and report.problems[0].startswith("IEMOCAP_features_raw_4way.pkl: class 3 of K=4 has no "
                                                           "training sample"), report.text

    def no_angry_in_train(data):
        data["train"]["labels"][:, 3] = [1.0, 0.0]

    report = inspect_path(write_mult(tmp_path / "m", "iemocap", mutate=no_angry_in_train))
    assert not report.ok and report.problems[0].startswith("iemocap_data.pkl (iemocap_mult): label 3 (angry) of 4 "
                                                           "has no positive training sample"), report.text
