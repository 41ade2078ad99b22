"""The Transformer of "Attention Is All You Need" (Vaswani et al., 2017), bottom-up as in Figure 1.

Dimensions: B batch, S source length, T target length, D d_model, H heads, Dh = D / H head dim,
V vocabulary. Masks are boolean, True = may attend (see nmt/masks.py).

The model knows nothing about training: it returns logits. Loss, label smoothing and the
learning-rate schedule live in nmt/training/.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nmt.config import ModelConfig
from nmt.masks import make_causal_mask, make_decoder_mask
from nmt.tokenizer import PAD_ID

KV = tuple[torch.Tensor, torch.Tensor]  # keys and values, each (B, H, len, Dh)


def sinusoidal_table(n_positions: int, d_model: int, layout: str = "interleaved") -> torch.Tensor:
    """Section 3.5: PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(same). (P, D)
    layout "halves" (Marian's): the same values with the sines in columns 0..D/2-1 and the cosines
    in D/2..D-1, computed in float64 as Marian and transformers do, then cast."""
    dtype = torch.float64 if layout == "halves" else torch.float32
    pos = torch.arange(n_positions, dtype=dtype)[:, None]  # (P, 1)
    inv_freq = torch.exp(-math.log(10000.0) * torch.arange(0, d_model, 2, dtype=dtype) / d_model)  # (D/2,)
    if layout == "halves":
        return torch.cat([torch.sin(pos * inv_freq), torch.cos(pos * inv_freq)], dim=1).float()
    table = torch.zeros(n_positions, d_model)
    table[:, 0::2] = torch.sin(pos * inv_freq)
    table[:, 1::2] = torch.cos(pos * inv_freq)
    return table


def token_embedding(vocab_size: int, d_model: int) -> nn.Embedding:
    """Not in the paper: N(0, D^-0.5) initialisation, so that after the sqrt(D) scaling the
    embeddings have unit variance and a tied output projection starts with small logits. (V, D)"""
    tokens = nn.Embedding(vocab_size, d_model, padding_idx=PAD_ID)
    nn.init.normal_(tokens.weight, mean=0.0, std=d_model**-0.5)
    with torch.no_grad():
        tokens.weight[PAD_ID].zero_()
    return tokens


class Embeddings(nn.Module):
    """Section 3.4 + 3.5: token embedding * sqrt(D) + sinusoidal position, then dropout."""

    pe: torch.Tensor  # (max_positions, D), a buffer

    def __init__(self, vocab_size: int, d_model: int, max_positions: int, dropout: float,
                 positions: str = "interleaved") -> None:
        super().__init__()
        self.d_model = d_model
        self.tokens = token_embedding(vocab_size, d_model)
        self.register_buffer("pe", sinusoidal_table(max_positions, d_model, positions), persistent=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, ids: torch.Tensor, offset: int = 0) -> torch.Tensor:
        # ids (B, L) -> (B, L, D); `offset` is the position of ids[:, 0] (incremental decoding)
        x = self.tokens(ids) * math.sqrt(self.d_model)
        return self.dropout(x + self.pe[offset : offset + ids.size(1)])


class MultiHeadAttention(nn.Module):
    """Section 3.2.2: h parallel scaled dot-product attentions (3.2.1) over projected Q, K, V.

    Self-attention projects Q, K and V with one fused matrix; cross-attention projects the query
    from the decoder and K, V from the encoder output (`memory`) with a second fused matrix.
    """

    def __init__(self, d_model: int, n_heads: int, attention_dropout: float, *, cross: bool) -> None:
        super().__init__()
        self.n_heads, self.d_head, self.cross = n_heads, d_model // n_heads, cross
        if cross:
            self.q_proj = nn.Linear(d_model, d_model)
            self.kv_proj = nn.Linear(d_model, 2 * d_model)
        else:
            self.qkv_proj = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.attention_dropout = attention_dropout

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.n_heads, self.d_head).transpose(1, 2)  # (B, n, D) -> (B, H, n, Dh)

    def forward(self, x: torch.Tensor, *, mask: torch.Tensor | None, memory: torch.Tensor | None = None,
                past: KV | SelfAttentionCache | None = None, weights: list | None = None,
                group: int = 1) -> tuple[torch.Tensor, KV]:
        """x (B, L, D) -> (B, L, D), and the (K, V) it attended to.

        Self-attention: K, V of x are appended to `past`, a SelfAttentionCache (incremental decoding).
        Cross-attention: K, V come from `memory`, or from `past` when already computed. With
        `group` g > 1, every g consecutive rows of x share one source: K, V (B/g, H, S, Dh) and the
        mask (B/g, 1, 1, S) are per source, and a source's g rows attend as g*L queries of one
        row (beam search's K beams of a sentence: its keys are read once, not K times).
        `weights`, if a list, receives the attention weights (B, H, L, S) -- the slow, explicit path
        used only to draw attention heatmaps.
        """
        if self.cross:
            q = self._split_heads(self.q_proj(x))  # (B, H, L, Dh)
            if past is None:
                k, v = self.kv_proj(memory).chunk(2, dim=-1)  # 2 x (B/g, S, D)
                past = (self._split_heads(k), self._split_heads(v))  # 2 x (B/g, H, S, Dh)
            assert isinstance(past, tuple)
            k, v = past
            if group > 1:  # (B, H, L, Dh) -> (B/g, H, g*L, Dh): a source's rows as queries of one row
                b, h, n, dh = q.shape
                q = q.reshape(b // group, group, h, n, dh).transpose(1, 2).reshape(b // group, h, group * n, dh)
        else:
            q, k, v = (self._split_heads(t) for t in self.qkv_proj(x).chunk(3, dim=-1))  # 3 x (B, H, L, Dh)
            if isinstance(past, SelfAttentionCache):
                k, v = past.append(k, v)  # (B, H, past+L, Dh)
        dropout = self.attention_dropout if self.training else 0.0
        if weights is not None:  # the same as below, written out to keep the weights
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_head)  # (B, H, L, S)
            probs = scores.masked_fill(~mask, float("-inf")).softmax(-1) if mask is not None else scores.softmax(-1)
            weights.append(_ungroup(probs, group))
            out = probs @ v  # (B, H, L, Dh)
        else:
            out = attend(q, k, v, mask, dropout)  # (B, H, L, Dh)
        out = _ungroup(out, group)
        b, _, n, _ = out.shape
        out = out.transpose(1, 2).reshape(b, n, self.n_heads * self.d_head)  # (B, L, D)
        return self.out_proj(out), (k, v)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
           dropout: float = 0.0) -> torch.Tensor:
    """softmax(Q K^T / sqrt(Dh)) V, masked where mask is False (eq. 1): q (B, H, L, Dh), k and v
    (B, H, S, Dh), mask broadcastable to (B, H, L, S) -> (B, H, L, Dh).

    Training on a CPU in bfloat16 (trainer.precision bf16-mixed) attends in float32: torch's CPU
    attention kernel is 10x slower in bfloat16 than in float32 (torch 2.13; 35 against 3.3 ms for
    one layer forward and backward at a 2,048-token batch, scripts/bench_train_step.py), which
    undid the gain of the bfloat16 products (docs/performance.md)."""
    if q.device.type == "cpu" and torch.is_grad_enabled() and (q.dtype == torch.bfloat16 or torch.is_autocast_enabled("cpu")):
        with torch.autocast("cpu", enabled=False):
            out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, dropout_p=dropout)
        return out.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)


def _ungroup(t: torch.Tensor, group: int) -> torch.Tensor:
    """(B/g, H, g*L, X) of grouped queries -> (B, H, L, X), row by row."""
    if group == 1:
        return t
    a, h, gn, x = t.shape
    return t.reshape(a, h, group, gn // group, x).transpose(1, 2).reshape(a * group, h, gn // group, x)


class FeedForward(nn.Module):
    """Section 3.3, eq. 2: FFN(x) = max(0, x W1 + b1) W2 + b2; with activation "swish" (not in
    the paper; Marian's OPUS-MT models), (x W1 + b1) * sigmoid(x W1 + b1) in place of the max."""

    def __init__(self, d_model: int, d_ff: int, activation_dropout: float, activation: str = "relu") -> None:
        super().__init__()
        self.w1, self.w2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
        self.activation: Callable[[torch.Tensor], torch.Tensor] = F.silu if activation == "swish" else F.relu
        # Not in the paper's text (its tensor2tensor code has it; fairseq leaves it at 0): dropout on
        # the hidden ReLU, model.activation_dropout.
        self.dropout = nn.Dropout(activation_dropout) if activation_dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.dropout(self.activation(self.w1(x))))  # (B, L, D) -> (B, L, D)


class Residual(nn.Module):
    """Section 3.1 + 5.4: LayerNorm(x + Dropout(Sublayer(x))) -- post-norm, as in the paper.

    With `norm_first` (pre-norm, Wang et al. 2019; not in the paper): x + Dropout(Sublayer(LayerNorm(x))),
    which trains more stably for deep stacks; the stack then ends with a final LayerNorm.
    """

    def __init__(self, d_model: int, dropout: float, norm_first: bool) -> None:
        super().__init__()
        self.norm, self.dropout, self.norm_first = nn.LayerNorm(d_model), nn.Dropout(dropout), norm_first

    def forward(self, x: torch.Tensor, sublayer_out: torch.Tensor) -> torch.Tensor:
        if self.norm_first:
            return x + self.dropout(sublayer_out)
        return self.norm(x + self.dropout(sublayer_out))

    def pre(self, x: torch.Tensor) -> torch.Tensor:
        """The sublayer's input: normalised first under pre-norm, unchanged under post-norm."""
        return self.norm(x) if self.norm_first else x


class EncoderLayer(nn.Module):
    """Section 3.1: self-attention, then feed-forward, each inside a residual block."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout, cross=False)
        self.ffn = FeedForward(cfg.d_model, cfg.d_ff, cfg.activation_dropout, cfg.activation)
        self.res1, self.res2 = (Residual(cfg.d_model, cfg.dropout, cfg.norm_first) for _ in range(2))

    def forward(self, x: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        x = self.res1(x, self.self_attn(self.res1.pre(x), mask=src_mask)[0])
        return self.res2(x, self.ffn(self.res2.pre(x)))


class DecoderLayer(nn.Module):
    """Section 3.1: masked self-attention, encoder-decoder attention, feed-forward."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout, cross=False)
        self.cross_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout, cross=True)
        self.ffn = FeedForward(cfg.d_model, cfg.d_ff, cfg.activation_dropout, cfg.activation)
        self.res1, self.res2, self.res3 = (Residual(cfg.d_model, cfg.dropout, cfg.norm_first) for _ in range(3))

    def forward(self, x: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor, tgt_mask: torch.Tensor | None,
                past_self: SelfAttentionCache | None = None, past_cross: KV | None = None,
                cross_weights: list | None = None, group: int = 1) -> tuple[torch.Tensor, KV, KV]:
        """group: consecutive rows of x per row of memory and src_mask (MultiHeadAttention)."""
        h, kv_self = self.self_attn(self.res1.pre(x), mask=tgt_mask, past=past_self)
        x = self.res1(x, h)
        h, kv_cross = self.cross_attn(self.res2.pre(x), mask=src_mask, memory=memory, past=past_cross,
                                      weights=cross_weights, group=group)
        x = self.res2(x, h)
        return self.res3(x, self.ffn(self.res3.pre(x))), kv_self, kv_cross


class SelfAttentionCache:
    """One decoder layer's self-attention keys and values of the positions decoded so far.

    With a `capacity` (positions), they are written in place into preallocated buffers laid out
    time-major, (capacity, rows, H, Dh): the filled positions are one contiguous block, so
    following the beams is one contiguous gather (index_select over the rows) into a second
    buffer, and attention reads them as a (rows, H, length, Dh) view without a copy. No
    `torch.cat` and no allocation per step; a step beyond the capacity doubles it. Without a
    capacity they grow by concatenation each step (the simple form; both give the same outputs,
    tested)."""

    def __init__(self, capacity: int | None = None) -> None:
        self.capacity, self.length = capacity, 0
        # growing: (rows, H, length, Dh); preallocated: (capacity, rows, H, Dh), rows filled up to length
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        # preallocated: the flat storage of k and of v (capacity * rows * H * Dh or more each), and a
        # second pair that `reorder` gathers into; the two pairs swap roles at each reorder
        self._store: KV | None = None
        self._spare: KV | None = None

    def append(self, k: torch.Tensor, v: torch.Tensor) -> KV:
        """k, v (B, H, t, Dh) of the new positions -> those of every position so far (B, H, length + t, Dh)."""
        b, t = k.size(0), k.size(2)
        if self.capacity is None:
            self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
            self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
            self.length += t
            return self.k, self.v
        if self.k is None or self.length + t > self.k.size(0) or b != self.k.size(1):
            self._grow(k, max(self.capacity, 2 * self.length, self.length + t))
        assert self.k is not None and self.v is not None
        new = slice(self.length, self.length + t)
        self.k[new], self.v[new] = k.permute(2, 0, 1, 3), v.permute(2, 0, 1, 3)  # (t, B, H, Dh)
        self.length += t
        return self.k[: self.length].permute(1, 2, 0, 3), self.v[: self.length].permute(1, 2, 0, 3)

    def _grow(self, like: torch.Tensor, capacity: int) -> None:
        """New buffers of `capacity` positions for the rows of `like` (B, H, t, Dh), the filled
        positions copied over (at the first step, or when a row count or the length outgrows them)."""
        b, h, _, dh = like.shape
        store = (like.new_empty(capacity * b * h * dh), like.new_empty(capacity * b * h * dh))
        k, v = (flat.view(capacity, b, h, dh) for flat in store)
        if self.k is not None and self.v is not None and self.length:
            if self.k.size(1) != b:
                raise ValueError(f"{b} rows where the cache holds {self.k.size(1)}: reorder it first")
            k[: self.length], v[: self.length] = self.k[: self.length], self.v[: self.length]
        self.k, self.v, self.capacity, self._store = k, v, capacity, store

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows `index` (B',) of the batch."""
        if self.k is None or self.v is None:
            return
        if self.capacity is None:
            self.k, self.v = self.k.index_select(0, index), self.v.index_select(0, index)
            return
        n, (cap, _, h, dh) = len(index), self.k.shape
        size = cap * n * h * dh
        if self._spare is None or self._spare[0].numel() < size:
            self._spare = (self.k.new_empty(size), self.v.new_empty(size))
        k, v = (flat[:size].view(cap, n, h, dh) for flat in self._spare)  # contiguous for any n
        for old, new in ((self.k, k), (self.v, v)):
            filled = old[: self.length]  # (length, rows, H, Dh): one contiguous block
            if old.requires_grad:  # out= cannot record a gradient
                new[: self.length] = filled.index_select(1, index)
            else:  # decoding: gathered straight into the spare buffer
                torch.index_select(filled, 1, index, out=new[: self.length])
        self._store, self._spare = self._spare, self._store
        self.k, self.v = k, v


class DecoderCache:
    """Incremental decoding state: per decoder layer, the self-attention keys/values of all steps
    so far (a SelfAttentionCache, preallocated for `capacity` positions if given) and the
    cross-attention keys/values of the memory (computed once). The latter are kept once per
    source: `group` consecutive rows share one (beam search's K beams of a sentence; 1 until
    `reorder` is asked for groups), and the decoder then takes the memory's mask per source too.

    Beam search only ever calls `reorder(index)` to follow the surviving beams.
    """

    def __init__(self, n_layers: int, *, record_attention: bool = False, capacity: int | None = None) -> None:
        self.self_kv = [SelfAttentionCache(capacity) for _ in range(n_layers)]
        self.cross_kv: list[KV | None] = [None] * n_layers
        self.group = 1  # consecutive rows per source (per row of cross_kv)
        self.length = 0  # target positions already decoded
        # With record_attention, the last layer's cross-attention (mean over heads) of every
        # decoded position: (B, T, S) -- for attention heatmaps.
        self.attention: torch.Tensor | None = None
        self.record_attention = record_attention
        # With a shortlist: (its ids, the output layer cut to them), made at the first step (output_layer)
        self.output: tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]] | None = None

    def reorder(self, index: torch.Tensor, *, same_sources: bool = False, group: int = 1) -> None:
        """Select batch rows: index (B',) of rows of the current batch (beams that survive).
        same_sources: every row keeps the sentence it had (beams moved among the beams of one
        sentence), so the cross-attention keys/values, equal for all beams of a sentence, stay.
        group: the new rows come in groups of `group` consecutive rows of one source each (the
        caller's promise), whose keys/values are then kept once, for the group."""
        for layer in self.self_kv:
            layer.reorder(index)
        if not same_sources:
            sources = index[::group] // self.group  # the source of each new group, in the old per-source rows
            pick = lambda kv: None if kv is None else (kv[0].index_select(0, sources), kv[1].index_select(0, sources))  # noqa: E731
            self.cross_kv, self.group = [pick(kv) for kv in self.cross_kv], group
        if self.attention is not None:
            self.attention = self.attention.index_select(0, index)

    def add_attention(self, weights: torch.Tensor) -> None:
        """weights (B, H, L, S) of the new positions -> appended as (B, L, S)."""
        new = weights.mean(dim=1)
        self.attention = new if self.attention is None else torch.cat([self.attention, new], dim=1)


class Encoder(nn.Module):
    """Section 3.1: a stack of N identical layers."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.n_encoder_layers))
        self.final_norm = nn.LayerNorm(cfg.d_model) if cfg.norm_first else nn.Identity()

    def forward(self, x: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, src_mask)
        return self.final_norm(x)  # (B, S, D)


class Decoder(nn.Module):
    """Section 3.1: a stack of N identical layers."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.n_decoder_layers))
        self.final_norm = nn.LayerNorm(cfg.d_model) if cfg.norm_first else nn.Identity()

    def forward(self, x: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor,
                tgt_mask: torch.Tensor | None, cache: DecoderCache | None) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            past_self = cache.self_kv[i] if cache else None
            past_cross = cache.cross_kv[i] if cache else None
            record: list[torch.Tensor] | None = [] if cache and cache.record_attention and i == len(self.layers) - 1 else None
            x, _, kv_cross = layer(x, memory, src_mask, tgt_mask, past_self, past_cross, record, cache.group if cache else 1)
            if cache:
                cache.cross_kv[i] = kv_cross
            if record and cache is not None:
                cache.add_attention(record[0])
        return self.final_norm(x)  # (B, T, D)


def output_layer(generator: nn.Linear, x: torch.Tensor, vocab: torch.Tensor | None,
                 cache: DecoderCache | None = None) -> torch.Tensor:
    """x (..., D) -> logits (..., V) of the whole vocabulary, or (..., U) of the ids `vocab` (U,).
    With a decoding cache, the rows of `vocab` are cut from the output matrix once per batch (and
    packed again where the generator is packed, `select_rows`), not at every step."""
    if vocab is None:
        return generator(x)
    if cache is not None:
        if cache.output is None or cache.output[0] is not vocab:
            cache.output = (vocab, rows_of(generator, vocab))
        return cache.output[1](x)
    return rows_of(generator, vocab)(x)


def rows_of(generator: nn.Module, vocab: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The output layer restricted to the ids `vocab` (U,): x (..., D) -> (..., U)."""
    select = getattr(generator, "select_rows", None)
    if select is not None:
        return select(vocab)
    weight = generator.weight.index_select(0, vocab)  # type: ignore[operator]
    bias = None if generator.bias is None else generator.bias.index_select(0, vocab)  # type: ignore[operator]
    return lambda x: F.linear(x, weight, bias)


class Transformer(nn.Module):
    """Figure 1: encoder-decoder with a linear + softmax generator (we return the logits)."""

    def __init__(self, cfg: ModelConfig, *, src_vocab_size: int, tgt_vocab_size: int, shared_vocab: bool) -> None:
        super().__init__()
        self.cfg = cfg
        self.tgt_embed = Embeddings(tgt_vocab_size, cfg.d_model, cfg.max_positions, cfg.dropout, cfg.positions)
        # Section 3.4: with a shared vocabulary, one matrix for both embeddings and the output.
        if shared_vocab and cfg.tie_embeddings:
            self.src_embed = self.tgt_embed
        else:
            self.src_embed = Embeddings(src_vocab_size, cfg.d_model, cfg.max_positions, cfg.dropout, cfg.positions)
        self.encoder, self.decoder = Encoder(cfg), Decoder(cfg)
        self.generator = nn.Linear(cfg.d_model, tgt_vocab_size, bias=cfg.output_bias)
        if cfg.tie_embeddings:
            self.generator.weight = self.tgt_embed.tokens.weight
        if self.generator.bias is not None:  # (not in the paper) starts at zero: no token favoured
            nn.init.zeros_(self.generator.bias)
        for name, p in self.named_parameters():  # Xavier for the projections, as fairseq/annotated
            if p.dim() > 1 and "embed" not in name and not (cfg.tie_embeddings and name.startswith("generator")):
                nn.init.xavier_uniform_(p)

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        """src (B, S), src_mask (B, 1, 1, S) -> memory (B, S, D)"""
        return self.encoder(self.src_embed(src), src_mask)

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor,
               cache: DecoderCache | None = None, keep: torch.Tensor | None = None,
               vocab: torch.Tensor | None = None) -> torch.Tensor:
        """tgt_in (B, T) -> logits (B, T, V), or with `keep` (B, T) bool only those positions' (N, V)
        (training skips the output layer on padding); with `vocab` (U,) target ids only their
        logits, (B, T, U) in that order (a vocabulary shortlist, nmt/shortlist.py).

        Without a cache, tgt_in is the whole prefix (BOS + y) and gets the causal + padding mask.
        With a cache, tgt_in holds only the new positions (usually one); they attend to every
        cached position and causally among themselves. Cached == uncached is a tested property.
        """
        tgt_mask: torch.Tensor | None
        if cache is None:
            offset, tgt_mask = 0, make_decoder_mask(tgt_in)  # (B, 1, T, T)
        else:
            offset, t = cache.length, tgt_in.size(1)
            if offset + t > self.cfg.max_positions:
                raise ValueError(f"target position {offset + t - 1} is beyond model.max_positions ({self.cfg.max_positions})")
            # (1, 1, t, offset + t): new position j may see all cached ones and new ones <= j
            tgt_mask = None if t == 1 else make_causal_mask(offset + t, tgt_in.device)[:, :, offset:]
            cache.length += t
        x = self.decoder(self.tgt_embed(tgt_in, offset), memory, src_mask, tgt_mask, cache)
        return output_layer(self.generator, x if keep is None else x[keep], vocab, cache)  # (B, T, V) or (N, V)

    def make_cache(self, *, record_attention: bool = False, capacity: int | None = None) -> DecoderCache:
        return DecoderCache(len(self.decoder.layers), record_attention=record_attention, capacity=capacity)

    @property
    def max_output_len(self) -> int:
        """BOS and every generated token but the final EOS take a position of the sinusoidal table."""
        return self.cfg.max_positions - 1

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor, tgt_in: torch.Tensor,
                keep: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits (B, T, V) for training and scoring; (N, V) at the `keep` positions."""
        return self.decode(tgt_in, self.encode(src, src_mask), src_mask, keep=keep)
