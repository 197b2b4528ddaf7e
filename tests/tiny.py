"""Tiny configurations and data shared by tests (imported as ``tiny``; tests/ is on sys.path via conftest)."""

import random
from pathlib import Path

import torch

from pase.data.contract import DataBundle, MultimodalDataset

#: a synthetic problem small enough to train for a few epochs in a couple of seconds
TINY = ["data.options.sizes=[192,64,64]", "train.max_epochs=3", "train.progress_bar=false",
        "model.d_model=16", "model.hidden=32", "model.head_hidden=16"]


def ragged_groups(n_groups=40, seed=0):
    """Group ids of ``n_groups`` groups of 1 to 14 members, and the sizes."""
    rng = random.Random(seed)
    sizes = [rng.randint(1, 14) for _ in range(n_groups)]
    return torch.tensor([g for g, s in enumerate(sizes) for _ in range(s)]), sizes


def grouped(bundle: DataBundle) -> DataBundle:
    """The bundle with ragged 'videos' (groups and positions) attached to every split."""
    splits = {}
    for name, ds in bundle.splits.items():
        n = len(ds.ids)
        groups, sizes = ragged_groups(n_groups=n, seed=len(name))
        groups, positions = groups[:n], torch.cat([torch.arange(s) for s in sizes])[:n]
        splits[name] = MultimodalDataset({m: ds.features[m] for m in ds.modalities}, ds.target, ds.ids,
                                         groups=groups, positions=positions, split=name)
    return DataBundle(bundle.name, bundle.task, splits, dict(bundle.info))


def as_an_older_pase_saved(run: Path) -> None:
    """``run`` as a pase before the dataset was recorded wrote it: config.yaml and the checkpoints without
    ``data.options.dataset`` (the dataset was inferred from the path at every load)."""
    import yaml

    from pase.training.checkpoint import safe_load_checkpoint

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    del cfg["data"]["options"]["dataset"]
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    for ckpt in (run / "checkpoints").glob("*.ckpt"):
        state = safe_load_checkpoint(ckpt)
        del state["hyper_parameters"]["config"]["data"]["options"]["dataset"]
        torch.save(state, ckpt)

