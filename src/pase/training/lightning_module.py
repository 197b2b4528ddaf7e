"""The thin Lightning layer: it receives a ``FusionModel`` and a ``Method`` and wires them up.

Logged keys are ``split/metric`` (``train/loss``, ``valid/MAE``, ``test/Has0_acc_2``,
``diag/...``); each split has its own metric accumulator. Gradient modulation runs in
``on_before_optimizer_step`` (gradients unscaled and accumulated, not yet clipped), so clipping
acts on the modulated gradients.

Under ``torch.distributed`` each rank scores its shard of the evaluation batches; at the end of
the epoch the per-batch outputs of all ranks are gathered back into single-process order
(``datamodule``: rank r holds batches ``r::W``), so every rank computes the same metrics, equal
to those of one process. The losses of every split are summed here, weighted by batch size, and
logged once per epoch (their sums and sizes added over ranks).

Checkpoints also carry the random states (torch, numpy, Python) and the best monitor value, so a
resumed run continues bit for bit.
"""

from __future__ import annotations

import math
import os
import random
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import lightning as L
import numpy as np
import torch

from ..data.contract import Batch, TaskSpec
from ..metrics import MetricAccumulator, get_protocol
from ..methods.base import Method, task_loss
from .callbacks import NonFiniteError
from .datamodule import DATA_ORDER, dist_info

__all__ = ["PaseModule", "build_optimizer", "check_compile", "compile_settings", "OPTIMIZERS"]

OPTIMIZERS = ("adam", "adamw", "sgd")


def build_optimizer(groups: List[Dict[str, Any]], tc: Dict[str, Any]) -> torch.optim.Optimizer:
    """The optimiser named by ``train.optimizer`` over ``groups`` (one per modality, then shared).

    ``sgd`` is heavy-ball SGD with ``train.momentum`` (OGM-GE, AGM and PMR were published with
    SGD; under Adam a slowly varying gradient factor such as SGM's phi_m is largely normalised
    away, see docs/method.md).

    Adam and AdamW use torch's multi-tensor (``foreach``) implementation, its default on CUDA: on the
    CPU torch defaults to a loop over the parameters, about 9 dispatched calls per parameter;
    ``foreach`` updates a whole group in about 14, with bitwise the same parameters and state in
    float32, bfloat16 and float64 (tests/test_training.py), 76 fewer calls in a real-MOSI late-fusion
    step (``python benchmarks/op_count.py``; in time within the noise, ``benchmarks/adam_probe.py``).
    SGD keeps torch's default: its multi-tensor version rounds bfloat16 parameters differently from
    the loop.
    """
    name, lr, wd = check_optimizer(tc["optimizer"]), tc["lr"], tc["weight_decay"]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=tc.get("momentum", 0.9), weight_decay=wd)
    return {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name](groups, lr=lr, weight_decay=wd, foreach=True)


def improves(value: float, best: Optional[float], higher: bool) -> bool:
    """Whether a validation value beats the best so far, compared as Lightning's checkpoint and
    early-stopping callbacks compare the logged value: as a tensor of torch's default dtype
    (float32 unless changed; ``self.log`` converts a float so), so the phase switch's stale count
    and the saved best epoch agree on values equal at that precision. A NaN never improves
    (early stopping counts it as a stale epoch, so the phase switch must too)."""
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    v, b = (torch.tensor(x, dtype=torch.get_default_dtype()) for x in (value, best))
    return bool(v > b) if higher else bool(v < b)


def check_optimizer(name: str) -> str:
    """``name`` if it is one of :data:`OPTIMIZERS`; otherwise the one error naming the key."""
    if name not in OPTIMIZERS:
        raise ValueError(f"train.optimizer={name!r} is not one of {', '.join(OPTIMIZERS)}")
    return name


#: torch.compile's backend for train.compile (the tests use "aot_eager": the same graph capture,
#: eager kernels, no C++ compilation)
COMPILE_BACKEND = "inductor"


def compile_settings() -> None:
    """Set, for this process, what ``train.compile`` needs: the methods' per-batch integer counters
    (Shapley accumulators, OT cost means) are not specialised, so they do not recompile the step
    at every batch; a few more graphs are allowed (the first batch, the last smaller batch, the
    phase switch); and inductor draws random numbers as eager PyTorch does (``fallback_random``),
    so dropout masks, and with them the trained weights, match an eager run's up to rounding.
    Process-wide settings (entering ``config.patch`` at every step cost more than PaSE's extras)."""
    import torch._dynamo.config
    import torch._inductor.config

    torch._dynamo.config.allow_unspec_int_on_nn_module = True
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 32)
    torch._inductor.config.fallback_random = True


def check_compile(accelerator: str) -> None:
    """``train.compile=true`` needs inductor's C++ compiler for CPU kernels; one error if it is absent."""
    if accelerator not in ("cpu", "auto") or os.environ.get("TORCHINDUCTOR_CPP_COMPILER"):
        return
    if accelerator == "auto" and torch.cuda.is_available():  # auto picks the GPU: Triton kernels, no C++
        return
    import shutil

    from torch._inductor import config as inductor_config
    cxx = inductor_config.cpp.cxx[-1] or "g++"
    if shutil.which(cxx) is None:
        raise ValueError(f"train.compile=true on the CPU needs a C++ compiler ({cxx!r}, used by torch.compile's "
                         "inductor) on the PATH; install one (for example g++) or set train.compile=false")


class PaseModule(L.LightningModule):
    """Training, validation and test steps around ``model`` and ``method``.

    Args:
        model: the ``FusionModel``.
        method: the training ``Method`` (late_fusion, pase, ...).
        task: the data's ``TaskSpec``.
        config: the resolved configuration as a dict (saved in every checkpoint).
        monitor: validation metric name used for selection and the phase switch.
    """

    def __init__(self, model: torch.nn.Module, method: Method, task: TaskSpec, config: Dict[str, Any],
                 monitor: str) -> None:
        super().__init__()
        self.model, self.method, self.task = model, method, task
        self.save_hyperparameters({"config": config})
        check_optimizer(config["train"]["optimizer"])  # fail before training, not at fit()
        self.protocol = get_protocol(task.protocol)
        self.monitor = monitor
        self.higher = self.protocol.higher_is_better[monitor]
        self.metrics = {s: MetricAccumulator(self.protocol) for s in ("valid", "test")}
        self._outputs: Dict[str, List[Tuple[torch.Tensor, torch.Tensor]]] = {"valid": [], "test": []}
        self.best_value: Optional[float] = None
        self.results: Dict[str, Dict[str, float]] = {}
        self._sums: Dict[str, Dict[str, Tuple[torch.Tensor, int]]] = {}  # split -> key -> (sum n v, sum n)
        self._compiled = None  # train.compile: the compiled _forward_loss, made at the first step
        # set by pase.training.run: the data's fingerprint, this process's start (time.time()) and
        # the seconds earlier processes trained this run (a resume), all saved in every checkpoint
        self.data_fingerprint: Optional[Dict[str, Any]] = None
        self.pretrained_fingerprint: Optional[Dict[str, Any]] = None  # the folder a BERT started from
        self.started: Optional[float] = None
        self.elapsed_before = 0.0

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        if self.hparams.config["train"].get("compile"):
            if self._compiled is None:
                compile_settings()
                self._compiled = torch.compile(self._forward_loss, backend=COMPILE_BACKEND)
            loss, logs = self._compiled(batch)
        else:
            loss, logs = self._forward_loss(batch)
        self._log_train({"loss": loss.detach(), **logs}, len(batch), batch_idx)
        return loss

    def _forward_loss(self, batch: Batch) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """The model's forward pass and the method's losses (with its per-batch bookkeeping: the
        prototype banks' EMA step, the Shapley pass): what ``train.compile`` compiles."""
        return self.method.loss(self.model, batch, self.model(batch))

    def _log_train(self, values: Dict[str, torch.Tensor], n: int, batch_idx: int) -> None:
        """Training losses as epoch means weighted by batch size, as ``self.log(...,
        on_epoch=True, batch_size=n)`` computes them, but summed here (:meth:`_add_sums`) and
        handed to Lightning once, at the epoch's last batch: one ``self.log`` per value and step
        cost about 0.7 ms on the CPU, more than PaSE's extras at utterance level
        (``benchmarks/log_probe.py``). With an epoch of unknown length every step is logged."""
        last = self.trainer.num_training_batches
        if not isinstance(last, int) or last <= 0:
            for k, v in values.items():
                self.log(f"train/{k}", v, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
            return
        self._add_sums("train", values, n)
        if batch_idx + 1 == last:
            self._log_sums("train")

    def _add_sums(self, split: str, values: Dict[str, torch.Tensor], n: int) -> None:
        sums = self._sums.setdefault(split, {})
        for k, v in values.items():
            total, count = sums.get(k, (0.0, 0))
            sums[k] = (total + v.detach().float() * n, count + n)

    def _log_sums(self, split: str, keys: Sequence[str] = ()) -> None:
        """Log ``split/<key>`` = sum_b n_b v_b / sum_b n_b of the values added since the last call
        (sums and sizes added over ranks under DDP), then reset. ``keys``: the keys every rank
        must reduce even with nothing added (a rank without evaluation batches still takes part
        in the all-reduce, with zeros)."""
        sums = self._sums.pop(split, {})
        keys = list(sums) or list(keys)
        distributed = self.trainer.world_size > 1
        if not keys or not (sums or distributed):
            return
        zero = (torch.zeros((), device=self.device), 0)
        totals = torch.stack([sums.get(k, zero)[0] for k in keys]).to(self.device)  # (L,)
        counts = torch.tensor([float(sums.get(k, zero)[1]) for k in keys], device=totals.device)
        if distributed:
            totals = self.trainer.strategy.reduce(totals, reduce_op="sum")
            counts = self.trainer.strategy.reduce(counts, reduce_op="sum")
        for k, total, count in zip(keys, totals.unbind(0), counts.tolist()):  # one host read for all counts
            if count > 0:
                self.log(f"{split}/{k}", total / count, on_step=False, on_epoch=True, batch_size=1)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.method.before_optimizer_step(self.model, optimizer)

    def _eval_step(self, batch: Batch, split: str) -> None:
        out = self.model(batch)
        loss = task_loss(out.logits, batch.target, self.task, self.method.loss_kind)
        self._add_sums(split, {"loss": loss}, len(batch))  # logged at the epoch's end (_gather_metrics)
        self._outputs[split].append((out.logits.detach().float(), batch.target))  # to the host at epoch end

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "valid")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _gather_metrics(self, split: str) -> Dict[str, float]:
        """Metrics of the split's outputs of all ranks, in single-process batch order."""
        self._log_sums(split, keys=("loss",))
        batches = [(logits.cpu(), target.cpu()) for logits, target in self._outputs[split]]
        self._outputs[split] = []
        _, world = dist_info()
        if world > 1:
            per_rank: List[Any] = [None] * world
            torch.distributed.all_gather_object(per_rank, batches)
            longest = max(len(b) for b in per_rank)
            batches = [per_rank[r][j] for j in range(longest) for r in range(world) if j < len(per_rank[r])]
        if not all(bool(torch.isfinite(lg).all()) for lg, _ in batches):  # the metric's error named no split or fix
            n = sum(int((~torch.isfinite(lg)).sum()) for lg, _ in batches)
            raise NonFiniteError(
                f"the model's predictions on the {split} split hold {n} NaN / inf value(s): it overflowed or "
                f"diverged on these inputs; check the features' scale with pase data inspect (their sums of squares "
                f"overflow float32 past about 1e17 to 1e19; data.standardize=true rescales them) and log.csv for "
                f"divergence")
        for logits, target in batches:
            self.metrics[split].update(logits, target)
        values = self.metrics[split].compute()
        self.metrics[split].reset()
        for k, v in values.items():  # the same on every rank: nothing to reduce
            self.log(f"{split}/{k}", float(v) if math.isfinite(v) else float("nan"))
        self.results[split] = values
        return values

    def on_validation_epoch_end(self) -> None:
        values = self._gather_metrics("valid")
        if self.trainer.sanity_checking or self.trainer.state.fn != "fit":
            return
        v = values[self.monitor]
        improved = improves(v, self.best_value, self.higher)
        if improved:
            self.best_value = v
        for k, val in self.method.end_validation_epoch(self.model, self.current_epoch, improved).items():
            self.log(f"diag/{k}", float(val))

    def on_test_epoch_end(self) -> None:
        self._gather_metrics("test")

    # ------------------------------------------------------------------ optimiser
    def configure_optimizers(self):
        tc = self.hparams.config["train"]
        groups = [{"params": ps} for ps in self.model.modality_parameters().values()]
        groups.append({"params": self.model.shared_parameters()})
        groups += [{"params": list(self.method.parameters())}] if any(True for _ in self.method.parameters()) else []
        return build_optimizer(groups, tc)

    # ------------------------------------------------------------------ resume state
    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        """Add the best monitor value and the random states (plain tensors, lists and numbers:
        weights-only loadable)."""
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        version, internal, py_gauss = random.getstate()
        checkpoint["pase_state"] = {
            "best_value": self.best_value,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "numpy_rng": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
            "python_rng": [version, list(internal), py_gauss],
            "data": self.data_fingerprint,
            "data_order": DATA_ORDER,  # how epochs are shuffled: a resume by other code is told (run._check_resume)
            "pretrained_fingerprint": self.pretrained_fingerprint,
            "elapsed_s": self.elapsed_before + (time.time() - self.started if self.started is not None else 0.0),
            # a pretrained encoder's model config (BERT's config.json): the checkpoint alone rebuilds it
            "pretrained": {m: enc.config_dict() for m, enc in getattr(self.model, "encoders", {}).items()
                           if hasattr(enc, "config_dict")},
        }

    def on_train_start(self) -> None:
        """Adam / AdamW take the foreach step also when resumed from a checkpoint saved before it was the
        default: loading the optimiser state puts back the saved ``foreach: None`` (the loop; bitwise the
        same numbers, only slower in calls; a review)."""
        for opt in self.trainer.optimizers:
            if isinstance(opt, (torch.optim.Adam, torch.optim.AdamW)):
                for group in opt.param_groups:
                    group["foreach"] = True

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        """Restore what ``on_save_checkpoint`` added (checkpoints without it load too)."""
        state = checkpoint.get("pase_state", {})
        self.best_value = state.get("best_value")
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") and len(state["cuda_rng"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        if isinstance(state.get("numpy_rng"), list):
            kind, keys, pos, has_gauss, gauss = state["numpy_rng"]
            np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
        if isinstance(state.get("python_rng"), list):
            version, internal, py_gauss = state["python_rng"]
            random.setstate((version, tuple(internal), py_gauss))
