"""CMU-MOSI with the bc-LSTM release's utterance features (text 100, audio 73, video 100).

The folder layout is described in ``<root>/README.md``. Rules this loader enforces:

* every file is checked against ``SHA256SUMS`` (a mismatch is an error naming the file);
* the release's own speaker-independent split is used: train = ``bclstm_split == train``
  (62 videos), test = ``bclstm_split == test`` (752 segments, 31 videos); its text and video
  extractors saw labels of the train videos, so the CMU-standard test split leaks (README);
* the validation split is carved from the train *videos*, deterministically: videos are sorted,
  shuffled with ``valid_seed`` and taken until ``valid_fraction`` of the train segments is
  reached. Validation scores are optimistic; never report them as results.

Labels are the continuous MOSI sentiment in [-3, 3]; protocol "mosi" (MMSA metrics).
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .contract import DataBundle, MultimodalDataset, TaskSpec
from .registry import register_data
from ..io import user_path

__all__ = ["load_mosi_bclstm", "default_root", "verify_checksums", "MosiDataError"]

_FEATURES = {"text": "text_{split}0.csv", "audio": "audio_{split}0.csv", "vision": "video_{split}0.csv"}
_DIMS = {"text": 100, "audio": 73, "vision": 100}
#: columns of mosi_index.csv the loader reads
_INDEX_COLUMNS = ("segment_id", "video_id", "clip_id", "label", "bclstm_split", "bclstm_row")


class MosiDataError(ValueError):
    """The mosi-bclstm folder is missing, altered or malformed; the message names the file."""


def default_root() -> Path:
    """``../shared/data/mosi-bclstm`` relative to the current directory (the project root)."""
    return Path("..") / "shared" / "data" / "mosi-bclstm"


#: a line of ``sha256sum --tag`` (BSD) format: ``SHA256 (<file name>) = <64 hex digits>``
_BSD_LINE = re.compile(r"SHA256 \((.+)\) = ([0-9a-fA-F]{64})")


def _read_sums(sums: Path) -> List[Tuple[str, str]]:
    """The (digest, file name) of every non-empty line of ``sums``: sha256sum's ``<64 hex digits>
    <file name>`` (a leading ``*``, binary mode, dropped) or its ``--tag`` (BSD) format; a line of
    neither is named with its line number. Every line is read before the listed files are checked: a
    malformed line naming a file the loader reads was reported as "does not list" it (a review)."""
    entries = []
    for lineno, line in enumerate(sums.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        bsd = _BSD_LINE.fullmatch(line.strip())
        if bsd:
            entries.append((bsd.group(2), bsd.group(1)))
        elif len(parts) == 2 and re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]):
            entries.append((parts[0], parts[1].strip().lstrip("*")))
        else:
            raise MosiDataError(f"{sums}: line {lineno} is {line.strip()[:60]!r}, expected '<64 hex digits>  "
                                "<file name>' (sha256sum's format) or 'SHA256 (<file name>) = <64 hex digits>' "
                                "(sha256sum --tag); restore the folder's SHA256SUMS")
    return entries


def verify_checksums(root: Path, required: Sequence[str] = ()) -> int:
    """Check every file listed in ``root/SHA256SUMS``; returns the number of files checked.

    ``required``: files (relative to ``root``) that must be listed: those the loader reads. Without
    this, a SHA256SUMS with a line removed (or emptied) verified nothing of an altered file (a review
    changed a label in mosi_index.csv and dropped its line: "verified 10 files", the label loaded).
    """
    sums = root / "SHA256SUMS"
    if not sums.is_file():
        raise MosiDataError(f"{sums}: missing; the mosi-bclstm folder must hold its SHA256SUMS file")
    entries = _read_sums(sums)
    listed = {os.path.normpath(name) for _, name in entries}  # './x' (find | sha256sum) is 'x'
    unlisted = [name for name in required if os.path.normpath(name) not in listed]
    if unlisted:
        raise MosiDataError(f"{sums}: does not list {unlisted[0]!r} ({len(unlisted)} file(s) the loader reads are not "
                            "listed), so it cannot be verified; restore the folder's SHA256SUMS (or pass verify=False "
                            "at your own risk)")
    for digest, name in entries:
        path = root / name
        if not path.is_file():
            raise MosiDataError(f"{path}: listed in SHA256SUMS but missing; restore the folder")
        h = hashlib.sha256(path.read_bytes()).hexdigest()
        if h != digest.lower():
            raise MosiDataError(f"{path}: SHA-256 {h[:12]}... does not match SHA256SUMS {digest[:12]}...; "
                                "the file was altered, restore it (or pass verify=False at your own risk)")
    return len(entries)


def _read_matrix(path: Path, width: int) -> Tuple[np.ndarray, np.ndarray]:
    """A headerless CSV of ``width`` feature columns plus a trailing label column -> (N, width)
    features and the (N,) trailing ``label_bin`` column."""
    try:
        rows = np.loadtxt(path, delimiter=",", dtype=np.float64, converters=None, quotechar='"', ndmin=2)
    except ValueError as e:
        raise MosiDataError(f"{path}: not a numeric CSV ({e})") from None
    if rows.ndim != 2 or rows.shape[1] != width + 1:
        raise MosiDataError(f"{path}: expected {width} feature columns plus a label column, "
                            f"got shape {rows.shape}")
    bad = ~np.isfinite(rows[:, :width])
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise MosiDataError(f"{path}: non-finite value {rows[row, col]} at row {row + 1}, column {col + 1} "
                            f"({int(bad.any(axis=1).sum())} such rows); restore the file")
    return rows[:, :width].astype(np.float32), rows[:, width]


def _check_rows(index: Path, split: str, rows: List[dict]) -> None:
    """The ``bclstm_row`` values of a split's segments are 0..N-1, each once: row r of the feature
    CSVs belongs to the segment whose ``bclstm_row`` is r (a duplicate or a gap would hand a
    segment its neighbour's features)."""
    for expected, r in enumerate(rows):
        if r["bclstm_row"] != expected:
            raise MosiDataError(
                f"{index}: the {split} segments' bclstm_row values must be 0..{len(rows) - 1}, each once (they "
                f"locate rows of the feature CSVs); sorted, position {expected} holds {r['bclstm_row']} (segment "
                f"{r['segment_id']!r}): a duplicate, a gap or 1-based numbering; restore the file")


def _check_label_bin(path: Path, rows: List[dict], label_bin: np.ndarray) -> None:
    """The trailing ``label_bin`` column (1 when the sentiment is >= 0) agrees with the index's labels,
    so the feature rows and the index's segments are in the same order."""
    expected = np.array([float(r["label"] >= 0) for r in rows])
    wrong = np.flatnonzero(label_bin != expected)
    if wrong.size:
        i = int(wrong[0])
        raise MosiDataError(
            f"{path}: row {i + 1} ends with label_bin {label_bin[i]:g} but mosi_index.csv gives its segment "
            f"{rows[i]['segment_id']!r} the label {rows[i]['label']:g} ({wrong.size} such rows): the CSV's rows and "
            f"the index disagree; restore the files")


def _read_index(path: Path) -> List[dict]:
    """Rows of ``mosi_index.csv``: ``label`` a float in [-3, 3], ``clip_id`` and ``bclstm_row`` ints."""
    try:
        return _parse_index(path)
    except UnicodeDecodeError as e:
        raise MosiDataError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8, or restore the file") from None


def _parse_index(path: Path) -> List[dict]:
    with open(path, newline="", encoding="utf-8-sig") as fh:  # a BOM from a spreadsheet export is not a column name
        reader = csv.DictReader(fh)
        found = reader.fieldnames or []
        missing = [c for c in _INDEX_COLUMNS if c not in found]
        if missing:
            raise MosiDataError(f"{path}: no column {missing[0]!r} (found: {', '.join(found) or 'nothing'}); "
                                f"expected columns {', '.join(_INDEX_COLUMNS)}; restore the file")
        rows, lines = [], {}
        for r in reader:
            first = lines.setdefault(r["segment_id"], reader.line_num)
            if first != reader.line_num:
                raise MosiDataError(f"{path}: line {reader.line_num}: segment_id {r['segment_id']!r} is already on "
                                    f"line {first}; each segment is listed once: restore the file")
            for col, kind in (("label", float), ("clip_id", int), ("bclstm_row", int)):
                try:
                    r[col] = kind(r[col])
                except (TypeError, ValueError):
                    raise MosiDataError(
                        f"{path}: line {reader.line_num} (segment {r['segment_id']!r}), column {col!r} is "
                        f"{r[col]!r}, expected {'a number' if kind is float else 'an integer'}; restore the file"
                    ) from None
            if not -3.0 <= r["label"] <= 3.0:  # NaN fails too
                raise MosiDataError(f"{path}: line {reader.line_num} (segment {r['segment_id']!r}): label "
                                    f"{r['label']:g} is outside [-3, 3] (MOSI sentiment); restore the file")
            if r["bclstm_split"] not in ("train", "test"):  # the segment fell out of both splits, silently
                raise MosiDataError(f"{path}: line {reader.line_num} (segment {r['segment_id']!r}): bclstm_split is "
                                    f"{r['bclstm_split']!r}, expected 'train' or 'test'; restore the file")
            rows.append(r)
    return rows


def _carve_valid(videos: List[str], counts: Dict[str, int], fraction: float, seed: int) -> set:
    order = sorted(videos)
    random.Random(seed).shuffle(order)
    total, chosen, taken = sum(counts.values()), set(), 0
    for v in order:
        if taken >= fraction * total:
            break
        chosen.add(v)
        taken += counts[v]
    return chosen


@register_data("mosi_bclstm")
def load_mosi_bclstm(path: Optional[str] = None, valid_fraction: float = 0.15, valid_seed: int = 0,
                     verify: bool = True, modalities: tuple = ("text", "audio", "vision")) -> DataBundle:
    """Load the bc-LSTM MOSI features as a ``DataBundle`` (train / valid / test).

    Args:
        path: the ``mosi-bclstm`` folder (default ``../shared/data/mosi-bclstm``).
        valid_fraction: share of train segments (whole videos) moved to validation.
        valid_seed: seed of the video shuffle that picks validation videos.
        verify: check ``SHA256SUMS`` first.
        modalities: which of text, audio, vision to load.

    Raises:
        MosiDataError: missing folder or file, checksum mismatch, malformed CSV or SHA256SUMS line,
            missing index column, non-numeric or out-of-range label, NaN / inf feature.
        ValueError: ``valid_fraction`` outside (0, 1), or so large it leaves no train video;
            ``modalities`` given as one string.
    """
    if isinstance(valid_seed, int) and valid_seed < 0:  # random.Random seeds with abs(): -1 repeated 1's split
        raise ValueError(f"valid_seed={valid_seed} (data.options.valid_seed) must be at least 0; Python's shuffle "
                         f"takes it as {-valid_seed}, so it would repeat that seed's validation videos")
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction={valid_fraction!r} (data.options.valid_fraction); it must lie strictly "
                         f"between 0 and 1 (default 0.15): the train videos are split into train and valid")
    root = user_path(path) if path is not None else default_root()
    if not root.is_dir():  # it said "not a mosi-bclstm folder (no mosi_index.csv)" for a path that is not there
        where = f" (relative to the current directory, {Path.cwd()})" if not root.is_absolute() else ""
        raise MosiDataError(f"{root}: no such folder{where}; pass data.path=FOLDER, the mosi-bclstm folder")
    if not (root / "mosi_index.csv").is_file():
        raise MosiDataError(f"{root}: not a mosi-bclstm folder (no mosi_index.csv); pass data.path=FOLDER")
    if isinstance(modalities, str):
        raise ValueError(f"modalities={modalities!r} (data.options.modalities) must be a list, for example "
                         f"[text, audio]; valid: {', '.join(_FEATURES)}")
    unknown = [m for m in modalities if m not in _FEATURES]
    if unknown:
        raise MosiDataError(f"mosi_bclstm has no modality {unknown[0]!r}; valid: {', '.join(_FEATURES)}")
    read = ["mosi_index.csv"] + [f"features/{_FEATURES[m].format(split=split)}"
                                  for split in ("train", "test") for m in modalities]
    checked = verify_checksums(root, read) if verify else 0
    index = _read_index(root / "mosi_index.csv")
    per_split = {}
    for split in ("train", "test"):
        rows = sorted((r for r in index if r["bclstm_split"] == split), key=lambda r: r["bclstm_row"])
        _check_rows(root / "mosi_index.csv", split, rows)
        feats = {}
        for m in modalities:
            path = root / "features" / _FEATURES[m].format(split=split)
            feats[m], label_bin = _read_matrix(path, _DIMS[m])
            if feats[m].shape[0] != len(rows):
                raise MosiDataError(f"{path}: {feats[m].shape[0]} rows but mosi_index.csv lists {len(rows)} {split} "
                                    f"segments")
            _check_label_bin(path, rows, label_bin)
        per_split[split] = (rows, feats)
    train_rows = per_split["train"][0]
    shared = sorted({r["video_id"] for r in train_rows} & {r["video_id"] for r in per_split["test"][0]})
    if shared:  # the release's test split is speaker-independent: whole videos, never seen in training
        raise MosiDataError(f"{root / 'mosi_index.csv'}: video {shared[0]!r} has segments in both bclstm_split train "
                            f"and test ({len(shared)} such video(s)); a test video's neighbours in training leak its "
                            "labels: restore the file")
    counts: Dict[str, int] = {}
    for r in train_rows:
        counts[r["video_id"]] = counts.get(r["video_id"], 0) + 1
    valid_videos = _carve_valid(list(counts), counts, valid_fraction, valid_seed)
    if len(valid_videos) == len(counts):
        raise ValueError(f"valid_fraction={valid_fraction!r} (data.options.valid_fraction) moves all "
                         f"{len(counts)} train videos to valid; lower it (default 0.15)")
    video_index = {v: i for i, v in enumerate(sorted({r["video_id"] for r in index}))}

    def make(rows, feats, keep, split):
        idx = [i for i, r in enumerate(rows) if keep(r)]
        sel = [rows[i] for i in idx]
        return MultimodalDataset(
            {m: x[idx] for m, x in feats.items()},
            np.array([r["label"] for r in sel], dtype=np.float32),
            [r["segment_id"] for r in sel],
            groups=np.array([video_index[r["video_id"]] for r in sel]),
            positions=np.array([r["clip_id"] for r in sel]),
            split=split)

    splits = {
        "train": make(*per_split["train"], lambda r: r["video_id"] not in valid_videos, "train"),
        "valid": make(*per_split["train"], lambda r: r["video_id"] in valid_videos, "valid"),
        "test": make(*per_split["test"], lambda r: True, "test"),
    }
    task = TaskSpec(kind="regression", num_classes=1, protocol="mosi", label_range=(-3.0, 3.0))
    info = {"root": str(root), "checksums_verified": checked, "split_rule": "bclstm_split; valid = "
            f"{len(valid_videos)} train videos (fraction {valid_fraction}, seed {valid_seed})",
            "valid_videos": sorted(valid_videos)}
    return DataBundle("mosi_bclstm", task, splits, info)


load_mosi_bclstm.task_kind = "regression"  # whatever its options; read by pase compare (source_task_kind)
