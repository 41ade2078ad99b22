"""Models share one interface (`Seq2Seq`); `build_model` picks one by `model.type`."""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from nmt.config import ModelConfig
from nmt.models.rnn import RNNSeq2Seq
from nmt.models.transformer import Transformer
from nmt.tokenizer import Tokenizer


class Seq2Seq(Protocol):
    """What training, decoding and evaluation rely on. Masks: True = may attend."""

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        """src (B, S), src_mask (B, 1, 1, S) -> memory (B, S, D)"""

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor,
               cache: Any | None = None, keep: torch.Tensor | None = None) -> torch.Tensor:
        """tgt_in (B, T) -> logits (B, T, V); with a cache only the new positions are given; with
        `keep` (B, T) bool only the logits (N, V) of those positions are computed."""

    def make_cache(self) -> Any:
        """An empty incremental-decoding cache with a `reorder(index, same_sources=False)` method
        (same_sources: the rows moved only among the beams of each sentence)."""

    @property
    def max_output_len(self) -> int | None:
        """The most tokens an output can have before EOS (None: no limit); decoders stop there."""


def build_model(cfg: ModelConfig, tokenizer: Tokenizer) -> nn.Module:
    model_class = {"transformer": Transformer, "rnn": RNNSeq2Seq}.get(cfg.type)
    if model_class is not None:
        return model_class(cfg, src_vocab_size=tokenizer.src_vocab_size,
                           tgt_vocab_size=tokenizer.tgt_vocab_size, shared_vocab=tokenizer.joint)
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
            f"{m.n_heads} heads, {'pre' if m.norm_first else 'post'}-norm")
