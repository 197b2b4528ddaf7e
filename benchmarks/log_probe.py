"""What Lightning's per-step ``self.log`` costs at utterance level (real MOSI), paired in one process.

    python benchmarks/log_probe.py [--reps 3] [--epochs 8]

``new`` is ``PaseModule.training_step`` as it is (training losses summed in the module and handed
to ``self.log`` once per epoch, ``PaseModule._log_train``); ``old`` patches in the previous step,
one ``self.log(..., on_epoch=True, sync_dist=True)`` per loss and step. Each variant trains
late fusion and PaSE (SGM from the first step) through ``pase.training.train`` for ``--epochs``
epochs, alternating, ``--reps`` times; printed: the median wall time of a training epoch
(Lightning's ``on_train_epoch_start`` to ``on_train_epoch_end``, validation included, the first
epoch of each run left out) and the ratios. Needs ``../shared/data/mosi-bclstm``. 1 thread.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

import pase.training.lightning_module as LM
import pase.training.run as R
from pase.config import load_config
from pase.training import train
from run import positive_int

ROOT = Path(__file__).resolve().parents[1]


def old_training_step(self, batch, batch_idx):
    out = self.model(batch)
    loss, logs = self.method.loss(self.model, batch, out)
    n = len(batch)
    self.log("train/loss", loss.detach(), on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
    for k, v in logs.items():
        self.log(f"train/{k}", v, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
    return loss


class EpochTimer(L.Callback):
    def __init__(self) -> None:
        self.times = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.times.append(time.perf_counter() - self.t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=positive_int, default=3)
    ap.add_argument("--epochs", type=int, default=8, help="at least 2 (the first epoch is not timed)")
    a = ap.parse_args(argv)
    if a.epochs < 2:  # the first epoch is left out of the times: 1 timed nothing and ended in a median of nothing
        ap.error(f"--epochs must be at least 2: the first epoch is not timed, got {a.epochs}")
    if not (ROOT.parent / "shared" / "data" / "mosi-bclstm").is_dir():
        print("benchmarks/log_probe.py: ../shared/data/mosi-bclstm is absent", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    new_step, make_trainer, timer = LM.PaseModule.training_step, R._trainer, [None]

    def with_timer(cfg, out, callbacks, quiet):
        timer[0] = EpochTimer()
        return make_trainer(cfg, out, list(callbacks) + [timer[0]], quiet)

    R._trainer = with_timer
    times = {}
    for _ in range(a.reps):
        for method in ("late_fusion", "pase"):
            for mode, step in (("old", old_training_step), ("new", new_step)):
                LM.PaseModule.training_step = step
                cfg = load_config(str(ROOT / "configs" / "mosi_bclstm.yaml"),
                                  [f"method={method}", f"train.max_epochs={a.epochs}", "train.early_stop_patience=1000",
                                   "train.progress_bar=false", "pase.switch_max_epoch=0",
                                   f"data.path={ROOT.parent / 'shared' / 'data' / 'mosi-bclstm'}"])
                with tempfile.TemporaryDirectory() as d:
                    train(cfg, Path(d) / "run", quiet=True)
                times.setdefault((method, mode), []).extend(timer[0].times[1:])
    LM.PaseModule.training_step, R._trainer = new_step, make_trainer
    med = {k: statistics.median(v) for k, v in times.items()}
    for (method, mode), v in med.items():
        print(f"{method:12s} {mode}: {v * 1e3:.0f} ms per training epoch (median of {len(times[(method, mode)])})")
    for method in ("late_fusion", "pase"):
        print(f"{method}: new / old {med[(method, 'new')] / med[(method, 'old')]:.3f}")
    print(f"pase / late_fusion: old {med[('pase', 'old')] / med[('late_fusion', 'old')]:.3f}, "
          f"new {med[('pase', 'new')] / med[('late_fusion', 'new')]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
