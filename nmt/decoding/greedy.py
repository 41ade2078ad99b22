"""Greedy search with cached incremental decoding, and the one-token-at-a-time loop it shares
with sampling.

Dimensions: B batch, S source length, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from nmt.masks import make_pad_mask
from nmt.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID

if TYPE_CHECKING:
    from nmt.models import Seq2Seq


def check_decoding_vocab(vocab: torch.Tensor | None) -> None:
    """A decoding vocabulary (a shortlist's candidates) must be sorted with the special ids 0-3
    first: the decoders then find PAD, BOS and EOS in the columns of their ids."""
    if vocab is not None and (vocab[:4].tolist() != [PAD_ID, UNK_ID, BOS_ID, EOS_ID] or bool((vocab.diff() <= 0).any())):
        raise ValueError("a decoding vocabulary must be sorted, without repeats, and hold the special ids 0-3")


def max_output_lengths(model: Seq2Seq[Any], src_mask: torch.Tensor, a: float, b: int) -> torch.Tensor:
    """src_mask (B, 1, 1, S) -> (B,) tokens each output may have before EOS: a * src_len + b, and
    never more than the model can place (`model.max_output_len`, e.g. its positional table)."""
    max_lens = (src_mask.sum(dim=(1, 2, 3)).float() * a + b).long()
    cap = getattr(model, "max_output_len", None)
    return max_lens if cap is None else max_lens.clamp(max=cap)


@torch.inference_mode()
def decode_token_by_token(model: Seq2Seq[Any], src: torch.Tensor, choose: Callable[[torch.Tensor], torch.Tensor], *,
                          max_len_a: float = 1.5, max_len_b: int = 10, min_len: int = 0,
                          vocab: torch.Tensor | None = None) -> list[list[int]]:
    """src (B, S) -> one token list per sentence (without BOS/EOS), at most a*src_len+b tokens and
    no EOS before `min_len` tokens. `choose` maps next-token logits (B, V) to the next tokens (B, 1)
    (columns of `vocab`, the sorted target ids decoded over with the special ids 0-3 first, if given)."""
    check_decoding_vocab(vocab)
    src_mask = make_pad_mask(src)  # (B, 1, 1, S)
    memory = model.encode(src, src_mask)  # (B, S, D)
    max_lens = max_output_lengths(model, src_mask, max_len_a, max_len_b)  # (B,)
    cache = model.make_cache(capacity=int(max_lens.max()))  # BOS + tokens before the last
    token = torch.full((src.size(0), 1), BOS_ID, dtype=torch.long, device=src.device)  # (B, 1)
    finished = torch.zeros(src.size(0), dtype=torch.bool, device=src.device)
    out = []
    for step in range(int(max_lens.max())):
        logits = model.decode(token, memory, src_mask, cache, vocab=vocab)[:, -1].float()  # (B, V or U)
        logits[:, [PAD_ID, BOS_ID]] = float("-inf")  # never generated
        if step < min_len:
            logits[:, EOS_ID] = float("-inf")
        token = choose(logits)  # (B, 1)
        if vocab is not None:
            token = vocab[token]  # columns -> target ids
        token[finished] = EOS_ID
        out.append(token)
        finished |= (token.squeeze(1) == EOS_ID) | (step + 1 >= max_lens)
        if bool(finished.all()):
            break
    if not out:  # a length limit of 0 tokens
        return [[] for _ in range(src.size(0))]
    ids = torch.cat(out, dim=1).tolist()  # (B, steps)
    return [seq[: seq.index(EOS_ID)] if EOS_ID in seq else seq for seq in ids]


def greedy_decode(model: Seq2Seq[Any], src: torch.Tensor, *, max_len_a: float = 1.5, max_len_b: int = 10,
                  min_len: int = 0, vocab: torch.Tensor | None = None) -> list[list[int]]:
    """The most likely token at every step."""
    return decode_token_by_token(model, src, lambda logits: logits.argmax(dim=-1, keepdim=True),
                                 max_len_a=max_len_a, max_len_b=max_len_b, min_len=min_len, vocab=vocab)
