"""The multimodal model: named encoders, optional context and gate, a fused prediction head.

``FusionModel(encoders, head, ...)`` composes pieces that are passed in (TorchMultimodal's
``LateFusion`` pattern). Without gate and prototypes it is plain late fusion (concatenation);
PaSE adds prototype banks and a gate scorer. Every model declares its parameter groups:
``modality_parameters()`` (encoder m and its own context) and ``shared_parameters()`` (gate,
head); the optimiser and the gradient-modulation methods use these groups, never names.

Shapes: B batch, M modalities, D = d_model, C coalitions, O output width.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from ..data.contract import Batch, sort_modalities
from ..fusion import GateScorer, fuse_stacked, presence_weights, prototype_confidence, prototype_gates
from ..prototypes import prototype_logits
from .context import ContextGRU

__all__ = ["FusionModel", "FusionOutput", "build_head"]


@dataclass
class FusionOutput:
    """logits (B, O); reps modality -> (B, D); weights (B, M) fusion weights; proto_logits
    modality -> (B, K) prototype similarities (empty without prototypes).

    Computed once in the forward pass and reused by the methods (coalition scoring, PCL, OT):
    ``stacked`` (B, M, D) the representations in model order; ``gate_scores`` (B, M) the gate's
    scores before masking (None without gate); ``banks`` the prototype snapshot the similarities
    used, ``(prototypes (M, K, D), initialized (M, K))`` (None without banks), a copy, so the
    in-place EMA update of the banks after the forward pass cannot disturb backward;
    ``proto_stacked`` (M, B, K) the similarities of ``proto_logits`` stacked (the PCL logits)."""

    logits: Tensor
    reps: Dict[str, Tensor]
    weights: Tensor
    proto_logits: Dict[str, Tensor]
    stacked: Optional[Tensor] = None
    proto_stacked: Optional[Tensor] = None
    gate_scores: Optional[Tensor] = None
    banks: Optional[Tuple[Tensor, Tensor]] = None


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
        if gate is not None and gate.modalities != self.modalities:
            raise ValueError(f"the gate's modalities {gate.modalities} are not the model's order {self.modalities}: "
                             f"build it as GateScorer({self.modalities!r}, ...) so its row m scores modality m")
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

    def bank_snapshot(self) -> Optional[Tuple[Tensor, Tensor]]:
        """The banks stacked (a copy): ``(prototypes (M, K, D), initialized (M, K))``, None without banks."""
        if self.banks is None:
            return None
        banks = [self.banks[m] for m in self.modalities]
        return torch.stack([b.prototypes for b in banks]), torch.stack([b.initialized for b in banks])

    def stacked_reps(self, out: "FusionOutput") -> Tensor:
        """(B, M, D) representations of a forward output, in model order (stacked by the forward
        pass; re-stacked from ``out.reps`` for an output built or edited by hand)."""
        if out.stacked is not None:
            return out.stacked
        return torch.stack([out.reps[m] for m in self.modalities], dim=-2)

    def fusion_weights(self, scores: Optional[Tensor], present: Optional[Tensor], b: int,
                       device: torch.device, dtype: torch.dtype) -> Tensor:
        """(..., B, M) fusion weights from the gate scores (B, M) (None: plain late fusion) and
        ``present``, an (M,), (B, M) or (C, 1, M) bool mask (None: all present)."""
        mm = len(self.modalities)
        if present is not None:
            present = self.presence_mask(present, device)
        if present is None and scores is not None:
            return prototype_gates(scores)  # all present: no mask to apply
        if present is None:
            present = torch.ones(mm, dtype=torch.bool, device=device)
        present = present.expand(*present.shape[:-2], b, mm) if present.dim() > 1 else present.expand(b, mm)
        if scores is None:
            return presence_weights(present, dtype)
        return prototype_gates(scores, present)

    def presence_mask(self, present, device: Optional[torch.device] = None) -> Tensor:
        """``present`` as the bool mask the fusion takes: a bool tensor whose last dimension is M (in
        the model's modality order) as is, or a list of the modality names present. Anything else is
        one error naming ``present``, its shape or dtype and the order (a wrong width, names or a 0/1
        integer mask gave raw torch errors, and a float mask rescaled a modality)."""
        order = ", ".join(self.modalities)
        if isinstance(present, (list, tuple)) and all(isinstance(m, str) for m in present):
            unknown = [m for m in present if m not in self.modalities]
            if unknown:
                raise ValueError(f"present: modality {unknown[0]!r} is not one of the model's ({order})")
            return torch.tensor([m in present for m in self.modalities], dtype=torch.bool, device=device)
        if not isinstance(present, Tensor):
            raise TypeError(f"present must be a bool tensor (..., M) over the modalities ({order}) or a list of "
                            f"modality names, got {type(present).__name__}")
        if present.dtype != torch.bool:
            raise TypeError(f"present must be a bool mask (..., M) over ({order}), got dtype {present.dtype}; "
                            "convert it with .bool() (fusion weights are computed from it, not taken from it)")
        if present.dim() == 0 or present.shape[-1] != len(self.modalities):
            raise ValueError(f"present has shape {tuple(present.shape)}, but its last dimension must be M = "
                             f"{len(self.modalities)}, one entry per modality in the model's order ({order})")
        return present

    def fused_logits(self, stacked: Tensor, weights: Tensor) -> Tensor:
        """Head applied to the weighted concatenation: stacked (B, M, D), weights (..., B, M) -> (..., B, O)."""
        return self.head(fuse_stacked(stacked, weights))

    def forward(self, batch: Batch, present: Optional[Tensor] = None) -> FusionOutput:
        reps = self.encode(batch)
        stacked = torch.stack([reps[m] for m in self.modalities], dim=-2)  # (B, M, D)
        snap = self.bank_snapshot()
        proto: Dict[str, Tensor] = {}
        conf = z = None
        if snap is not None:
            z = prototype_logits(stacked.transpose(0, 1), snap[0], self.tau, snap[1])  # (M, B, K)
            proto = dict(zip(self.modalities, z.unbind(0)))
            conf = prototype_confidence(z, snap[1]) if self.gate is not None else None  # (M, B), the gate's input
        scores = None
        if self.gate is not None:
            scores = self.gate.scores(stacked.transpose(0, 1), conf)  # (B, M)
        weights = self.fusion_weights(scores, present, stacked.shape[0], stacked.device, stacked.dtype)
        return FusionOutput(self.fused_logits(stacked, weights), reps, weights, proto, stacked, z, scores, snap)

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
        stacked = self.stacked_reps(out)
        layers = list(self.head) if isinstance(self.head, nn.Sequential) else [self.head]
        if not head_dropout and isinstance(layers[0], nn.Linear) and all(isinstance(x, _PLAIN_LAYERS) for x in layers):
            return _coalition_head(layers, stacked, out.gate_scores, masks)
        weights = self.fusion_weights(out.gate_scores, masks[:, None, :], stacked.shape[0], stacked.device,
                                      stacked.dtype)  # (C, B, M)
        if head_dropout:
            return self.fused_logits(stacked, weights)
        if not self.head.training:  # a custom head: run it as it is, in eval mode
            return self.fused_logits(stacked, weights)
        self.head.eval()
        try:
            return self.fused_logits(stacked, weights)
        finally:
            self.head.train()


#: head layers the coalition pass knows how to run without dropout (``build_head`` makes these)
_PLAIN_LAYERS = (nn.Linear, nn.ReLU, nn.Dropout)


#: gate-score gaps are clipped here in the coalition pass (weight ratios below e^-60, about 1e-26)
_GATE_GAP = 60.0


def _coalition_head(layers: List[nn.Module], stacked: Tensor, scores: Optional[Tensor], masks: Tensor) -> Tensor:
    """The head on every coalition's weighted concatenation, dropout skipped, in a few matrix
    products (no (C, B, M) softmax, no (C, B, M * D) concatenation).

    The first linear layer is split by modality: W [w_1 h_1; ...; w_M h_M] = sum_m w_m q_m with
    q_m = W_m h_m computed once for all C coalitions. With the gate, coalition S weighs modality
    m by |S| e_m / sum_{n in S} e_n, e_m = exp(g_m - max_n g_n) (``prototype_gates``), so its
    first-layer output is |S| / (sum_{n in S} e_n) * sum_{m in S} e_m q_m: one (C, M) mask
    product for the numerators and one for the denominators, in float32 under autocast. Gaps
    g_max - g_m are clipped at ``_GATE_GAP`` (60) so that no e_m or e_m q_m underflows: exact for
    every coalition when no score lies more than 60 below the sample's best (the gate then gives
    it under 1e-26 of its weight); beyond that, such a member weighs as if it were 60 below, which
    matters only in a coalition whose best member is itself near or past 60 below.

    layers: Linear first, then Linear / ReLU / Dropout. stacked (B, M, D); scores (B, M) gate
    scores or None (plain late fusion: weight 1 per present modality); masks (C, M) bool.
    Returns (C, B, O). The projections are (M, B, H), so the mask products are plain (C, M) x
    (M, B * H) matrix products.
    """
    first = layers[0]
    b, mm, d = stacked.shape
    c = masks.shape[0]
    inplace = not torch.is_grad_enabled()
    w1 = first.weight.view(first.out_features, mm, d).permute(1, 2, 0)  # (M, D, H)
    q = torch.bmm(stacked.transpose(0, 1), w1 if w1.dtype == stacked.dtype else w1.to(stacked.dtype))  # (M, B, H)
    if scores is None:
        x = torch.mm(masks.to(q.dtype), q.view(mm, -1)).view(c, b, -1)  # (C, B, H)
    else:
        # the gate's exponentials and the mask products in float32 whatever the autocast (in half
        # precision e_m underflows past a gap of about 17, and the clamp below would round to 0)
        half = q.dtype in (torch.float16, torch.bfloat16)
        wide = torch.promote_types(q.dtype, torch.float32)  # float32, or float64 for a float64 model
        with torch.autocast(q.device.type, enabled=False) if half else contextlib.nullcontext():
            mf = masks.to(wide)  # (C, M)
            g = scores.t().to(wide)  # (M, B)
            e = torch.exp((g - g.amax(0, keepdim=True)).clamp_min_(-_GATE_GAP))  # (M, B), max 1
            x = torch.mm(mf, (q.to(wide) * e.unsqueeze(-1)).view(mm, -1)).view(c, b, -1)  # (C, B, H)
            den = torch.mm(mf, e).clamp_min_(1e-30)  # (C, B); 0 (clamped) only for the empty coalition
            scale = (mf.sum(-1, keepdim=True) / den).unsqueeze(-1)  # (C, B, 1): |S| / sum_S e
            x = x.mul_(scale) if inplace else x * scale
        x = x.to(q.dtype)
    if first.bias is not None:
        x = x.add_(first.bias.to(x.dtype)) if inplace else x + first.bias.to(x.dtype)
    for layer in layers[1:]:
        if isinstance(layer, nn.ReLU):
            x = torch.relu_(x) if inplace else torch.relu(x)
        elif not isinstance(layer, nn.Dropout):
            x = layer(x)
    return x
