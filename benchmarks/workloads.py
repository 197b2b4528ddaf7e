"""Benchmark workloads: data shapes, model and optimiser builders, the training step, timers.

Everything here drives the public ``pase`` API exactly as the Lightning module does per step
(``PaseModule.training_step`` then ``on_before_optimizer_step`` then the optimiser), without
Lightning, so the method's own cost can be timed apart from the framework's.

Shapes: N samples, T steps, D_m feature width, B batch, M modalities.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import resource
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from pase.config import load_config, to_dict
from pase.data import DataBundle, MultimodalDataset, TaskSpec, create_data
from pase.methods import create_method
from pase.methods.base import task_loss
from pase.models import build_model

ROOT = Path(__file__).resolve().parents[1]
#: the real MOSI folder: ``PASE_MOSI_BCLSTM`` when set (a checkout elsewhere), else ../shared/data/mosi-bclstm
MOSI_BCLSTM = Path(os.environ.get("PASE_MOSI_BCLSTM") or ROOT.parent / "shared" / "data" / "mosi-bclstm")

#: dataset shape -> (train / valid / test sizes, T steps, modality widths); MMSA's aligned_50 files
SHAPES = {
    "mosi_shaped": ((1284, 229, 686), 50, {"text": 768, "audio": 5, "vision": 20}),
    "mosei_shaped": ((16326, 1871, 4659), 50, {"text": 768, "audio": 74, "vision": 35}),
}
#: per-modality widths used for the M-modality Shapley sweep (the first three are MOSI's)
SWEEP_DIMS = (768, 5, 20, 74, 35, 100, 64, 32)
VARIANTS = ("plain", "late_fusion", "pase")
BATCH_SIZE = 64  # the supplementary's batch size and the config default


# ---------------------------------------------------------------------------------------- data
def shaped_bundle(name: str, sizes: Optional[Sequence[int]] = None, seed: int = 0) -> DataBundle:
    """A MOSI- or MOSEI-shaped sequence bundle generated in memory (float32, lengths 10..T).

    Features are standard normal, zero after each sample's length; labels uniform in [-3, 3]
    rounded to 0.2 (MMSA's label grid); TaskSpec regression, protocol "mosi".
    """
    full, steps, dims = SHAPES[name]
    sizes = tuple(sizes or full)
    g = torch.Generator().manual_seed(seed)
    splits = {}
    for split, n in zip(("train", "valid", "test"), sizes):
        lengths = torch.randint(10, steps + 1, (n,), generator=g)  # (N,)
        pad = torch.arange(steps)[None, :] >= lengths[:, None]  # (N, T) True at padding
        feats = {}
        for m, d in dims.items():
            x = torch.randn(n, steps, d, generator=g)  # (N, T, D_m)
            x.masked_fill_(pad[..., None], 0.0)
            feats[m] = x
        y = (torch.rand(n, generator=g) * 6 - 3).div(0.2).round().mul(0.2)  # (N,)
        splits[split] = MultimodalDataset(feats, y, [f"{split}_{i}" for i in range(n)],
                                          lengths={m: lengths for m in dims}, split=split)
    task = TaskSpec(kind="regression", num_classes=1, protocol="mosi", label_range=(-3.0, 3.0))
    return DataBundle(name, task, splits, {"generator": "benchmarks/workloads.py:shaped_bundle",
                                          "sizes": list(sizes)})


def sweep_bundle(M: int, train_size: int = 512, seed: int = 0) -> DataBundle:
    """The synthetic benchmark with M modalities (utterance level, T = 1; MLP encoders); every
    generator option is given, so the sweep does not move when the source's defaults do."""
    names = ["text", "audio", "vision"] + [f"mod{i}" for i in range(4, M + 1)]
    names = names[:M]
    shares = [round(1.0 / M, 6)] * (M - 1)
    shares.append(1.0 - sum(shares))
    return create_data("synthetic", seed=seed, modalities=names, dims=list(SWEEP_DIMS[:M]), shares=shares,
                       effects=["linear"] + ["abs"] * (M - 1), latent=[8] + [2] * (M - 1),
                       obs_noise=[0.3] + [0.1] * (M - 1), memorize_dim=256, scales=[1.0] * M, shortcut=0.0,
                       sizes=[train_size, 64, 64])


def real_mosi() -> Optional[DataBundle]:
    """The real MOSI bc-LSTM bundle, or None when ``MOSI_BCLSTM`` is absent (set ``PASE_MOSI_BCLSTM``
    to a copy elsewhere)."""
    if not MOSI_BCLSTM.is_dir():
        return None
    return create_data("mosi_bclstm", path=str(MOSI_BCLSTM))


def load_dataset(name: str, quick_sizes: Optional[Sequence[int]] = None) -> Optional[DataBundle]:
    """``real_mosi``, ``mosi_shaped`` or ``mosei_shaped``."""
    if name == "real_mosi":
        return real_mosi()
    return shaped_bundle(name, quick_sizes)


def overrides(dataset: str, method: str) -> List[str]:
    """Config overrides of a benchmark run: sequence shapes use the Transformer encoder."""
    ov = [f"method={'late_fusion' if method == 'plain' else method}", "pase.switch_max_epoch=0"]
    if dataset != "real_mosi" and not dataset.startswith("sweep"):
        ov.append("model.encoder=transformer")
    return ov


# ---------------------------------------------------------------------------------------- model
class Run:
    """One (variant, model, method, optimiser) ready to step; ``variant`` is plain, late_fusion or pase.

    ``plain`` is the late-fusion model trained on the fused task loss only (no per-batch Shapley
    tracking); ``late_fusion`` is the registered method (which tracks Shapley values every batch);
    ``pase`` is PaSE with all parts on, forced into phase 2 (SGM active) from the first step.
    A ``+compile`` suffix (``pase+compile``) runs the forward pass and the method's losses as
    ``train.compile=true`` does (``torch.compile``; the optimiser step stays eager); ``+graphs``
    compiles them with ``mode="reduce-overhead"``, which on CUDA replays the compiled forward and
    backward as CUDA graphs (one launch per graph instead of one per kernel; on a CPU it is
    ``+compile``). SGM and the optimiser step stay eager in both.
    """

    def __init__(self, variant: str, bundle: DataBundle, dataset: str, device: torch.device,
                 extra: Sequence[str] = (), seed: int = 0) -> None:
        torch.manual_seed(seed)
        variant, _, how = variant.partition("+")
        if how not in ("", "compile", "graphs"):
            raise ValueError(f"unknown variant suffix +{how} (+compile or +graphs)")
        self.compiled, self.graphs = bool(how), how == "graphs"
        self.variant = variant
        self.cfg = load_config(None, overrides(dataset, variant) + list(extra))
        self.task = bundle.task
        self.model = build_model(self.cfg, bundle).to(device)
        self.method = create_method(self.cfg.method, self.cfg, bundle.task, self.model).to(device)
        if variant == "pase":  # pase.switch_max_epoch=0 (overrides) starts it there; said here too
            self.method.set_phase(2)
        groups = [{"params": ps} for ps in self.model.modality_parameters().values()]
        groups.append({"params": self.model.shared_parameters()})
        own = list(self.method.parameters())
        groups += [{"params": own}] if own else []
        # imported here, not at the top: pase.training pulls in Lightning (~180 MiB), which the MMSA load's
        # baseline must not count (every worker imports this module)
        from pase.training.lightning_module import build_optimizer

        self.opt = build_optimizer(groups, to_dict(self.cfg.train))  # the training's optimiser (Adam, foreach)
        self.device = device
        self._forward_loss = self._eager_forward_loss
        if self.compiled:
            from pase.training.lightning_module import compile_settings

            compile_settings()
            self._forward_loss = torch.compile(self._eager_forward_loss,
                                               mode="reduce-overhead" if self.graphs else None)

    def _eager_forward_loss(self, batch) -> torch.Tensor:
        out = self.model(batch)
        if self.variant == "plain":
            return task_loss(out.logits, batch.target, self.task, self.method.loss_kind)
        return self.method.loss(self.model, batch, out)[0]

    def step(self, batch, autocast: contextlib.AbstractContextManager) -> torch.Tensor:
        """One training step, in PaseModule's order; returns the (detached) loss."""
        if self.graphs:  # a new iteration: the graphs' outputs of the last step may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        with autocast:
            loss = self._forward_loss(batch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.method.before_optimizer_step(self.model, self.opt)
        self.opt.step()
        return loss.detach()


def interleaved_ms(steps: Dict[str, Callable[[Any], Any]], batches: Sequence[Any], repeats: int) -> Dict[str, List[float]]:
    """Per-epoch mean milliseconds per step of each variant in ``steps`` (name -> step(batch)),
    ``repeats`` epochs: every batch steps every variant, in an order that rotates by batch and
    epoch, so the variants share the machine's load and the ratios are paired."""
    names = list(steps)
    times: Dict[str, List[float]] = {k: [] for k in names}
    for rep in range(repeats):
        acc = dict.fromkeys(names, 0.0)
        for i, b in enumerate(batches):
            k0 = (rep + i) % len(names)
            for k in names[k0:] + names[:k0]:
                t0 = time.perf_counter()
                steps[k](b)
                acc[k] += time.perf_counter() - t0
        for k in names:
            times[k].append(acc[k] / len(batches) * 1e3)
    return times


def autocast_ctx(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    if bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---------------------------------------------------------------------------------------- timing
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    """Seconds of ``fn()``, synchronising the device before and after."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def _status_mb(key: str) -> Optional[float]:
    """A ``/proc/self/status`` memory line (``VmRSS``, ``VmHWM``) in MiB; None where there is none."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def rss_mb() -> float:
    """Current resident set size (VmRSS) in MiB."""
    v = _status_mb("VmRSS")
    return float("nan") if v is None else v


def live_rss_mb() -> float:
    """RSS in MiB after a full garbage collection and glibc's ``malloc_trim(0)``: the memory the
    process still holds. Plain RSS also counts freed pages glibc keeps for reuse, which swung by
    up to 186 MiB between the epochs of one MOSI-shaped run (a freed epoch of batches); trimmed,
    the same run read one value for all 8 epochs. Without glibc (no ``malloc_trim``) it is RSS
    after the collection."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return rss_mb()


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far in MiB: ``VmHWM``, which starts afresh at
    exec. Not ``ru_maxrss``: on Linux exec carries the parent's high-water mark into the child's,
    so a worker started by the driver (torch and Lightning imported, about 400 MiB) read at least
    the driver's peak from its first instruction. ``ru_maxrss`` only where /proc is missing."""
    v = _status_mb("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 if v is None else v


def quantiles(values: Sequence[float]) -> Dict[str, float]:
    """median, min, max, q1, q3 and n of ``values``."""
    xs = sorted(values)
    n = len(xs)
    if n == 0:
        return {"n": 0}

    def q(p: float) -> float:
        k = (n - 1) * p
        lo, hi = int(k), min(int(k) + 1, n - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)

    return {"median": q(0.5), "min": xs[0], "max": xs[-1], "q1": q(0.25), "q3": q(0.75), "n": n}


def load_average() -> List[float]:
    return [round(x, 2) for x in os.getloadavg()]
