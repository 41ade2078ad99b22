"""The RNN baseline: a bidirectional recurrent encoder and an attentional recurrent decoder.

Bahdanau, Cho & Bengio (2015), "Neural Machine Translation by Jointly Learning to Align and
Translate": the encoder reads the source both ways and each source word gets an annotation
m_s = [h_fwd_s; h_bwd_s]; the decoder's first state is tanh(W_init h_bwd_1); an additive score
e_ts = v^T tanh(W_q h_t + W_k m_s) chooses where to look.
Luong, Pham & Manning (2015), "Effective Approaches to Attention-based NMT": the dot and general
scores, the attentional vector h~_t = tanh(W_c [c_t; h_t]) that predicts the next word, and input
feeding (h~_{t-1} is part of the decoder's next input, so the model knows where it looked).
The decoder step runs in Luong's order -- RNN first, then attention over its new state -- as in
OpenNMT-py; `rnn_attention: bahdanau` (the default) gives Bahdanau's additive score.

Dimensions: B batch, S source length, T target length, E embedding width (model.d_model),
H hidden width (model.rnn_hidden_size; each encoder direction H/2), L decoder layers,
V vocabulary. Masks are boolean, True = may attend (see nmt/masks.py).

The model knows nothing about training: it returns logits. Gradient clipping, which keeps the
recurrent gradients from exploding, is `trainer.gradient_clip_val`.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nmt.config import ModelConfig
from nmt.models.transformer import output_layer, token_embedding

State = tuple[torch.Tensor, ...]  # the decoder RNN's state: (h,) for a GRU, (h, c) for an LSTM, each (L, B, H)


class Embeddings(nn.Module):
    """Token embedding scaled by sqrt(E) (as the Transformer's, so a tied output projection starts
    with small logits), then dropout. No positions: the recurrence supplies the order."""

    def __init__(self, vocab_size: int, dim: int, dropout: float) -> None:
        super().__init__()
        self.dim = dim
        self.tokens = token_embedding(vocab_size, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.tokens(ids) * math.sqrt(self.dim))  # (B, L) -> (B, L, E)


class Attention(nn.Module):
    """Weights over the source annotations from the decoder state, and their weighted sum.

    bahdanau: e_s = v^T tanh(W_q h + W_k m_s)   general: e_s = h^T W_k m_s   dot: e_s = h^T m_s
    a = softmax(e) over the positions the mask allows (exactly 0 on padding); context = sum_s a_s m_s.
    """

    def __init__(self, kind: str, hidden: int) -> None:
        super().__init__()
        self.kind = kind
        if kind == "bahdanau":
            self.w_q = nn.Linear(hidden, hidden, bias=False)
            self.w_k = nn.Linear(hidden, hidden)
            self.v = nn.Linear(hidden, 1, bias=False)
        elif kind == "general":
            self.w_k = nn.Linear(hidden, hidden, bias=False)

    def keys(self, memory: torch.Tensor) -> torch.Tensor:
        """The part of the score that depends only on the source, computed once. (B, S, H)"""
        return memory if self.kind == "dot" else self.w_k(memory)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, memory: torch.Tensor,
                mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """query (B, H), keys and memory (B, S, H), mask (B, S) -> context (B, H), weights (B, S)"""
        if self.kind == "bahdanau":
            scores = self.v(torch.tanh(keys + self.w_q(query).unsqueeze(1))).squeeze(-1)  # (B, S)
        else:
            scores = torch.bmm(keys, query.unsqueeze(-1)).squeeze(-1)  # (B, S)
        weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)  # (B, S)
        context = torch.bmm(weights.unsqueeze(1), memory).squeeze(1)  # (B, H)
        return context, weights


def _rnn(cell: str, input_size: int, hidden: int, layers: int, dropout: float, bidirectional: bool) -> nn.RNNBase:
    rnn_class = nn.LSTM if cell == "lstm" else nn.GRU
    return rnn_class(input_size, hidden, num_layers=layers, batch_first=True, bidirectional=bidirectional,
                     dropout=dropout if layers > 1 else 0.0)


class Encoder(nn.Module):
    """A bidirectional RNN over the embedded source; padding is skipped with packed sequences,
    so a sentence's annotations do not depend on how much padding its batch has."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.rnn = _rnn(cfg.rnn_cell, cfg.d_model, cfg.rnn_hidden_size // 2, cfg.n_encoder_layers, cfg.dropout,
                        bidirectional=True)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x (B, S, E), lengths (B,) -> annotations (B, S, H), zeros on padding."""
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.size(1))
        return out


class DecoderCache:
    """Incremental decoding state: the RNN state, the previous attentional vector h~ (input
    feeding) and the attention keys of the source (computed once). Beam search only ever calls
    `reorder(index)` to follow the surviving beams."""

    def __init__(self, *, record_attention: bool = False) -> None:
        self.state: State | None = None  # (L, B, H) each
        self.feed: torch.Tensor | None = None  # h~_{t-1} (B, E)
        self.keys: torch.Tensor | None = None  # (B, S, H)
        self.length = 0  # target positions already decoded
        self.attention: torch.Tensor | None = None  # (B, T, S) when record_attention
        self.record_attention = record_attention
        self.group = 1  # every row keeps its own source state (the keys)

    def reorder(self, index: torch.Tensor, *, same_sources: bool = False, group: int = 1) -> None:
        """Select batch rows: index (B',) of rows of the current batch (beams that survive).
        same_sources: every row keeps its sentence, so the attention keys (from the source) stay.
        group: ignored; the keys stay per row (`self.group` 1), and so do the memory and mask."""
        if self.state is not None:
            assert self.feed is not None and self.keys is not None  # set together in init_cache
            self.state = tuple(s.index_select(1, index) for s in self.state)
            self.feed = self.feed.index_select(0, index)
            if not same_sources:
                self.keys = self.keys.index_select(0, index)
        if self.attention is not None:
            self.attention = self.attention.index_select(0, index)


class Decoder(nn.Module):
    """One target position per step: RNN over [embedding; h~_{t-1}], attention over the source,
    h~_t = tanh(W_c [c_t; h_t]). The steps form a loop because of input feeding."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        e, h = cfg.d_model, cfg.rnn_hidden_size
        self.cell, self.n_layers, self.input_feeding = cfg.rnn_cell, cfg.n_decoder_layers, cfg.input_feeding
        self.rnn = _rnn(cfg.rnn_cell, e + (e if cfg.input_feeding else 0), h, cfg.n_decoder_layers, cfg.dropout,
                        bidirectional=False)
        self.init_state = nn.Linear(h // 2, cfg.n_decoder_layers * h)  # Bahdanau: s_0 = tanh(W_init h_bwd_1)
        self.attention = Attention(cfg.rnn_attention, h)
        self.combine = nn.Linear(2 * h, e)  # W_c: [c_t; h_t] -> h~_t (E wide, so the output can be tied)
        self.dropout = nn.Dropout(cfg.dropout)

    def start(self, memory: torch.Tensor, cache: DecoderCache) -> None:
        """Fill an empty cache from the annotations (B, S, H)."""
        b, _, h = memory.shape
        backward_first = memory[:, 0, h // 2 :]  # (B, H/2): the backward RNN after reading the whole source
        hidden = torch.tanh(self.init_state(backward_first)).view(b, self.n_layers, h).transpose(0, 1).contiguous()
        cache.state = (hidden, torch.zeros_like(hidden)) if self.cell == "lstm" else (hidden,)  # (L, B, H)
        cache.feed = memory.new_zeros(b, self.combine.out_features)  # (B, E)
        cache.keys = self.attention.keys(memory)  # (B, S, H)

    def forward(self, y: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor, cache: DecoderCache) -> torch.Tensor:
        """y (B, T, E) embedded target inputs, continuing from `cache` -> h~ (B, T, E)."""
        outputs = []
        assert cache.state is not None and cache.feed is not None  # init_cache ran
        for t in range(y.size(1)):
            x = torch.cat([y[:, t], cache.feed], dim=-1) if self.input_feeding else y[:, t]  # (B, 2E) or (B, E)
            out, state = self.rnn(x.unsqueeze(1), cache.state if self.cell == "lstm" else cache.state[0])
            cache.state = state if self.cell == "lstm" else (state,)
            h = out.squeeze(1)  # (B, H): the top layer's new state
            context, weights = self.attention(h, cache.keys, memory, mask)  # (B, H), (B, S)
            cache.feed = self.dropout(torch.tanh(self.combine(torch.cat([context, h], dim=-1))))  # h~_t (B, E)
            outputs.append(cache.feed)
            if cache.record_attention:
                new = weights.unsqueeze(1)  # (B, 1, S)
                cache.attention = new if cache.attention is None else torch.cat([cache.attention, new], dim=1)
        cache.length += y.size(1)
        return torch.stack(outputs, dim=1)  # (B, T, E)


class RNNSeq2Seq(nn.Module):
    """Encoder, attentional decoder and a linear output layer (we return the logits)."""

    def __init__(self, cfg: ModelConfig, *, src_vocab_size: int, tgt_vocab_size: int, shared_vocab: bool) -> None:
        super().__init__()
        self.cfg = cfg
        self.tgt_embed = Embeddings(tgt_vocab_size, cfg.d_model, cfg.dropout)
        if shared_vocab and cfg.tie_embeddings:
            self.src_embed = self.tgt_embed
        else:
            self.src_embed = Embeddings(src_vocab_size, cfg.d_model, cfg.dropout)
        self.encoder, self.decoder = Encoder(cfg), Decoder(cfg)
        self.generator = nn.Linear(cfg.d_model, tgt_vocab_size, bias=False)
        if cfg.tie_embeddings:  # Press & Wolf (2017): the output layer shares the target embedding
            self.generator.weight = self.tgt_embed.tokens.weight

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        """src (B, S), src_mask (B, 1, 1, S) -> annotations (B, S, H)"""
        return self.encoder(self.src_embed(src), src_mask.sum(dim=(1, 2, 3)))

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor,
               cache: DecoderCache | None = None, keep: torch.Tensor | None = None,
               vocab: torch.Tensor | None = None) -> torch.Tensor:
        """tgt_in (B, T) -> logits (B, T, V), or with `keep` (B, T) bool only those positions' (N, V),
        or with `vocab` (U,) only those ids' (B, T, U). Without a cache, tgt_in is the whole prefix (BOS + y);
        with one, only the new positions, continuing from the cached state. Both run the same
        step loop; that cached == uncached is nonetheless tested."""
        cache = cache if cache is not None else DecoderCache()
        if cache.state is None:
            self.decoder.start(memory, cache)
        h_tilde = self.decoder(self.tgt_embed(tgt_in), memory, src_mask[:, 0, 0, :], cache)  # (B, T, E)
        return output_layer(self.generator, h_tilde if keep is None else h_tilde[keep], vocab)  # (B, T, V) or (N, V)

    def make_cache(self, *, record_attention: bool = False, capacity: int | None = None) -> DecoderCache:
        return DecoderCache(record_attention=record_attention)

    max_output_len = None  # the recurrence has no positional limit

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor, tgt_in: torch.Tensor,
                keep: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits (B, T, V) for training and scoring; (N, V) at the `keep` positions."""
        return self.decode(tgt_in, self.encode(src, src_mask), src_mask, keep=keep)
