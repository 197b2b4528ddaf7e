"""Fusion of modality representations: masked concatenation and prototype-gated weights.

Given representations h^m (B, D) of M modalities and a presence mask, the fused input of the
head is the concatenation [w^1 h^1; ...; w^M h^M] (B, M*D). Plain late fusion uses w^m = 1 for
present and 0 for absent modalities. Prototype-gated fusion (PaSE sec. 2.4) uses

    alpha^m = softmax_{m in S}(g^m),   w^m = |S| * alpha^m,

over the present set S, with the gate score g^m = u_m . [h^m ; c^m] + b_m computed from the
representation and its prototype confidence c^m = 1 - H(softmax(s^m)) / log n (n: the initialised prototypes; s^m: the sample's
prototype similarities, H: entropy). A modality that matches one class prototype sharply earns
weight. ``pase.gate_inputs`` ablates the terms; the toolkit's default, "confidence"
(g^m = u_m,c c^m + b_m), was chosen on validation over "both" (docs/results.md section 7). The
factor |S| keeps the mean weight of present modalities at 1, so masking a modality does not
change the scale of the others.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional

import torch
from torch import Tensor, nn

__all__ = ["presence_weights", "prototype_gates", "prototype_confidence", "fuse", "fuse_stacked", "GateScorer"]


def presence_weights(present: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Late-fusion weights: 1 for present, 0 for absent modalities. present (..., M) bool."""
    return present.to(dtype)


def prototype_gates(scores: Tensor, present: Optional[Tensor] = None) -> Tensor:
    """Gate weights w = |S| softmax_S(scores), zero outside S.

    Args:
        scores: (B, M) or (..., B, M) gate scores g^m.
        present: bool presence mask broadcastable with ``scores``: (M,), (B, M) or (C, B, M);
            None: every modality present (M softmax(scores), no mask to apply).

    Returns:
        (..., B, M) weights; rows with no present modality are all zero.

    >>> w = prototype_gates(torch.zeros(1, 3), torch.tensor([True, True, False]))
    >>> w.tolist()
    [[1.0, 1.0, 0.0]]
    """
    if present is None:
        return torch.softmax(scores, dim=-1) * scores.shape[-1]
    masked = torch.where(present, scores, float("-inf"))  # broadcast (..., B, M)
    alpha = torch.softmax(masked, dim=-1).nan_to_num(0.0)  # all-absent rows: softmax of -inf is NaN
    return alpha * present.sum(-1, keepdim=True).to(scores.dtype)


def prototype_confidence(logits: Tensor, initialized: Optional[Tensor] = None) -> Tensor:
    """c = 1 - H(softmax(logits)) / log n, in [0, 1]. logits (..., K) -> (...).

    n is the number of initialised prototypes (``initialized`` (..., K) bool, broadcast over the
    batch dim of ``logits``: an (M, K) mask for (M, B, K) logits; None: all K). A class with logit
    -inf (an uninitialised prototype) has probability 0 and adds 0 log 0 = 0 to the entropy, so
    log n is the largest entropy possible; with n < 2 initialised prototypes there is nothing to
    discriminate and c = 0 (logits with a single class, K = 1, give c = 1 when that prototype is
    initialised, or ``initialized`` is None: one sharp match; 0 when it is not).
    Value and gradient stay finite.
    """
    k = logits.shape[-1]
    if k < 2:  # one class: one sharp match if its prototype is initialised, else nothing to go on
        one = torch.ones(logits.shape[:-1], dtype=logits.dtype, device=logits.device)
        return one if initialized is None else one * initialized[..., 0:1].to(logits.dtype)
    logp = torch.log_softmax(logits, dim=-1)
    p = logp.exp()
    entropy = -(p * torch.where(p > 0, logp, torch.zeros_like(logp))).sum(-1)  # mask first: no 0 * -inf
    if initialized is None:
        return 1 - entropy / math.log(k)
    n = initialized.sum(-1, keepdim=True).to(logits.dtype)  # (..., 1): broadcasts over the batch dim
    return torch.where(n >= 2, 1 - entropy / n.clamp_min(2).log(), torch.zeros_like(entropy))


def fuse(reps: Dict[str, Tensor], weights: Tensor, modalities: List[str]) -> Tensor:
    """Weighted concatenation.

    Args:
        reps: modality -> (B, D).
        weights: (..., B, M) per-sample weights in the order of ``modalities``.
        modalities: the order of the M blocks.

    Returns:
        (..., B, M*D) fused representation.
    """
    return fuse_stacked(torch.stack([reps[m] for m in modalities], dim=-2), weights)


def fuse_stacked(stacked: Tensor, weights: Tensor) -> Tensor:
    """:func:`fuse` on representations already stacked: (B, M, D), weights (..., B, M) -> (..., B, M*D)."""
    return (stacked * weights.unsqueeze(-1)).flatten(-2)


class GateScorer(nn.Module):
    """Gate scores g^m = u_m . [h^m ; c^m] + b_m for each modality, all M in one batched product.

    Parameters: ``weight`` (M, D + 1) (row m is u_m) and ``bias`` (M,), initialised like one
    ``nn.Linear(D + 1, 1)`` per modality (uniform in +-1/sqrt(D + 1)). ``inputs`` ablates the score's
    terms: "confidence" (g^m = u_m,c c^m + b_m; the default, as ``pase.gate_inputs``), "both" or
    "representation" (g^m = u_m,h . h^m + b_m); the parameters keep their shape, the dropped term
    is not computed.
    """

    INPUTS = ("both", "confidence", "representation")

    def __init__(self, modalities: List[str], d_model: int, inputs: str = "confidence") -> None:
        super().__init__()
        if inputs not in self.INPUTS:
            raise ValueError(f"pase.gate_inputs={inputs!r} is not one of {', '.join(self.INPUTS)}")
        self.inputs = inputs
        self.modalities = list(modalities)
        bound = 1.0 / math.sqrt(d_model + 1)
        self.weight = nn.Parameter(torch.empty(len(self.modalities), d_model + 1).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(len(self.modalities)).uniform_(-bound, bound))

    def forward(self, reps: Dict[str, Tensor], confidence: Optional[Dict[str, Tensor]] = None) -> Tensor:
        """reps: modality -> (B, D); confidence: modality -> (B,) or None (zeros). Returns (B, M)."""
        h = torch.stack([reps[m] for m in self.modalities])  # (M, B, D)
        c = torch.stack([confidence[m] for m in self.modalities]) if confidence is not None else None
        return self.scores(h, c)

    def scores(self, h: Tensor, confidence: Optional[Tensor] = None) -> Tensor:
        """Stacked form: h (M, B, D) in the order of ``modalities``, confidence (M, B) or None -> (B, M)."""
        w = self.weight.to(h.dtype)
        g = self.bias.to(h.dtype)[:, None].expand(h.shape[0], h.shape[1])  # (M, B)
        if self.inputs != "confidence":
            g = g + (h * w[:, None, :-1]).sum(-1)
        if confidence is not None and self.inputs != "representation":
            g = g + confidence * w[:, -1:]
        return g.transpose(0, 1)  # (B, M)
