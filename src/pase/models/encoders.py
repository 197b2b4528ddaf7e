"""Unimodal encoders: (B, T, D_in) with lengths (B,) -> a representation h^m of shape (B, d_model).

Registered by name; ``create_encoder(name, d_in=..., d_model=..., ...)`` is the only way in.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..registry import Registry

__all__ = ["ENCODERS", "create_encoder", "MLPEncoder", "TransformerEncoder", "LSTMEncoder", "UniformDropout",
           "BatchFirstEncoderLayer", "masked_mean"]

ENCODERS: Registry = Registry("encoder")


def masked_mean(x: Tensor, lengths: Tensor) -> Tensor:
    """Mean over the first ``lengths[b]`` steps: x (B, T, D), lengths (B,) -> (B, D)."""
    if x.shape[1] == 1:
        return x[:, 0]
    steps = torch.arange(x.shape[1], device=x.device)
    mask = (steps[None, :] < lengths[:, None]).to(x.dtype)  # (B, T)
    return (x * mask[..., None]).sum(1) / lengths.clamp(min=1).to(x.dtype)[:, None]


class UniformDropout(nn.Dropout):
    """``nn.Dropout`` whose mask, on the CPU, is drawn as ``uniform >= p`` (kept entries scaled
    by 1 / (1 - p), as ``nn.Dropout`` does). torch's CPU dropout draws its mask with
    ``bernoulli_`` and then divides and multiplies in separate passes: forward and backward on
    the Transformer encoder's (64, 50, 128) and (64, 50, 256) activations took 1.7 times as long
    as this form, and a MOSI-shaped training step about a tenth more (``benchmarks/findings.md``).
    The masks have the same law but other random draws, so a run differs from one with
    ``nn.Dropout``. On other devices, in eval mode and at p = 0 it is ``nn.Dropout`` (CUDA's
    dropout is one fused kernel)."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0 or self.p == 1.0 or x.device.type != "cpu" or self.inplace:
            return super().forward(x)
        # float32 draws whatever x's dtype, so a bf16 x keeps the probability p exactly
        keep = torch.rand(x.shape, dtype=torch.float32, device=x.device).ge_(self.p).mul_(1.0 / (1.0 - self.p))
        return x * keep.to(x.dtype)


class BatchFirstEncoderLayer(nn.TransformerEncoderLayer):
    """``nn.TransformerEncoderLayer`` (``batch_first=True``) whose training-mode self-attention
    stays in (B, T, E) layout: one ``linear`` for q, k and v viewed as (3, B, heads, T, E / heads)
    and ``scaled_dot_product_attention`` on those views. ``nn.MultiheadAttention`` transposes its
    batch-first input to (T, B, E), so its packed projection runs as ``mm`` + bias ``add`` and
    copies q, k, v and the heads' output into new layouts, forward and backward (a tenth of a
    MOSI-shaped CPU step, ``benchmarks/findings.md``). Same parameters and state-dict keys, the
    same SDPA call, the same output and gradients (``tests/test_models.py``); an ``attn_mask``,
    ``is_causal`` or a query that is not batch-first (B, T, E) goes through
    ``nn.MultiheadAttention`` as before, and eval mode keeps torch's own fast path."""

    def _sa_block(self, x: Tensor, attn_mask: Tensor | None, key_padding_mask: Tensor | None,
                  is_causal: bool = False) -> Tensor:
        a = self.self_attn
        if attn_mask is not None or is_causal or x.dim() != 3 or not a.batch_first or a.in_proj_weight is None:
            return super()._sa_block(x, attn_mask, key_padding_mask, is_causal)
        b, t, e = x.shape
        heads = a.num_heads
        qkv = F.linear(x, a.in_proj_weight, a.in_proj_bias).view(b, t, 3, heads, e // heads).permute(2, 0, 3, 1, 4)
        mask = None
        if key_padding_mask is not None:  # True (bool) or -inf (float) at the keys to ignore, as in nn.MultiheadAttention
            mask = key_padding_mask
            if mask.dtype == torch.bool:
                mask = torch.zeros(mask.shape, dtype=x.dtype, device=x.device).masked_fill_(mask, float("-inf"))
            mask = mask.view(b, 1, 1, t)
        q, k, v = qkv.unbind(0)  # unbind's backward stacks the three gradients (indexing filled zeros thrice)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             dropout_p=a.dropout if self.training else 0.0)  # (B, heads, T, E / heads)
        return self.dropout1(a.out_proj(out.transpose(1, 2).reshape(b, t, e)))


@ENCODERS.register("mlp")
class MLPEncoder(nn.Module):
    """Masked mean over time, then a two-layer MLP (the utterance-level encoder, T = 1).

    Args:
        d_in: input width D_in.
        d_model: output width.
        hidden: hidden width.
        dropout: dropout after the hidden layer.
    """

    def __init__(self, d_in: int, d_model: int, hidden: int = 128, dropout: float = 0.2, **_: object) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_in, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, d_model), nn.ReLU(),
        )

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        return self.net(masked_mean(x, lengths))  # (B, D_in) -> (B, d_model)


@ENCODERS.register("transformer")
class TransformerEncoder(nn.Module):
    """Linear projection, learned positions, a small pre-norm Transformer, masked mean pooling.

    Args:
        d_in: input width; d_model: output width; hidden: model width inside the encoder;
        layers: Transformer layers; heads: attention heads; max_len: longest sequence T;
        dropout: dropout rate of the residual and feed-forward paths (``UniformDropout``).
        attn_dropout: dropout on the attention probabilities (default 0: on the CPU its random
            mask over (B, heads, T, T) was an eighth of a CPU step, ``benchmarks/findings.md``).
    """

    def __init__(self, d_in: int, d_model: int, hidden: int = 128, layers: int = 1, heads: int = 4,
                 dropout: float = 0.2, max_len: int = 512, attn_dropout: float = 0.0, **_: object) -> None:
        super().__init__()
        if not 0.0 <= attn_dropout < 1.0:
            raise ValueError(f"model.attn_dropout={attn_dropout} must lie in [0, 1)")
        self.proj = nn.Linear(d_in, hidden)
        self.pos = nn.Parameter(torch.zeros(1, max_len, hidden))
        if hidden % heads:
            raise ValueError(f"the transformer encoder's width model.hidden={hidden} is not divisible by "
                             f"model.heads={heads}; choose heads that divide it (for example {_divisor(hidden, heads)})")
        layer = BatchFirstEncoderLayer(hidden, heads, 2 * hidden, dropout, batch_first=True, norm_first=True)
        layer.self_attn.dropout = attn_dropout  # nn.MultiheadAttention reads it in every forward
        for name in ("dropout", "dropout1", "dropout2"):  # the feed-forward and the two residual paths
            setattr(layer, name, UniformDropout(dropout))
        self.body = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, d_model), nn.ReLU())

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        t = x.shape[1]
        if t > self.pos.shape[1]:
            raise ValueError(f"sequences of {t} steps are longer than the {self.pos.shape[1]} this transformer encoder "
                             "has positions for (the longest in the data it was built for); cut the sequences to "
                             f"{self.pos.shape[1]} steps")
        h = self.proj(x) + self.pos[:, :t]  # (B, T, H)
        pad = torch.arange(t, device=x.device)[None, :] >= lengths[:, None]  # (B, T) True at padding
        h = self.body(h, src_key_padding_mask=pad if t > 1 else None)
        return self.out(masked_mean(h, lengths))  # (B, H) -> (B, d_model)


@ENCODERS.register("lstm")
class LSTMEncoder(nn.Module):
    """A bidirectional LSTM (``layers`` layers, ``hidden // 2`` units per direction) over the true
    steps only (packed: the backward direction starts at step ``lengths[b] - 1``, never in the
    padding), with masked mean pooling over its outputs."""

    def __init__(self, d_in: int, d_model: int, hidden: int = 128, layers: int = 1, dropout: float = 0.2,
                 **_: object) -> None:
        super().__init__()
        if hidden < 2:
            raise ValueError(f"the LSTM encoder needs model.hidden of at least 2 (hidden // 2 units per direction), "
                             f"got {hidden}")
        self.rnn = nn.LSTM(d_in, hidden // 2, num_layers=layers, batch_first=True, bidirectional=True)
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * (hidden // 2), d_model), nn.ReLU())

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        if x.shape[1] == 1:  # utterance level: nothing to pack
            h, _ = self.rnn(x)
        else:
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            h, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=x.shape[1])  # (B, T, H)
        return self.out(masked_mean(h, lengths))


def create_encoder(name: str, **kwargs) -> nn.Module:
    """Build the encoder registered as ``name`` (``mlp``, ``transformer``, ``lstm``)."""
    return ENCODERS.create(name, **kwargs)


def _divisor(n: int, near: int) -> int:
    """The divisor of n closest to ``near`` (the smaller on a tie)."""
    return min((d for d in range(1, n + 1) if n % d == 0), key=lambda d: (abs(d - near), d))
