"""GCNet / MoMKE utterance features: a label pickle plus one ``.npy`` per utterance per feature.

Layout (zeroQiaoba/GCNet ``gcnet/dataloader_*.py``)::

    IEMOCAPFour/IEMOCAP_features_raw_4way.pkl     label pickle
    IEMOCAPFour/features/wav2vec-large-c-UTT/<utterance>.npy
    IEMOCAPFour/features/deberta-large-4-UTT/<utterance>.npy
    IEMOCAPFour/features/manet_UTT/<utterance>.npy  or  <utterance>/compress_{F,M}.npy (faces)

The label pickle is GCNet's tuple ``(videoIDs, videoLabels, videoSpeakers, videoSentences,
trainVids, testVids)`` (IEMOCAP) or with ``valVids`` before ``testVids`` (CMU-MOSI / MOSEI), or a
dict with those keys. ``videoIDs[vid]`` lists the utterance names of video (dialogue) ``vid`` in
order; ``videoLabels[vid]`` their labels: IEMOCAP class indices in [0, 4) or [0, 6), MOSI / MOSEI
sentiment in [-3, 3]. A 2-D feature (T, D) is mean-pooled over time. A folder of ``.npy`` files
(IEMOCAP faces: GCNet's ``compress_F.npy`` / ``compress_M.npy``, one per actor) gives, as GCNet's
``dataloader_iemocap.read_data`` and ``generate_inputs`` do, the mean of the files of the speaking
actor (``videoSpeakers``; a file is that actor's when its name holds ``F`` / ``M``); no such file,
or an empty folder, gives zeros, as in GCNet (logged). MOSI / MOSEI: the mean over all its files
(GCNet's ``dataloader_cmumosi.read_data``).

IEMOCAP is evaluated leave-one-session-out: ``fold=f`` tests on session f (videos ``Ses0f...``)
and carves the validation dialogues from the other four sessions. Report the mean over the five
folds (``iemocap_folds`` yields them).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..registry import unknown_name_message
from ..io import user_path
from .contract import DataBundle, MultimodalDataset, TaskSpec
from .registry import register_data
from .safe_pickle import safe_load_pickle
from .validate import (LOGGER, DataFormatError, as_array, cast_checked, check_class_labels,
                       check_disjoint_splits, check_label_range, check_unique_ids, fix_non_finite,
                       infer_dataset, is_rows, require_file, to_str)

__all__ = ["load_gcnet", "iemocap_folds", "GCNET_DATASETS", "DEFAULT_FEATURES"]

#: GCNet's default utterance features (widths 512, 1024, 1024)
DEFAULT_FEATURES = {"audio": "wav2vec-large-c-UTT", "text": "deberta-large-4-UTT", "vision": "manet_UTT"}
#: dataset -> its task
GCNET_DATASETS = {
    "iemocap4": TaskSpec(kind="classification", num_classes=4, protocol="multiclass"),
    "iemocap6": TaskSpec(kind="classification", num_classes=6, protocol="multiclass"),
    "mosi": TaskSpec(kind="regression", num_classes=1, protocol="mosi", label_range=(-3.0, 3.0)),
    "mosei": TaskSpec(kind="regression", num_classes=1, protocol="mosei", label_range=(-3.0, 3.0)),
}
_NAME_PATTERNS = (("iemocap4", r"iemocap.*(4way|four)"), ("iemocap6", r"iemocap.*(6way|six)"),
                  ("mosei", r"mosei"), ("mosi", r"mosi"))
_TUPLE_KEYS = {6: ("videoIDs", "videoLabels", "videoSpeakers", "videoSentences", "trainVids", "testVids"),
               7: ("videoIDs", "videoLabels", "videoSpeakers", "videoSentences", "trainVids", "valVids",
                   "testVids")}
_SESSION = re.compile(r"^Ses0?([1-5])(?!\d)")  # IEMOCAP's five sessions: Ses06 / Ses10 are refused, not folded


@dataclass
class _Labels:
    """The label pickle, with string keys: video -> utterances / labels / speakers / sentences."""

    file: str
    utterances: Dict[str, List[str]]
    labels: Dict[str, list]
    speakers: Dict[str, list]
    sentences: Dict[str, list]
    train: List[str]
    valid: Optional[List[str]]
    test: List[str]


def _as_dict(raw: object, file: str) -> dict:
    if isinstance(raw, (tuple, list)) and len(raw) in _TUPLE_KEYS:
        return dict(zip(_TUPLE_KEYS[len(raw)], raw))
    if isinstance(raw, dict) and "videoIDs" in raw:
        return raw
    what = f"a {len(raw)}-tuple" if isinstance(raw, (tuple, list)) else f"{type(raw).__name__}"
    keys = f" with keys {', '.join(map(str, raw))}" if isinstance(raw, dict) else ""
    raise DataFormatError(
        f"{file}: found {what}{keys}; a GCNet label pickle is (videoIDs, videoLabels, videoSpeakers, "
        f"videoSentences, trainVids[, valVids], testVids) or a dict with those keys")


def _per_video(d: dict, key: str, file: str) -> Dict[str, list]:
    """``d[key]`` (video -> one entry per utterance) with string keys and list values; a value that
    is not a list is an error in videoIDs / videoLabels and left out of the optional tables."""
    out = {}
    try:
        table = dict(d.get(key) or {})
    except (TypeError, ValueError):  # a list of per-video lists, no video ids
        if key not in ("videoIDs", "videoLabels"):
            return out
        raise DataFormatError(f"{file}: {key} is {type(d.get(key)).__name__}, expected a dict video id -> list with "
                              f"one entry per utterance (GCNet's layout); fix the label pickle") from None
    for v, x in table.items():
        if not is_rows(x):
            if key not in ("videoIDs", "videoLabels"):
                continue  # speakers / sentences of this video become None (``_per_utterance``)
            raise DataFormatError(f"{file}: {key}[{to_str(v)!r}] is {type(x).__name__} {to_str(x)[:30]}, "
                                  f"expected a list with one entry per utterance; fix the label pickle")
        out[to_str(v)] = list(x)
    return out


def _read_labels(raw: object, file: str) -> _Labels:
    """Normalise and cross-check a GCNet label pickle."""
    d = _as_dict(raw, file)
    for k in ("videoIDs", "videoLabels", "trainVids", "testVids"):
        if k not in d:
            raise DataFormatError(f"{file}: no key {k!r} (found: {', '.join(map(str, d))}); "
                                  f"a GCNet label pickle needs videoIDs, videoLabels, trainVids, testVids")
    other = sorted(str(k) for k in d if str(k).endswith("Vids") and k not in ("trainVids", "valVids", "testVids"))
    if other:  # devVids / validVids were ignored: their videos fell out of every split
        raise DataFormatError(f"{file}: key {other[0]!r} is not a split list this loader reads (trainVids, valVids, "
                              f"testVids); rename it to valVids if it lists the validation videos")
    per_video = {k: _per_video(d, k, file)
                 for k in ("videoIDs", "videoLabels", "videoSpeakers", "videoSentences")}
    lists = {}
    for k in ("trainVids", "valVids", "testVids"):
        vids = d.get(k)
        if (vids is not None or k != "valVids") and not is_rows(vids):
            raise DataFormatError(f"{file}: {k} is {type(vids).__name__} {to_str(vids)[:30]}, expected a set or "
                                  f"list of video ids; fix the label pickle")
        lists[k] = None if vids is None else sorted(to_str(v) for v in vids)
    for k, vids in lists.items():
        for v in vids or []:
            for table in ("videoIDs", "videoLabels"):
                if v not in per_video[table]:
                    raise DataFormatError(f"{file}: video {v!r} of {k} is missing from {table}; "
                                          f"fix the label pickle")
            n_utt, n_lab = len(per_video["videoIDs"][v]), len(per_video["videoLabels"][v])
            if n_utt != n_lab:
                raise DataFormatError(f"{file}: video {v!r} has {n_utt} utterances in videoIDs but "
                                      f"{n_lab} labels in videoLabels; they must match one to one")
    named = [(k, set(v)) for k, v in lists.items() if v]
    for i, (ka, a) in enumerate(named):
        for kb, b in named[i + 1:]:
            if a & b:
                raise DataFormatError(f"{file}: video {sorted(a & b)[0]!r} is in both {ka} and {kb}; "
                                      f"the split lists must be disjoint")
    unused = sorted(set(per_video["videoIDs"]) - {v for _, vids in named for v in vids})
    if unused:
        LOGGER.warning("%s: %d of %d videos in videoIDs are in no split list (for example %r); they are not used",
                       file, len(unused), len(per_video["videoIDs"]), unused[0])
    return _Labels(file, per_video["videoIDs"], per_video["videoLabels"], per_video["videoSpeakers"],
                   per_video["videoSentences"], lists["trainVids"], lists["valVids"] or None,
                   lists["testVids"])


def _vector(path: Path, utt: str, modality: str, sanitize: bool) -> Tuple[np.ndarray, int]:
    """One utterance's (D,) feature from a .npy file: (D,) as is, (T, D) mean-pooled over time (also
    T = 1 or D = 1: a (T, 1) feature stored as 2-D is one value per frame, not a T-wide vector), the
    singleton axes of more dimensions dropped; and how many NaN / inf values ``sanitize`` set to 0 in it.

    NaN / inf raise here, naming the file, unless ``sanitize``; ``-inf`` in audio (log-energies of
    silent frames) is set to 0 as MMSA does. Both happen before a (T, D) array is pooled: pooled
    first, one bad frame would make its whole feature column non-finite and then 0. A float64 value
    beyond float32's range raises (it is not inf in the file).
    """
    try:
        raw = np.load(path, allow_pickle=False)
        x = cast_checked(np.asarray(raw), np.float32, f"{path}: utterance {utt!r} (modality {modality!r})")
    except DataFormatError:
        raise
    except (ValueError, TypeError, OSError, EOFError) as exc:
        raise DataFormatError(f"{path}: cannot read utterance {utt!r} ({' '.join(str(exc).split())[:120]}); "
                              f"it must be a plain numeric .npy array") from None
    if x.ndim > 2:  # singleton axes of a higher-dimensional array dropped, as before: (1, 512, 1) -> (512,)
        x = x.squeeze()
    if x.ndim == 0:
        x = x.reshape(1)  # a feature stored as one number
    if x.size == 0:
        raise DataFormatError(f"{path}: utterance {utt!r} (modality {modality!r}) has shape {raw.shape}, no "
                              f"values; expected (D,) or (T, D) with T, D >= 1, re-extract the feature")
    bad = ~np.isfinite(x)
    if modality == "audio":
        bad &= ~np.isneginf(x)
    n_bad = int(bad.sum())
    if n_bad and not sanitize:
        raise DataFormatError(f"{path}: utterance {utt!r} (modality {modality!r}) holds {n_bad} NaN / "
                              f"inf values; fix the file or pass sanitize=True "
                              "(--set data.options.sanitize=true) to set them to 0")
    zero = (bad | np.isneginf(x)) if modality == "audio" else bad
    if zero.any():
        x = np.where(zero, np.float32(0.0), x)
    if x.ndim == 2:
        x = x.mean(axis=0)  # (T, D) -> (D,)
    if x.ndim != 1:
        raise DataFormatError(f"{path}: utterance {utt!r} has shape {raw.shape}, expected (D,) or (T, D)")
    return x, n_bad


def _face_speaker(path: Path, utt: str) -> str:
    """The actor ("F" / "M") whose face ``path`` holds, from its name, as GCNet's
    ``dataloader_iemocap.read_data`` tells it (``compress_F.npy``, ``000001_M.npy``). GCNet asserts
    that a name holds F or M and takes F when it holds both; such a name is refused here."""
    tags = [a for a in "FM" if a in path.stem]
    if len(tags) != 1:
        what = "both F and M" if tags else "neither F nor M"
        raise DataFormatError(f"{path}: face file of utterance {utt!r} names {what}; GCNet's IEMOCAP face "
                              f"files name their actor, compress_F.npy / compress_M.npy (or <frame>_F.npy), "
                              f"rename it")
    return tags[0]


def _utterance_speaker(utt: str, given: object) -> Optional[str]:
    """The speaking actor of an IEMOCAP utterance: its ``videoSpeakers`` entry, which GCNet's
    ``dataloader_iemocap`` reads (F -> host, M -> guest, and ``generate_inputs`` keeps that
    actor's features); else the letter that opens the last part of its name, Ses01F_impro01_F000 -> F
    (the released pickles' ``videoSpeakers`` always equal it); None when neither tells."""
    s = to_str(given) if given is not None else ""
    if s in ("F", "M"):
        return s
    last = utt.rsplit("_", 1)[-1][:1]
    return last if last in ("F", "M") and "_" in utt else None


def _read_feature(folder: Path, utt: str, modality: str, sanitize: bool, by_speaker: bool = False,
                  speaker: Optional[str] = None) -> Tuple[Optional[np.ndarray], int, str]:
    """(D,) feature of ``utt`` (None for an empty folder), the count of values ``sanitize`` set to 0
    in its file(s), and what a folder lacked: "" (nothing), "absent" (no file of the speaking
    actor: zeros) or "zero" (the speaking actor's face is all zero).

    Without ``by_speaker`` a folder is the mean over all its files (MOSI / MOSEI, GCNet's
    ``dataloader_cmumosi``). With it (IEMOCAP) the folder gives the mean of the files of ``speaker``
    ("F" / "M"; None: not known, an error) only, as GCNet does: ``feature_compressed_iemocap`` writes
    ``<utt>/compress_F.npy`` and ``compress_M.npy`` (``np.zeros(D)`` for an actor whose face was not
    found), ``read_data`` keeps them apart and ``generate_inputs`` takes the speaker's. Averaging
    both (as before) mixed the listener's face into every utterance. Every file is read (GCNet loads
    them all), so a bad one is an error wherever it is.
    """
    f = folder / f"{utt}.npy"
    if f.is_file():
        return (*_vector(f, utt, modality, sanitize), "")
    d = folder / utt
    if not d.is_dir():
        raise DataFormatError(
            f"{f}: missing feature of utterance {utt!r} (modality {modality!r}); expected this .npy "
            f"file or a folder {d.name}/ of .npy files")
    paths = sorted(d.glob("*.npy"))
    parts = [_vector(p, utt, modality, sanitize) for p in paths]
    if len({p.shape for p, _ in parts}) > 1:
        raise DataFormatError(f"{d}: files of utterance {utt!r} have different widths "
                              f"{sorted({p.shape[0] for p, _ in parts})}; they must share D")
    zeroed = sum(n for _, n in parts)
    if not parts:
        return None, zeroed, ""
    if not by_speaker:
        return np.mean([p for p, _ in parts], axis=0), zeroed, ""
    if speaker is None:
        raise DataFormatError(f"{d}: cannot tell whose face to read for utterance {utt!r}: its videoSpeakers "
                              f"entry is not 'F' / 'M' and its name does not end in _F<n> / _M<n>; GCNet reads "
                              f"the speaking actor's file, fix videoSpeakers in the label pickle")
    mine = [p for (p, _), path in zip(parts, paths) if _face_speaker(path, utt) == speaker]
    if not mine:
        return np.zeros_like(parts[0][0]), zeroed, "absent"
    x = np.mean(mine, axis=0)
    return x, zeroed, "" if x.any() else "zero"


def _leave_out(m: str, features: Mapping[str, str]) -> str:
    """The command-line way to leave modality ``m`` out, for an error about its folder ("" when it is
    the only one read). The hint named a Python dict, which neither pase train nor pase data inspect takes."""
    others = [x for x in features if x != m]
    if not others:
        return ""
    return f"leave {m} out with --set 'data.modalities=[{', '.join(others)}]' (pase data inspect: --features {m}=null)"


def _check_present(folder: Path, utts: Sequence[str], m: str, leave: str, split_of: Mapping[str, str]) -> None:
    """Every utterance has a ``<utt>.npy`` or a folder ``<utt>/`` in ``folder``; else one error naming the
    first missing file, how many are missing per split of the pickle (``split_of``: utterance -> split)
    and the first few names, with the fixes. The first missing file alone said neither whether one file or
    a whole split was missing nor how to leave the modality out (review)."""
    missing = [u for u in utts if not (folder / f"{u}.npy").is_file() and not (folder / u).is_dir()]
    if not missing:
        return
    first = missing[0]
    total = Counter(split_of.get(u, "no split") for u in utts)
    lacking = Counter(split_of.get(u, "no split") for u in missing)
    per = ", ".join(f"{s} {lacking[s]} of {total[s]}" for s in ("train", "valid", "test", "no split") if total[s])
    more = (f", and of {len(missing) - 1} more: {len(missing)} of {len(utts)} utterances lack one (per split of the "
            f"pickle: {per}; for example {', '.join(repr(u) for u in missing[1:4])})" if len(missing) > 1 else
            f" (split {split_of.get(first, 'none')!r} of the pickle; the only one missing)")
    raise DataFormatError(
        f"{folder / f'{first}.npy'}: missing feature of utterance {first!r} (modality {m!r}){more}; expected "
        f"<utterance>.npy or a folder <utterance>/ of .npy files in {folder.name}; restore the files, fix the "
        f"features folder (--set data.options.feature_root=..., inspect: --feature-root)"
        f"{', or ' + leave if leave else ''}")


def _read_features(utts: Sequence[str], root: Path, features: Mapping[str, str], sanitize: bool,
                   speakers: Optional[Sequence[Optional[str]]] = None,
                   split_of: Optional[Mapping[str, str]] = None) -> Dict[str, np.ndarray]:
    """modality -> (N, D) features of ``utts`` in order; ``speakers`` (IEMOCAP: each utterance's
    speaking actor, ``_utterance_speaker``) picks that actor's files of a face folder; ``split_of``
    (utterance -> the pickle's split) counts missing files per split in the error."""
    out = {}
    for m, name in features.items():
        folder = root / name
        leave = _leave_out(m, features)
        if not folder.is_dir():
            found = (", ".join(sorted(p.name for p in root.iterdir() if p.is_dir()))
                     if root.is_dir() else "no such folder")
            raise DataFormatError(f"{folder}: feature folder of modality {m!r} not found (in {root}: {found}); "
                                  f"name it with --set data.options.features.{m}=<folder> (pase data inspect: "
                                  f"--features {m}=<folder>){', ' + leave if leave else ''}, or fix the features "
                                  f"folder (--set data.options.feature_root=..., inspect: --feature-root)")
        _check_present(folder, utts, m, leave, split_of or {})
        read = [_read_feature(folder, u, m, sanitize, speakers is not None,
                              None if speakers is None else speakers[i])
                for i, u in enumerate(utts)]
        vecs = [v for v, _, _ in read]
        zeroed = sum(n for _, n, _ in read)
        if zeroed:
            LOGGER.warning("%s: sanitize=True set %d NaN / inf values to 0 in the %r files, before pooling them",
                           folder, zeroed, m)
        absent = [(u, speakers[i]) for i, (u, (_, _, k)) in enumerate(zip(utts, read)) if k == "absent"]
        if absent:  # a warning: GCNet reads zeros there too, but a folder of the listener's face only is odd
            LOGGER.warning("%s: %d utterance folders hold no %r file of their speaking actor (for example %r, "
                           "speaker %s; a file is an actor's when its name holds F / M, as GCNet's compress_F.npy / "
                           "compress_M.npy); their features are zeros, as in GCNet, fused as observed",
                           folder, len(absent), m, absent[0][0], absent[0][1])
        blank = sum(k == "zero" for _, _, k in read)
        if blank:  # GCNet's placeholder for a face not found: the model sees it as an observed zero
            LOGGER.warning("%s: %d utterances have an all-zero %r file of their speaking actor (GCNet's compress_F / "
                           "compress_M placeholder for a face not found); their features are zeros, as in GCNet, "
                           "fused as observed", folder, blank, m)
        dims = {v.shape[0]: u for v, u in zip(vecs, utts) if v is not None}
        if not dims:
            raise DataFormatError(f"{folder}: no .npy feature file of modality {m!r} was found for any of the "
                                  f"{len(utts)} utterances (every utterance folder is empty); check feature_root "
                                  f"and the folder name{', or ' + leave if leave else ''}")
        if len(dims) != 1:
            detail = ", ".join(f"{d} (utterance {u!r})" for d, u in dims.items())
            raise DataFormatError(f"{folder}: utterances of modality {m!r} have widths {detail}; "
                                  f"every utterance must have the same width D")
        (dim,) = dims
        empty = sum(v is None for v in vecs)
        if empty:
            # a warning: the model fuses these zeros as an observation (no per-sample presence mask), and
            # data.standardize counts them in its train statistics
            LOGGER.warning("%s: %d of %d utterances have an empty folder; their %r features are zeros (as in GCNet), "
                           "fused as observed", folder, empty, len(vecs), m)
        out[m] = np.stack([np.zeros(dim, np.float32) if v is None else v for v in vecs])
    return out


def _carve(pool: List[str], fraction: float, seed: int, file: str) -> List[str]:
    """A deterministic ``fraction`` of the dialogues in ``pool`` (at least one, not all)."""
    k = max(1, int(round(fraction * len(pool))))
    if len(pool) < 2:  # at least one video goes to valid and one stays: no valid_fraction helps
        raise DataFormatError(f"{file}: cannot carve validation videos from {len(pool)} training video(s); "
                              f"validation takes whole videos and leaves training at least one: list the "
                              f"validation videos in the file (valVids) or add training videos")
    if k >= len(pool):
        raise DataFormatError(f"{file}: cannot carve {k} validation videos from {len(pool)} training "
                              f"videos; lower valid_fraction={fraction}")
    perm = np.random.default_rng(seed).permutation(len(pool))
    return sorted(pool[i] for i in perm[:k])


def _split_vids(t: _Labels, dataset: str, fold: Optional[int], fraction: float, seed: int
                ) -> Dict[str, List[str]]:
    if fold is None:
        for key, vids in (("trainVids", t.train), ("testVids", t.test)):
            if not vids:
                raise DataFormatError(f"{t.file}: {key} is empty; the pickle's split needs at least one "
                                      f"video in it, fix the label pickle (IEMOCAP: or pass fold=1..5)")
        valid = t.valid or _carve(t.train, fraction, seed, t.file)
        return {"train": [v for v in t.train if v not in set(valid)], "valid": valid, "test": t.test}
    every = _all_videos(t)
    session = {}
    for v in every:
        m = _SESSION.match(v)
        if m is None:
            raise DataFormatError(f"{t.file}: video {v!r} does not start with 'Ses01'..'Ses05'; "
                                  f"session folds need IEMOCAP dialogue names, pass fold=None")
        session[v] = int(m.group(1))
    test = [v for v in every if session[v] == fold]
    if not test:
        raise DataFormatError(f"{t.file}: no video of session {fold} (Ses0{fold}...); check the label pickle")
    pool = [v for v in every if session[v] != fold]
    valid = [v for v in (t.valid or []) if session[v] != fold] or _carve(pool, fraction, seed, t.file)
    return {"train": [v for v in pool if v not in set(valid)], "valid": valid, "test": test}


def _all_videos(t: _Labels) -> List[str]:
    return sorted(set(t.train) | set(t.valid or []) | set(t.test))


def _per_utterance(table: Dict[str, list], vids: Sequence[str], t: _Labels) -> np.ndarray:
    """(N,) object array of a per-video list (speakers, sentences); None where it does not fit."""
    out = []
    for v in vids:
        n = len(t.utterances[v])
        vals = table.get(v, [])
        out.extend(vals if len(vals) == n else [None] * n)
    arr = np.empty(len(out), dtype=object)
    arr[:] = out
    return arr


def _refuse_non_numbers(flat: Sequence[object], ids: Sequence[str], task: TaskSpec, file: str, split: str) -> None:
    """A None, text or True / False label is named as what it is, with what is expected: None read as NaN
    was told to check the dataset, text to be "float64 numbers", and a bool was class 0 / 1 (review). A bool
    is refused: in a label pickle it is most likely a flag column, not a class or a score."""
    def what(y: object) -> Optional[str]:
        y = y.item() if isinstance(y, np.ndarray) and y.dtype.kind in "bOUS" else y  # 0-d arrays from [y]
        if y is None:
            return "None"
        if isinstance(y, (bool, np.bool_)):
            return f"the bool {bool(y)} (a True / False flag? refused rather than read as {int(y)})"
        if isinstance(y, (str, bytes)):
            return f"the text {to_str(y)[:30]!r}"
        return None

    bad = [(i, w) for i, w in ((i, what(y)) for i, y in enumerate(flat)) if w is not None]
    if not bad:
        return
    i, w = bad[0]
    expected = (f"an integer class index in [0, {task.num_classes})" if task.kind == "classification"
                else f"a number in [{task.label_range[0]:g}, {task.label_range[1]:g}]" if task.label_range
                else "a number")
    raise DataFormatError(f"{file}: split {split!r}: label of sample {ids[i]!r} is {w}; {len(bad)} such label(s) in "
                          f"the split; videoLabels must hold {expected} per utterance: store that in the label pickle")


def _labels_of(t: _Labels, vids: Sequence[str], dataset: str, split: str):
    """Validated (N,) targets and ids of the utterances of ``vids``."""
    task = GCNET_DATASETS[dataset]
    ids = [to_str(u) for v in vids for u in t.utterances[v]]
    hint = (" (one-hot rows? store each utterance's class index, e.g. argmax of the row)"
            if task.kind == "classification" else "")
    flat = []
    for v in vids:  # per utterance: a [y] is y, whatever the other videos hold; a longer row names its video
        for y in t.labels[v]:
            a = np.asarray(y)
            if a.ndim > 0 and a.size != 1:
                raise DataFormatError(f"{t.file}: videoLabels of video {v!r} (split {split!r}) hold a label of shape "
                                      f"{a.shape}, expected one number per utterance{hint}")
            flat.append(a.reshape(()) if a.ndim > 0 else y)
    _refuse_non_numbers(flat, ids, task, t.file, split)
    labels = as_array(flat, t.file, split, "videoLabels", np.float64)
    if task.kind == "classification":
        target = check_class_labels(labels, task.num_classes, t.file, split, ids,
                                    fix=f"check dataset={dataset!r} (iemocap4: 4 classes, iemocap6: 6)")
    else:
        check_label_range(labels, -3.0, 3.0, t.file, split, ids, fix="MOSI/MOSEI sentiment lies in [-3, 3]")
        target = labels.astype(np.float32)
    check_unique_ids(ids, t.file, split, key="videoIDs")
    return target, ids


def _bundle(t: _Labels, feats: Dict[str, np.ndarray], row: Dict[str, int], dataset: str,
            fold: Optional[int], fraction: float, seed: int, sanitize: bool, info: dict) -> DataBundle:
    """Assemble the three splits from all utterance features (``row``: utterance -> feature row)."""
    task = GCNET_DATASETS[dataset]
    vid_index = {v: i for i, v in enumerate(_all_videos(t))}
    splits = {}
    parts = _split_vids(t, dataset, fold, fraction, seed)
    for s, vids in parts.items():
        target, ids = _labels_of(t, vids, dataset, s)
        idx = np.asarray([row[u] for u in ids], dtype=np.int64)
        x = {m: fix_non_finite(f[idx], t.file, s, m, ids, sanitize, neg_inf_to_zero=(m == "audio"))
             for m, f in feats.items()}
        groups = np.asarray([vid_index[v] for v in vids for _ in t.utterances[v]], dtype=np.int64)
        positions = np.asarray([i for v in vids for i in range(len(t.utterances[v]))], dtype=np.int64)
        ds = MultimodalDataset(x, target, ids, groups=groups, positions=positions, split=s)
        ds.extra = {k: _per_utterance(table, vids, t) for k, table in
                    (("speakers", t.speakers), ("sentences", t.sentences)) if table}
        splits[s] = ds
    rule = (f"leave-one-session-out, test session {fold}" if fold is not None
            else "the pickle's trainVids/testVids")
    from_pickle = bool(t.valid) and set(parts["valid"]) <= set(t.valid)  # a fold may drop them all
    rule += (("; valid: the pickle's valVids" + (" outside the test session" if fold is not None else ""))
             if from_pickle else f"; valid: {fraction:g} of training dialogues (seed {seed})")
    ignored = [f"{k}={v!r}" for k, v, default in (("valid_fraction", fraction, 0.1), ("seed", seed, 0))
               if v != default]
    if from_pickle and ignored:  # they carve validation only from a pickle without valVids: said, not silent (review)
        LOGGER.warning("%s: data.options %s ignored: the validation split is the pickle's valVids%s; these options "
                       "carve one only from a pickle without valVids", t.file, " and ".join(ignored),
                       f" outside test session {fold}" if fold is not None else "")
    check_disjoint_splits(splits, t.file)
    return DataBundle(name=f"{dataset}_gcnet", task=task, splits=splits,
                      info={**info, "fold": fold, "split_rule": rule})


def _check_args(dataset: str, folds: Sequence[Optional[int]], fraction: float) -> None:
    """Argument errors, raised before any feature file is read."""
    if dataset not in GCNET_DATASETS:
        raise ValueError(f"dataset={dataset!r}; valid: {', '.join(GCNET_DATASETS)}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"valid_fraction={fraction!r}; it must lie in (0, 1)")
    for fold in folds:
        if fold is not None and not dataset.startswith("iemocap"):
            raise ValueError(f"fold={fold} is for IEMOCAP's leave-one-session-out protocol; "
                             f"{dataset!r} has fixed splits, pass fold=None")
        if fold not in (None, 1, 2, 3, 4, 5):
            raise ValueError(f"fold={fold!r}; IEMOCAP folds are 1..5 (the test session)")


def _check_seed(seed: int) -> None:
    """Before any file is read: numpy's bare "expected non-negative integer" named no key (review)."""
    if isinstance(seed, int) and seed < 0:
        raise ValueError(f"seed={seed} (data.options.seed) must be at least 0 (numpy's seed range)")


def _feature_folders(features: Optional[Mapping[str, Optional[str]]]) -> Dict[str, str]:
    """``DEFAULT_FEATURES`` with the folders ``features`` names instead (a None folder leaves that
    modality out). Another modality name is refused: it was read as a new modality, silently."""
    given = dict(features or {})
    for m in given:
        if m not in DEFAULT_FEATURES:
            raise ValueError(f"features: {unknown_name_message('modality', str(m), list(DEFAULT_FEATURES))} "
                             "(a modality -> feature folder name; choose modalities with data.modalities)")
    for m, folder in given.items():  # root / "" is the features folder itself: its files were read as features
        if folder is not None and not str(folder).strip():
            raise ValueError(f"features: modality {m!r} has an empty folder name; name its folder "
                             f"(data.options.features.{m}=<folder>), or null to leave {m} out")
    out = {m: str(given.get(m, folder)) for m, folder in DEFAULT_FEATURES.items() if given.get(m, folder) is not None}
    if not out:
        raise ValueError("features leaves every modality out; map at least one modality to a feature folder name")
    return out


def _dataset_name(label_path: Path, dataset: Optional[str]) -> str:
    """``dataset`` in lower case, or the one the label file's name tells (``_NAME_PATTERNS``)."""
    return dataset.lower() if dataset else infer_dataset(label_path, _NAME_PATTERNS)


def _prepare(label_path, feature_root, features, dataset, folds, fraction, sanitize):
    lp = user_path(label_path)
    root = user_path(feature_root) if feature_root is not None else lp.parent / "features"
    require_file(lp)
    dataset = _dataset_name(lp, dataset)
    _check_args(dataset, folds, fraction)
    features = _feature_folders(features)
    t = _read_labels(safe_load_pickle(lp), lp.name)
    utts = [to_str(u) for v in _all_videos(t) for u in t.utterances[v]]
    row = {u: i for i, u in enumerate(utts)}
    speakers = None
    if dataset.startswith("iemocap"):  # whose face a face folder gives (GCNet keeps the speaker's)
        said = {to_str(u): s for v in _all_videos(t) if len(t.speakers.get(v, [])) == len(t.utterances[v])
                for u, s in zip(t.utterances[v], t.speakers[v])}
        speakers = [_utterance_speaker(u, said.get(u)) for u in utts]
    split_of = {to_str(u): s for s, vids in (("test", t.test), ("valid", t.valid or []), ("train", t.train))
                for v in vids for u in t.utterances[v]}
    feats = _read_features(utts, root, features, sanitize, speakers, split_of)
    info = {"format": "gcnet", "dataset": dataset, "file": str(lp), "feature_root": str(root),
            "features": features, "published_sha256": "none published"}
    return t, feats, row, dataset, info


def check_options(label_path: str | Path, dataset: Optional[str] = None, fold: Optional[int] = None,
                  valid_fraction: float = 0.1, **_) -> None:
    """The argument errors ``load_gcnet`` would raise, without reading any file (the dataset is
    inferred from the label file's name when not given): ``pase crossval`` checks every fold
    before the first one trains."""
    _check_args(_dataset_name(Path(label_path), dataset), [fold], valid_fraction)


@register_data("gcnet")
def load_gcnet(label_path: str | Path, feature_root: Optional[str | Path] = None,
               features: Optional[Mapping[str, Optional[str]]] = None, dataset: Optional[str] = None,
               fold: Optional[int] = None, valid_fraction: float = 0.1, seed: int = 0,
               sanitize: bool = False) -> DataBundle:
    """Read GCNet / MoMKE utterance features into a ``DataBundle`` (one vector per utterance).

    Args:
        label_path: the label pickle, for example ``IEMOCAP_features_raw_4way.pkl``.
        feature_root: the folder holding one sub-folder per feature name (default: the label
            pickle's folder / ``features``, as GCNet lays them out).
        features: modality -> feature folder name, replacing ``DEFAULT_FEATURES``'s folder of that
            modality (the others keep theirs); None leaves a modality out.
        dataset: "iemocap4", "iemocap6", "mosi" or "mosei"; None infers it from the file name.
        fold: IEMOCAP only: 1..5, the session held out as test (None: the pickle's split).
        valid_fraction: share of training dialogues carved out as validation when the pickle has
            no ``valVids`` (deterministic given ``seed``; whole dialogues, never utterances).
        seed: seed of that carve.
        sanitize: set NaN / inf features to 0 instead of raising.

    Returns:
        ``DataBundle`` "<dataset>_gcnet": inputs (N, 1, D_m), target (N,) long (IEMOCAP, protocol
        "multiclass") or float (MOSI / MOSEI, protocol "mosi" / "mosei"), ids = utterance names,
        groups = video index, positions = utterance index; ``dataset.extra`` holds speakers and
        sentences.

    Raises:
        DataFormatError: a layout problem or a missing ``.npy`` (one line naming the path).
    """
    _check_seed(seed)
    t, feats, row, dataset, info = _prepare(label_path, feature_root, features, dataset, [fold],
                                            valid_fraction, sanitize)
    return _bundle(t, feats, row, dataset, fold, valid_fraction, seed, sanitize, info)


load_gcnet.check_options = check_options  # read by pase crossval (evaluation/folds.py)


def check_folds(label_path: str | Path, folds: Sequence[Optional[int]], dataset: Optional[str] = None,
                valid_fraction: float = 0.1, seed: int = 0, **_) -> None:
    """The data errors ``load_gcnet`` would raise for each fold (a session without videos, names
    that are not IEMOCAP dialogues), reading the label pickle once and no feature: ``pase
    crossval`` found a missing session only when that fold's turn came, after the others trained."""
    _check_seed(seed)
    lp = user_path(label_path)
    require_file(lp)
    name = _dataset_name(lp, dataset)
    t = _read_labels(safe_load_pickle(lp), lp.name)
    for fold in folds:
        _split_vids(t, name, fold, valid_fraction, seed)


load_gcnet.check_folds = check_folds  # read by pase crossval (evaluation/folds.py)


def iemocap_folds(label_path: str | Path, feature_root: Optional[str | Path] = None,
                  features: Optional[Mapping[str, Optional[str]]] = None, dataset: Optional[str] = None,
                  valid_fraction: float = 0.1, seed: int = 0, sanitize: bool = False
                  ) -> Iterator[DataBundle]:
    """The five leave-one-session-out IEMOCAP bundles (fold 1..5), reading the files once.

    Evaluation over folds reports the mean of the five test results; ``bundle.info["fold"]``
    names each one.
    """
    _check_seed(seed)
    lp = Path(label_path)
    name = _dataset_name(lp, dataset)
    if not name.startswith("iemocap"):
        raise ValueError(f"iemocap_folds needs an IEMOCAP label pickle, got dataset={name!r}")
    t, feats, row, dataset, info = _prepare(lp, feature_root, features, name, range(1, 6), valid_fraction,
                                            sanitize)
    return (_bundle(t, feats, row, dataset, fold, valid_fraction, seed, sanitize, info)
            for fold in range(1, 6))


def task_kind(label_path: str | Path = "", dataset: Optional[str] = None, **_) -> Optional[str]:
    """The kind of task ``load_gcnet`` loads (IEMOCAP classification, MOSI / MOSEI regression), from
    ``dataset`` or the label file's name, reading no file; None when neither tells (``source_task_kind``)."""
    name = _dataset_name(Path(label_path), dataset)
    return GCNET_DATASETS[name].kind if name in GCNET_DATASETS else None


load_gcnet.task_kind = task_kind  # read by pase compare before anything is written
