"""DataLoaders over a ``DataBundle``: shuffled sample batches, or whole groups for context models.

Every order is a pure function of ``(seed, epoch, rank, world size)``: the shuffling order of
epoch e is ``randperm`` under a generator seeded from the pair ``(seed, e)`` (``epoch_seed``; Lightning
calls ``set_epoch`` before each epoch, and without it each new iteration moves to the next
epoch), so a run resumed at epoch k sees exactly the batches an uninterrupted run sees, with
no generator state to checkpoint. Lightning creates a resumed run's first training iterator
before it calls ``set_epoch``, so the samplers draw an order at the first ``next`` (generators),
and ``set_loader_epoch`` points a resumed run's loader at its next epoch beforehand (worker
processes fetch indices as soon as an iterator exists).

With ``shard=True`` under ``torch.distributed`` (world size W) the loaders shard the data
themselves (the trainer runs with ``use_distributed_sampler=False``):

* training, samples: batch j of rank r (batch size b) holds positions ``r, r + W, ...`` of the
  slice ``[j b W, (j + 1) b W)`` of the epoch's order, so the W ranks together step through the
  global batches of one process with batch size ``b W``. The order is padded by wrap-around to
  a multiple of W so every rank steps equally often (nothing repeats when W divides N);
* training, groups: rank r takes batches ``r::W`` of the epoch's group batches, padded likewise;
* evaluation: rank r takes batches ``r::W`` of the single-process batches, unpadded; the module
  gathers them back into single-process order (``PaseModule``), so every rank scores exactly
  the outputs a single process would.
"""

from __future__ import annotations

import heapq
from typing import Iterator, List, Sequence, Tuple

import torch
from torch.utils.data import BatchSampler, DataLoader, Sampler

from ..data.contract import DataBundle, MultimodalDataset, collate_batches
from ..methods.base import seed_from

__all__ = ["DATA_ORDER", "EpochSampler", "GroupBatchSampler", "epoch_seed", "ShardedBatches", "make_loader", "set_loader_epoch",
           "dist_info"]


def dist_info() -> Tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` outside ``torch.distributed``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _shard(items: List, shard: bool, pad: bool) -> List:
    """Items ``rank::W`` (all of them when not sharding), padded by wrap-around when ``pad``."""
    rank, world = dist_info() if shard else (0, 1)
    if world == 1:
        return items
    if pad and items and len(items) % world:
        extra = world - len(items) % world
        items = items + (items * (extra // len(items) + 1))[:extra]
    return items[rank::world]


#: the version of the per-epoch data order a checkpoint records (``pase_state["data_order"]``): 2 is
#: :func:`epoch_seed`'s; checkpoints without it were saved by code that shuffled epoch e with seed + e
DATA_ORDER = 2


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffling seed of ``epoch`` of a run with ``train.seed`` ``seed``: numpy's ``SeedSequence``
    of the pair, so runs of consecutive seeds (the MMSA seeds 1111, 1112, ... of a comparison) draw
    unrelated orders. With ``seed + epoch`` (before a review) seed s + 1 replayed seed s's shuffles one
    epoch late, so the seeds of a comparison were not independent replicates in their data order."""
    return seed_from(seed, epoch)


class EpochSampler(Sampler[int]):
    """The indices 0..n-1 of one epoch: permuted with seed ``epoch_seed(seed, epoch)``, or in order.

    Args:
        n: number of items (samples, or groups for ``GroupBatchSampler``).
        shuffle: permute every epoch (training) or keep the order (evaluation).
        seed: base seed (``train.seed``).
        shard: training samples under ``torch.distributed``: positions ``rank::W`` of the order,
            padded to equal counts (see the module docstring).
    """

    def __init__(self, n: int, shuffle: bool, seed: int = 0, shard: bool = False) -> None:
        self.n, self.shuffle, self.seed, self.shard, self.epoch = n, shuffle, seed, shard, 0

    def set_epoch(self, epoch: int) -> None:
        """Select the order of ``epoch`` (Lightning calls this before every epoch)."""
        self.epoch = epoch

    def order(self) -> List[int]:
        """The current epoch's order (unsharded); does not advance the epoch."""
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self) -> Iterator[int]:
        # a generator: the order is drawn at the first ``next``, after Lightning's ``set_epoch``
        # (Lightning creates a resumed run's first iterator before it sets the epoch)
        order = _shard(self.order(), self.shard, pad=True)
        self.epoch += 1  # the next iteration is the next epoch unless set_epoch says otherwise
        yield from order

    def __len__(self) -> int:
        rank, world = dist_info() if self.shard else (0, 1)
        return -(-self.n // world)


class GroupBatchSampler(Sampler[List[int]]):
    """Batches made of whole groups (videos / dialogues), the same number of batches every epoch.

    The number of batches is fixed, ``K = min(groups, ceil(samples / batch_size))``: Lightning
    reads a training loader's length once, and an epoch with fewer batches than that length never
    reaches its validation (before this was fixed, greedy packing in a shuffled order gave 22 or
    23 batches on MOSI, and epochs with 22 skipped validation, logging and the phase switch). The
    groups are visited in the order of ``self.sampler`` (an ``EpochSampler`` over groups, shuffled
    every epoch when ``shuffle``; Lightning finds it as ``batch_sampler.sampler`` and calls its
    ``set_epoch``), each joining the batch that holds the fewest samples so far (the lowest index
    on ties), so batches hold about ``samples / K <= batch_size`` samples on average; a batch can
    exceed that by up to its last group's size (less than ``batch_size`` plus the largest group).
    With ``shard`` under ``torch.distributed`` rank r takes batches ``r::W``, padded when ``pad``.
    """

    def __init__(self, groups: torch.Tensor, batch_size: int, shuffle: bool, seed: int = 0,
                 shard: bool = False, pad: bool = True) -> None:
        self.batch_size, self.shard, self.pad = batch_size, shard, pad
        order = torch.argsort(groups, stable=True)
        ids, counts = torch.unique_consecutive(groups[order], return_counts=True)
        self.members = [idx.tolist() for idx in torch.split(order, counts.tolist())]
        self.n_batches = min(len(self.members), -(-len(groups) // batch_size))
        self.sampler = EpochSampler(len(self.members), shuffle, seed)

    def _batches(self) -> List[List[int]]:
        batches: List[List[int]] = [[] for _ in range(self.n_batches)]
        heap = [(0, k) for k in range(self.n_batches)]  # (samples so far, batch index)
        for gi in self.sampler.order():
            size, k = heapq.heappop(heap)
            batches[k] += self.members[gi]
            heapq.heappush(heap, (size + len(self.members[gi]), k))
        return _shard(batches, self.shard, self.pad)

    def __iter__(self) -> Iterator[List[int]]:
        # a generator, as EpochSampler's: batches are dealt at the first ``next``, after ``set_epoch``
        batches = self._batches()
        self.sampler.epoch += 1  # as EpochSampler: the next iteration is the next epoch
        yield from batches

    def __len__(self) -> int:
        return len(_shard(list(range(self.n_batches)), self.shard, self.pad))


class ShardedBatches(Sampler[List[int]]):
    """Batches ``rank::W`` of ``batches`` (unpadded) under ``torch.distributed``; all of them otherwise."""

    def __init__(self, batches: Sampler[List[int]]) -> None:
        self.batches = batches
        self.sampler = getattr(batches, "sampler", None)

    def __iter__(self) -> Iterator[List[int]]:
        yield from _shard(list(self.batches), shard=True, pad=False)

    def __len__(self) -> int:
        rank, world = dist_info()
        return len(range(rank, len(self.batches), world))


def set_loader_epoch(loader: DataLoader, epoch: int) -> None:
    """Point the order of ``loader`` at ``epoch`` (as Lightning's ``set_epoch`` does before each
    epoch). A resumed run calls it before training: worker processes fetch their first indices
    when Lightning creates the iterator, which it does before it sets the epoch."""
    for sampler in (loader.sampler, getattr(loader.batch_sampler, "sampler", None)):
        if isinstance(sampler, EpochSampler):
            sampler.set_epoch(epoch)


def make_loader(bundle: DataBundle, split: str, batch_size: int, shuffle: bool, seed: int,
                by_group: bool = False, num_workers: int = 0, shard: bool = False) -> DataLoader:
    """A DataLoader yielding ``Batch`` objects for ``split``.

    ``shuffle`` marks a training loader (a new order every epoch); ``shard`` takes this rank's
    part under ``torch.distributed`` as the module docstring describes (no effect otherwise).
    """
    ds: MultimodalDataset = bundle.splits[split]
    # the loader's own generator only seeds worker processes; it never drives the order
    g = torch.Generator().manual_seed(seed)
    kw = dict(collate_fn=collate_batches, num_workers=num_workers, generator=g)
    if by_group:
        if ds.groups is None:
            raise ValueError(f"dataset {bundle.name!r} split {split!r} has no groups; context models "
                             "need video / dialogue ids (set model.context=false)")
        return DataLoader(ds, batch_sampler=GroupBatchSampler(ds.groups, batch_size, shuffle, seed, shard=shard,
                                                              pad=shuffle), **kw)
    if shuffle:
        return DataLoader(ds, batch_size=batch_size, sampler=EpochSampler(len(ds), True, seed, shard=shard),
                          drop_last=False, **kw)
    batches: Sequence = BatchSampler(EpochSampler(len(ds), False), batch_size, drop_last=False)
    return DataLoader(ds, batch_sampler=ShardedBatches(batches) if shard else batches, **kw)
