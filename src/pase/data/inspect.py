"""``pase data inspect PATH``: say which format a file is, what it holds, and what is wrong with it.

``inspect_path`` unpickles the file with the restricted unpickler, detects the format from its
structure (MMSA: splits holding ``regression_labels``; MulT: splits holding ``labels``; GCNet: a
label pickle with ``videoIDs``), describes every split (counts, shapes, non-finite values, label
statistics), then runs the matching loader's full validation, and names a class (multilabel: a
label) without a training sample. Problems are collected, never raised; ``InspectReport.ok`` is False
when there is any (the CLI then exits non-zero).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Mapping, Optional

import numpy as np

from ..io import sha256_file
from . import gcnet, mmsa, mosi_bclstm, mult
from .contract import class_support_problem, missing_classes
from .safe_pickle import safe_load_pickle
from .validate import SPLITS, DataFormatError, is_rows, require_splits, resolve_dataset, row_chunks

__all__ = ["InspectReport", "detect_format", "inspect_path"]


@dataclass
class InspectReport:
    """What ``inspect_path`` found.

    Attributes:
        path: the inspected file.
        format: "mmsa", "mult", "gcnet" or "unknown".
        lines: the description, one line each.
        problems: one line per problem; empty when the file loads cleanly.
    """

    path: str
    format: str = "unknown"
    lines: List[str] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def text(self) -> str:
        tail = ["problems:"] + [f"  - {p}" for p in self.problems] if self.problems else ["no problems found"]
        return "\n".join([f"{self.path}: format {self.format}"] + self.lines + tail)


def detect_format(obj: object) -> str:
    """ "mmsa", "mult", "gcnet" or "unknown", from the unpickled structure."""
    if isinstance(obj, (tuple, list)) and len(obj) in (6, 7) and isinstance(obj[0], dict):
        return "gcnet"
    if not isinstance(obj, dict):
        return "unknown"
    if "videoIDs" in obj or b"videoIDs" in obj:
        return "gcnet"
    # keys stored as bytes name the format too; the loader then says to re-save them as str
    splits = [v for s in SPLITS for v in (obj.get(s), obj.get(s.encode())) if isinstance(v, dict)]
    # any split holding the label key names the format; the loader then names a split without it (as pase
    # train does), where "not a known format" hid which key was missing
    if any("regression_labels" in s or b"regression_labels" in s for s in splits):
        return "mmsa"
    if any("labels" in s or b"labels" in s for s in splits):
        return "mult"
    return "unknown"


def _describe_array(key: str, value: object) -> str:
    try:
        arr = np.asarray(value)
    except ValueError:
        return f"    {key:<22} ragged ({len(value)} rows of different shapes)"
    line = f"    {key:<22} {str(arr.shape):<18} {arr.dtype}"
    if arr.dtype.kind == "f":
        counts = {"NaN": int(np.isnan(arr).sum()), "+inf": int(np.isposinf(arr).sum()),
                  "-inf": int(np.isneginf(arr).sum())}
        line += "".join(f"  {k}: {v}" for k, v in counts.items() if v)
    return line


def overflow_bound(width: int) -> float:
    """The largest |x| whose square summed over ``width`` features stays finite in float32 (layer
    norms and cosines sum such squares): sqrt(float32 max / width), 6.6e17 for 768 features."""
    return float(np.sqrt(np.finfo(np.float32).max / max(1, width)))


def _largest(value: object) -> float:
    """The largest finite |x| of a float array (0 for anything else)."""
    try:
        arr = np.asarray(value)
    except ValueError:
        return 0.0
    if arr.dtype.kind != "f" or not arr.size:
        return 0.0
    best = 0.0
    for chunk in row_chunks(arr):  # the temporaries stay small on MOSEI-sized keys
        chunk = np.abs(chunk)
        chunk = chunk[np.isfinite(chunk)]
        best = max(best, float(chunk.max())) if chunk.size else best
    return best


def _label_stats(labels: object) -> str:
    try:
        y = np.asarray(labels, dtype=np.float64)
    except (TypeError, ValueError):  # the loader's validation then names the key as a problem
        return f"    labels: not numeric ({getattr(labels, 'dtype', type(labels).__name__)})"
    if y.ndim == 3 and y.shape[1:] == (4, 2):  # MulT IEMOCAP one-hot pairs
        pos = y.argmax(-1).sum(axis=0).astype(int).tolist()
        return "    positives per emotion " + ", ".join(f"{e} {p}" for e, p in zip(mult.IEMOCAP_EMOTIONS, pos))
    y = y[np.isfinite(y)]
    if y.size == 0:
        return "    labels: none finite"
    return (f"    labels: min {y.min():.3g}  max {y.max():.3g}  mean {y.mean():.3g}  "
            f"(negative {int((y < 0).sum())} / zero {int((y == 0).sum())} / positive {int((y > 0).sum())})")


def _describe_splits(raw: dict, label_key: str, report: InspectReport) -> None:
    for s in [k for k in raw if isinstance(raw[k], dict)]:
        d = raw[s]
        n = len(d[label_key]) if label_key in d and is_rows(d[label_key]) else "?"
        report.lines.append(f"  split {s!r}: {n} samples")
        for k, v in d.items():
            k = str(k)  # a key that is not a string (7, None) is described, and the loader names it
            report.lines.append(_describe_array(k, v) if hasattr(v, "__len__") else f"    {k:<22} {v!r}")
            big = _largest(v) if hasattr(v, "__len__") and k != label_key else 0.0
            width = int(np.shape(v)[-1]) if big and np.ndim(v) > 1 else 1
            bound = overflow_bound(width)
            if big > bound:
                report.problems.append(f"split {s!r}, key {k!r}: values up to {big:.3g}, past {bound:.3g}"
                                       f" where a sum of squares over its {width} features overflows float32 (layer "
                                       "norms, cosines: the model's predictions become NaN); rescale the features or "
                                       "train with data.standardize=true")
        if label_key in d:
            report.lines.append(_label_stats(d[label_key]))


def _describe_gcnet(raw: object, name: str, report: InspectReport) -> Optional[object]:
    t = gcnet._read_labels(raw, name)
    lists = {"train": t.train, "valid": t.valid, "test": t.test}
    for s, vids in lists.items():
        if vids is None:
            report.lines.append(f"  {s}: no valVids (the loader carves validation dialogues from train)")
            continue
        labels = [y for v in vids for y in t.labels[v]]
        report.lines.append(f"  {s}: {len(vids)} videos, {len(labels)} utterances")
        if labels:
            try:
                y = np.asarray(labels, dtype=np.float64)
            except (TypeError, ValueError):  # the loader's validation then names the video
                report.lines.append(_label_stats(labels))
                continue
            if np.all(y == np.round(y)):
                vals, cnt = np.unique(y, return_counts=True)
                report.lines.append("    classes " + ", ".join(f"{int(a)}: {c}" for a, c in zip(vals, cnt)))
            else:
                report.lines.append(_label_stats(y))
    return t


def _describe_bundle(bundle, report: InspectReport) -> None:
    """Each split of a loaded bundle as ``_describe_splits`` describes a pickle's: its sample count, every
    modality's features (shape, dtype, NaN / inf counts) and the label statistics (a mosi-bclstm folder)."""
    for s in SPLITS:
        ds = bundle.splits[s]
        report.lines.append(f"  split {s!r}: {len(ds)} samples")
        for m in ds.modalities:
            report.lines.append(_describe_array(m, ds.features[m].numpy()))
        report.lines.append(_describe_array("labels", ds.target.numpy()))
        report.lines.append(_label_stats(ds.target.numpy()))


def _checksum_line(path: Path, dataset: str) -> Optional[str]:
    published = mmsa.PUBLISHED_SHA256.get((dataset, path.name))
    if published is None:
        return None
    digest = sha256_file(path)
    if digest == published:
        return f"  SHA-256 {digest} matches the one published in the MMSA README"
    return f"  SHA-256 {digest} differs from the published {published} (a re-export or another release?)"


def _dataset(dataset: Optional[str], p: Path, patterns, valid) -> str:
    return resolve_dataset(p, dataset, patterns, valid, hint=" (pass one with --dataset)")


class _Notes(logging.Handler):
    """Collects what the loaders log (clipped lengths, imputed utterances, -inf set to 0, ...)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def inspect_path(path: str | Path, dataset: Optional[str] = None,
                 feature_root: Optional[str | Path] = None,
                 features: Optional[Mapping[str, Optional[str]]] = None, checksum: bool = True) -> InspectReport:
    """Detect the format of ``path``, describe it and validate it; never raises on bad data.

    What the loaders log while reading it (lengths clipped to the stored steps, empty feature
    folders read as zeros, -inf set to 0) is listed as ``note:`` lines: a training run logs most
    of them at the INFO level only, which the command line does not show.

    Args:
        path: an MMSA or MulT pickle, a GCNet label pickle, or a mosi-bclstm folder.
        dataset: passed to the loader (default: inferred from the path).
        feature_root: GCNet only: the features folder (default: ``<label folder>/features`` when
            it exists; otherwise only the labels are checked).
        features: GCNet only: modality -> feature folder name (None leaves it out, as in training).
        checksum: hash MMSA files that have a published SHA-256 and compare.

    ``feature_root`` or ``features`` with an MMSA or MulT pickle or a mosi-bclstm folder, and a
    ``dataset`` other than MOSI with the folder, are a problem naming them: the format does not read
    them, and the report would otherwise pass for a check made with them.

    Returns:
        ``InspectReport`` with ``.ok``, ``.format`` and ``.text``.
    """
    notes, log = _Notes(), logging.getLogger("pase.data")
    level, propagate = log.level, log.propagate
    log.addHandler(notes)
    log.setLevel(logging.INFO)
    log.propagate = False  # shown once, in the report
    try:
        report = _inspect(path, dataset, feature_root, features, checksum)
    finally:
        log.removeHandler(notes)
        log.setLevel(level)
        log.propagate = propagate
    report.lines += [f"  note: {line}" for line in dict.fromkeys(notes.lines)]
    return report


def _flags_that_do_not_apply(fmt: str, dataset: Optional[str], feature_root: Optional[str | Path],
                             features: Optional[Mapping[str, Optional[str]]]) -> Optional[str]:
    """The problem naming the arguments that ``fmt`` does not read, or None: they were ignored
    silently, so a researcher took a check of the file as it is for a check with them (review)."""
    if fmt not in ("mmsa", "mult", "mosi_bclstm"):  # gcnet reads them all; unknown is a problem already
        return None
    other = dataset is not None and str(dataset).lower() != "mosi"  # any case, as the loaders take it
    given = [f"--dataset {dataset}"] if fmt == "mosi_bclstm" and other else []
    given += [flag for flag, value in (("--feature-root", feature_root), ("--features", features)) if value]
    if not given:
        return None
    why = {"mmsa": "an MMSA pickle", "mult": "a MulT pickle", "mosi_bclstm": "a mosi-bclstm folder, always MOSI"}
    folders = ", and only GCNet label pickles read feature folders" if feature_root or features else ""
    return (f"{' and '.join(given)}: {'does' if len(given) == 1 else 'do'} not apply to format {fmt} ({why[fmt]}"
            f"{folders}); the file was inspected without {'it' if len(given) == 1 else 'them'}, drop "
            f"{'it' if len(given) == 1 else 'them'}")


def _inspect(path: str | Path, dataset: Optional[str], feature_root: Optional[str | Path],
             features: Optional[Mapping[str, Optional[str]]], checksum: bool) -> InspectReport:
    """:func:`inspect_path` without the notes."""
    p = Path(path)
    report = InspectReport(path=str(p))
    if p.is_dir() and (p / "mosi_index.csv").is_file():  # the bc-LSTM MOSI release: a folder of CSVs
        report.format = "mosi_bclstm"
        flags = _flags_that_do_not_apply(report.format, dataset, feature_root, features)
        report.problems += [flags] if flags else []
        try:
            bundle = mosi_bclstm.load_mosi_bclstm(path=str(p), verify=checksum)
        except (DataFormatError, ValueError) as exc:  # MosiDataError is a ValueError
            report.problems.append(str(exc))
            return report
        report.lines.append(f"  mosi-bclstm folder; {bundle.info['checksums_verified']} files match SHA256SUMS; "
                            f"load with --set data.source=mosi_bclstm --set data.path={p}")
        _describe_bundle(bundle, report)  # as the pickles' splits are described (docs/data.md; a review)
        return _loads_as(report, bundle)
    home = next((d for d in list(p.parents)[:3] if (d / "mosi_index.csv").is_file()), None)
    if p.is_file() and home is not None and p.suffix.lower() in (".csv", ".txt", ".md", ""):
        # a file of a mosi-bclstm folder (its index, a feature CSV, SHA256SUMS): not a damaged pickle
        report.format = "mosi_bclstm"
        report.problems.append(f"{p} is one file of the mosi-bclstm folder {home}; inspect the folder: "
                               f"pase data inspect {home}")
        return report
    try:
        raw = safe_load_pickle(p)
    except (DataFormatError, FileNotFoundError, IsADirectoryError) as exc:
        report.problems.append(str(exc))
        return report
    report.format = detect_format(raw)
    flags = _flags_that_do_not_apply(report.format, dataset, feature_root, features)
    report.problems += [flags] if flags else []
    try:
        if report.format == "mmsa":
            _describe_splits(raw, "regression_labels", report)
            require_splits(raw, p.name, "MMSA")
            ds = _dataset(dataset, p, mmsa._NAME_PATTERNS, mmsa.MMSA_DATASETS)
            bundle = mmsa._from_raw(raw, p.name, ds)
            if any("text_bert" in raw[s] for s in SPLITS if isinstance(raw.get(s), dict)):
                try:  # the paper's configs read the BERT tokens (data.options.text=bert): checked too
                    mmsa._from_raw(raw, p.name, ds, text="bert", modalities=("text",))
                except (DataFormatError, ValueError) as exc:
                    report.problems.append(f"with data.options.text=bert: {exc}")
            line = _checksum_line(p, ds) if checksum else None
            report.lines += [line] if line else []
        elif report.format == "mult":
            _describe_splits(raw, "labels", report)
            require_splits(raw, p.name, "MulT")
            bundle = mult._from_raw(raw, p.name, _dataset(dataset, p, mult._NAME_PATTERNS, mult.MULT_DATASETS))
        elif report.format == "gcnet":
            _describe_gcnet(raw, p.name, report)
            root = Path(feature_root) if feature_root else p.parent / "features"
            if not root.is_dir():
                gcnet._feature_folders(features)  # --features is checked even when no feature is read (review)
                t = gcnet._read_labels(raw, p.name)
                ds = _dataset(dataset, p, gcnet._NAME_PATTERNS, gcnet.GCNET_DATASETS)
                targets = {s: gcnet._labels_of(t, vids, ds, s)[0]
                           for s, vids in gcnet._split_vids(t, ds, None, 0.1, 0).items()}
                absent = missing_classes(gcnet.GCNET_DATASETS[ds], targets, p.name)
                report.problems += [absent] if absent else []
                why = "is a file, not a folder" if root.exists() else "does not exist"
                if feature_root:  # a folder the user named: a clean report would pass a check never made (review)
                    report.problems.append(f"--feature-root {root} {why}; the features were not checked: pass the "
                                           "folder that holds the feature folders (as data.options.feature_root)")
                else:  # no default features/ folder: a labels-only check, as before
                    report.lines.append(f"  features not checked: {root} {why} "
                                        "(pass the features folder as feature_root)")
                return report
            bundle = gcnet.load_gcnet(p, root, features=features,
                                      dataset=_dataset(dataset, p, gcnet._NAME_PATTERNS, gcnet.GCNET_DATASETS))
        else:
            keys = ", ".join(map(str, raw)) if isinstance(raw, dict) else type(raw).__name__
            report.problems.append(
                f"{p.name}: not a known format (found: {keys}); expected an MMSA or MulT dict of "
                f"train/valid/test splits, or a GCNet label pickle with videoIDs")
            return report
    except (DataFormatError, ValueError) as exc:
        report.problems.append(str(exc))
        return report
    except Exception as exc:  # a gap in a loader's checks: still a report, never a raise on bad data
        report.problems.append(f"{p.name}: the {report.format} loader failed with {type(exc).__name__}: "
                               f"{' '.join(str(exc).split())[:200]} (a layout it does not name yet); "
                               f"please report it with this line")
        return report
    return _loads_as(report, bundle)


def _loads_as(report: InspectReport, bundle) -> InspectReport:
    """Add the line describing what ``bundle`` loads as (name, task, protocol, widths, split sizes), and a
    class without a training sample as a problem (training only warns: ``create_data``)."""
    absent = class_support_problem(bundle)
    report.problems += [absent] if absent else []
    sizes = " / ".join(f"{s} {len(bundle.splits[s])}" for s in SPLITS)
    report.lines.append(f"  loads as {bundle.name!r}: {bundle.task.kind}, protocol "
                        f"{bundle.task.protocol!r}, widths {bundle.dims()}, {sizes}")
    return report
