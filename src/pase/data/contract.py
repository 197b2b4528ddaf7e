"""The data contract every source in ``pase`` produces.

One structure serves any number M of named modalities:

* ``MultimodalDataset`` holds, per modality, a padded float tensor (N, T_m, D_m) and the true
  lengths (N,); the target (N,) float for regression, (N,) long for single-label
  classification, (N, E) float/long for multi-label targets (MulT IEMOCAP: E = 4 emotions);
  string sample ids; and optional context grouping: ``groups`` (N,) long (video or dialogue
  index) and ``positions`` (N,) long (utterance index inside its group).
* ``Batch`` is what a DataLoader yields: the same fields for B samples, built in one indexing
  operation per field (``__getitems__``), never per sample.
* ``TaskSpec`` says what the target is and which metric protocol scores it; ``DataBundle``
  gathers the splits of one source with its task.

Utterance-level data (one vector per modality) is T = 1 with all lengths 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .validate import LOGGER

__all__ = ["READ_CHANGED", "TaskSpec", "Batch", "MultimodalDataset", "DataBundle", "collate_batches", "MODALITY_ORDER",
           "select_modalities", "standardize", "missing_classes", "class_support_problem"]

#: canonical order of the field's three modalities; other names sort after these, alphabetically
MODALITY_ORDER = ("text", "audio", "vision")

TASK_KINDS = ("regression", "classification", "multilabel")


def sort_modalities(names: Sequence[str]) -> List[str]:
    """Canonical modality order: text, audio, vision first, then any others alphabetically."""
    rank = {m: i for i, m in enumerate(MODALITY_ORDER)}
    return sorted(names, key=lambda m: (rank.get(m, len(rank)), m))


@dataclass(frozen=True)
class TaskSpec:
    """What the target is and how it is scored.

    Attributes:
        kind: "regression" (target (N,) float), "classification" (target (N,) long in [0, K)),
            or "multilabel" (target (N, E) in {0, 1}, one binary decision per label, MulT IEMOCAP).
        num_classes: K for classification, E for multilabel, 1 for regression.
        protocol: the metric protocol name, recorded with every result
            (see ``pase.metrics.PROTOCOLS``), for example "mosi" or "iemocap_mult".
        label_range: (low, high) for regression targets, used by validation.
        class_names: optional names of the K classes or E labels.
    """

    kind: str
    num_classes: int
    protocol: str
    label_range: Optional[tuple] = None
    class_names: Optional[tuple] = None

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(f"TaskSpec.kind={self.kind!r} is not one of {TASK_KINDS}")
        if self.kind == "regression" and self.num_classes != 1:
            raise ValueError(f"a regression task has num_classes=1, got {self.num_classes}")

    @property
    def output_dim(self) -> int:
        """Width of the model's prediction head: 1 for regression, K or E otherwise."""
        return 1 if self.kind == "regression" else self.num_classes


@dataclass
class Batch:
    """B samples of M named modalities.

    Attributes:
        inputs: modality -> (B, T_m, D_m) float tensor, zero-padded after each length.
        lengths: modality -> (B,) long tensor of true lengths (1 <= length <= T_m).
        target: (B,) float (regression), (B,) long (classification) or (B, E) (multilabel).
        ids: B sample ids.
        groups: optional (B,) long context group (video / dialogue) of each sample.
        positions: optional (B,) long position of each sample inside its group.
    """

    inputs: Dict[str, Tensor]
    lengths: Dict[str, Tensor]
    target: Tensor
    ids: List[str]
    groups: Optional[Tensor] = None
    positions: Optional[Tensor] = None

    @property
    def modalities(self) -> List[str]:
        return sort_modalities(self.inputs)

    def __len__(self) -> int:
        return int(self.target.shape[0])

    def to(self, device: torch.device | str) -> "Batch":
        """Move every tensor to ``device`` (ids stay on the host)."""
        mv = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(
            inputs={m: mv(x) for m, x in self.inputs.items()},
            lengths={m: mv(x) for m, x in self.lengths.items()},
            target=mv(self.target),
            ids=self.ids,
            groups=mv(self.groups),
            positions=mv(self.positions),
        )

    def mask(self, modality: str) -> Tensor:
        """(B, T_m) bool mask, True at real (non-padded) steps."""
        x = self.inputs[modality]
        steps = torch.arange(x.shape[1], device=x.device)
        return steps[None, :] < self.lengths[modality][:, None]


class MultimodalDataset(Dataset):
    """In-memory dataset of padded per-modality tensors; indexing a list of rows yields a ``Batch``.

    Args:
        features: modality -> array (N, T_m, D_m), or (N, D_m) for utterance-level data (T = 1).
        target: (N,) or (N, E) labels.
        ids: N unique sample ids.
        lengths: optional modality -> (N,) true lengths; default: every row uses all T_m steps.
        groups: optional (N,) context group ids (integers).
        positions: optional (N,) positions inside each group.
        split: the split name, kept for messages.

    Raises:
        ValueError: when the sample counts, lengths or ids are inconsistent, or a modality has no
            steps or no features; the message names the modality, the shapes and the fix.
    """

    def __init__(
        self,
        features: Mapping[str, np.ndarray | Tensor],
        target: np.ndarray | Tensor,
        ids: Sequence[str],
        lengths: Optional[Mapping[str, np.ndarray | Tensor]] = None,
        groups: Optional[np.ndarray | Tensor] = None,
        positions: Optional[np.ndarray | Tensor] = None,
        split: str = "train",
    ) -> None:
        if not features:
            raise ValueError(f"split {split!r}: no modalities given; pass at least one feature array")
        self.split = split
        self.target = torch.as_tensor(np.asarray(target) if not isinstance(target, Tensor) else target)
        n = int(self.target.shape[0])
        if n == 0:
            raise ValueError(f"split {split!r} is empty (0 samples); check the source's split lists")
        self.features: Dict[str, Tensor] = {}
        self.lengths: Dict[str, Tensor] = {}
        for m in sort_modalities(features):
            x = torch.as_tensor(np.asarray(features[m], dtype=np.float32)
                                if not isinstance(features[m], Tensor) else features[m]).float()
            if x.dim() == 2:
                x = x[:, None, :]  # (N, D) -> (N, 1, D): utterance-level
            if x.dim() != 3 or x.shape[0] != n:
                raise ValueError(
                    f"split {split!r}: modality {m!r} has shape {tuple(x.shape)} but the target has "
                    f"{n} samples; expected (N={n}, T, D) or (N={n}, D)")
            if 0 in x.shape[1:]:
                raise ValueError(f"split {split!r}: modality {m!r} has shape {tuple(x.shape)}, with no time "
                                 f"steps or no features; every modality needs T >= 1 and D >= 1, drop it or "
                                 f"fix its source")
            self.features[m] = x.contiguous()
            if lengths is not None and m in lengths:
                ln = torch.as_tensor(np.asarray(lengths[m])).long().reshape(-1)
                if ln.shape[0] != n or int(ln.min()) < 1 or int(ln.max()) > x.shape[1]:
                    raise ValueError(
                        f"split {split!r}: lengths of {m!r} must be (N={n},) within [1, {x.shape[1]}], "
                        f"got shape {tuple(ln.shape)} range [{int(ln.min())}, {int(ln.max())}]")
                self.lengths[m] = ln
            else:
                self.lengths[m] = torch.full((n,), x.shape[1], dtype=torch.long)
        self.ids = [str(i) for i in ids]
        if len(self.ids) != n:
            raise ValueError(f"split {split!r}: {len(self.ids)} ids for {n} samples")
        if len(set(self.ids)) != n:
            dup = next(i for i in self.ids if self.ids.count(i) > 1)
            raise ValueError(f"split {split!r}: sample id {dup!r} occurs more than once; ids must be unique")
        self.groups = None if groups is None else torch.as_tensor(np.asarray(groups)).long()
        self.positions = None if positions is None else torch.as_tensor(np.asarray(positions)).long()
        for name, v in (("groups", self.groups), ("positions", self.positions)):
            if v is not None and v.shape != (n,):
                raise ValueError(f"split {split!r}: {name} must have shape ({n},), got {tuple(v.shape)}")

    @property
    def modalities(self) -> List[str]:
        return list(self.features)

    def dims(self) -> Dict[str, int]:
        """modality -> feature width D_m."""
        return {m: int(x.shape[-1]) for m, x in self.features.items()}

    def __len__(self) -> int:
        return int(self.target.shape[0])

    def __getitem__(self, index: int) -> Batch:
        return self.__getitems__([index])

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return Batch(
            inputs={m: x.index_select(0, idx) for m, x in self.features.items()},
            lengths={m: ln.index_select(0, idx) for m, ln in self.lengths.items()},
            target=self.target.index_select(0, idx),
            ids=[self.ids[i] for i in idx.tolist()],
            groups=None if self.groups is None else self.groups.index_select(0, idx),
            positions=None if self.positions is None else self.positions.index_select(0, idx),
        )

    def subset(self, indices: Sequence[int], split: Optional[str] = None) -> "MultimodalDataset":
        """A new dataset with the given rows (used to carve validation sets)."""
        b = self.__getitems__(list(indices))
        return MultimodalDataset(b.inputs, b.target, b.ids, lengths=b.lengths, groups=b.groups,
                                 positions=b.positions, split=split or self.split)


def collate_batches(items: Batch | Sequence[Batch]) -> Batch:
    """DataLoader ``collate_fn``: identity for a ``Batch`` from ``__getitems__``, else concatenation."""
    if isinstance(items, Batch):
        return items
    items = list(items)
    cat = lambda ts: None if ts[0] is None else torch.cat(ts)  # noqa: E731
    mods = items[0].inputs.keys()
    t_max = {m: max(b.inputs[m].shape[1] for b in items) for m in mods}
    pad = lambda x, t: torch.nn.functional.pad(x, (0, 0, 0, t - x.shape[1]))  # noqa: E731
    return Batch(
        inputs={m: torch.cat([pad(b.inputs[m], t_max[m]) for b in items]) for m in mods},
        lengths={m: torch.cat([b.lengths[m] for b in items]) for m in mods},
        target=torch.cat([b.target for b in items]),
        ids=[i for b in items for i in b.ids],
        groups=cat([b.groups for b in items]),
        positions=cat([b.positions for b in items]),
    )


@dataclass
class DataBundle:
    """The splits of one source, with its task and provenance.

    Attributes:
        name: dataset name, for example "synthetic" or "mosi_bclstm".
        task: the ``TaskSpec``.
        splits: "train", "valid", "test" -> ``MultimodalDataset``.
        info: free-form provenance recorded with results (file, checksum status, split rule).
    """

    name: str
    task: TaskSpec
    splits: Dict[str, MultimodalDataset]
    info: Dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [s for s in ("train", "valid", "test") if s not in self.splits]
        if missing:
            raise ValueError(f"dataset {self.name!r}: missing split(s) {missing}; found {sorted(self.splits)}")
        mods = {s: tuple(d.modalities) for s, d in self.splits.items()}
        if len(set(mods.values())) != 1:
            raise ValueError(f"dataset {self.name!r}: splits disagree on modalities: {mods}")
        dims = {s: d.dims() for s, d in self.splits.items()}
        if any(v != dims["train"] for v in dims.values()):
            raise ValueError(f"dataset {self.name!r}: splits disagree on feature widths: {dims}")

    @property
    def modalities(self) -> List[str]:
        return self.splits["train"].modalities

    def dims(self) -> Dict[str, int]:
        return self.splits["train"].dims()

    def max_steps(self) -> Dict[str, int]:
        """modality -> the longest T_m over the splits (1 for utterance-level data): what an
        encoder with positions must cover, also when a test split is longer than the training one."""
        return {m: max(int(ds.features[m].shape[1]) for ds in self.splits.values()) for m in self.modalities}


def missing_classes(task: TaskSpec, targets: Mapping[str, np.ndarray | Tensor], where: str) -> Optional[str]:
    """One line naming every class (multilabel: every label) with no training sample, with its count in
    each split and the likely fixes; None when each has one, and for regression.

    A class the task's K says exists (or that valid / test hold) but train lacks cannot be learned: its
    valid / test samples are errors by construction, and UA / Macro_F1 then measure the data. It is a
    warning, not an error (``create_data`` logs it; ``pase data inspect`` lists it as a problem): a rare
    class may be absent from a fold (docs/data.md, 'Classes without a training sample').

    Args:
        task: the ``TaskSpec`` (K classes or E labels).
        targets: split -> (N,) class indices or (N, E) 0/1 labels.
        where: what starts the line (the file or the dataset name).
    """
    if task.kind == "regression" or "train" not in targets:
        return None
    k = task.num_classes
    counts = {}
    for s, y in targets.items():
        y = np.asarray(y.detach().cpu() if isinstance(y, Tensor) else y)
        if task.kind == "multilabel":  # positives per label
            counts[s] = (y.reshape(len(y), -1) > 0).sum(axis=0)[:k]
        else:
            counts[s] = np.bincount(y.reshape(-1).astype(np.int64).clip(0, k - 1), minlength=k)[:k]
    absent = [c for c in range(k) if counts["train"][c] == 0]
    if not absent:
        return None
    multi = task.kind == "multilabel"
    names = task.class_names if task.class_names and len(task.class_names) == k else None
    name = (lambda c: f"{c} ({names[c]})") if names else str
    per = lambda c: ", ".join(f"{s} {int(n[c])}" for s, n in counts.items())  # noqa: E731
    detail = per(absent[0]) if len(absent) == 1 else "; ".join(f"{name(c)}: {per(c)}" for c in absent)
    what = (f"{'label' if multi else 'class'}{('s' if multi else 'es') if len(absent) > 1 else ''} "
            f"{', '.join(name(c) for c in absent)} of {'' if multi else 'K='}{k}")
    lacks = "no positive training sample" if multi else "no training sample"
    nowhere = all(int(n[c]) == 0 for n in counts.values() for c in absent)
    metrics = "that label's accuracy and F1, and Mean_F1" if multi else "UA and Macro_F1"
    too_many = "no split holds a positive" if multi else f"no split holds any, so K={k} may be too large"
    rows = "positives" if multi else "samples"
    learn = f"it cannot be learned, and its valid / test {rows} are errors by construction in {metrics}"
    why = too_many if nowhere else learn
    fix = ("check the train split's labels (every train row says no there) and which rows the file puts in train"
           if multi else "check data.options.dataset (GCNet IEMOCAP: iemocap4 has 4 classes, iemocap6 6), the fold "
           "(data.options.fold) and the labels")
    return (f"{where}: {what} {'have' if len(absent) > 1 else 'has'} {lacks} (per split: {detail}); {why}; "
            f"{fix} (a warning: training goes on)")


def class_support_problem(bundle: DataBundle) -> Optional[str]:
    """:func:`missing_classes` of a bundle's splits, named by its file (or its name) and its fold, if any (a
    review: ``pase crossval``'s line did not say which fold lacked the class)."""
    file, fold = bundle.info.get("file"), bundle.info.get("fold")
    name = bundle.name if fold is None else f"{bundle.name}, fold {fold}"
    where = f"{Path(str(file)).name} ({name})" if file else name
    return missing_classes(bundle.task, {s: d.target for s, d in bundle.splits.items()}, where)


def select_modalities(bundle: DataBundle, modalities: Sequence[str]) -> DataBundle:
    """A view of ``bundle`` with only ``modalities`` (unimodal baselines, ablations)."""
    unknown = [m for m in modalities if m not in bundle.modalities]
    if unknown:
        raise ValueError(f"dataset {bundle.name!r} has no modality {unknown[0]!r} "
                         f"(found: {', '.join(bundle.modalities)}); fix data.modalities")
    splits = {}
    for s, d in bundle.splits.items():
        nd = MultimodalDataset({m: d.features[m] for m in modalities}, d.target, d.ids,
                               lengths={m: d.lengths[m] for m in modalities}, groups=d.groups,
                               positions=d.positions, split=s)
        for k, v in vars(d).items():  # keep source extras (synthetic effects, SIMS unimodal labels)
            if k not in vars(nd):
                setattr(nd, k, v)
        splits[s] = nd
    return DataBundle(bundle.name, bundle.task, splits, dict(bundle.info, modalities=list(modalities)))


def standardize(bundle: DataBundle, eps: float = 1e-6) -> DataBundle:
    """Z-score every feature with the train split's mean and std over real (unpadded) steps.

    Statistics come from train only, so nothing of valid or test leaks; padding stays zero.
    A feature constant on train (std at most ``eps`` times its root mean square, so all zeros too)
    is only centred (scale 1, logged once with the count): dividing by a rounding-level std would
    blow a valid / test value 0.3 up to 300000. The test is relative: an absolute ``std < eps`` left
    a varying feature of scale 1e-7 unscaled, so z-scoring depended on the features' units (a review).
    ``info["standardize"]`` names the rule (a string); the means and stds themselves are not
    stored (they are a function of the train split: rerun ``standardize`` to get them).
    """
    stats, constant = {}, {}
    for m in bundle.modalities:
        d = bundle.splits["train"]
        x = d.features[m].double()
        mask = (torch.arange(x.shape[1])[None, :] < d.lengths[m][:, None]).double()[..., None]  # (N, T, 1)
        n = mask.sum()
        mean = (x * mask).sum((0, 1)) / n
        std = (((x - mean) * mask).pow(2).sum((0, 1)) / n).sqrt()  # (D,)
        rms = ((x * mask).pow(2).sum((0, 1)) / n).sqrt()  # (D,)
        flat = std <= eps * rms
        constant[m] = int(flat.sum())
        stats[m] = (mean.float(), torch.where(flat, torch.ones_like(std), std).float())
    if any(constant.values()):
        detail = ", ".join(f"{m} {c}" for m, c in constant.items() if c)
        LOGGER.info("standardize: %d feature columns are constant on the train split (std <= %g x RMS; %s); they are "
                    "centred, not scaled", sum(constant.values()), eps, detail)
    splits = {}
    for s, d in bundle.splits.items():
        feats = {}
        for m in bundle.modalities:
            mean, std = stats[m]
            mask = (torch.arange(d.features[m].shape[1])[None, :] < d.lengths[m][:, None])[..., None]
            feats[m] = torch.where(mask, (d.features[m] - mean) / std, torch.zeros(()))
        nd = MultimodalDataset(feats, d.target, d.ids, lengths=d.lengths, groups=d.groups,
                               positions=d.positions, split=s)
        for k, v in vars(d).items():
            if k not in vars(nd):
                setattr(nd, k, v)
        splits[s] = nd
    info = dict(bundle.info, standardize="train-split z-score per feature")
    return DataBundle(bundle.name, bundle.task, splits, info)


def _row_stats(x: Tensor) -> List[object]:
    """[shape, sum |r_i|, sum r_i * i / N] of the per-sample sums r_i of ``x`` (N, ...), in float64
    (accumulated without a float64 copy)."""
    r = x.reshape(len(x), -1).sum(dim=1, dtype=torch.float64)  # a split has N >= 1 and D >= 1 (MultimodalDataset)
    w = torch.arange(len(r), dtype=torch.float64) / len(r)
    return [list(x.shape), float(r.abs().sum()), float((r * w).sum())]


def fingerprint(bundle: DataBundle) -> Dict[str, object]:
    """What identifies a bundle's data, cheaply: per split its size and a SHA-256 of its ids, and
    for the targets and for each modality the shape and two float64 statistics of the per-sample
    sums r_i: sum |r_i| and sum r_i * i / N (plain sums would not do: standardised training
    features sum to about 0 whatever the data; negated labels keep sum |r_i|). The statistics, not
    the bytes, because the same data built on another machine may differ in the last bits (the
    built-in benchmark's labels depend on the CPU's kernels). A resume compares the fingerprint
    with the one its checkpoint saved, so data moved to a new path must be the same data."""
    import hashlib

    out: Dict[str, object] = {}
    for s in sorted(bundle.splits):
        d = bundle.splits[s]
        out[s] = {"n": len(d), "ids": hashlib.sha256("\n".join(d.ids).encode()).hexdigest(),
                  "target": _row_stats(d.target.detach().cpu()),
                  "features": {m: _row_stats(x) for m, x in d.features.items()}}
    return out


def _stats_differ(a: Sequence[object], b: Sequence[object]) -> bool:
    """Two :func:`_row_stats` results differ: another shape, or statistics apart by more than 1e-6
    of sum |r_i| (summation order and CPU kernels may differ between machines)."""
    import math

    if list(a[0]) != list(b[0]):
        return True
    tol = 1e-6 * (abs(float(a[1])) + 1.0)
    return any(not math.isclose(float(u), float(v), rel_tol=0.0, abs_tol=tol) for u, v in zip(a[1:], b[1:]))


#: the end of every "trained on other data" refusal: the files may be the same and the loader other (a GCNet
#: IEMOCAP run trained before the speaking-actor faces was told to point label_path at its data: a review)
READ_CHANGED = ("; if the files are the same, this pase reads them differently from the one that trained the run "
                "(docs/data.md, 'When pase reads the same files differently')")


def fingerprint_difference(saved: object, now: Mapping[str, object]) -> Optional[str]:
    """The first way ``now`` differs from ``saved`` (two :func:`fingerprint` results), or None; also
    None where ``saved`` is not a fingerprint of this layout (a checkpoint written before the
    fingerprint holds none, or an older one): nothing to compare."""
    if not isinstance(saved, Mapping) or any(not isinstance(v, Mapping) or "ids" not in v or "target" not in v
                                             for v in saved.values()):
        return None
    for s in sorted(set(saved) | set(now)):
        a, b = saved.get(s), now.get(s)
        if a is None or b is None:
            return f"split {s!r} is {'new' if a is None else 'gone'}"
        if a["n"] != b["n"]:
            return f"split {s!r} had {a['n']} samples, now {b['n']}"
        if a["ids"] != b["ids"]:
            return f"split {s!r} has other sample ids"
        if _stats_differ(a["target"], b["target"]):
            return f"split {s!r} has other targets"
        for m in sorted(set(a["features"]) | set(b["features"])):
            fa, fb = a["features"].get(m), b["features"].get(m)
            if fa is None or fb is None or list(fa[0]) != list(fb[0]):
                return (f"split {s!r}: modality {m!r} had shape {fa[0] if fa else None}, "
                        f"now {fb[0] if fb else None}")
            if _stats_differ(fa, fb):
                return f"split {s!r}: modality {m!r} has other feature values"
    return None
