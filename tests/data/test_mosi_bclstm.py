"""Faults in a tiny ``mosi-bclstm`` folder give one ``MosiDataError`` line naming the file and the fix."""

from __future__ import annotations

import pytest

from pase.data.mosi_bclstm import MosiDataError, load_mosi_bclstm

from .writers import write_mosi_bclstm


def _cell(line_no: int, column: int, value: str):
    """Edit of a CSV text: cell ``column`` of line ``line_no`` (0 = first line) becomes ``value``."""
    def edit(text: str) -> str:
        lines = text.splitlines()
        cells = lines[line_no].split(",")
        cells[column] = value
        lines[line_no] = ",".join(cells)
        return "\n".join(lines) + "\n"
    return edit


def test_tiny_folder_loads(tmp_path, untouched):
    root = write_mosi_bclstm(tmp_path / "mosi")
    check = untouched(root)
    bundle = load_mosi_bclstm(path=str(root))
    check()
    assert {s: len(d) for s, d in bundle.splits.items()} == {"train": 9, "valid": 3, "test": 6}
    assert bundle.info["checksums_verified"] == 7


@pytest.mark.parametrize("edit, message", [
    ({"mosi_index.csv": lambda t: t.replace("bclstm_split", "split_bclstm", 1)},
     r"mosi_index\.csv: no column 'bclstm_split' \(found: segment_id, .*split_bclstm, bclstm_row\); "
     r"expected columns segment_id, video_id, clip_id, label, bclstm_split, bclstm_row; restore the file$"),
    ({"mosi_index.csv": _cell(2, 6, "abc")},
     r"mosi_index\.csv: line 3 \(segment 'trainvid0_2'\), column 'label' is 'abc', expected a number"),
    ({"mosi_index.csv": _cell(2, 2, "x")},
     r"mosi_index\.csv: line 3 \(segment 'trainvid0_2'\), column 'clip_id' is 'x', expected an integer"),
    ({"mosi_index.csv": _cell(2, 6, "9")},
     r"mosi_index\.csv: line 3 \(segment 'trainvid0_2'\): label 9 is outside \[-3, 3\] \(MOSI sentiment\)"),
    ({"mosi_index.csv": _cell(1, 6, "nan")},
     r"mosi_index\.csv: line 2 \(segment 'trainvid0_1'\): label nan is outside \[-3, 3\]"),
    ({"features/text_train0.csv": _cell(4, 7, '"nan"')},
     r"features/text_train0\.csv: non-finite value nan at row 5, column 8 \(1 such rows\); restore the file$"),
    ({"features/audio_test0.csv": _cell(0, 0, '"inf"')},
     r"features/audio_test0\.csv: non-finite value inf at row 1, column 1"),
    ({"features/audio_train0.csv": _cell(1, 72, '"nan"')},  # the last of the 73 feature columns
     r"features/audio_train0\.csv: non-finite value nan at row 2, column 73 \(1 such rows\)"),
    ({"mosi_index.csv": _cell(2, 6, "3.2")},
     r"mosi_index\.csv: line 3 \(segment 'trainvid0_2'\): label 3\.2 is outside \[-3, 3\]"),
    # a split name the loader does not read: the segment would fall out of every split
    ({"mosi_index.csv": _cell(2, 9, "valid")},
     r"mosi_index\.csv: line 3 \(segment 'trainvid0_2'\): bclstm_split is 'valid', expected 'train' or 'test'"),
    # bclstm_row off by one: two segments would claim CSV row 2 and row 1 nobody
    ({"mosi_index.csv": _cell(2, 10, "2")},
     r"mosi_index\.csv: the train segments' bclstm_row values must be 0\.\.11, each once \(they locate rows of "
     r"the feature CSVs\); sorted, position 1 holds 2 \(segment 'trainvid0_[23]'\): a duplicate, a gap or 1-based"),
    ({"mosi_index.csv": lambda t: "\n".join(t.splitlines()[:1] + [
        ",".join(line.split(",")[:10] + [str(int(line.split(",")[10]) + 1)]) for line in t.splitlines()[1:]]) + "\n"},
     r"the train segments' bclstm_row values must be 0\.\.11, each once .* position 0 holds 1"),
    # a segment listed twice (it was a container error without the file or line)
    ({"mosi_index.csv": _cell(2, 0, "trainvid0_1")},
     r"mosi_index\.csv: line 3: segment_id 'trainvid0_1' is already on line 2; each segment is listed once"),
    # a test segment of a training video: the split is no longer speaker-independent (it loaded silently)
    ({"mosi_index.csv": _cell(13, 1, "trainvid0")},
     r"mosi_index\.csv: video 'trainvid0' has segments in both bclstm_split train and test \(1 such video\(s\)\); "
     r"a test video's neighbours in training leak its labels"),
    # the CSV's rows in another order than the index: its label_bin column disagrees
    ({"features/video_test0.csv": lambda t: "".join(reversed(t.splitlines(keepends=True)))},
     r"features/video_test0\.csv: row \d+ ends with label_bin [01] but mosi_index\.csv gives its segment "
     r"'testvid\d_\d' the label -?[\d.]+ \(\d+ such rows\): the CSV's rows and the index disagree"),
])
def test_malformed_index_and_features(tmp_path, untouched, edit, message):
    root = write_mosi_bclstm(tmp_path / "mosi", edit=edit)
    check = untouched(root)
    with pytest.raises(MosiDataError, match=message) as err:
        load_mosi_bclstm(path=str(root))
    assert "\n" not in str(err.value)
    check()


def test_an_index_with_a_byte_order_mark_loads(tmp_path):
    """A spreadsheet's UTF-8 export starts with a BOM; it used to read as part of 'segment_id'."""
    root = write_mosi_bclstm(tmp_path / "mosi", edit={"mosi_index.csv": lambda t: "\ufeff" + t})
    assert len(load_mosi_bclstm(path=str(root)).splits["test"]) == 6


def test_malformed_sha256sums_line(tmp_path, untouched):
    root = write_mosi_bclstm(tmp_path / "mosi")
    sums = root / "SHA256SUMS"
    sums.write_text(sums.read_text() + "abc\n")
    check = untouched(root)
    with pytest.raises(MosiDataError, match=r"SHA256SUMS: line 8 is 'abc', expected '<64 hex digits>  "
                                            r"<file name>' \(sha256sum's format\) or 'SHA256 \(<file name>\) = "
                                            r"<64 hex digits>' \(sha256sum --tag\); restore"):
        load_mosi_bclstm(path=str(root))
    check()


def test_a_malformed_line_naming_a_file_read_is_named_by_its_line(tmp_path, untouched):
    """The files listed were gathered from every line before any line's format was checked, so a malformed
    line naming a file the loader reads was reported as "does not list" that file, with no line number
    (a review: a typo before the digest)."""
    root = write_mosi_bclstm(tmp_path / "mosi")
    sums = root / "SHA256SUMS"
    lines = sums.read_text().splitlines()
    at = next(i for i, x in enumerate(lines) if x.endswith("features/audio_test0.csv"))
    lines[at] = "xyz " + lines[at]
    sums.write_text("\n".join(lines) + "\n")
    check = untouched(root)
    with pytest.raises(MosiDataError, match=rf"SHA256SUMS: line {at + 1} is 'xyz [0-9a-f]{{56}}', expected "):
        load_mosi_bclstm(path=str(root))
    check()


@pytest.mark.parametrize("form", ["tag", "upper"])
def test_sha256sums_in_tag_format_or_upper_case_verifies(tmp_path, untouched, form):
    """``sha256sum --tag`` (BSD) lines, ``SHA256 (<file name>) = <digest>``, were taken for a file name
    'SHA256' and the loader's files reported as not listed (a review); a digest in upper-case hex passed the
    format check but never matched sha256's lower-case hex ("the file was altered"). Both verify, and an
    altered file is still found through them."""
    root = write_mosi_bclstm(tmp_path / "mosi")
    sums = root / "SHA256SUMS"
    pairs = [x.split(maxsplit=1) for x in sums.read_text().splitlines()]
    sums.write_text("".join(f"SHA256 ({n}) = {d}\n" if form == "tag" else f"{d.upper()}  {n}\n" for d, n in pairs))
    check = untouched(root)
    assert len(load_mosi_bclstm(path=str(root)).splits["test"]) == 6
    check()
    audio = root / "features" / "audio_test0.csv"
    audio.write_text(audio.read_text().replace("0", "1", 1))
    with pytest.raises(MosiDataError, match=r"audio_test0.csv: SHA-256 .* does not match SHA256SUMS"):
        load_mosi_bclstm(path=str(root))


def test_a_folder_that_is_not_there_says_so(tmp_path, monkeypatch):
    """It was called "not a mosi-bclstm folder (no mosi_index.csv)" (a review)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MosiDataError, match=r"^no_such: no such folder \(relative to the current directory, .*\); pass "
                                            r"data.path=FOLDER"):
        load_mosi_bclstm(path="no_such")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MosiDataError, match=r"empty: not a mosi-bclstm folder \(no mosi_index.csv\)"):
        load_mosi_bclstm(path=str(tmp_path / "empty"))


@pytest.mark.parametrize("drop", ["mosi_index.csv", "features/audio_test0.csv", "every line"])
def test_sha256sums_must_list_every_file_read(tmp_path, untouched, drop):
    """A SHA256SUMS without the line of a file the loader reads (or emptied) verified nothing of it: a
    review altered a label and removed the index's line, and the folder loaded as "verified"."""
    root = write_mosi_bclstm(tmp_path / "mosi")
    sums = root / "SHA256SUMS"
    lines = sums.read_text().splitlines(keepends=True)
    sums.write_text("".join(x for x in lines if drop != "every line" and not x.rstrip().endswith(drop)))
    check = untouched(root)
    name = "mosi_index.csv" if drop == "every line" else drop
    with pytest.raises(MosiDataError, match=rf"SHA256SUMS: does not list '{name}' \(\d+ file\(s\) the loader reads "
                                            r"are not listed\), so it cannot be verified; restore"):
        load_mosi_bclstm(path=str(root))
    check()
    if drop == "every line":  # `find . -type f | xargs sha256sum` writes './name': the same files
        sums.write_text("".join(f"{x.split(maxsplit=1)[0]}  ./{x.split(maxsplit=1)[1]}" for x in lines))
        assert len(load_mosi_bclstm(path=str(root)).splits["test"]) == 6
    if drop == "features/audio_test0.csv":  # a file of a modality not loaded need not be listed
        assert len(load_mosi_bclstm(path=str(root), modalities=["text", "vision"]).splits["test"]) == 6
    assert len(load_mosi_bclstm(path=str(root), verify=False).splits["test"]) == 6


@pytest.mark.parametrize("fraction, message", [
    (0.0, r"^valid_fraction=0\.0 \(data\.options\.valid_fraction\); it must lie strictly between 0 and 1"),
    (1.0, r"^valid_fraction=1\.0 \(data\.options\.valid_fraction\); it must lie strictly between 0 and 1"),
    (0.99, r"^valid_fraction=0\.99 \(data\.options\.valid_fraction\) moves all 4 train videos to valid; "
           r"lower it"),
])
def test_valid_fraction_is_checked(tmp_path, fraction, message):
    root = write_mosi_bclstm(tmp_path / "mosi")
    with pytest.raises(ValueError, match=message):
        load_mosi_bclstm(path=str(root), valid_fraction=fraction)


def test_a_negative_valid_seed_is_refused(tmp_path):
    """Python's shuffle seeds with abs(): -1 would silently repeat seed 1's validation videos."""
    root = write_mosi_bclstm(tmp_path / "mosi")
    with pytest.raises(ValueError, match=r"^valid_seed=-1 \(data\.options\.valid_seed\) must be at least 0"):
        load_mosi_bclstm(path=str(root), valid_seed=-1)


def test_validation_stops_once_its_share_is_reached(tmp_path):
    """Videos are taken until valid_fraction of the train segments is reached: 4 videos of 3 segments
    and valid_fraction=0.25 (3 of 12 segments) is exactly one video, not two."""
    root = write_mosi_bclstm(tmp_path / "mosi", videos=(4, 2), clips=3)
    bundle = load_mosi_bclstm(path=str(root), valid_fraction=0.25)
    assert len(bundle.info["valid_videos"]) == 1
    assert {s: len(d) for s, d in bundle.splits.items()} == {"train": 9, "valid": 3, "test": 6}


def _map_column(column: int, mapping):
    """Edit of the index: cell ``column`` of every data line becomes ``mapping(line_cells)``."""
    def edit(text: str) -> str:
        lines = text.splitlines()
        for k in range(1, len(lines)):
            cells = lines[k].split(",")
            cells[column] = mapping(cells)
            lines[k] = ",".join(cells)
        return "\n".join(lines) + "\n"
    return edit


def test_the_validation_videos_do_not_depend_on_the_row_order(tmp_path):
    """The train videos are sorted by name before the seeded shuffle: an index whose rows list the
    same videos in another order (here the train video names reversed against their rows) carves the
    same validation videos."""
    plain = load_mosi_bclstm(path=str(write_mosi_bclstm(tmp_path / "a", videos=(4, 2))))
    flip = {f"trainvid{i}": f"trainvid{3 - i}" for i in range(4)}
    root = write_mosi_bclstm(tmp_path / "b", videos=(4, 2),
                             edit={"mosi_index.csv": _map_column(1, lambda c: flip.get(c[1], c[1]))})
    assert load_mosi_bclstm(path=str(root)).info["valid_videos"] == plain.info["valid_videos"]


def test_positions_follow_the_clip_order_not_the_feature_rows(tmp_path):
    """A segment's position in its video is its clip order (``clip_id``); the feature CSVs' rows
    (``bclstm_row``) list the clips in another order in the release (every video)."""
    root = write_mosi_bclstm(tmp_path / "mosi", videos=(4, 2), clips=3,
                             edit={"mosi_index.csv": _map_column(2, lambda c: str(4 - int(c[2])))})  # 1, 2, 3 -> 3, 2, 1
    bundle = load_mosi_bclstm(path=str(root))
    for ds in bundle.splits.values():
        for i, sid in enumerate(ds.ids):  # segment '<video>_<k>' is row k - 1 of its video: clip 4 - k
            clip = 4 - int(sid.rsplit("_", 1)[1])
            same = [j for j in range(len(ds)) if ds.groups[j] == ds.groups[i]]
            assert sorted(same, key=lambda j: int(ds.positions[j])).index(i) == clip - 1, sid


def test_a_sha256sums_written_in_binary_mode_loads(tmp_path):
    """``sha256sum -b`` marks each name with '*' ("<digest> *<name>"): the same files."""
    root = write_mosi_bclstm(tmp_path / "mosi")
    sums = root / "SHA256SUMS"
    sums.write_text("".join(f"{x.split()[0]} *{x.split()[1]}\n" for x in sums.read_text().splitlines()))
    assert load_mosi_bclstm(path=str(root)).info["checksums_verified"] == 7


def test_modalities_as_one_string(tmp_path):
    root = write_mosi_bclstm(tmp_path / "mosi")
    with pytest.raises(ValueError, match=r"^modalities='text' \(data\.options\.modalities\) must be a list, "
                                         r"for example \[text, audio\]"):
        load_mosi_bclstm(path=str(root), modalities="text")
    assert load_mosi_bclstm(path=str(root), modalities=["text"]).modalities == ["text"]


def test_an_index_that_is_not_utf8_is_named(tmp_path):
    """A re-save in a legacy encoding (cp1252 'é') gave the bare codec error."""
    root = write_mosi_bclstm(tmp_path / "mosi")
    index = root / "mosi_index.csv"
    index.write_bytes(index.read_bytes().replace(b"SEGMENT 1", "caf\u00e9".encode("cp1252"), 1))
    with pytest.raises(MosiDataError, match=r"mosi_index\.csv: not UTF-8 text \(byte \d+\); save it as UTF-8"):
        load_mosi_bclstm(path=str(root), verify=False)
