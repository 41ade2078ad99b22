"""Models share one interface (`Seq2Seq`); `build_model` picks one by `model.type`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TypeVar

import torch
from torch import nn

from nmt.config import ModelConfig
from nmt.models.rnn import RNNSeq2Seq
from nmt.models.transformer import Transformer
from nmt.tokenizer import Tokenizer


class IncrementalCache(Protocol):
    """What decoders keep between steps (nmt.models.transformer.DecoderCache, nmt.models.rnn.DecoderCache).
    Beam search only reorders it; `attention` holds the recorded cross-attention (B, t, S), if asked for.
    `group`: how many consecutive rows share one row of what depends on the source alone; the
    decoder then wants the memory and its mask with one row per group (1: one per row)."""

    attention: torch.Tensor | None
    group: int

    def reorder(self, index: torch.Tensor, *, same_sources: bool = False, group: int = 1) -> None:
        """Keep rows `index` (B',) of the batch; same_sources: rows moved only among the beams of
        each sentence, so what depends on the source alone stays as it is. group: the new rows
        come in groups of that many rows of one source (a cache may then keep the source's state
        once per group, and says so in `self.group`)."""


C = TypeVar("C", bound=IncrementalCache)


class Seq2Seq(Protocol[C]):
    """What training, decoding and evaluation rely on, for a model whose cache type is C (each
    model has its own DecoderCache). Masks: True = may attend."""

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        """src (B, S), src_mask (B, 1, 1, S) -> memory (B, S, D)"""

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor,
               cache: C | None = None, keep: torch.Tensor | None = None,
               vocab: torch.Tensor | None = None) -> torch.Tensor:
        """tgt_in (B, T) -> logits (B, T, V); with a cache only the new positions are given; with
        `keep` (B, T) bool only the logits (N, V) of those positions are computed; with `vocab`
        (U,) target ids only their logits (B, T, U), in that order."""

    def make_cache(self, *, record_attention: bool = False, capacity: int | None = None) -> C:
        """An empty incremental-decoding cache (recording the last layer's cross-attention if asked);
        `capacity`: the target positions it will hold, for a cache that preallocates them."""

    @property
    def max_output_len(self) -> int | None:
        """The most tokens an output can have before EOS (None: no limit); decoders stop there."""


if TYPE_CHECKING:  # mypy checks here that both models (and their caches) follow the protocol
    from nmt.models import rnn, transformer

    def _follow_the_protocol(t: Transformer, r: RNNSeq2Seq) -> tuple[Seq2Seq[transformer.DecoderCache],
                                                                      Seq2Seq[rnn.DecoderCache]]:
        return t, r


def build_model(cfg: ModelConfig, tokenizer: Tokenizer) -> Transformer | RNNSeq2Seq:
    src, tgt, shared = tokenizer.src_vocab_size, tokenizer.tgt_vocab_size, tokenizer.joint
    if cfg.type == "transformer":
        return Transformer(cfg, src_vocab_size=src, tgt_vocab_size=tgt, shared_vocab=shared)
    if cfg.type == "rnn":
        return RNNSeq2Seq(cfg, src_vocab_size=src, tgt_vocab_size=tgt, shared_vocab=shared)
    raise ValueError(f"unknown model.type '{cfg.type}'")


def count_parameters(model: nn.Module) -> int:
    """Distinct trainable parameters (tied matrices counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def describe_model(m: ModelConfig) -> str:
    """One line for logs and reports."""
    if m.type == "rnn":
        return (f"{m.rnn_cell.upper()} {m.n_encoder_layers}+{m.n_decoder_layers} layers (bidirectional encoder), "
                f"hidden {m.rnn_hidden_size}, embeddings {m.d_model}, {m.rnn_attention} attention"
                f"{', input feeding' if m.input_feeding else ''}")
    return (f"{m.n_encoder_layers}+{m.n_decoder_layers} layers, d_model {m.d_model}, d_ff {m.d_ff}, "
            f"{m.n_heads} heads, {'pre' if m.norm_first else 'post'}-norm"
            + (f", {m.activation}" if m.activation != "relu" else "")
            + (f", {m.positions} positions" if m.positions != "interleaved" else "")
            + (", output bias" if m.output_bias else ""))
