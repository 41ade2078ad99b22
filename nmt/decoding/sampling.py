"""Sampling: temperature, top-k and top-p (nucleus, Holtzman et al. 2020) with cached decoding.

Dimensions: B batch, S source length, V vocabulary.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from nmt.decoding.greedy import decode_token_by_token

if TYPE_CHECKING:
    from nmt.models import Seq2Seq


def filter_logits(logits: torch.Tensor, *, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """logits (B, V) -> logits with everything outside the top-k / top-p nucleus at -inf."""
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.size(-1)), dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token when the tokens ranked before it already reach top_p (the first is always kept)
        drop_sorted = probs.cumsum(dim=-1) - probs >= top_p
        drop_sorted[:, 0] = False  # also when top_p is below float32's range (1e-300 compares as 0)
        logits = logits.masked_fill(drop_sorted.scatter(1, order, drop_sorted), float("-inf"))
    return logits


def sample_decode(model: Seq2Seq[Any], src: torch.Tensor, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                  max_len_a: float = 1.5, max_len_b: int = 10, min_len: int = 0,
                  generator: torch.Generator | None = None, vocab: torch.Tensor | None = None) -> list[list[int]]:
    """src (B, S) -> one sampled token list per sentence (without BOS/EOS). The values are
    checked by DecodingOptions (temperature > 0, 0 < top_p <= 1, top_k >= 0)."""

    def choose(logits: torch.Tensor) -> torch.Tensor:  # (B, V) -> (B, 1)
        probs = F.softmax(filter_logits(logits.float() / temperature, top_k=top_k, top_p=top_p), dim=-1)  # float32
        return torch.multinomial(probs, 1, generator=generator)

    return decode_token_by_token(model, src, choose, max_len_a=max_len_a, max_len_b=max_len_b, min_len=min_len,
                                 vocab=vocab)
