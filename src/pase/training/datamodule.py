"""DataLoaders over a ``DataBundle``: shuffled sample batches, or whole groups for context models."""

from __future__ import annotations

from typing import Iterator, List

import torch
from torch.utils.data import DataLoader, Sampler

from ..data.contract import DataBundle, MultimodalDataset, collate_batches

__all__ = ["GroupBatchSampler", "make_loader"]


class GroupBatchSampler(Sampler[List[int]]):
    """Batches made of whole groups (videos / dialogues), about ``batch_size`` samples each.

    Groups are shuffled every epoch when ``shuffle`` (seeded by ``seed`` and the epoch); a group
    larger than ``batch_size`` forms a batch of its own.
    """

    def __init__(self, groups: torch.Tensor, batch_size: int, shuffle: bool, seed: int = 0) -> None:
        self.batch_size, self.shuffle, self.seed, self.epoch = batch_size, shuffle, seed, 0
        order = torch.argsort(groups, stable=True)
        ids, counts = torch.unique_consecutive(groups[order], return_counts=True)
        self.members = [idx.tolist() for idx in torch.split(order, counts.tolist())]

    def _batches(self) -> List[List[int]]:
        perm = range(len(self.members))
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            perm = torch.randperm(len(self.members), generator=g).tolist()
        batches, cur = [], []
        for gi in perm:
            if cur and len(cur) + len(self.members[gi]) > self.batch_size:
                batches.append(cur)
                cur = []
            cur = cur + self.members[gi]
        if cur:
            batches.append(cur)
        return batches

    def __iter__(self) -> Iterator[List[int]]:
        batches = self._batches()
        self.epoch += 1
        return iter(batches)

    def __len__(self) -> int:
        return len(self._batches())


def make_loader(bundle: DataBundle, split: str, batch_size: int, shuffle: bool, seed: int,
                by_group: bool = False, num_workers: int = 0) -> DataLoader:
    """A DataLoader yielding ``Batch`` objects for ``split``."""
    ds: MultimodalDataset = bundle.splits[split]
    if by_group:
        if ds.groups is None:
            raise ValueError(f"dataset {bundle.name!r} split {split!r} has no groups; context models "
                             "need video / dialogue ids (set model.context=false)")
        sampler = GroupBatchSampler(ds.groups, batch_size, shuffle, seed)
        return DataLoader(ds, batch_sampler=sampler, collate_fn=collate_batches, num_workers=num_workers)
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=g, collate_fn=collate_batches,
                      num_workers=num_workers, drop_last=False)
