"""DETR's transformer (Carion et al., 2020, sec. 3.2 and appendix A.3): sine positional encodings,
multi-head attention, a post-norm encoder and a decoder that returns every layer's output.

The architecture is the original one ("Attention is all you need" layers, post-norm: ``x = LN(x +
sublayer(x))``), with DETR's two changes:

* the spatial positional encoding is added to the queries and keys of **every** attention layer (never
  to the values): encoder self-attention, and the keys of the decoder's cross-attention;
* the decoder input is ``N`` zeros, and the learnt object queries are the decoder's positional
  encoding, added to the queries (and self-attention keys) of every decoder layer. The decoder
  decodes the ``N`` objects in parallel (no causal mask), and a shared LayerNorm is applied to the
  output of every decoder layer (for the auxiliary losses, sec. 3.2 "auxiliary decoding losses").

Shapes are batch-first: sequences ``[B, L, D]``; padding masks ``[B, S]`` with ``True`` where the
key is padding (never attended to).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["sine_position_encoding", "MultiHeadAttention", "EncoderLayer", "DecoderLayer", "TransformerEncoder",
           "TransformerDecoder", "Transformer"]


def sine_position_encoding(valid: Tensor, num_feats: int, temperature: float = 10000.0,
                           scale: float = 2 * math.pi, eps: float = 1e-6) -> Tensor:
    """DETR's 2-D sine encoding ``[B, 2 num_feats, H, W]`` of a feature map with valid region ``valid``.

    ``valid [B, H, W]`` (bool, ``False`` on padding). The row / column coordinates are the cumulative
    counts of valid cells (1-based), normalised by the last valid one and scaled to ``(0, 2 pi]`` (so an
    image's encoding does not depend on how much padding the batch adds). For each axis, feature
    pair ``i`` is ``sin(p / T^(2i / F)), cos(p / T^(2i / F))`` (``T`` = temperature, ``F`` =
    ``num_feats``), interleaved; the ``y`` features come first, then the ``x`` features.
    """
    mask = valid.to(torch.float32)
    y = mask.cumsum(1)
    x = mask.cumsum(2)
    y = y / (y[:, -1:, :] + eps) * scale
    x = x / (x[:, :, -1:] + eps) * scale
    i = torch.arange(num_feats, dtype=torch.float32, device=valid.device)
    dim_t = temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / num_feats)
    px = x[..., None] / dim_t
    py = y[..., None] / dim_t
    px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=4).flatten(3)
    py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((py, px), dim=3).permute(0, 3, 1, 2)


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention with ``heads`` heads (Vaswani et al., 2017).

    The query, key and value projections are one packed ``[3 D, D]`` weight (``in_proj_weight`` /
    ``in_proj_bias``, rows ``q | k | v``; the layout of the DETR release), the output projection is
    ``out_proj``. When ``query is key`` (self-attention: both are ``x + pos``) the two projections
    run as one matrix product.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"the width {dim} must be divisible by the number of heads {heads}")
        self.dim, self.heads, self.dropout = dim, heads, float(dropout)
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None,
                attn_mask: Tensor | None = None) -> Tensor:
        """``query [B, L, D]``, ``key`` / ``value [B, S, D]`` -> ``[B, L, D]``. ``key_padding_mask
        [B, S]``: ``True`` = ignore that key; ``attn_mask [L, S]`` (bool): ``True`` = may attend."""
        B, L, D = query.shape
        S = key.shape[1]
        h, dh = self.heads, D // self.heads
        w, b = self.in_proj_weight, self.in_proj_bias
        if query is key:
            q, k = F.linear(query, w[: 2 * D], b[: 2 * D]).split(D, dim=-1)
        else:
            q = F.linear(query, w[:D], b[:D])
            k = F.linear(key, w[D: 2 * D], b[D: 2 * D])
        v = F.linear(value, w[2 * D:], b[2 * D:])
        q = q.view(B, L, h, dh).transpose(1, 2)
        k = k.view(B, S, h, dh).transpose(1, 2)
        v = v.view(B, S, h, dh).transpose(1, 2)
        mask = None
        if key_padding_mask is not None:
            mask = ~key_padding_mask[:, None, None, :]
        if attn_mask is not None:
            mask = attn_mask[None, None] if mask is None else mask & attn_mask[None, None]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(B, L, D))

    def attention_weights(self, query: Tensor, key: Tensor, key_padding_mask: Tensor | None = None,
                          attn_mask: Tensor | None = None) -> Tensor:
        """The attention weights ``[B, heads, L, S]`` that :meth:`forward` applies to the values (before
        dropout): ``softmax(q k^T / sqrt(d_head))`` over the keys, masked keys at 0, each row summing to
        1. Computed on the side from the same projections (``forward`` runs the fused kernel, which does
        not return them), so asking for them changes no output."""
        B, L, D = query.shape
        S = key.shape[1]
        h, dh = self.heads, D // self.heads
        w, b = self.in_proj_weight, self.in_proj_bias
        q = F.linear(query, w[:D], b[:D]).view(B, L, h, dh).transpose(1, 2)
        k = F.linear(key, w[D: 2 * D], b[D: 2 * D]).view(B, S, h, dh).transpose(1, 2)
        logits = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(dh)
        if key_padding_mask is not None:
            logits = logits.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        if attn_mask is not None:
            logits = logits.masked_fill(~attn_mask[None, None], float("-inf"))
        return logits.softmax(-1)


class EncoderLayer(nn.Module):
    """Post-norm encoder layer: ``x = LN1(x + SA(x + pos, x + pos, x))``, ``x = LN2(x + FFN(x))``."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float = 0.1):
        super().__init__()
        self.self_attn = MultiHeadAttention(dim, heads, dropout)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, pos: Tensor, padding: Tensor | None) -> Tensor:
        qk = x + pos
        x = self.norm1(x + self.dropout(self.self_attn(qk, qk, x, padding)))
        return self.norm2(x + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(x))))))


class DecoderLayer(nn.Module):
    """Post-norm decoder layer: query self-attention, cross-attention to the encoder memory (keys
    ``memory + pos``, values ``memory``, queries ``t + query_pos``), FFN; each followed by add & LN."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float = 0.1):
        super().__init__()
        self.self_attn = MultiHeadAttention(dim, heads, dropout)
        self.cross_attn = MultiHeadAttention(dim, heads, dropout)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, t: Tensor, memory: Tensor, pos: Tensor, query_pos: Tensor, padding: Tensor | None,
                self_mask: Tensor | None = None, attention: list[Tensor] | None = None) -> Tensor:
        """``attention``: a list to which the cross-attention weights ``[B, heads, N, S]`` are appended
        (:meth:`MultiHeadAttention.attention_weights`; the output is the same with or without it)."""
        qk = t + query_pos
        t = self.norm1(t + self.dropout(self.self_attn(qk, qk, t, attn_mask=self_mask)))
        q, k = t + query_pos, memory + pos
        if attention is not None:
            attention.append(self.cross_attn.attention_weights(q, k, padding))
        t = self.norm2(t + self.dropout(self.cross_attn(q, k, memory, padding)))
        return self.norm3(t + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(t))))))


class TransformerEncoder(nn.Module):
    def __init__(self, dim: int, heads: int, ffn_dim: int, num_layers: int, dropout: float = 0.1):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, ffn_dim, dropout) for _ in range(num_layers))

    def forward(self, x: Tensor, pos: Tensor, padding: Tensor | None) -> Tensor:
        for layer in self.layers:
            x = layer(x, pos, padding)
        return x


class TransformerDecoder(nn.Module):
    """Returns ``[num_layers, B, N, D]``: every layer's output through the shared final LayerNorm
    (``norm``); the last entry is the decoder's output."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, num_layers: int, dropout: float = 0.1):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(dim, heads, ffn_dim, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, t: Tensor, memory: Tensor, pos: Tensor, query_pos: Tensor, padding: Tensor | None,
                self_mask: Tensor | None = None, attention: list[Tensor] | None = None) -> Tensor:
        """``attention``: a list that receives each layer's cross-attention weights (see
        :class:`DecoderLayer`), first layer first."""
        outs = []
        for layer in self.layers:
            t = layer(t, memory, pos, query_pos, padding, self_mask, attention)
            outs.append(self.norm(t))
        return torch.stack(outs)


class Transformer(nn.Module):
    """Encoder + decoder of DETR (``d_model`` ``dim``, ``heads`` heads, FFN ``ffn_dim``, dropout 0.1;
    R-50 DETR: 256 / 8 / 2048, 6 + 6 layers). All matrices are Xavier-uniform initialised."""

    def __init__(self, dim: int = 256, heads: int = 8, ffn_dim: int = 2048, encoder_layers: int = 6,
                 decoder_layers: int = 6, dropout: float = 0.1):
        super().__init__()
        self.dim = dim
        self.encoder = TransformerEncoder(dim, heads, ffn_dim, encoder_layers, dropout)
        self.decoder = TransformerDecoder(dim, heads, ffn_dim, decoder_layers, dropout)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, src: Tensor, valid: Tensor, pos: Tensor, query_embed: Tensor,
                self_mask: Tensor | None = None, attention: list[Tensor] | None = None) -> Tensor:
        """``src [B, D, H, W]`` projected features, ``valid [B, H, W]``, ``pos [B, D, H, W]``,
        ``query_embed [N, D]`` -> decoder outputs ``[L, B, N, D]``. ``attention``: a list that receives
        the decoder's cross-attention weights ``[B, heads, N, H W]`` per layer (outputs unchanged)."""
        B = src.shape[0]
        x = src.flatten(2).transpose(1, 2)
        p = pos.flatten(2).transpose(1, 2)
        padding = ~valid.flatten(1)
        if not bool(padding.any()) and not torch.jit.is_tracing():
            padding = None  # one image or equal sizes: no mask, SDPA's fastest kernel
        memory = self.encoder(x, p, padding)
        query_pos = query_embed[None].expand(B, -1, -1)
        t = torch.zeros_like(query_pos)
        return self.decoder(t, memory, p, query_pos, padding, self_mask, attention)
