"""The one mask convention: boolean, True = may attend, broadcastable to (B, H, T_q, T_k).

This is the meaning of a boolean `attn_mask` in `F.scaled_dot_product_attention`.
(`nn.MultiheadAttention`'s `key_padding_mask` means the opposite; it is not used here.)
"""

import torch

from nmt.tokenizer import PAD_ID


def make_pad_mask(ids: torch.Tensor) -> torch.Tensor:
    """(B, S) token ids -> (B, 1, 1, S): True on real tokens, False on padding."""
    return (ids != PAD_ID)[:, None, None, :]


def make_causal_mask(t: int, device: torch.device | None = None) -> torch.Tensor:
    """(1, 1, T, T): position i may attend to positions 0..i (paper section 3.2.3)."""
    return torch.ones(t, t, dtype=torch.bool, device=device).tril()[None, None]


def make_decoder_mask(tgt_in: torch.Tensor) -> torch.Tensor:
    """(B, T) decoder input -> (B, 1, T, T): causal and not attending to padding."""
    return make_pad_mask(tgt_in) & make_causal_mask(tgt_in.size(1), tgt_in.device)
