"""Constants and helpers shared by the evaluation-suite tests (imported as ``eval_setup``)."""

import contextlib

import torch

from tiny import TINY

#: two epochs of the tiny synthetic problem: enough for a selected epoch and a 2-row trajectory
OVERRIDES = TINY + ["train.max_epochs=2"]
METHODS = ["late_fusion", "agm", "nope"]  # "nope" is not a method: its runs fail, the others go on
OK_METHODS = ["late_fusion", "agm"]
SEEDS = [1111, 1112]
MODALITIES = ["text", "audio", "vision"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@contextlib.contextmanager
def one_thread():
    """Tiny models on loaded CPUs run many times faster on one thread than on several."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


MOSI_METRICS = ("Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score", "Mult_acc_5", "Mult_acc_7", "MAE", "Corr")


def fake_comparison(out, runs, seeds, reference="late_fusion", protocol="mosi", monitor="MAE", diagnostics=None,
                    best_epoch=None):
    """A comparison folder written by hand, without training, for the summary and report code:
    ``runs`` maps (method, seed) to its test metrics (a dict; None: a failed run, FAILED.txt alone);
    a (method, seed) not in ``runs`` has no folder (a missing run). ``diagnostics`` maps (method,
    seed) to its diagnostics.json; ``best_epoch`` to its metrics.json's selected epoch."""
    import json
    from pathlib import Path

    out = Path(out)
    methods = list(dict.fromkeys(m for m, _ in runs))
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps({"methods": methods, "seeds": list(seeds), "reference": reference}))
    for (m, s), test in runs.items():
        run = out / "runs" / m / f"seed{s}"
        run.mkdir(parents=True)
        if test is None:
            (run / "FAILED.txt").write_text(f"RuntimeError: {m} | {s} failed\n")
            continue
        (run / "metrics.json").write_text(json.dumps({
            "dataset": "fake", "protocol": protocol, "monitor": monitor, "test": test, "valid": test,
            "best_epoch": (best_epoch or {}).get((m, s), 0), "code_sha256": "same"}))
        if diagnostics and (m, s) in diagnostics:
            (run / "diagnostics.json").write_text(json.dumps({"code_sha256": "same", **diagnostics[(m, s)]}))
    return out


def mosi_metrics(**given):
    """A MOSI test-metric dict: 0.5 everywhere but the ``given`` values."""
    return {k: float(given.get(k, 0.5)) for k in MOSI_METRICS}
