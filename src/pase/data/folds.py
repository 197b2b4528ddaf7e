"""Sample ids, their videos, and the CMU-MultimodalSDK standard folds.

Sample ids in the field name a video and a clip: MMSA writes ``video$_$clip``, the SDK and
many repositories ``video_clip``. MOSI and MOSEI video ids may themselves contain ``_``
(``atnd_PF-Lbs``, ``_0efYOjQYRc``), so ``split_by_folds`` matches the longest prefix that is a
video id of the folds instead of cutting at the first underscore.

The standard folds file (``cmu_sdk_std_folds.json``) maps ``CMU_MOSI`` / ``CMU_MOSEI`` / ``POM`` to
``standard_train_fold`` / ``standard_valid_fold`` / ``standard_test_fold`` lists of video ids
(MOSI 52 / 10 / 31 videos, MOSEI 2,250 / 300 / 678).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .validate import DataFormatError, to_str

__all__ = ["parse_clip_id", "clip_order_key", "group_positions", "load_standard_folds",
           "split_by_folds"]

_FOLD_KEYS = {"train": "standard_train_fold", "valid": "standard_valid_fold",
              "test": "standard_test_fold"}
_CLIP = re.compile(r"^[A-Za-z]?\d+$")  # "12", or "F003" (IEMOCAP turn names)


def parse_clip_id(sample_id: str) -> Tuple[str, str]:
    """Split a sample id into (video, clip).

    ``video$_$clip`` splits at ``$_$``; ``video_clip`` splits at the last ``_`` when the clip part
    is a number (optionally after one letter); any other id is its own video with clip "".

    Example:
        >>> parse_clip_id("atnd_PF-Lbs$_$3"), parse_clip_id("atnd_PF-Lbs_3"), parse_clip_id("x")
        (('atnd_PF-Lbs', '3'), ('atnd_PF-Lbs', '3'), ('x', ''))
    """
    if "$_$" in sample_id:
        video, clip = sample_id.rsplit("$_$", 1)
        return video, clip
    head, sep, tail = sample_id.rpartition("_")
    if sep and head and _CLIP.match(tail):
        return head, tail
    return sample_id, ""


def clip_order_key(clip: str) -> tuple:
    """Sort key for clips of one video: numbers numerically, then anything else as text."""
    digits = re.sub(r"^[A-Za-z]", "", clip)
    try:
        return (0, float(digits), clip)
    except ValueError:
        return (1, 0.0, clip)


def group_positions(videos: Mapping[str, Sequence[str]], order: Mapping[str, Sequence[tuple]]
                    ) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """Context groups and positions for every split.

    Args:
        videos: split -> (N,) video id of each sample.
        order: split -> (N,) sort keys of each sample inside its video.

    Returns:
        split -> (groups (N,) int64, positions (N,) int64). A video's group index is its rank of
        first appearance over the splits in the given order, so it is the same in every split;
        a position is the sample's rank by ``order`` inside its video (ties keep row order).
    """
    index: Dict[str, int] = {}
    for split in videos:
        for v in videos[split]:
            index.setdefault(v, len(index))
    out: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
    for split, vids in videos.items():
        groups = np.array([index[v] for v in vids], dtype=np.int64)
        positions = np.zeros(len(vids), dtype=np.int64)
        rows: Dict[str, List[int]] = {}
        for i, v in enumerate(vids):
            rows.setdefault(v, []).append(i)
        for members in rows.values():
            ranked = sorted(members, key=lambda i: (order[split][i], i))
            positions[ranked] = np.arange(len(ranked))
        out[split] = (groups, positions)
    return out


def load_standard_folds(path: str | Path) -> Dict[str, Dict[str, List[str]]]:
    """Read the SDK's standard folds JSON.

    Returns:
        dataset ("mosi", "mosei", "pom") -> split ("train", "valid", "test") -> video ids.

    Raises:
        DataFormatError: when an entry lacks one of the three fold lists.
    """
    p = Path(path)
    raw = json.loads(p.read_text())
    if not isinstance(raw, dict):
        raise DataFormatError(f"{p.name}: expected a JSON object of datasets, found {type(raw).__name__}")
    folds: Dict[str, Dict[str, List[str]]] = {}
    for name, entry in raw.items():
        missing = [k for k in _FOLD_KEYS.values() if k not in entry]
        if missing:
            raise DataFormatError(f"{p.name}: {name!r} has no {missing[0]!r} (found: "
                                  f"{', '.join(entry)}); expected {', '.join(_FOLD_KEYS.values())}")
        key = name.lower().removeprefix("cmu_")
        folds[key] = {s: [str(v) for v in entry[k]] for s, k in _FOLD_KEYS.items()}
    return folds


def _video_candidates(sample: object) -> List[str]:
    if isinstance(sample, (tuple, list, np.ndarray)):  # MulT meta rows: (video, start, end)
        return [to_str(sample[0])]
    s = to_str(sample)
    if "$_$" in s:
        return [s.split("$_$", 1)[0]]
    parts = s.split("_")
    return ["_".join(parts[:k]) for k in range(len(parts), 0, -1)]  # longest prefix first


def split_by_folds(ids_or_video_ids: Sequence[object], folds: Mapping, dataset: str = "mosi",
                   unknown: str = "error") -> List[Optional[str]]:
    """The standard split ("train" / "valid" / "test") of each sample, from its video id.

    Args:
        ids_or_video_ids: N sample ids (``video$_$clip``, ``video_clip``), video ids, or MulT meta
            rows whose first entry is the video id.
        folds: ``load_standard_folds(...)`` (then ``dataset`` picks the entry) or one dataset's
            {"train": [...], "valid": [...], "test": [...]}.
        dataset: "mosi", "mosei" or "pom" when ``folds`` holds several datasets.
        unknown: "error" raises on a video in no fold; "none" returns None for it.

    Returns:
        N split names (or None).

    Raises:
        DataFormatError: a video in no fold (with ``unknown="error"``), or in two folds.

    Example:
        >>> split_by_folds(["a_b_1", "c$_$2"], {"train": ["a_b"], "valid": [], "test": ["c"]})
        ['train', 'test']
    """
    if unknown not in ("error", "none"):
        raise ValueError(f"unknown={unknown!r}; valid: 'error', 'none'")
    if "train" not in folds:
        if dataset not in folds:
            raise DataFormatError(f"folds have no dataset {dataset!r} (found: {', '.join(folds)}); "
                                  f"pass dataset= one of them")
        folds = folds[dataset]
    where: Dict[str, str] = {}
    for split in ("train", "valid", "test"):
        for v in folds.get(split, []):
            if where.setdefault(str(v), split) != split:
                raise DataFormatError(f"video {v!r} is in both the {where[str(v)]!r} and the "
                                      f"{split!r} fold; fix the folds file")
    out: List[Optional[str]] = []
    for sample in ids_or_video_ids:
        hit = next((where[c] for c in _video_candidates(sample) if c in where), None)
        if hit is None and unknown == "error":
            raise DataFormatError(
                f"sample {to_str(sample)!r}: its video is in none of the {dataset} standard folds; "
                f"check dataset= or pass unknown='none' to skip such samples")
        out.append(hit)
    return out
