"""Utterance context: a bidirectional GRU over the utterances of one video / dialogue.

bc-LSTM and the authors' release both let an utterance see its neighbours. Here each modality's
representation h (B, D) is re-read in the order of ``positions`` inside each ``group`` present
in the batch, and the GRU output is added back (residual). Only features flow between
utterances, never labels, so test videos' labels cannot leak; batching by whole groups
(``GroupBatchSampler``) gives every utterance its full video.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

__all__ = ["ContextGRU"]


class ContextGRU(nn.Module):
    """h (B, D), groups (B,), positions (B,) -> (B, D) context-aware representation."""

    def __init__(self, d_model: int, dropout: float = 0.1) -> None:
        super().__init__()
        if d_model < 2:
            raise ValueError(f"model.context=true needs model.d_model of at least 2 (its GRU has d_model // 2 units "
                             f"per direction), got {d_model}")
        self.rnn = nn.GRU(d_model, d_model // 2, batch_first=True, bidirectional=True)
        self.proj = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * (d_model // 2), d_model))

    def forward(self, h: Tensor, groups: Tensor, positions: Tensor) -> Tensor:
        # order samples by (group, position): key = group * span + (position - min_pos), span = the
        # positions' range; offsets in [0, span) keep videos apart whatever the signs (negative
        # positions merged two videos with the old key group * (max_pos + 1) + position)
        lo, hi = (int(v) for v in torch.aminmax(positions)) if positions.numel() else (0, 0)
        key = groups * (hi - lo + 1) + (positions - lo)
        order = torch.argsort(key)
        _, counts = torch.unique_consecutive(groups[order], return_counts=True)  # (G,)
        seqs = torch.split(h[order], counts.tolist())  # G tensors (L_g, D)
        padded = nn.utils.rnn.pad_sequence(list(seqs), batch_first=True)  # (G, L, D)
        packed = pack_padded_sequence(padded, counts.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=padded.shape[1])  # (G, L, 2H)
        steps = torch.arange(padded.shape[1], device=h.device)
        valid = steps[None, :] < counts.to(h.device)[:, None]  # (G, L)
        ctx_sorted = self.proj(out[valid])  # (B, D) in sorted order
        ctx = torch.empty_like(ctx_sorted)
        ctx[order] = ctx_sorted
        return h + ctx
