"""Test-only writers of small files in the field's exact on-disk layouts, with fault injection.

Every writer takes a seeded RNG (``seed``), writes the real key names, nesting, dtypes and file
names, and accepts ``mutate``: a function applied to the in-memory object just before it is
written, which is how tests inject faults (drop a split or key, put a NaN somewhere...).
"""

from __future__ import annotations

import hashlib
import pickle
import pickletools
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import numpy as np

SPLITS = ("train", "valid", "test")
MMSA_DIMS = {"mosi": (768, 5, 20), "mosei": (768, 74, 35), "sims": (768, 33, 709)}
MULT_DIMS = {"mosi": (300, 5, 20), "mosei": (300, 74, 35), "iemocap": (300, 74, 35)}
GCNET_DIMS = {"wav2vec-large-c-UTT": 512, "deberta-large-4-UTT": 1024, "manet_UTT": 1024}


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree_digest(root: Path) -> Dict[str, str]:
    """relative path -> SHA-256 of every file under ``root`` (to prove nothing was written)."""
    root = Path(root)
    return {str(p.relative_to(root)): sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


def numpy1_pickle(obj: object) -> bytes:
    """Protocol-4 pickle naming ``numpy.core.multiarray`` as numpy 1.x wrote MMSA's files.

    Pickles ``obj`` with this numpy (which writes ``numpy._core``), drops the optional FRAME
    opcodes (their byte counts would change) and renames the module strings.
    """
    data = pickle.dumps(obj, protocol=4)
    out = bytearray()
    ops = list(pickletools.genops(data))
    for k, (op, arg, pos) in enumerate(ops):
        end = ops[k + 1][2] if k + 1 < len(ops) else len(data)
        if op.name == "FRAME":
            continue
        if op.name == "SHORT_BINUNICODE" and arg.startswith("numpy._core"):
            name = arg.replace("numpy._core", "numpy.core").encode()
            out += b"\x8c" + bytes([len(name)]) + name
            continue
        out += data[pos:end]
    return bytes(out)


def _dump(path: Path, obj: object, protocol: int = 4, numpy1: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(numpy1_pickle(obj) if numpy1 else pickle.dumps(obj, protocol=protocol))
    return path


def _seq(rng: np.random.Generator, lengths: np.ndarray, steps: int, dim: int) -> np.ndarray:
    """(N, T, D) float32, zero after each length."""
    x = rng.standard_normal((len(lengths), steps, dim)).astype(np.float32)
    x[np.arange(steps)[None, :] >= lengths[:, None]] = 0.0
    return x


def _video_ids(rng: np.random.Generator, n: int, split: str) -> np.ndarray:
    """``video$_$clip`` ids: videos with underscores, clips numbered from 1 in shuffled order."""
    videos = [f"{split}_vid{v}_x" for v in range(max(1, n // 3))]
    counter: Dict[str, int] = {}
    ids = []
    for i in range(n):
        v = videos[i % len(videos)]
        counter[v] = counter.get(v, 0) + 1
        ids.append((v, counter[v]))
    order = rng.permutation(n)
    return np.array([f"{ids[i][0]}$_${ids[i][1]}" for i in order])


def mmsa_split(rng: np.random.Generator, split: str, n: int, dataset: str, aligned: bool,
               text_len: int, steps: Sequence[int]) -> dict:
    """One MMSA split with every key of the published files."""
    d_t, d_a, d_v = MMSA_DIMS[dataset]
    t_len = rng.integers(2, text_len + 1, size=n)
    t_a, t_v = (text_len, text_len) if aligned else steps
    a_len = t_len.copy() if aligned else rng.integers(1, t_a + 1, size=n)
    v_len = t_len.copy() if aligned else rng.integers(1, t_v + 1, size=n)
    ids = np.zeros((n, 3, text_len))
    ids[:, 0] = rng.integers(100, 30000, size=(n, text_len))
    ids[:, 1] = np.arange(text_len)[None, :] < t_len[:, None]
    ids[:, 0] *= ids[:, 1]
    audio = _seq(rng, a_len, t_a, d_a)
    audio[0, 0, 0] = -np.inf  # COVAREP log(0); MMSA sets it to 0
    scale = 1.0 if dataset == "sims" else 3.0
    labels = (np.round(rng.uniform(-scale, scale, size=n) / 0.2) * 0.2).astype(np.float32)
    out = {
        "raw_text": np.array([f"sentence {i}" for i in range(n)], dtype=object),
        "audio": audio,
        "vision": _seq(rng, v_len, t_v, d_v),
        "id": _video_ids(rng, n, split),
        "text": _seq(rng, t_len, text_len, d_t),
        "text_bert": ids,
        "audio_lengths": [int(x) for x in a_len],
        "vision_lengths": [int(x) for x in v_len],
        "annotations": np.array(["Negative" if y < 0 else "Neutral" if y == 0 else "Positive" for y in labels]),
        "classification_labels": np.sign(labels).astype(np.float32) + 1.0,
        "regression_labels": labels,
    }
    if dataset == "sims":
        for m in "TAV":
            out[f"regression_labels_{m}"] = np.clip(labels + rng.choice([-0.2, 0.0, 0.2], size=n), -1, 1
                                                    ).astype(np.float32)
    return out


def write_mmsa(root: Path, dataset: str = "mosi", aligned: bool = True,
               sizes: Sequence[int] = (9, 6, 6), text_len: int = 8, steps: Sequence[int] = (12, 10),
               seed: int = 0, numpy1: bool = False,
               mutate: Optional[Callable[[dict], None]] = None) -> Path:
    """``<root>/<MOSI|MOSEI|SIMS>/Processed/{aligned_50|unaligned_50|unaligned_39}.pkl``."""
    rng = np.random.default_rng(seed)
    data = {}
    for s, n in zip(SPLITS, sizes):
        data[s] = mmsa_split(rng, s, n, dataset, aligned, text_len, steps)
    if mutate is not None:
        mutate(data)
    name = "aligned_50.pkl" if aligned else ("unaligned_39.pkl" if dataset == "sims" else "unaligned_50.pkl")
    return _dump(Path(root) / dataset.upper() / "Processed" / name, data, numpy1=numpy1)


def write_mult(root: Path, dataset: str = "mosi", aligned: bool = True,
               sizes: Sequence[int] = (9, 6, 6), steps: int = 6, id_style: str = "rows",
               seed: int = 0, mutate: Optional[Callable[[dict], None]] = None) -> Path:
    """``<root>/{mosi_data|mosei_senti_data|iemocap_data}[_noalign].pkl`` in MulT's layout.

    Args:
        id_style: "rows" (N, 3) bytes (video, start, end) as MulT's meta; "strings" (N,) str;
            "none" leaves ``id`` out (MulT treats it as optional).
    """
    rng = np.random.default_rng(seed)
    d_t, d_a, d_v = MULT_DIMS[dataset]
    data = {}
    for s, n in zip(SPLITS, sizes):
        t_a, t_v = (steps, steps) if aligned else (steps + 3, steps + 1)
        split = {"text": rng.standard_normal((n, steps, d_t)).astype(np.float32),
                 "audio": rng.standard_normal((n, t_a, d_a)).astype(np.float32),
                 "vision": rng.standard_normal((n, t_v, d_v)).astype(np.float32)}
        split["audio"][0, -1, :2] = -np.inf
        if dataset == "iemocap":
            yes = rng.integers(0, 2, size=(n, 4))
            split["labels"] = np.stack([1 - yes, yes], axis=-1).astype(np.float32)  # (N, 4, 2)
        else:
            split["labels"] = np.round(rng.uniform(-3, 3, size=(n, 1, 1)), 1).astype(np.float32)
        videos = [f"{s}_v{i % 3}_q" for i in range(n)]
        starts = rng.permutation(n) * 2.5
        if id_style == "rows":
            split["id"] = np.array([[v.encode(), f"{a:.2f}".encode(), f"{a + 2:.2f}".encode()]
                                    for v, a in zip(videos, starts)])
        elif id_style == "strings":
            split["id"] = np.array([f"{v}_{i}" for i, v in enumerate(videos)])
        data[s] = split
    if mutate is not None:
        mutate(data)
    stem = {"mosi": "mosi", "mosei": "mosei_senti", "iemocap": "iemocap"}[dataset]
    return _dump(Path(root) / f"{stem}_data{'' if aligned else '_noalign'}.pkl", data)


def write_gcnet(root: Path, dataset: str = "iemocap4", videos_per_session: int = 2,
                utterances: Sequence[int] = (3, 5), as_tuple: bool = True, faces: bool = True,
                seed: int = 0, mutate: Optional[Callable[[dict], None]] = None) -> Path:
    """GCNet layout: ``<root>/<label pickle>`` and ``<root>/features/<feature>/<utt>.npy``.

    IEMOCAP: dialogues ``Ses0{s}{F|M}_impro0{k}`` over 5 sessions, train = sessions 1-4, test =
    session 5 (sets, as GCNet), a 6-tuple. MOSI: 7-tuple with ``valVids``. With ``faces``, the
    vision feature of every third utterance is a folder of per-face .npy files; every fourth
    audio feature is 2-D (T, D). ``mutate`` gets the label dict (before it becomes a tuple).
    Returns the label pickle path.
    """
    rng = np.random.default_rng(seed)
    iemocap = dataset.startswith("iemocap")
    k = {"iemocap4": 4, "iemocap6": 6}.get(dataset)
    if iemocap:
        vids = [f"Ses0{s}{'FM'[j % 2]}_impro0{j}" for s in range(1, 6) for j in range(videos_per_session)]
    else:
        vids = [f"vid_{j}_{c}" for j, c in enumerate("abcdefgh")]
    d = {"videoIDs": {}, "videoLabels": {}, "videoSpeakers": {}, "videoSentences": {}}
    for j, v in enumerate(vids):
        n = int(rng.integers(utterances[0], utterances[1] + 1))
        d["videoIDs"][v] = [f"{v}_{'FM'[i % 2] if iemocap else ''}{i:03d}" for i in range(n)]
        d["videoLabels"][v] = ([int(x) for x in rng.integers(0, k, size=n)] if iemocap
                               else [float(x) for x in np.round(rng.uniform(-3, 3, size=n), 1)])
        d["videoSpeakers"][v] = ["FM"[i % 2] for i in range(n)] if iemocap else [""] * n
        d["videoSentences"][v] = [f"utterance {i} of {v}" for i in range(n)]
    if iemocap:
        d["trainVids"] = {v for v in vids if not v.startswith("Ses05")}
        d["testVids"] = {v for v in vids if v.startswith("Ses05")}
        keys = ("videoIDs", "videoLabels", "videoSpeakers", "videoSentences", "trainVids", "testVids")
        name = f"IEMOCAP_features_raw_{k}way.pkl"
    else:
        d["trainVids"], d["valVids"], d["testVids"] = vids[:5], vids[5:6], vids[6:]
        keys = ("videoIDs", "videoLabels", "videoSpeakers", "videoSentences", "trainVids", "valVids",
                "testVids")
        name = f"CMU{dataset.upper()}_features_raw_2way.pkl"
    root = Path(root)
    count = 0
    for v in vids:
        for utt in d["videoIDs"][v]:
            for feat, dim in GCNET_DIMS.items():
                folder = root / "features" / feat
                folder.mkdir(parents=True, exist_ok=True)
                if feat == "manet_UTT" and faces and count % 3 == 0:
                    (folder / utt).mkdir(exist_ok=True)
                    for f in range(2):
                        np.save(folder / utt / f"face_{'FM'[f]}{f:03d}.npy",
                                rng.standard_normal(dim).astype(np.float32))
                elif feat == "wav2vec-large-c-UTT" and count % 4 == 0:
                    np.save(folder / f"{utt}.npy", rng.standard_normal((3, dim)).astype(np.float32))
                else:
                    np.save(folder / f"{utt}.npy", rng.standard_normal((1, dim)).astype(np.float32))
            count += 1
    if mutate is not None:
        mutate(d)
    obj = tuple(d[k_] for k_ in keys) if as_tuple else d
    return _dump(root / name, obj, protocol=2)


BCLSTM_DIMS = {"text": 100, "audio": 73, "video": 100}
BCLSTM_COLUMNS = ("segment_id", "video_id", "clip_id", "start", "end", "text", "label", "label_bin",
                  "std_split", "bclstm_split", "bclstm_row")


def write_mosi_bclstm(root: Path, videos: Sequence[int] = (4, 2), clips: int = 3, seed: int = 0,
                      edit: Optional[Dict[str, Callable[[str], str]]] = None) -> Path:
    """A tiny ``mosi-bclstm`` folder: ``mosi_index.csv``, ``features/{text,audio,video}_{train,test}0.csv``
    (headerless, quoted, ``width`` features plus a trailing label) and ``SHA256SUMS``.

    ``videos`` is (train videos, test videos), each with ``clips`` segments. ``edit`` maps a file's
    relative path to a function of its text, applied before ``SHA256SUMS`` is written (as a user
    re-exporting the folder would). Returns the folder.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "features").mkdir(parents=True, exist_ok=True)
    index, feats = [], {}
    for split, n_vid in zip(("train", "test"), videos):
        rows = []
        for v in range(n_vid):
            for c in range(1, clips + 1):
                label = float(np.round(rng.uniform(-3, 3), 1))
                rows.append([f"{split}vid{v}_{c}", f"{split}vid{v}", c, c * 2.0, c * 2.0 + 1.5,
                             f"SEGMENT {c}", label, int(label >= 0), "train", split, len(rows)])
        index += rows
        for m, dim in BCLSTM_DIMS.items():
            x = rng.standard_normal((len(rows), dim)).tolist()
            feats[f"features/{m}_{split}0.csv"] = "".join(
                ",".join(f'"{v!r}"' for v in x[i] + [float(r[6] >= 0)]) + "\n" for i, r in enumerate(rows))
    files = {"mosi_index.csv": ",".join(BCLSTM_COLUMNS) + "\n"
             + "".join(",".join(str(c) for c in r) + "\n" for r in index), **feats}
    for rel, text in files.items():
        (root / rel).write_text((edit or {}).get(rel, lambda t: t)(text))
    (root / "SHA256SUMS").write_text("".join(f"{sha256(root / rel)}  {rel}\n" for rel in sorted(files)))
    return root
