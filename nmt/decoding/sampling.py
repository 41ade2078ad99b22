"""Sampling: temperature, top-k and top-p (nucleus, Holtzman et al. 2020) with cached decoding.

Dimensions: B batch, S source length, V vocabulary.
"""

import torch
import torch.nn.functional as F

from nmt.decoding.greedy import decode_token_by_token
from nmt.decoding.options import SamplingOptions  # noqa: F401  (re-exported)


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
        logits = logits.masked_fill(drop_sorted.scatter(1, order, drop_sorted), float("-inf"))
    return logits


def sample_decode(model, src: torch.Tensor, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                  max_len_a: float = 1.5, max_len_b: int = 10,
                  generator: torch.Generator | None = None) -> list[list[int]]:
    """src (B, S) -> one sampled token list per sentence (without BOS/EOS)."""
    if temperature <= 0 or not 0 < top_p <= 1 or top_k < 0:
        raise ValueError("need temperature > 0, 0 < top_p <= 1 and top_k >= 0")

    def choose(logits: torch.Tensor) -> torch.Tensor:  # (B, V) -> (B, 1)
        probs = F.softmax(filter_logits(logits / temperature, top_k=top_k, top_p=top_p), dim=-1)
        return torch.multinomial(probs, 1, generator=generator)

    return decode_token_by_token(model, src, choose, max_len_a=max_len_a, max_len_b=max_len_b)
