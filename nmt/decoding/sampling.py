"""Sampling: temperature, top-k and top-p (nucleus, Holtzman et al. 2020) with cached decoding.

Dimensions: B batch, S source length, V vocabulary.
"""

import torch
import torch.nn.functional as F

from nmt.masks import make_pad_mask
from nmt.tokenizer import BOS_ID, EOS_ID, PAD_ID


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


@torch.no_grad()
def sample_decode(model, src: torch.Tensor, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                  max_len_a: float = 1.5, max_len_b: int = 10,
                  generator: torch.Generator | None = None) -> list[list[int]]:
    """src (B, S) -> one sampled token list per sentence (without BOS/EOS)."""
    if temperature <= 0 or not 0 < top_p <= 1 or top_k < 0:
        raise ValueError("need temperature > 0, 0 < top_p <= 1 and top_k >= 0")
    src_mask = make_pad_mask(src)  # (B, 1, 1, S)
    memory = model.encode(src, src_mask)  # (B, S, D)
    max_lens = (src_mask.sum(dim=(1, 2, 3)).float() * max_len_a + max_len_b).long()  # (B,)
    cache = model.make_cache()
    token = torch.full((src.size(0), 1), BOS_ID, dtype=torch.long, device=src.device)  # (B, 1)
    finished = torch.zeros(src.size(0), dtype=torch.bool, device=src.device)
    out = []
    for step in range(int(max_lens.max())):
        logits = model.decode(token, memory, src_mask, cache)[:, -1].float() / temperature  # (B, V)
        logits[:, [PAD_ID, BOS_ID]] = float("-inf")
        probs = F.softmax(filter_logits(logits, top_k=top_k, top_p=top_p), dim=-1)
        token = torch.multinomial(probs, 1, generator=generator)  # (B, 1)
        token[finished] = EOS_ID
        out.append(token)
        finished |= (token.squeeze(1) == EOS_ID) | (step + 1 >= max_lens)
        if bool(finished.all()):
            break
    ids = torch.cat(out, dim=1).tolist()  # (B, steps)
    return [seq[: seq.index(EOS_ID)] if EOS_ID in seq else seq for seq in ids]
