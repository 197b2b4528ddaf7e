"""The MMSA-pickle workers: write a MOSEI-shaped ``aligned_50.pkl`` and load it with
``pase.data.mmsa.load_mmsa`` in a fresh process (time, RSS before and after, peak vs file size).

Kept apart from the other workers so the load process imports ``torch`` and ``pase.data`` only,
not Lightning: its RSS before the load is the baseline the peak is compared with.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
from pathlib import Path
from typing import Any, Dict

import numpy as np

import workloads as W


def _mmsa_split(rng: np.random.Generator, split: str, n: int, steps: int, dims) -> Dict[str, Any]:
    """One MMSA aligned_50 split with every key of the published files (tests/data/writers.py
    layout), generated in float32 directly so the writer's own memory stays near the file size."""
    d_t, d_a, d_v = dims
    t_len = rng.integers(2, steps + 1, size=n)
    pad = np.arange(steps)[None, :] >= t_len[:, None]  # (N, T)

    def seq(d: int) -> np.ndarray:
        x = rng.standard_normal((n, steps, d), dtype=np.float32)
        x[pad] = 0.0
        return x

    ids = np.zeros((n, 3, steps))
    ids[:, 0] = rng.integers(100, 30000, size=(n, steps))
    ids[:, 1] = ~pad
    ids[:, 0] *= ids[:, 1]
    audio = seq(d_a)
    audio[0, 0, 0] = -np.inf  # COVAREP log(0); MMSA sets it to 0
    labels = (np.round(rng.uniform(-3, 3, size=n) / 0.2) * 0.2).astype(np.float32)
    videos = [f"{split}_vid{v}_x" for v in range(max(1, n // 8))]
    clip_ids = np.array([f"{videos[i % len(videos)]}$_${i // len(videos) + 1}" for i in range(n)])
    return {"raw_text": np.array([f"sentence {i}" for i in range(n)], dtype=object), "audio": audio,
            "vision": seq(d_v), "id": clip_ids, "text": seq(d_t), "text_bert": ids,
            "audio_lengths": [int(x) for x in t_len], "vision_lengths": [int(x) for x in t_len],
            "annotations": np.array(["Negative" if y < 0 else "Neutral" if y == 0 else "Positive" for y in labels]),
            "classification_labels": np.sign(labels).astype(np.float32) + 1.0, "regression_labels": labels}


def mmsa_write(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Write a MOSEI-shaped aligned_50.pkl (protocol 4, as MMSA's files) with ``sizes`` samples."""
    rng = np.random.default_rng(0)
    data = {s: _mmsa_split(rng, s, n, spec["steps"], spec["dims"]) for s, n in zip(("train", "valid", "test"),
                                                                                  spec["sizes"])}
    path = Path(spec["path"])
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(path, "wb") as fh:
        pickle.dump(data, fh, protocol=4)
        fh.flush()
        os.fsync(fh.fileno())
    return {"path": str(path), "bytes": path.stat().st_size, "write_s": time.perf_counter() - t0,
            "writer_peak_mb": W.peak_rss_mb()}


def mmsa_load(spec: Dict[str, Any]) -> Dict[str, Any]:
    """``pase.data.mmsa.load_mmsa`` of the file: time, RSS before and after, peak."""
    from pase.data.mmsa import load_mmsa

    size = Path(spec["path"]).stat().st_size / 2**20
    # the baseline is torch and pase.data: Lightning (~180 MiB) was in it while workloads imported it (review)
    assert "lightning" not in sys.modules, "the MMSA load's baseline would count Lightning: something imported it"
    before, peak_before = W.rss_mb(), W.peak_rss_mb()
    t0 = time.perf_counter()
    bundle = load_mmsa(spec["path"], dataset="mosei")
    dt = time.perf_counter() - t0
    peak = W.peak_rss_mb()
    held = W.rss_mb()
    n = {s: len(d) for s, d in bundle.splits.items()}
    return {"file_mb": size, "load_s": dt, "rss_before_mb": before, "peak_before_mb": peak_before,
            "peak_mb": peak, "rss_after_mb": held, "samples": n,
            "peak_over_file": peak / size, "peak_increment_over_file": (peak - before) / size,
            "held_increment_over_file": (held - before) / size}
