"""pase: Prototype-aligned Calibration and Shapley-based Equilibrium for multimodal sentiment analysis."""

import functools

__version__ = "0.1.0"


@functools.lru_cache(maxsize=None)
def code_fingerprint() -> str:
    """SHA-256 (first 16 hex digits) of this package's Python sources, paths and bytes: which code
    trained a run, also without git and whatever ``__version__`` says. Recorded in every
    metrics.json; ``pase compare`` flags a comparison whose runs come from different code."""
    import hashlib
    from pathlib import Path

    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]
