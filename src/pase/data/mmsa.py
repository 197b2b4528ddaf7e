"""MMSA feature pickles (``aligned_50.pkl``, ``unaligned_50.pkl``, ``unaligned_39.pkl``).

Layout (thuiar/MMSA README, ``src/MMSA/data_loader.py``): a dict with "train", "valid", "test";
each split holds, for N samples,

* ``text`` (N, L, 768) BERT features, ``text_bert`` (N, 3, L) token ids / mask / segment ids;
* ``audio`` (N, T_a, D_a), ``vision`` (N, T_v, D_v); ``audio_lengths``, ``vision_lengths`` (N,);
* ``id`` (N,) ``video$_$clip``; ``raw_text``; ``annotations``; ``classification_labels``;
* ``regression_labels`` (N,) in [-3, 3] (MOSI, MOSEI) or [-1, 1] (SIMS, SIMS v2), and for SIMS
  also the unimodal ``regression_labels_T`` / ``_A`` / ``_V``.

As MMSA does, ``-inf`` in audio becomes 0. Text lengths come from the ``text_bert`` mask;
audio and vision aligned to the text (as many steps as it, in an ``aligned*`` file or without
their own ``*_lengths``) take the text lengths, as MMSA's aligned models do, otherwise their
``*_lengths`` (else every step counts). A length key must be
in every split or in none. Groups are videos, positions the clip order inside each video.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from ..io import sha256_file
from .contract import DataBundle, MultimodalDataset, TaskSpec
from .folds import clip_order_key, group_positions, parse_clip_id
from .registry import register_data
from .safe_pickle import safe_load_pickle
from .validate import (LOGGER, SPLITS, DataFormatError, as_array, check_dims, check_disjoint_splits,
                       check_label_range, check_rows, check_sequences, check_split_widths, resolve_source,
                       check_unique_ids, clip_lengths, fix_non_finite, is_rows, refuse_flag_labels, require_keys,
                       require_rows, require_splits, to_str)

__all__ = ["load_mmsa", "MMSA_DATASETS", "PUBLISHED_SHA256"]

#: dataset -> (metric protocol, label range)
MMSA_DATASETS = {
    "mosi": ("mosi", (-3.0, 3.0)),
    "mosei": ("mosei", (-3.0, 3.0)),
    "sims": ("sims", (-1.0, 1.0)),
    "simsv2": ("sims", (-1.0, 1.0)),
}
_NAME_PATTERNS = (("simsv2", r"sims[-_ ]?v2"), ("sims", r"sims"), ("mosei", r"mosei"),
                  ("mosi", r"mosi"))
#: published feature widths (text, audio, vision); a different width is logged, not refused
_KNOWN_DIMS = {"mosi": {"audio": 5, "vision": 20}, "mosei": {"audio": 74, "vision": 35},
               "sims": {"audio": 33, "vision": 709}, "simsv2": {"audio": 25, "vision": 177}}
#: SHA-256 of the feature files, as published in the thuiar/MMSA README ("Datasets")
PUBLISHED_SHA256 = {
    ("mosi", "unaligned_50.pkl"): "78e0f8b5ef8ff71558e7307848fc1fa929ecb078203f565ab22b9daab2e02524",
    ("mosi", "aligned_50.pkl"): "d3994fd25681f9c7ad6e9c6596a6fe9b4beb85ff7d478ba978b124139002e5f9",
    ("mosei", "unaligned_50.pkl"): "ad8b23d50557045e7d47959ce6c5b955d8d983f2979c7d9b7b9226f6dd6fec1f",
    ("mosei", "aligned_50.pkl"): "45eccfb748a87c80ecab9bfac29582e7b1466bf6605ff29d3b338a75120bf791",
    ("sims", "unaligned_39.pkl"): "c9e20c13ec0454d98bb9c1e520e490c75146bfa2dfeeea78d84de047dbdd442f",
}
#: SIMS's per-modality labels: carried in ``dataset.extra`` and checked as the target, but no method uses them
_UNIMODAL_LABELS = ("regression_labels_T", "regression_labels_A", "regression_labels_V")
_EXTRA_KEYS = _UNIMODAL_LABELS + ("classification_labels", "raw_text", "annotations")
_MODALITIES = ("text", "audio", "vision")


def _bert(split_dict: Mapping, text: str, file: str, split: str) -> Optional[np.ndarray]:
    """``text_bert`` (N, 3, L) as an array, or None when absent. With text="features" it is optional:
    a malformed one (not numeric, ragged, not (N, 3, L)) is ignored (logged) and every text step counts."""
    if "text_bert" not in split_dict:
        return None
    try:
        bert = as_array(split_dict["text_bert"], file, split, "text_bert")
        if bert.ndim != 3 or bert.shape[1] != 3:
            raise DataFormatError(
                f"{file}: split {split!r}, key 'text_bert' has shape {bert.shape}, expected "
                f"(N, 3, L) token ids / mask / segment ids" + ("; use text='features'" if text == "bert" else ""))
    except DataFormatError as exc:
        if text == "bert":
            raise
        LOGGER.warning("%s; ignored (text='features' does not need it): every text step counts", exc)
        return None
    return bert


def _text(split_dict: Mapping, text: str, file: str, split: str):
    """The text modality (N, L, D) and its lengths (N,) (from the ``text_bert`` mask when it fits)."""
    bert = _bert(split_dict, text, file, split)
    if text == "bert":
        x = np.ascontiguousarray(bert.transpose(0, 2, 1))  # (N, 3, L) -> (N, L, 3)
    else:
        x = as_array(split_dict["text"], file, split, "text")
    check_sequences(x, file, split, "text_bert" if text == "bert" else "text", "(N, L, D)")
    if bert is not None and bert.shape[2] != x.shape[1]:
        LOGGER.warning("%s: split %r, key 'text_bert' has %d tokens per sample (shape %s) but 'text' has %d "
                       "steps; its mask is ignored, every text step counts", file, split, bert.shape[2],
                       bert.shape, x.shape[1])
        bert = None
    if bert is None:
        return x, np.full(len(x), x.shape[1], dtype=np.int64)
    mask = bert[:, 1, :]
    binary = np.isin(mask, (0, 1))
    if not binary.all():
        row = int(np.flatnonzero(~binary.all(axis=1))[0])
        raise DataFormatError(f"{file}: split {split!r}, key 'text_bert': the attention mask (row 1 of "
                              f"(N, 3, L)) of sample row {row} holds values other than 0 and 1; it sets "
                              f"the text lengths, fix the file")
    gap = np.flatnonzero((mask[:, 1:] > mask[:, :-1]).any(axis=1))  # a 1 after a 0: not right-padded
    if gap.size:
        raise DataFormatError(f"{file}: split {split!r}, key 'text_bert': the attention mask (row 1 of (N, 3, L)) of "
                              f"sample row {int(gap[0])} has a 1 after a 0 ({gap.size} such samples; "
                              f"{mask[gap[0]].astype(int).tolist()[:12]}...): the text lengths are the masks' leading "
                              "ones, so the tokens must come first (right padding); re-pad the file's text right")
    lengths = mask.sum(axis=1).astype(np.int64)
    empty = int((lengths == 0).sum())
    if empty:
        LOGGER.warning("%s: split %r, key 'text_bert': %d samples have an all-zero attention mask (no tokens; "
                       "for example row %d); their text length is set to 1", file, split, empty,
                       int(np.argmax(lengths == 0)))
    return x, np.clip(lengths, 1, x.shape[1])


def _text_steps(split_dict: Mapping, feats: Mapping[str, np.ndarray]) -> Optional[int]:
    """L, the text's steps: from the loaded text, else from the stored ``text`` / ``text_bert`` array."""
    if "text" in feats:
        return int(feats["text"].shape[1])
    for key, axis in (("text", 1), ("text_bert", 2)):
        value = split_dict.get(key)
        if isinstance(value, np.ndarray) and value.ndim == 3:
            return int(value.shape[axis])
    return None


#: values read at a time by the left-padding check (64 MiB of float32)
_PAD_CHUNK = 1 << 24


def _check_right_padded(x: np.ndarray, lengths: np.ndarray, file: str, split: str, key: str,
                        ids: Sequence[str]) -> None:
    """Refuse ``x`` (N, T, D) when most padded samples (length L < T) look left-padded: zero at
    steps [0, T - L) and not zero somewhere in [L, T). MMSA's models read the first L steps as real.

    Only padded rows that are zero at step 0 can be left-padded, and only those are read in full
    (in row chunks), so a right-padded file costs one (N, D) read.

    Raises:
        DataFormatError: naming the file, split, key, how many samples look left-padded and the fix.
    """
    steps = x.shape[1]
    padded = np.flatnonzero(lengths < steps)
    cand = padded[~x[padded, 0].any(axis=1)]  # (P,) padded rows with an all-zero first step
    if 2 * len(cand) <= len(padded):
        return
    t = np.arange(steps)
    rows = max(1, _PAD_CHUNK // (steps * x.shape[2]))
    left = []
    for i in range(0, len(cand), rows):
        idx = cand[i:i + rows]
        nz = x[idx].any(axis=2)  # (B, T): steps with a non-zero feature
        ln = lengths[idx][:, None]
        lead_zero = ~(nz & (t < steps - ln)).any(axis=1)
        trail = (nz & (t >= ln)).any(axis=1)
        left.append(idx[lead_zero & trail])
    left = np.concatenate(left)
    if 2 * len(left) > len(padded):
        row = int(left[0])
        raise DataFormatError(
            f"{file}: split {split!r}, key {key!r}: {len(left)} of {len(padded)} padded samples are zero over "
            f"their first T - L steps and not zero after step L (T = {steps}; for example sample {ids[row]!r}, "
            f"L = {int(lengths[row])}): the data look left-padded, but '{key}_lengths' counts the real steps at "
            f"the start (as MMSA's models read it); re-pad each sample to the right (real steps first, zeros "
            f"after) or delete the '{key}_lengths' key (every step then counts). If the padding is not zeros, or "
            f"'{key}_lengths' counts fewer steps than are real, fix that instead")


def _check_lengths_not_short(x: np.ndarray, lengths: np.ndarray, file: str, split: str, key: str,
                             ids: Sequence[str]) -> None:
    """Refuse ``x`` (N, T, D), right-padded, when most padded samples are not zero at the step right
    after their length: ``*_lengths`` then counts fewer steps than are real, and the model would read
    only the first L (a quarter of the frames in a review's example). One (N, D) read."""
    padded = np.flatnonzero(lengths < x.shape[1])
    if not len(padded):
        return
    real = x[padded, lengths[padded]].any(axis=1)  # (P,): a non-zero feature at step L
    if 2 * int(real.sum()) > len(padded):
        row = int(padded[np.argmax(real)])
        raise DataFormatError(
            f"{file}: split {split!r}, key {key!r}: {int(real.sum())} of {len(padded)} padded samples are not zero at "
            f"the step right after their '{key}_lengths' (for example sample {ids[row]!r}, L = {int(lengths[row])}): "
            f"the lengths count fewer steps than are real, so the model would read only the first L; fix "
            f"'{key}_lengths' or delete it (every step then counts)")


def _check_lengths_not_long(x: np.ndarray, lengths: np.ndarray, file: str, split: str, key: str,
                            ids: Sequence[str]) -> None:
    """The mirror of :func:`_check_lengths_not_short`: refuse ``x`` (N, T, D), right-padded, when most samples
    with a real first step and L >= 9 have a zero tail over the last quarter of their length, all zero at steps
    floor(3L/4), floor(7L/8) and L - 1: ``*_lengths`` then count more steps than are real, and the model would
    read the zero padding as frames (a review's SIMS audio lengths counted at twice the frame rate loaded with a
    note; at twice the rate the last half of the counted steps is padding). It catches lengths that count 4/3 or
    more of the real steps; a smaller overcount, and clips shorter than 9 steps, are not told apart from real
    zero frames. One zero step, or two, is not enough: a real frame can be all zero (unvoiced audio, a vision
    frame without a face), and later reviews' files with correct lengths and one or two zero last frames in
    most clips (one of them with clips of 4 to 7 steps, where two probes met) were refused. Four (P, D) reads."""
    rows = np.flatnonzero(lengths >= 9)
    rows = rows[x[rows, 0].any(axis=1)]  # (P,): a non-zero first step (all-padding samples say nothing)
    if not len(rows):
        return
    n = lengths[rows]
    tail = np.ones(len(rows), dtype=bool)
    for step in (n - 1, (7 * n) // 8, (3 * n) // 4):  # three distinct steps for L >= 9
        tail[tail] = ~x[rows[tail], step[tail]].any(axis=1)
    if 2 * int(tail.sum()) > len(rows):
        row = int(rows[np.argmax(tail)])
        n_row = int(lengths[row])
        real = np.flatnonzero(x[row, :n_row].any(axis=1))  # one (L, D) read, for the message
        raise DataFormatError(
            f"{file}: split {split!r}, key {key!r}: {int(tail.sum())} of {len(rows)} samples (those with a real "
            f"first step and L >= 9) are zero over the last quarter of the steps their '{key}_lengths' counts "
            f"(zero at steps floor(3L/4), floor(7L/8) and L - 1; for example sample {ids[row]!r}, L = {n_row}, zero "
            f"from step {int(real[-1]) + 1} on): the lengths count more steps than are real (counted at another "
            f"frame rate?), so the model would read the zero padding as frames; fix '{key}_lengths' to count the "
            f"real steps at this key's frame rate")


def _aligned(file: str, split_dict: Mapping, m: str, x: np.ndarray, text_steps: Optional[int],
             word_lengths: Optional[np.ndarray], votes: Dict[str, bool]) -> bool:
    """Whether modality m (``x``: (N, T, D)) is read as aligned to the words, taking the text
    lengths: as many steps as the text, and a file named ``aligned*`` (MMSA's ``aligned_50.pkl``),
    or, in a file named neither ``aligned*`` nor ``unaligned*`` and without its own ``*_lengths``,
    features that are padding after the words (most padded samples zero at step L; otherwise
    borrowing the text lengths would drop real frames, so every step counts). That vote is taken on
    the first split asked (train) and kept in ``votes``, so every split reads m the same way."""
    if word_lengths is None or x.shape[1] != text_steps:
        return False
    name = Path(file).name
    if name.startswith("aligned"):
        return True
    if name.startswith("unaligned") or f"{m}_lengths" in split_dict:
        return False
    if m not in votes:
        padded = np.flatnonzero(word_lengths < x.shape[1])
        votes[m] = 2 * int(x[padded, word_lengths[padded]].any(axis=1).sum()) <= len(padded)
    return votes[m]


def _word_lengths(split_dict: Mapping, text_steps: Optional[int]) -> Optional[np.ndarray]:
    """The text lengths (N,) that aligned audio and vision take: the sums of the stored ``text_bert``
    mask (whether or not text is loaded), clipped to [1, L]; None without a usable mask (then
    ``*_lengths``, or every step, counts)."""
    bert = split_dict.get("text_bert")
    if isinstance(bert, np.ndarray) and bert.ndim == 3 and bert.shape[1] == 3 and bert.shape[2] == text_steps:
        mask = bert[:, 1, :]
        if np.isin(mask, (0, 1)).all():
            return np.clip(mask.sum(axis=1).astype(np.int64), 1, text_steps)
    return None


def _split(split_dict: Mapping, file: str, split: str, dataset: str, text: str,
           modalities: Sequence[str], sanitize: bool, expected_dims: Optional[Mapping[str, int]],
           votes: Dict[str, bool]):
    """Validated (features, lengths, labels, ids, extra) of one split; ``votes``: the file's
    aligned-or-not decisions (:func:`_aligned`), shared by its splits."""
    need = [("text_bert" if (m == "text" and text == "bert") else m) for m in modalities]
    require_keys(split_dict, need + ["regression_labels", "id"], file, split,
                 modalities=modalities, other_format="mult" if "labels" in split_dict else "")
    require_rows(split_dict["id"], file, split, "id")
    raw_ids = split_dict["id"]
    if isinstance(raw_ids, np.ndarray) and raw_ids.ndim == 2 and raw_ids.shape[1] == 1:
        raw_ids = raw_ids[:, 0]  # (N, 1): one id per row
    if isinstance(raw_ids, np.ndarray) and raw_ids.ndim != 1:
        raise DataFormatError(f"{file}: split {split!r}, key 'id' has shape {raw_ids.shape}, expected (N,) "
                              f"strings such as 'video$_$clip'; fix the file's 'id' entries")
    # optional keys: the text mask, and the lengths of the modalities loaded (those of a modality left
    # out are not read: a broken 'audio_lengths' stopped a load of text and vision)
    rows = {k: split_dict[k] for k in ["text_bert"] + [f"{m}_lengths" for m in modalities if m != "text"]
            if k in split_dict and (k != "text_bert" or is_rows(split_dict[k]))}
    check_rows({"id": raw_ids, "regression_labels": split_dict["regression_labels"],
                **{k: split_dict[k] for k in need}, **rows}, file, split)  # before parsing: N = 0 says so
    ids = [to_str(i) for i in raw_ids]
    refuse_flag_labels(split_dict["regression_labels"], file, split, "regression_labels")
    labels = as_array(split_dict["regression_labels"], file, split, "regression_labels")
    feats: Dict[str, np.ndarray] = {}
    lengths: Dict[str, np.ndarray] = {}
    for m in modalities:
        if m == "text":
            feats[m], lengths[m] = _text(split_dict, text, file, split)
        else:
            feats[m] = as_array(split_dict[m], file, split, m)
            check_sequences(feats[m], file, split, m)
    labels = labels.reshape(len(ids), -1)
    text_steps = _text_steps(split_dict, feats)
    word_lengths = _word_lengths(split_dict, text_steps)
    for m in feats:
        key = "text_bert" if (m == "text" and text == "bert") else m  # the file's key, for the message
        feats[m] = fix_non_finite(feats[m], file, split, key, ids, sanitize, neg_inf_to_zero=(m == "audio"))
        if m == "text":
            continue
        own = f"{m}_lengths" in split_dict
        if own:  # checked even where unused (aligned)
            lengths[m] = clip_lengths(split_dict[f"{m}_lengths"], feats[m].shape[1], file, split, f"{m}_lengths")
        if _aligned(file, split_dict, m, feats[m], text_steps, word_lengths, votes):
            # aligned to the words: MMSA's aligned models read audio and vision with the text
            # lengths (the text_bert mask), whatever '*_lengths' the file carries (an unaligned file
            # whose steps equal the text's by chance keeps its own lengths)
            lengths[m] = word_lengths.copy()
        elif own and feats[m].shape[1] != text_steps:  # unaligned: its own steps, "the first L are real"
            _check_right_padded(feats[m], lengths[m], file, split, m, ids)
            _check_lengths_not_short(feats[m], lengths[m], file, split, m, ids)
            _check_lengths_not_long(feats[m], lengths[m], file, split, m, ids)
    if labels.shape[1] != 1:
        raise DataFormatError(f"{file}: split {split!r}: 'regression_labels' has shape "
                              f"{labels.shape}, expected (N,) one score per sample")
    low, high = MMSA_DATASETS[dataset][1]
    check_label_range(labels, low, high, file, split, ids,
                      fix=f"check dataset={dataset!r} (SIMS labels lie in [-1, 1], MOSI/MOSEI in [-3, 3])")
    check_unique_ids(ids, file, split)
    check_dims(feats, expected_dims, file, split)
    extra = {k: np.asarray(split_dict[k]) for k in _EXTRA_KEYS
             if k in split_dict and is_rows(split_dict[k]) and len(split_dict[k]) == len(ids)}
    for k in _UNIMODAL_LABELS:  # carried, used by no method, and checked as the target is (a review: a NaN passed)
        if k in extra and np.issubdtype(extra[k].dtype, np.number) and not np.issubdtype(extra[k].dtype, np.bool_):
            check_label_range(extra[k], low, high, file, split, ids, key=k,
                              fix=f"{dataset} labels lie in [{low:g}, {high:g}]; fix the file, or delete the key "
                                  "(no method in pase uses it)")
    return feats, lengths, labels[:, 0], ids, extra


def _check_length_keys_in_every_split(raw: Mapping, file: str, text: str, modalities: Sequence[str]) -> None:
    """Refuse a file whose length keys (``text_bert``'s mask, ``audio_lengths``, ``vision_lengths``)
    are in some splits but not others: the splits without one would count every step, padding
    included, while the others count real steps (MMSA itself stops there with a KeyError)."""
    # the mask gives the text lengths (with text="bert" it is a required key, checked as such), and audio /
    # vision aligned to the words take them whether or not text is loaded; a file named unaligned* never does
    words = ("text" in modalities and text != "bert") or (
        any(m != "text" for m in modalities) and not Path(file).name.startswith("unaligned"))
    keys = (["text_bert"] if words else []) + [f"{m}_lengths" for m in modalities if m != "text"]
    for key in keys:
        missing = [s for s in SPLITS if key not in raw[s]]
        if 0 < len(missing) < len(SPLITS):
            have = [s for s in SPLITS if s not in missing]
            raise DataFormatError(
                f"{file}: key {key!r} is in split(s) {', '.join(map(repr, have))} but not in "
                f"{', '.join(map(repr, missing))}: those splits would count every step (padding included) as "
                f"real, the others only the real steps; re-export the file with {key!r} in every split, or "
                f"delete it from every split (every step then counts)")


def _from_raw(raw: object, file: str, dataset: str, text: str = "features",
              modalities: Sequence[str] = _MODALITIES, sanitize: bool = False,
              expected_dims: Optional[Mapping[str, int]] = None) -> DataBundle:
    """Build the bundle from an already unpickled MMSA dict (``inspect`` reuses this)."""
    require_splits(raw, file, "MMSA")
    _check_length_keys_in_every_split(raw, file, text, modalities)
    votes: Dict[str, bool] = {}  # taken on train (the first split), read by valid and test
    parts = {s: _split(raw[s], file, s, dataset, text, modalities, sanitize, expected_dims, votes) for s in SPLITS}
    check_split_widths({s: parts[s][0] for s in SPLITS}, file)
    clips = {s: [parse_clip_id(i) for i in parts[s][3]] for s in SPLITS}
    gp = group_positions({s: [v for v, _ in clips[s]] for s in SPLITS},
                         {s: [clip_order_key(c) for _, c in clips[s]] for s in SPLITS})
    splits = {}
    for s in SPLITS:
        feats, lengths, labels, ids, extra = parts[s]
        ds = MultimodalDataset(feats, labels.astype(np.float32), ids, lengths=lengths,
                               groups=gp[s][0], positions=gp[s][1], split=s)
        ds.extra = extra  # SIMS unimodal labels, raw text, annotations (N rows each)
        splits[s] = ds
    dims = {m: int(x.shape[-1]) for m, x in parts["train"][0].items()}
    known = _KNOWN_DIMS[dataset]
    odd = {m: d for m, d in dims.items() if m in known and known[m] != d}
    if odd:  # a warning, not an error: re-extracted features are legitimate; another dataset's file is not
        like = [d for d, w in _KNOWN_DIMS.items() if d != dataset and all(dims.get(m) == w[m] for m in w if m in dims)]
        hint = f"; they are {like[0]}'s: set data.options.dataset={like[0]} if this is its file" if like else ""
        LOGGER.warning("%s: feature widths %s differ from the published %s widths %s (custom features?)%s",
                       file, odd, dataset, known, hint)
    protocol, label_range = MMSA_DATASETS[dataset]
    task = TaskSpec(kind="regression", num_classes=1, protocol=protocol, label_range=label_range)
    tr, steps = parts["train"][0], _text_steps(raw["train"], parts["train"][0])
    words = _word_lengths(raw["train"], steps)
    aligned = sorted(m for m in tr if m != "text" and _aligned(file, raw["train"], m, tr[m], steps, words, votes))
    info = {"format": "mmsa", "dataset": dataset, "file": file, "text": text,
            "lengths_from": sorted({k for s in SPLITS for k in raw[s] if str(k).endswith("_lengths")
                                    and k[:-len("_lengths")] not in aligned}
                                   | ({"text_bert mask (" + ", ".join(aligned) + " aligned to the text)"}
                                      if aligned else set())),
            "split_rule": "the file's train/valid/test"}
    check_disjoint_splits(splits, file)
    return DataBundle(name=f"{dataset}_mmsa", task=task, splits=splits, info=info)


@register_data("mmsa")
def load_mmsa(path: str | Path, dataset: Optional[str] = None, text: str = "features",
              modalities: Sequence[str] = _MODALITIES, sanitize: bool = False,
              expected_dims: Optional[Mapping[str, int]] = None,
              verify_checksum: bool = False) -> DataBundle:
    """Read an MMSA feature pickle into a regression ``DataBundle``.

    Args:
        path: the pickle (read only, through ``safe_load_pickle``).
        dataset: "mosi", "mosei", "sims" or "simsv2"; None infers it from the path
            (``MOSI/Processed/aligned_50.pkl``).
        text: "features" uses ``text`` (N, L, 768); "bert" uses ``text_bert`` as a float
            (N, L, 3) tensor of token ids / mask / segment ids for a BERT encoder.
        modalities: which of "text", "audio", "vision" to load.
        sanitize: set NaN / inf (other than audio -inf, always 0) to 0 instead of raising.
        expected_dims: optional modality -> D_m that the file must match.
        verify_checksum: hash the file and compare with ``PUBLISHED_SHA256`` (a mismatch is
            logged and recorded in ``bundle.info``, not raised: re-exports are legitimate).

    Returns:
        ``DataBundle`` "<dataset>_mmsa": regression, protocol "mosi" / "mosei" / "sims", per split
        inputs (N, T_m, D_m), target (N,), ids, groups (video) and positions (clip order);
        ``dataset.extra`` holds SIMS's ``regression_labels_T/A/V``, ``raw_text`` and the like.

    Raises:
        DataFormatError: any layout problem, in one line naming file, split and key.
        UnsafePickleError: the file names a global outside the allow-list.
    """
    if text not in ("features", "bert"):
        raise ValueError(f"text={text!r}; valid: 'features', 'bert'")
    p, dataset = resolve_source(path, dataset, modalities, _MODALITIES, _NAME_PATTERNS, MMSA_DATASETS)
    bundle = _from_raw(safe_load_pickle(p), p.name, dataset, text, tuple(modalities), sanitize,
                       expected_dims)
    published = PUBLISHED_SHA256.get((dataset, p.name))
    bundle.info.update(file=str(p), published_sha256=published or "none published")
    if verify_checksum:
        digest = sha256_file(p)
        status = "none published" if published is None else ("match" if digest == published else "mismatch")
        if status == "mismatch":
            LOGGER.warning("%s: SHA-256 %s differs from the published %s", p.name, digest, published)
        bundle.info.update(sha256=digest, checksum=status)
    return bundle


load_mmsa.task_kind = "regression"  # whatever its options; read by pase compare (source_task_kind)
