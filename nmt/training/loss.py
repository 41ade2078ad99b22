"""Label-smoothed cross-entropy (Szegedy et al. 2016; paper section 5.4, epsilon_ls = 0.1)."""

import torch
import torch.nn.functional as F

from nmt.tokenizer import PAD_ID


def label_smoothed_nll(logits: torch.Tensor, target: torch.Tensor, epsilon: float) -> tuple[torch.Tensor, torch.Tensor, int]:
    """logits (B, T, V), target (B, T) -> (loss, nll, n_tokens), both sums over non-pad tokens.

    The smoothed target puts 1 - epsilon on the gold token and spreads epsilon uniformly over the
    vocabulary: loss = (1 - epsilon) * NLL + epsilon * mean_v(-log p_v). At epsilon = 0 it is the NLL.
    Divide by n_tokens to normalise per target token.
    """
    lprobs = F.log_softmax(logits.float(), dim=-1)  # (B, T, V), fp32 even under mixed precision
    keep = target != PAD_ID  # (B, T)
    nll = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (B, T)
    smooth = -lprobs.mean(dim=-1)  # (B, T)
    loss = (1.0 - epsilon) * nll + epsilon * smooth
    return loss[keep].sum(), nll[keep].sum(), int(keep.sum())
