"""The multimodal model: named encoders, optional context and gate, a fused prediction head.

``FusionModel(encoders, head, ...)`` composes pieces that are passed in (TorchMultimodal's
``LateFusion`` pattern). Without gate and prototypes it is plain late fusion (concatenation);
PaSE adds prototype banks and a gate scorer. Every model declares its parameter groups:
``modality_parameters()`` (encoder m and its own context) and ``shared_parameters()`` (gate,
head); the optimiser and the gradient-modulation methods use these groups, never names.

Shapes: B batch, M modalities, D = d_model, C coalitions, O output width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
from torch import Tensor, nn

from ..data.contract import Batch, sort_modalities
from ..fusion import GateScorer, fuse, presence_weights, prototype_confidence, prototype_gates
from .context import ContextGRU

__all__ = ["FusionModel", "FusionOutput", "build_head"]


@dataclass
class FusionOutput:
    """logits (B, O); reps modality -> (B, D); weights (B, M) fusion weights; proto_logits
    modality -> (B, K) prototype similarities (empty without prototypes)."""

    logits: Tensor
    reps: Dict[str, Tensor]
    weights: Tensor
    proto_logits: Dict[str, Tensor]


def build_head(in_dim: int, out_dim: int, hidden: int, dropout: float) -> nn.Module:
    """The fused prediction head: linear when ``hidden`` is 0, else a one-hidden-layer MLP."""
    if hidden <= 0:
        return nn.Linear(in_dim, out_dim)
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))


class FusionModel(nn.Module):
    """Late fusion of named modality encoders, optionally prototype-gated.

    Args:
        encoders: modality -> encoder mapping (B, T, D_m), (B,) to (B, D).
        head: the fused head, (..., M*D) -> (..., O).
        d_model: D, the width of every representation.
        gate: optional ``GateScorer``; None is plain late fusion.
        banks: optional modality -> prototype bank (buffers ``prototypes`` (K, D) and
            ``initialized`` (K,)); needed by the gate's confidence and by PCL / OT.
        context: whether each modality's representation passes a contextual GRU over the
            utterances of its group (video / dialogue) present in the batch.
        tau: prototype-softmax temperature for the similarities.
    """

    def __init__(self, encoders: Dict[str, nn.Module], head: nn.Module, d_model: int,
                 gate: Optional[GateScorer] = None, banks: Optional[Dict[str, nn.Module]] = None,
                 context: bool = False, tau: float = 0.1) -> None:
        super().__init__()
        self.modalities: List[str] = sort_modalities(encoders)
        self.encoders = nn.ModuleDict({m: encoders[m] for m in self.modalities})
        self.context = nn.ModuleDict({m: ContextGRU(d_model) for m in self.modalities}) if context else None
        self.gate = gate
        self.banks = nn.ModuleDict(banks) if banks else None
        self.head = head
        self.d_model = d_model
        self.tau = tau

    # ---------------------------------------------------------------- parameter groups
    def modality_parameters(self) -> Dict[str, List[nn.Parameter]]:
        """modality -> its own trainable parameters (encoder, context layer)."""
        groups = {}
        for m in self.modalities:
            ps = list(self.encoders[m].parameters())
            if self.context is not None:
                ps += list(self.context[m].parameters())
            groups[m] = [p for p in ps if p.requires_grad]
        return groups

    def shared_parameters(self) -> List[nn.Parameter]:
        """Trainable parameters shared by all modalities (gate, head)."""
        own = {id(p) for ps in self.modality_parameters().values() for p in ps}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in own]

    # ---------------------------------------------------------------- forward pieces
    def encode(self, batch: Batch) -> Dict[str, Tensor]:
        """modality -> (B, D) representation; each encoder runs once."""
        missing = [m for m in self.modalities if m not in batch.inputs]
        if missing:
            raise KeyError(f"modality {missing[0]!r} missing in input (found: {', '.join(batch.inputs)})")
        reps = {m: self.encoders[m](batch.inputs[m], batch.lengths[m]) for m in self.modalities}
        if self.context is not None:
            if batch.groups is None or batch.positions is None:
                raise ValueError("model.context=true needs groups and positions in the data "
                                 "(a source with video / dialogue ids); set model.context=false")
            reps = {m: self.context[m](h, batch.groups, batch.positions) for m, h in reps.items()}
        return reps

    def prototype_logits(self, reps: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """modality -> (B, K) cosine similarities to the prototypes / tau (empty without banks)."""
        if self.banks is None:
            return {}
        from ..prototypes import prototype_logits

        # clones: the banks are updated in place after the forward pass, before backward
        return {m: prototype_logits(reps[m], self.banks[m].prototypes.clone(), self.tau,
                                    initialized=self.banks[m].initialized.clone()) for m in self.modalities}

    def fusion_weights(self, reps: Dict[str, Tensor], proto_logits: Dict[str, Tensor],
                       present: Optional[Tensor] = None) -> Tensor:
        """(..., B, M) fusion weights; ``present`` is (M,), (B, M) or (C, 1, M) bool (None: all)."""
        h = reps[self.modalities[0]]
        b, mm = h.shape[0], len(self.modalities)
        if present is None:
            present = torch.ones(mm, dtype=torch.bool, device=h.device)
        present = present.expand(*present.shape[:-2], b, mm) if present.dim() > 1 else present.expand(b, mm)
        if self.gate is None:
            return presence_weights(present, h.dtype)
        conf = {m: prototype_confidence(z) for m, z in proto_logits.items()} if proto_logits else None
        return prototype_gates(self.gate(reps, conf), present)

    def fused_logits(self, reps: Dict[str, Tensor], weights: Tensor) -> Tensor:
        """Head applied to the weighted concatenation: weights (..., B, M) -> (..., B, O)."""
        return self.head(fuse(reps, weights, self.modalities))

    def forward(self, batch: Batch, present: Optional[Tensor] = None) -> FusionOutput:
        reps = self.encode(batch)
        proto = self.prototype_logits(reps)
        weights = self.fusion_weights(reps, proto, present)
        return FusionOutput(self.fused_logits(reps, weights), reps, weights, proto)

    def coalition_logits(self, out: FusionOutput, masks: Tensor, head_dropout: bool = False) -> Tensor:
        """Head outputs for every coalition in one batched pass, reusing the encoder outputs.

        Args:
            out: a forward output (its representations and prototype similarities are reused).
            masks: (C, M) bool, coalition c keeps modality m iff masks[c, m].
            head_dropout: keep the head's dropout active in training mode. Off by default, so
                that every coalition is scored by the same head (independent dropout masks per
                coalition would add noise to the Shapley values).

        Returns:
            (C, B, O) logits; an all-absent coalition sees a zero fused input.
        """
        weights = self.fusion_weights(out.reps, out.proto_logits, masks[:, None, :])  # (C, B, M)
        if head_dropout or not self.head.training:
            return self.fused_logits(out.reps, weights)
        self.head.eval()
        try:
            return self.fused_logits(out.reps, weights)
        finally:
            self.head.train()
