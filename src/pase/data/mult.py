"""MulT pickles (``mosi_data.pkl``, ``mosei_senti_data.pkl``, ``iemocap_data.pkl``, ``*_noalign.pkl``).

Layout (yaohungt/Multimodal-Transformer ``src/dataset.py``): a dict with "train", "valid", "test";
each split holds ``text`` (N, T, 300) GloVe, ``audio`` (N, T_a, D_a) COVAREP, ``vision``
(N, T_v, D_v) Facet, ``labels`` and, optionally, ``id``:

* MOSI / MOSEI: ``labels`` (N, 1, 1) float sentiment in [-3, 3] -> regression target (N,);
* IEMOCAP: ``labels`` (N, 4, 2), one (no, yes) one-hot pair per emotion in the order neutral,
  happy, sad, angry -> multi-label target (N, 4) = argmax of each pair (as MulT does);
* ``id``: (N, 3) rows (video, start, end; also read as (N, 1, 3)), often bytes, or (N,)
  strings; they become unique strings ``video$_$start_end`` (a duplicate gets ``#row``
  appended, logged).

As MulT does, ``-inf`` in audio becomes 0. MulT pads sequences and stores no lengths, so every
step counts (length T).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .contract import DataBundle, MultimodalDataset, TaskSpec
from .folds import clip_order_key, group_positions, parse_clip_id
from .registry import register_data
from .safe_pickle import safe_load_pickle
from .validate import (LOGGER, SPLITS, DataFormatError, as_array, check_dims, check_disjoint_splits,
                       check_label_range, check_rows, check_sequences, check_split_widths, fix_non_finite, is_rows,
                       infer_dataset, refuse_flag_labels, require_keys, require_splits, resolve_source, to_str)

__all__ = ["load_mult", "MULT_DATASETS", "IEMOCAP_EMOTIONS"]

IEMOCAP_EMOTIONS = ("neutral", "happy", "sad", "angry")
#: dataset -> its task
MULT_DATASETS = {
    "mosi": TaskSpec(kind="regression", num_classes=1, protocol="mosi", label_range=(-3.0, 3.0)),
    "mosei": TaskSpec(kind="regression", num_classes=1, protocol="mosei", label_range=(-3.0, 3.0)),
    "iemocap": TaskSpec(kind="multilabel", num_classes=4, protocol="iemocap_mult",
                        class_names=IEMOCAP_EMOTIONS),
}
_NAME_PATTERNS = (("iemocap", r"iemocap"), ("mosei", r"mosei"), ("mosi", r"mosi"))
_MODALITIES = ("text", "audio", "vision")


def _id_array(value: object, file: str, split: str) -> np.ndarray:
    """The ``id`` entries as one array: (N,) strings or (N, 3) rows (also an object array of rows).

    Raises:
        DataFormatError: rows of different lengths, naming the file, split and key.
    """
    try:
        raw = np.asarray(value)
        if raw.dtype == object and raw.ndim == 1 and len(raw) and all(is_rows(r) for r in raw):
            raw = np.asarray(raw.tolist())  # an object array of equal (video, start, end) rows -> (N, 3)
        return raw
    except ValueError:
        sizes = sorted({len(r) if is_rows(r) else 1 for r in value})
        raise DataFormatError(
            f"{file}: split {split!r}, key 'id' has rows of different lengths ({', '.join(map(str, sizes))} "
            f"entries); expected (N, 3) rows (video, start, end) or (N,) strings, fix the file's 'id' "
            f"entries or delete the key (ids then become {split}_0, {split}_1, ...)") from None


def _ids(split_dict: Mapping, n: int, file: str, split: str
         ) -> Tuple[List[str], Optional[List[str]], Optional[List[tuple]]]:
    """(ids, videos, order keys) of one split; videos / keys are None when the file has no ids."""
    if "id" not in split_dict:
        return [f"{split}_{i}" for i in range(n)], None, None
    raw = _id_array(split_dict["id"], file, split)
    if raw.ndim > 2 and all(d == 1 for d in raw.shape[1:-1]):  # (N, 1, 3): the meta rows with a singleton axis
        raw = raw.reshape(len(raw), raw.shape[-1])
    if raw.ndim == 2 and raw.shape[1] >= 2:  # (N, 3) meta rows: video, start, end
        rows = [[to_str(x) for x in r] for r in raw]
        videos = [r[0] for r in rows]
        ids = [f"{r[0]}$_${'_'.join(r[1:])}" for r in rows]
        keys = [clip_order_key(r[1]) for r in rows]
    else:
        ids = [to_str(x) for x in raw.reshape(len(raw), -1)[:, 0]]
        clips = [parse_clip_id(i) for i in ids]
        videos = [v for v, _ in clips]
        keys = [clip_order_key(c) for _, c in clips]
    return ids, videos, keys


def _unique_ids(ids: List[str], file: str, split: str) -> List[str]:
    """``ids`` with ``#row`` appended to those that occur more than once in this split (logged).
    Applied after the cross-split check, which the suffix would hide (a review: a segment twice in
    train and once in test loaded as 'id#0', 'id#1' and 'id', no leak reported)."""
    counts = Counter(ids)
    dup = {i for i, c in counts.items() if c > 1}
    if not dup:
        return ids
    LOGGER.warning("%s: split %r: %d ids occur more than once (for example %r); appended '#row' "
                   "to make them unique", file, split, len(dup), sorted(dup)[0])
    return [f"{i}#{row}" if i in dup else i for row, i in enumerate(ids)]


def _iemocap_target(labels: np.ndarray, file: str, split: str, ids: Sequence[str]) -> np.ndarray:
    """(N, 4, 2) one-hot pairs (or (N, 4) 0/1) -> (N, 4) int64."""
    e = len(IEMOCAP_EMOTIONS)
    if labels.shape[1:] in ((e,), (e, 1)):
        pairs = None
        target = labels.reshape(len(labels), e)
    elif labels.shape[1:] == (e, 2):
        pairs = labels
        target = labels.argmax(axis=-1)
    else:
        raise DataFormatError(
            f"{file}: split {split!r}: 'labels' has shape {labels.shape}, expected (N, 4, 2) one-hot "
            f"pairs per emotion ({', '.join(IEMOCAP_EMOTIONS)}); if this is not the IEMOCAP file, pass "
            f"dataset='mosi' or dataset='mosei'")
    ok = np.isin(labels, (0.0, 1.0)).reshape(len(labels), -1).all(axis=1)
    if pairs is not None:
        ok &= (pairs.sum(axis=-1) == 1).all(axis=1)
    if not ok.all():
        row = int(np.argwhere(~ok)[0, 0])
        raise DataFormatError(
            f"{file}: split {split!r}: labels of sample {ids[row]!r} are not one-hot (no, yes) pairs "
            f"per emotion (got {labels[row].tolist()}); fix the file")
    return target.astype(np.int64)


def _split(split_dict: Mapping, file: str, split: str, dataset: str, modalities: Sequence[str],
           sanitize: bool, expected_dims: Optional[Mapping[str, int]]):
    """Validated (features, target, ids, videos, order keys) of one split."""
    # the format the keys found point to: MMSA's splits hold regression_labels, GCNet's pickles videoIDs
    other = "mmsa" if "regression_labels" in split_dict else "gcnet" if "videoIDs" in split_dict else ""
    require_keys(split_dict, list(modalities) + ["labels"], file, split, modalities=modalities, other_format=other)
    labels = as_array(split_dict["labels"], file, split, "labels")
    feats: Dict[str, np.ndarray] = {m: as_array(split_dict[m], file, split, m) for m in modalities}
    check_rows({"labels": labels, **feats, **({"id": split_dict["id"]} if "id" in split_dict else {})},
               file, split)
    ids, videos, keys = _ids(split_dict, len(labels), file, split)
    for m, x in feats.items():
        check_sequences(x, file, split, m)
        feats[m] = fix_non_finite(x, file, split, m, ids, sanitize, neg_inf_to_zero=(m == "audio"))
    check_dims(feats, expected_dims, file, split)
    if dataset == "iemocap":
        target = _iemocap_target(labels, file, split, ids)
    else:
        if labels.reshape(len(labels), -1).shape[1] != 1:
            raise DataFormatError(
                f"{file}: split {split!r}: 'labels' has shape {labels.shape}, expected (N, 1, 1) "
                f"sentiment scores; for IEMOCAP (N, 4, 2) pass dataset='iemocap'")
        refuse_flag_labels(split_dict["labels"], file, split, "labels")
        target = labels.reshape(-1)
        check_label_range(target, -3.0, 3.0, file, split, ids,
                          fix="MOSI/MOSEI sentiment lies in [-3, 3]; check the file and dataset=")
    return feats, target, ids, videos, keys


def _from_raw(raw: object, file: str, dataset: str, modalities: Sequence[str] = _MODALITIES,
              sanitize: bool = False, expected_dims: Optional[Mapping[str, int]] = None) -> DataBundle:
    """Build the bundle from an already unpickled MulT dict (``inspect`` reuses this)."""
    require_splits(raw, file, "MulT")
    parts = {s: _split(raw[s], file, s, dataset, modalities, sanitize, expected_dims) for s in SPLITS}
    check_split_widths({s: parts[s][0] for s in SPLITS}, file)
    have_ids = all(parts[s][3] is not None for s in SPLITS)
    gp = group_positions({s: parts[s][3] for s in SPLITS},
                         {s: parts[s][4] for s in SPLITS}) if have_ids else {}
    check_disjoint_splits({s: parts[s][2] for s in SPLITS}, file)  # before the '#row' suffixes
    splits = {}
    for s in SPLITS:
        feats, target, ids, _, _ = parts[s]
        groups, positions = gp.get(s, (None, None))
        splits[s] = MultimodalDataset(feats, target, _unique_ids(ids, file, s), groups=groups,
                                      positions=positions, split=s)
    info = {"format": "mult", "dataset": dataset, "file": file, "aligned": "noalign" not in file,
            "split_rule": "the file's train/valid/test", "published_sha256": "none published"}
    return DataBundle(name=f"{dataset}_mult", task=MULT_DATASETS[dataset], splits=splits, info=info)


@register_data("mult")
def load_mult(path: str | Path, dataset: Optional[str] = None,
              modalities: Sequence[str] = _MODALITIES, sanitize: bool = False,
              expected_dims: Optional[Mapping[str, int]] = None) -> DataBundle:
    """Read a MulT pickle into a ``DataBundle``.

    Args:
        path: the pickle (read only, through ``safe_load_pickle``).
        dataset: "mosi", "mosei" or "iemocap"; None infers it from the file name.
        modalities: which of "text", "audio", "vision" to load.
        sanitize: set NaN / inf (other than audio -inf, always 0) to 0 instead of raising.
        expected_dims: optional modality -> D_m that the file must match.

    Returns:
        ``DataBundle`` "<dataset>_mult". MOSI / MOSEI: regression, target (N,), protocol "mosi" /
        "mosei". IEMOCAP: multilabel, target (N, 4) in {0, 1}, protocol "iemocap_mult".
        Inputs (N, T_m, D_m); groups / positions from the ids when the file has them.

    Raises:
        DataFormatError: any layout problem, in one line naming file, split and key.
        UnsafePickleError: the file names a global outside the allow-list.
    """
    p, dataset = resolve_source(path, dataset, modalities, _MODALITIES, _NAME_PATTERNS, MULT_DATASETS)
    bundle = _from_raw(safe_load_pickle(p), p.name, dataset, tuple(modalities), sanitize, expected_dims)
    bundle.info["file"] = str(p)
    return bundle


def task_kind(path: str | Path = "", dataset: Optional[str] = None, **_) -> Optional[str]:
    """The kind of task ``load_mult`` loads (MOSI / MOSEI regression, IEMOCAP multilabel), from
    ``dataset`` or the file name, reading no file; None when neither tells (``source_task_kind``)."""
    name = dataset.lower() if dataset else infer_dataset(Path(path), _NAME_PATTERNS)
    return MULT_DATASETS[name].kind if name in MULT_DATASETS else None


load_mult.task_kind = task_kind  # read by pase compare before anything is written
