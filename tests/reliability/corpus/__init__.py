"""The bad-input corpus: every fault a downloaded data file can have, built at test time.

Nothing binary is committed: ``build(case, root)`` writes the case's file with the exact-layout
writers of ``tests/data/writers.py`` (a good MMSA or MulT pickle, then the fault) and returns
its path. ``CASES`` maps each case to ``(writer, fault, expected message regex)``; the message is
the one line ``pase`` prints after ``pase: error: ``, for ``pase data inspect`` and for
``pase train --set data.source=<format> --set data.path=FILE`` alike.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Callable, Dict, NamedTuple, Optional

import numpy as np

from data.writers import write_mmsa, write_mult

__all__ = ["Case", "CASES", "MARKER", "build"]

#: a forbidden global's payload would create this file (next to the corpus file) if it ran
MARKER = "PAYLOAD_RAN"


class Case(NamedTuple):
    source: str  # the data source the file is meant for: "mmsa" or "mult"
    fault: Optional[Callable[[dict], None]]  # applied to the in-memory splits before writing
    rewrite: Optional[Callable[[Path], None]]  # applied to the written file
    message: str  # regex of the error line


class _Payload:
    """Unpickling this calls ``os.system``: the restricted unpickler must refuse it first."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _empty_split(d: dict) -> None:
    d["valid"] = {k: v[:0] for k, v in d["valid"].items()}


def _wider_valid_audio(d: dict) -> None:
    a = d["valid"]["audio"]
    d["valid"]["audio"] = np.concatenate([a, a[..., :1]], axis=-1)  # (N, T, 5) -> (N, T, 6)


def _set(split: str, key: str, index, value) -> Callable[[dict], None]:
    def fault(d: dict) -> None:
        d[split][key][index] = value
    return fault


_TRUNC = r"aligned_50\.pkl: truncated or not a pickle \(.*\); download it again"
CASES: Dict[str, Case] = {
    "truncated pickle": Case("mmsa", None, _truncate, _TRUNC),
    "empty file": Case("mmsa", None, lambda p: p.write_bytes(b""), _TRUNC),
    "text, not a pickle": Case("mmsa", None, lambda p: p.write_text("id,label\n1,0.5\n"),
                               r"aligned_50\.pkl: is a text file \(comma-separated\), not a pickle \(.*\); "
                               r"pass the pickle file"),
    "wrong type (a list)": Case("mmsa", None, lambda p: p.write_bytes(pickle.dumps([[0.1, 0.2], [0.3]])),
                                r"aligned_50\.pkl: (expected a dict of splits .* found list|not a known format "
                                r"\(found: list\))"),
    "missing split": Case("mmsa", lambda d: d.pop("test"), None,
                          r"aligned_50\.pkl: no split 'test' \(found: train, valid\)"),
    "empty split": Case("mmsa", _empty_split, None, r"aligned_50\.pkl: split 'valid' is empty \(0 samples"),
    "mismatched rows": Case("mmsa", lambda d: d["valid"].update(vision=d["valid"]["vision"][:-1]), None,
                            r"split 'valid': key 'vision' has 5 rows .* but 'id' has 6"),
    "mismatched widths": Case("mmsa", _wider_valid_audio, None,
                              r"aligned_50\.pkl: split 'valid', key 'audio' has width 6 \(shape \(6, 8, 6\)\) but split "
                              r"'train' has 5"),
    "label out of range": Case("mmsa", _set("test", "regression_labels", 1, 4.5), None,
                               r"split 'test': label 4\.5 of sample .* is outside \[-3, 3\]"),
    "NaN label": Case("mmsa", _set("train", "regression_labels", 0, np.nan), None,
                      r"split 'train': the label of sample .* is NaN \(not a number\) \(1 such samples\); every "
                      r"label must be a finite number: fix the file"),
    "missing modality key": Case("mmsa", lambda d: d["train"].pop("audio"), None,
                                 r"split 'train' has no key 'audio' .* pass modalities=\('text', 'vision'\)"),
    "NaN feature": Case("mmsa", _set("valid", "vision", (2, 0, 0), np.nan), None,
                        r"split 'valid', key 'vision': NaN at sample .* fix the file or pass sanitize=True"),
    "+inf feature": Case("mmsa", _set("train", "text", (1, 0, 0), np.inf), None,
                         r"split 'train', key 'text': inf at sample .* \(row 1; 0 NaN, 1 \+inf"),
    "forbidden global": Case("mmsa", None, None,  # the fault needs the file's folder: see build()
                             r"aligned_50\.pkl: refused to load global '\w+\.system'"),
    "MulT empty split": Case("mult", lambda d: d.update(test={k: v[:0] for k, v in d["test"].items()}), None,
                             r"mosi_data\.pkl: split 'test' is empty \(0 samples"),
    "MulT missing modality key": Case("mult", lambda d: d["valid"].pop("vision"), None,
                                      r"mosi_data\.pkl: split 'valid' has no key 'vision'"),
    "MulT forbidden global": Case("mult", None, None, r"mosi_data\.pkl: refused to load global '\w+\.system'"),
}


def build(case: str, root: Path) -> Path:
    """Write ``case``'s file under ``root`` (a fresh folder) and return its path."""
    c = CASES[case]
    fault = c.fault
    if "forbidden global" in case:
        marker = Path(root) / MARKER
        fault = lambda d: d["train"].update(id=_Payload(marker))  # noqa: E731
    writer = write_mmsa if c.source == "mmsa" else write_mult
    path = writer(Path(root), "mosi", mutate=fault)
    if c.rewrite is not None:
        c.rewrite(path)
    return path
