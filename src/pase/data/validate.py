"""Checks shared by the on-disk format loaders; every failure is one ``DataFormatError`` line.

Each message names the file, the split, the key, what was expected and what was found, and the
fix (STYLE rule 14), for example::

    mosei_senti_data.pkl: split 'valid' has no key 'vision' (found: text, audio, labels, id);
    pass modalities=('text', 'audio') (--set 'data.modalities=[text, audio]') or use the 'gcnet' format

(printed on one line). Non-finite values follow MMSA and MulT: ``-inf`` in ``audio`` becomes 0
(COVAREP writes log(0) there) and the count is logged on ``logging.getLogger("pase.data")``; NaN,
``+inf``, or ``-inf`` in any other key is an error naming the sample id, unless ``sanitize=True``
(then those values become 0 and their counts are logged).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Tuple

import numpy as np
from ..io import user_path

__all__ = ["DataFormatError", "LOGGER", "require_splits", "require_keys", "as_array", "check_rows",
           "check_dims", "fix_non_finite", "check_label_range", "check_class_labels",
           "check_unique_ids", "clip_lengths", "to_str", "infer_dataset", "is_rows", "require_rows", "require_file",
           "check_sequences", "cast_checked", "refuse_flag_labels", "check_split_widths"]

LOGGER = logging.getLogger("pase.data")

#: the splits every source must provide
SPLITS = ("train", "valid", "test")


class DataFormatError(ValueError):
    """A data file does not have the documented layout; the message is one line with the fix."""


def _where(file: str, split: Optional[str]) -> str:
    return f"{file}: split {split!r}" if split is not None else f"{file}:"


def _join(names) -> str:
    return ", ".join(str(n) for n in names) or "nothing"


#: what other toolkits call a split, for the error that asks for the layout's name
_SPLIT_ALIASES = {"valid": ("val", "dev", "validation", "Valid", "VALID"), "train": ("Train", "TRAIN", "training"),
                  "test": ("Test", "TEST", "testing")}


def require_splits(data: object, file: str, fmt: str, splits: Sequence[str] = SPLITS) -> None:
    """Check that ``data`` is a dict holding every split in ``splits``.

    Raises:
        DataFormatError: ``"f.pkl: no split 'valid' (found: train, test); ..."``.
    """
    if not isinstance(data, dict):
        raise DataFormatError(
            f"{file}: expected a dict of splits {tuple(splits)} ({fmt} layout), found "
            f"{type(data).__name__}; run `pase data inspect {file}` to see which format it is")
    for s in splits:
        if s not in data:
            alias = next((a for a in _SPLIT_ALIASES.get(s, ()) if a in data), None)
            fix = (f"it names it {alias!r}: rename that key to {s!r} (the {fmt} layout's name)" if alias is not None
                   else "re-export the file with all three splits")
            if s.encode() in data:  # as require_keys says one level down
                fix = f"it is stored as bytes {s.encode()!r}: re-save the file with str keys (Python 3)"
            raise DataFormatError(
                f"{file}: no split {s!r} (found: {_join(data)}); the {fmt} layout needs "
                f"{', '.join(map(repr, splits))}; {fix}")
        if not isinstance(data[s], dict):
            raise DataFormatError(
                f"{file}: split {s!r} is a {type(data[s]).__name__}, expected a dict of arrays "
                f"({fmt} layout)")


def require_keys(split_dict: Mapping, keys: Sequence[str], file: str, split: str,
                 modalities: Sequence[str] = (), other_format: str = "") -> None:
    """Check that ``split_dict`` holds ``keys``; a missing modality suggests dropping it.

    Args:
        keys: keys that must be present.
        modalities: the requested modality names (a missing one is suggested away).
        other_format: a format to suggest instead, for example "gcnet".
    """
    for k in keys:
        if k in split_dict:
            continue
        found = _join(split_dict)
        if k in modalities:
            keep = tuple(m for m in modalities if m in split_dict and m != k)
            fix = (f"pass modalities={keep!r} (--set 'data.modalities=[{', '.join(keep)}]')" if keep
                   else "pass the modalities the file holds (data.modalities)")
        else:
            fix = "re-export the file with this key"
        if k.encode() in split_dict:  # a pickle written by Python 2 keeps str keys as bytes
            fix = f"it is stored as bytes {k.encode()!r}: re-save the file with str keys (Python 3)"
        elif other_format:
            fix += f" or use the {other_format!r} format"
        raise DataFormatError(f"{file}: split {split!r} has no key {k!r} (found: {found}); {fix}")


def to_str(value: object) -> str:
    """A sample id as ``str``: bytes are decoded as UTF-8, numpy scalars unwrapped."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def is_rows(value: object) -> bool:
    """True for a list, tuple, set or array of rows; False for None, a scalar, a string or a 0-d array."""
    scalar = isinstance(value, (str, bytes)) or (isinstance(value, np.ndarray) and value.ndim == 0)
    return not scalar and hasattr(value, "__len__")


def require_rows(value: object, file: str, split: str, key: str) -> None:
    """``value`` is a sequence or array of rows (N, ...), not None, a scalar or a string.

    Raises:
        DataFormatError: ``"f.pkl: split 'train', key 'id' is int 7, expected one row per sample ..."``.
    """
    if not is_rows(value):
        raise DataFormatError(
            f"{file}: split {split!r}, key {key!r} is {type(value).__name__} {to_str(value)[:30]}, "
            f"expected one row per sample (a list or an (N, ...) array); re-export the file with one "
            f"{key!r} entry per sample")


def as_array(value: object, file: str, split: str, key: str, dtype=np.float32) -> np.ndarray:
    """``value`` as a dense array of ``dtype``; ragged rows raise with the fix.

    Raises:
        DataFormatError: ``"f.pkl: split 'train', key 'audio' is ragged ...; pad it to (N, T, D)"``;
            also for None, a scalar (``require_rows``), text that is not a number (a string array or
            an object array of strings) or a finite value beyond the range of ``dtype``.
    """
    require_rows(value, file, split, key)
    arr = None
    where = f"{file}: split {split!r}, key {key!r}"
    try:
        arr = np.asarray(value)
        if arr.dtype == object:  # rows stored one by one: each is cast on its own
            return np.stack([cast_checked(np.asarray(v), dtype, f"{where} (row {i})") for i, v in enumerate(arr)])
        return cast_checked(arr, dtype, where)
    except DataFormatError:
        raise
    except (ValueError, TypeError) as exc:
        if arr is not None and (arr.dtype.kind in "US" or _holds_text(arr)):  # text that is not a number
            flat = arr.reshape(-1)
            bad = next((to_str(v) for v in flat if not _is_number(v)), to_str(flat[0]))
            raise DataFormatError(
                f"{file}: split {split!r}, key {key!r} holds text such as {bad[:30]!r}, "
                f"expected {np.dtype(dtype).name} numbers; re-export the file with numeric arrays") from None
        shapes = sorted({np.shape(v) for v in value}, key=str)[:3] if hasattr(value, "__iter__") else []
        raise DataFormatError(
            f"{file}: split {split!r}, key {key!r} is ragged or not numeric (row shapes include "
            f"{shapes}; {type(exc).__name__}); pad it to one (N, T, D) {np.dtype(dtype).name} array"
        ) from None


def cast_checked(arr: np.ndarray, dtype, where: str) -> np.ndarray:
    """``arr.astype(dtype)``, but a finite value beyond the range of ``dtype`` (float64 1e39 as
    float32) raises instead of silently becoming inf; ``where`` starts the message.

    Raises:
        DataFormatError: ``"f.pkl: split 'valid', key 'vision' holds 1e+39 at index (1, 0, 0) (1 such
            values), beyond the range of float32 (about ±3.4e+38): ..."``.
    """
    with np.errstate(over="raise"):
        try:
            return arr.astype(dtype, copy=False)
        except FloatingPointError:
            pass
    try:  # only on this error path; an object array of numbers first becomes float64
        arr = np.asarray(arr, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise DataFormatError(f"{where} is not numeric or holds a value beyond float64; fix that feature in the "
                              "file") from None
    big = np.isfinite(arr) & (np.abs(arr) > np.finfo(dtype).max)
    idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(big)), arr.shape))
    raise DataFormatError(
        f"{where} holds {float(arr[idx]):g} at index {idx} ({int(big.sum())} such values), beyond the range "
        f"of {np.dtype(dtype).name} (about ±{float(np.finfo(dtype).max):.3g}): loaded, it would become inf; "
        f"rescale or fix that feature in the file")


def _holds_text(arr: np.ndarray) -> bool:
    """An object array with a string among its entries (labels pickled as Python strings)."""
    return arr.dtype == object and any(isinstance(v, (str, bytes)) for v in arr.reshape(-1))


def _is_number(value: object) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def check_rows(arrays: Mapping[str, object], file: str, split: str) -> int:
    """Every value has the same number N >= 1 of rows; returns N.

    Raises:
        DataFormatError: naming both keys and their shapes, or the empty split.
    """
    items = list(arrays.items())
    for k, v in items:
        require_rows(v, file, split, k)
    ref_key, ref = items[0]
    n = len(ref)
    for k, v in items[1:]:
        if len(v) != n:
            raise DataFormatError(
                f"{file}: split {split!r}: key {k!r} has {len(v)} rows (shape {np.shape(v)}) but "
                f"{ref_key!r} has {n} (shape {np.shape(ref)}); every key needs one row per sample")
    if n == 0:
        raise DataFormatError(f"{file}: split {split!r} is empty (0 samples in {', '.join(arrays)}); "
                              "every split needs at least one sample, re-export the file")
    return n


def check_sequences(x: np.ndarray, file: str, split: str, key: str, layout: str = "(N, T, D)") -> None:
    """``x`` is 3-D with at least one step and one feature (T >= 1, D >= 1).

    Raises:
        DataFormatError: naming the key, its shape and the empty axis.
    """
    if x.ndim != 3:
        raise DataFormatError(f"{file}: split {split!r}, key {key!r} has shape {x.shape}, expected {layout}")
    if 0 in x.shape[1:]:
        axis = "no time steps (T = 0)" if x.shape[1] == 0 else "no features (D = 0)"
        raise DataFormatError(
            f"{file}: split {split!r}, key {key!r} has shape {x.shape}: {axis}; re-export the file with "
            f"that modality's features, or leave it out (modalities=...)")


def check_dims(features: Mapping[str, np.ndarray], expected: Optional[Mapping[str, int]],
               file: str, split: str) -> None:
    """Feature widths D_m equal ``expected[m]`` where given."""
    for m, d in (expected or {}).items():
        if m in features and features[m].shape[-1] != d:
            raise DataFormatError(
                f"{file}: split {split!r}: modality {m!r} has width {features[m].shape[-1]} "
                f"(shape {features[m].shape}) but {d} was configured; fix expected_dims or the file")


#: elements per chunk of the finiteness check (a 16 MiB bool mask at most)
_FINITE_CHUNK = 1 << 24


def row_chunks(arr: np.ndarray) -> Iterable[np.ndarray]:
    """``arr`` (N, ...) as slices of whole rows of about ``_FINITE_CHUNK`` elements (one row at
    least), so a check's temporaries stay small on a MOSEI-sized array; a small one whole."""
    if arr.ndim == 0 or arr.size <= _FINITE_CHUNK:
        return [arr]
    rows = max(1, _FINITE_CHUNK // max(1, arr.size // len(arr)))
    return (arr[i:i + rows] for i in range(0, len(arr), rows))


def _all_finite(arr: np.ndarray) -> bool:
    """``np.isfinite(arr).all()`` over row chunks, so the temporary mask stays small (loading a
    MOSEI-sized array no longer holds a bool copy of it)."""
    return all(bool(np.isfinite(c).all()) for c in row_chunks(arr))


def fix_non_finite(arr: np.ndarray, file: str, split: str, key: str, ids: Sequence[str],
                   sanitize: bool = False, neg_inf_to_zero: bool = False) -> np.ndarray:
    """Replace or reject non-finite values in ``arr`` (N, ...) float; returns the fixed array.

    ``-inf`` becomes 0 (logged) when ``neg_inf_to_zero`` (audio, as MMSA/MulT do). Other
    non-finite values raise, or become 0 (logged) when ``sanitize``.

    Raises:
        DataFormatError: naming the file, split, key and the first bad sample id.
    """
    if _all_finite(arr):
        return arr  # the common case, checked in row chunks: no mask of the whole array
    bad = ~np.isfinite(arr)
    arr = arr.copy()
    if neg_inf_to_zero:
        neg = np.isneginf(arr)
        if neg.any():
            arr[neg] = 0.0
            LOGGER.info("%s: split %r, key %r: set %d -inf values to 0 (as MMSA and MulT do)",
                        file, split, key, int(neg.sum()))
            bad &= ~neg
            if not bad.any():
                return arr
    n_nan, n_pos, n_neg = (int(f(arr[bad]).sum()) for f in (np.isnan, np.isposinf, np.isneginf))
    counts = f"{n_nan} NaN, {n_pos} +inf, {n_neg} -inf"
    if not sanitize:
        row = int(np.argwhere(bad.reshape(len(arr), -1).any(axis=1))[0, 0])
        first = float(arr[row][bad[row]].ravel()[0])  # the row's first bad value: -inf is named so (it was "inf")
        kind = "NaN" if np.isnan(arr[row]).any() else "-inf" if first < 0 else "inf"
        raise DataFormatError(
            f"{file}: split {split!r}, key {key!r}: {kind} at sample {ids[row]!r} (row {row}; "
            f"{counts} in the split); fix the file or pass sanitize=True "
            "(--set data.options.sanitize=true) to set them to 0")
    arr[bad] = 0.0
    LOGGER.warning("%s: split %r, key %r: sanitize=True set %s values to 0", file, split, key, counts)
    return arr


def refuse_flag_labels(value: object, file: str, split: str, key: str) -> None:
    """Sentiment scores stored as True / False (binarised labels, or the wrong key) are refused:
    they would load as scores 0 and 1."""
    if np.asarray(value).dtype == bool:
        raise DataFormatError(f"{file}: split {split!r}, key {key!r} holds True/False values, not sentiment scores; "
                              "store the real-valued labels (binarised labels cannot give MAE, Corr or Acc-7)")


def check_split_widths(feats: Mapping[str, Mapping[str, np.ndarray]], file: str) -> None:
    """Every split has the train split's feature width per modality (``feats``: split -> modality ->
    (N, T, D)); the message names the split, the key, its shape and the train width."""
    train = feats.get("train", {})
    for split, mods in feats.items():
        for m, x in mods.items():
            if m in train and x.shape[-1] != train[m].shape[-1]:
                raise DataFormatError(f"{file}: split {split!r}, key {m!r} has width {x.shape[-1]} (shape "
                                      f"{tuple(x.shape)}) but split 'train' has {train[m].shape[-1]}; the splits "
                                      "come from different feature extractions: re-export the file")


def check_label_range(labels: np.ndarray, low: float, high: float, file: str, split: str,
                      ids: Sequence[str], fix: str, key: Optional[str] = None) -> None:
    """Regression labels (N,) are finite and within [low, high]. A non-finite one is named as NaN / +inf / -inf,
    without ``fix`` (a dataset hint: a NaN label was "outside [-3, 3]; check the file and dataset=", a review).
    ``key``: the file's key, named in the message (default: the target's, not named)."""
    where = f"{file}: split {split!r}" + (f", key {key!r}" if key else "")
    flat = labels.reshape(len(labels), -1)
    nonfinite = ~np.isfinite(flat)
    if nonfinite.any():
        row = int(np.argwhere(nonfinite.any(axis=1))[0, 0])
        value = float(flat[row][nonfinite[row]][0])
        what = "NaN (not a number)" if np.isnan(value) else "+inf" if value > 0 else "-inf"
        raise DataFormatError(
            f"{where}: the label of sample {ids[row]!r} is {what} ({int(nonfinite.any(axis=1).sum())} "
            "such samples); every label must be a finite number: fix the file")
    bad = (flat < low) | (flat > high)
    if bad.any():
        row = int(np.argwhere(bad.any(axis=1))[0, 0])
        raise DataFormatError(
            f"{where}: label {float(flat[row][bad[row]][0]):g} of sample {ids[row]!r} is "
            f"outside [{low:g}, {high:g}] ({int(bad.any(axis=1).sum())} such samples); {fix}")


def check_class_labels(labels: np.ndarray, num_classes: int, file: str, split: str,
                       ids: Sequence[str], fix: str) -> np.ndarray:
    """Class labels are integers in [0, K); returns them as int64. ``fix`` (check the dataset, its K) ends the
    message only for an integer >= K; NaN, a fraction or a negative value asks for an integer class index."""
    lab = np.asarray(labels, dtype=np.float64)
    bad = ~np.isfinite(lab) | (lab != np.round(lab)) | (lab < 0) | (lab >= num_classes)
    if bad.any():
        flat, bad = lab.reshape(len(lab), -1), bad.reshape(len(lab), -1)
        row = int(np.argwhere(bad.any(axis=1))[0, 0])
        value = float(flat[row][bad[row]][0])
        too_large = np.isfinite(value) and value == round(value) and value >= num_classes
        fix = fix if too_large else "expected an integer class index: fix that label in the file"
        raise DataFormatError(f"{file}: split {split!r}: label {value:g} of sample {ids[row]!r} is not a class "
                              f"index in [0, {num_classes}); {fix}")
    return lab.astype(np.int64)


def check_unique_ids(ids: Sequence[str], file: str, split: str, key: str = "id") -> None:
    """Sample ids are unique within the split; ``key`` names where the file keeps them."""
    seen: dict = {}
    for i, s in enumerate(ids):
        if s in seen:
            raise DataFormatError(
                f"{file}: split {split!r}: sample id {s!r} occurs more than once (rows {seen[s]} "
                f"and {i}); ids must be unique, fix the file's {key!r} entries")
        seen[s] = i


def check_disjoint_splits(splits: Mapping[str, Any], file: str) -> None:
    """No sample id sits in two splits (``splits``: split name -> dataset with ``ids``, or the ids
    themselves): a test sample that is also a training sample leaks its label into the score."""
    ids = {s: getattr(d, "ids", d) for s, d in splits.items()}
    names = list(ids)
    for k, a in enumerate(names):
        seen = set(ids[a])
        for b in names[k + 1:]:
            both = seen.intersection(ids[b])
            if both:
                raise DataFormatError(
                    f"{file}: {len(both)} sample id(s) occur in both split {a!r} and split {b!r} (for example "
                    f"{sorted(both)[0]!r}); a sample in two splits leaks its label across them: remove it from one")


def clip_lengths(lengths: object, steps: int, file: str, split: str, key: str) -> np.ndarray:
    """Stored lengths (N,) clipped to [1, T]; the number clipped is logged.

    Raises:
        DataFormatError: the lengths are not (N,) or (N, 1), or one is NaN / inf.
    """
    raw = as_array(lengths, file, split, key, dtype=np.float64)
    if raw.size != len(raw):
        raise DataFormatError(f"{file}: split {split!r}, key {key!r} has shape {raw.shape}, expected (N,) "
                              f"one length per sample; fix the file or delete the key (every step then counts)")
    if not np.isfinite(raw).all():
        row = int(np.argwhere(~np.isfinite(raw.reshape(-1)))[0, 0])
        raise DataFormatError(f"{file}: split {split!r}, key {key!r}: length {raw.reshape(-1)[row]} at row "
                              f"{row}; lengths must be finite step counts, fix the file or delete the key")
    flat = raw.reshape(-1)
    frac = np.flatnonzero(flat != np.round(flat))
    if frac.size:  # a count with a fraction was truncated silently
        raise DataFormatError(f"{file}: split {split!r}, key {key!r}: length {flat[frac[0]]:g} at row {int(frac[0])} "
                              f"is not a whole number of steps ({frac.size} such rows); fix the file or delete the key")
    ln = flat.astype(np.int64)
    if (ln < 0).any():
        row = int(np.flatnonzero(ln < 0)[0])
        raise DataFormatError(f"{file}: split {split!r}, key {key!r}: length {ln[row]} at row {row} is negative "
                              f"({int((ln < 0).sum())} such rows); fix the file or delete the key")
    clipped = np.clip(ln, 1, steps)
    n = int((clipped != ln).sum())
    if n:
        over = int((ln > steps).sum())
        row = int(np.flatnonzero(clipped != ln)[0])
        # lengths past the stored steps: counted at another frame rate, or another key's, or frames cut from the
        # file: a warning for any (a review: 14 of 30 past T was an INFO note), the frame-rate question for most
        level, hint = ((logging.WARNING, "; most exceed the stored steps: are they counted at another frame rate? "
                        "check the key") if over > len(ln) / 2 else
                       (logging.WARNING, f"; {over} exceed the stored steps: check the key") if over else
                       (logging.INFO, ""))
        LOGGER.log(level, "%s: split %r, key %r: clipped %d of %d lengths to [1, %d] (for example %d at row %d)%s",
                   file, split, key, n, len(ln), steps, ln[row], row, hint)
    return clipped


def infer_dataset(path: str | Path, patterns: Sequence[Tuple[str, str]], arg: str = "dataset") -> str:
    """The first dataset whose regex matches the file name, then each parent folder name.

    Args:
        patterns: (dataset, regex) pairs, tried in order, case-insensitively.

    Raises:
        DataFormatError: when nothing matches; the message lists the valid names.
    """
    p = Path(path)
    for part in [p.name] + [q.name for q in p.parents]:
        for name, rx in patterns:
            if re.search(rx, part, flags=re.IGNORECASE):
                return name
    valid = ", ".join(dict.fromkeys(n for n, _ in patterns))
    raise DataFormatError(f"{p.name}: cannot tell the dataset from the path; set data.options.{arg} (pase data "
                          f"inspect: --{arg}; Python: {arg}=) to one of {valid}")


def resolve_source(path: str | Path, dataset: Optional[str], modalities: Sequence[str],
                   valid_modalities: Sequence[str], patterns: Sequence[Tuple[str, str]],
                   valid_datasets: Sequence[str]) -> Tuple[Path, str]:
    """Check a loader's ``modalities`` and ``dataset`` arguments; returns (path, dataset name).

    The dataset is inferred from the file and folder names when not given.
    """
    if isinstance(modalities, str):
        raise ValueError(f"modalities={modalities!r} (data.options.modalities) must be a list, for example "
                         f"[text, audio]; choose from {tuple(valid_modalities)}")
    bad = [m for m in modalities if m not in valid_modalities]
    if bad or not modalities:
        raise ValueError(f"modalities={tuple(modalities)!r}; choose from {tuple(valid_modalities)}")
    if not str(path).strip():
        raise ValueError("data.path is empty; pass the data file, for example data.path=.../unaligned_50.pkl")
    p = user_path(path)
    require_file(p)
    return p, resolve_dataset(p, dataset, patterns, valid_datasets)


def require_file(path: Path) -> None:
    """A mistyped path, or a folder, is named as such before its name is read for a dataset (it
    was reported as a name without a dataset in it)."""
    if not path.exists():
        hint = " ('~' is expanded only at the start of a path)" if "~" in str(path) else ""
        raise FileNotFoundError(f"{path}: no such file; check the path (nothing is downloaded for you){hint}")
    if path.is_dir():
        from .safe_pickle import folder_error

        raise folder_error(path)


def resolve_dataset(path: Path, dataset: Optional[str], patterns: Sequence[Tuple[str, str]],
                    valid_datasets: Sequence[str], hint: str = "") -> str:
    """``dataset`` (any case), or the name inferred from ``path`` when None, checked against the
    format's datasets; ``hint`` ends the error message (how to pass one)."""
    name = dataset.lower() if dataset else infer_dataset(path, patterns)
    if name not in valid_datasets:
        raise ValueError(f"dataset={name!r}; valid: {', '.join(valid_datasets)}{hint}")
    return name
