"""``pase train`` whose every rank saves its prototype banks, SGM state and weights at the end of fit.

Run as a script (``python ddp_train.py train --set ...``): with ``train.strategy=ddp`` Lightning
starts the other ranks by re-running this same command, so each rank patches the module the
same way. The dump goes to ``$PASE_DUMP_DIR/rank<r>.pt``; with ``$PASE_FAIL_RANK`` set that rank raises in
epoch 1. Test-only: the product has no hook.
"""

import os
import sys
from pathlib import Path

import torch

from pase.training.lightning_module import PaseModule


def dump(module: PaseModule) -> None:
    banks = module.model.banks
    torch.save({"prototypes": {m: banks[m].prototypes.clone() for m in banks},
                "initialized": {m: banks[m].initialized.clone() for m in banks},
                "coeffs": module.method.coeffs.clone(), "phase": int(module.method.phase),
                "weights": torch.cat([p.detach().flatten() for p in module.parameters()]),
                "world_size": module.trainer.world_size, "valid": dict(module.results["valid"])},
               Path(os.environ["PASE_DUMP_DIR"]) / f"rank{module.global_rank}.pt")


PaseModule.on_train_end = dump

if os.environ.get("PASE_FAIL_RANK"):  # that rank raises at the first step of epoch 1 (epoch 0 is checkpointed)
    _step = PaseModule.training_step

    def failing_step(self, batch, batch_idx):
        if self.global_rank == int(os.environ["PASE_FAIL_RANK"]) and self.current_epoch == 1:
            raise RuntimeError(f"injected failure on rank {self.global_rank}")
        return _step(self, batch, batch_idx)
    PaseModule.training_step = failing_step

if __name__ == "__main__":
    from pase.cli import main

    sys.exit(main(sys.argv[1:]))
