"""Build the ``FusionModel`` a configuration asks for, sized from the data."""

from __future__ import annotations

from ..data.contract import DataBundle, TaskSpec
from ..fusion import GateScorer
from .encoders import create_encoder
from .fusion_model import FusionModel, build_head

__all__ = ["build_model", "prototype_classes"]


def prototype_classes(task: TaskSpec, binning: str) -> int:
    """K, the number of prototype classes: the task's classes, or the regression binning's bins."""
    if task.kind == "regression":
        from ..prototypes import num_bins

        return num_bins(binning)
    return task.num_classes


def build_model(cfg, bundle: DataBundle) -> FusionModel:
    """Encoders sized from ``bundle``'s widths, a head for its task; PaSE adds gate and banks."""
    mc = cfg.model
    steps = bundle.max_steps()
    name = mc.encoder
    if name == "auto":
        name = "mlp" if max(steps.values()) == 1 else "transformer"
    encoders = {m: create_encoder(name, d_in=d, d_model=mc.d_model, hidden=mc.hidden, layers=mc.layers,
                                  heads=mc.heads, dropout=mc.dropout, max_len=steps[m])
                for m, d in bundle.dims().items()}
    mods = list(encoders)
    head = build_head(len(mods) * mc.d_model, bundle.task.output_dim, mc.head_hidden, mc.dropout)
    gate = banks = None
    pc = cfg.pase
    if cfg.method == "pase":
        if pc.gate:
            gate = GateScorer(sorted(mods), mc.d_model)
        if pc.pcl or pc.ot or pc.gate:
            from ..prototypes import PrototypeBank

            k = prototype_classes(bundle.task, pc.binning)
            banks = {m: PrototypeBank(k, mc.d_model, momentum=pc.momentum) for m in mods}
    return FusionModel(encoders, head, mc.d_model, gate=gate, banks=banks, context=mc.context, tau=pc.tau)
