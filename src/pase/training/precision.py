"""A checkpoint scored at the precision it was trained and tested at.

``pase evaluate``, ``pase predict`` and ``pase diagnose`` rebuild a model on the CPU and run it
outside Lightning's loops. Built in float32 and run without autocast, a ``64-true`` checkpoint's
weights were rounded and a ``bf16-mixed`` model was scored in float32, so the full-input condition
of the diagnostics did not reproduce ``metrics.json``'s test metrics (Corr 0.364 against 0.367 on a
tiny bf16-mixed run). :func:`precision_plugin` gives the Lightning precision plugin of a run's
``train.precision`` as Lightning applies it on a CPU (``16-mixed`` becomes ``bf16-mixed`` there),
``run.load_checkpoint`` converts the module with it before loading the weights, and every
evaluation loop runs inside :func:`inference`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from typing import Any, Callable, Dict, Iterator, Sequence, Tuple

import torch
from lightning.fabric.connector import _convert_precision_to_unified_args
from lightning.pytorch.plugins.precision import DoublePrecision, HalfPrecision, MixedPrecision, Precision
from torch import nn

from ..data.contract import Batch

__all__ = ["keep_float32_state", "FLOAT32_STATE", "precision_plugin", "trainer_precision", "set_inference_precision",
           "inference", "HalfPrecisionExactTargets", "token_inputs"]


#: the attribute naming a module's running-average buffers (``FLOAT32_STATE = ("prototypes",)``)
FLOAT32_STATE = "FLOAT32_STATE"


def keep_float32_state(module: nn.Module) -> nn.Module:
    """Cast back to float32 the buffers each submodule lists in ``FLOAT32_STATE`` (prototype banks,
    SGM coefficients, AGM's running scores): exponential moving averages with momentum 0.98 move by
    2 % of the gap per step, under half of bf16's rounding step once the gap is small, so in bf16
    they froze (a prototype stopped at 1.375 on its way from 1 to 1.5). Their users cast them to
    the features' dtype where they meet (``ot.cosine_cost``)."""
    for sub in module.modules():
        for name in getattr(sub, FLOAT32_STATE, ()):
            buf = sub._buffers.get(name)
            if buf is not None and buf.dtype in (torch.float16, torch.bfloat16):
                sub._buffers[name] = buf.float()
    return module


class HalfPrecisionExactTargets(HalfPrecision):
    """``16-true`` / ``bf16-true`` that leaves a batch's targets as stored: Lightning's own plugin casts
    every floating tensor of the batch, so labels were rounded to 8 (bf16) or 11 (fp16) bits of
    mantissa and the test metrics of ``metrics.json`` compared predictions with rounded labels.
    The inputs named in ``exact_inputs`` (token ids stored as floats: MMSA's ``text=bert``) stay as
    stored too: bf16 holds whole numbers exactly only up to 256, and BERT was fed id 7744 for the
    file's 7754. Running averages stay in float32 (:func:`keep_float32_state`)."""

    def __init__(self, precision: Any, exact_inputs: Sequence[str] = ()) -> None:
        super().__init__(precision)
        self.exact_inputs = tuple(exact_inputs)

    def convert_module(self, module: nn.Module) -> nn.Module:
        # the float32 running averages as they are, not cast to half and back: Lightning loads a
        # checkpoint (a resume, the final test from best.ckpt) before it converts the module, so
        # every restored prototype and SGM coefficient was rounded to bf16 (a resumed bf16-true
        # run left the uninterrupted one at its next epoch; a review)
        kept = [(sub, name, sub._buffers[name]) for sub in module.modules() for name in getattr(sub, FLOAT32_STATE, ())
                if sub._buffers.get(name) is not None and sub._buffers[name].dtype == torch.float32]
        module = super().convert_module(module)
        for sub, name, buf in kept:
            sub._buffers[name] = buf
        return keep_float32_state(module)

    def convert_input(self, data: Any) -> Any:
        if isinstance(data, Batch):
            out = super().convert_input(data)
            keep = {m: data.inputs[m] for m in self.exact_inputs if m in data.inputs}
            return dataclasses.replace(out, target=data.target, inputs={**out.inputs, **keep})
        return super().convert_input(data)


def token_inputs(cfg: Any) -> Tuple[str, ...]:
    """The modalities of ``cfg``'s data that hold token ids rather than features (MMSA text=bert)."""
    return ("text",) if (cfg.data.options or {}).get("text") == "bert" else ()


def _unified(precision: Any) -> str:
    """Lightning's name of a ``train.precision`` value ("16" -> "16-mixed", 64 -> "64-true", ...)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*supported for historical reasons.*")
        return str(_convert_precision_to_unified_args(precision))


def precision_plugin(precision: Any, exact_inputs: Sequence[str] = ()) -> Precision:
    """The precision plugin of ``precision`` (a ``train.precision`` value) on a CPU; ``exact_inputs``:
    see :class:`HalfPrecisionExactTargets`."""
    p = _unified(precision)
    if p == "64-true":
        return DoublePrecision()
    if p in ("16-mixed", "bf16-mixed"):
        return MixedPrecision("bf16-mixed", "cpu")  # what Lightning runs for either on a CPU
    if p in ("16-true", "bf16-true"):
        return HalfPrecisionExactTargets(p, exact_inputs)
    return Precision()


def trainer_precision(precision: Any, exact_inputs: Sequence[str] = ()) -> Dict[str, Any]:
    """The trainer's precision arguments: the setting itself, or for the true half precisions the
    plugin that keeps targets (and ``exact_inputs``) exact (``{"plugins": [...]}``)."""
    p = _unified(precision)
    if p in ("16-true", "bf16-true"):
        return {"plugins": [HalfPrecisionExactTargets(p, exact_inputs)]}
    return {"precision": precision}


def set_inference_precision(model: nn.Module, plugin: Precision) -> None:
    """Mark ``model`` (already converted by ``plugin``) to be run by :func:`inference` under ``plugin``."""
    model.__dict__["_inference_precision"] = plugin  # a plain attribute, outside the state dict


@contextlib.contextmanager
def inference(model: nn.Module) -> Iterator[Callable[[Any], Any]]:
    """Within: the forward context of ``model``'s training precision (autocast for the mixed ones);
    yields the conversion of a batch to the model's input precision (identity for unmarked models)."""
    plugin = model.__dict__.get("_inference_precision") or Precision()
    with plugin.forward_context():
        yield plugin.convert_input
