"""Label-smoothed cross-entropy (Szegedy et al. 2016; paper section 5.4, epsilon_ls = 0.1).

With z the logits of one position, p = softmax(z), y the gold token and V the vocabulary size,
the smoothed target q puts 1 - epsilon on y and epsilon / V on every token (y included):

    loss = -sum_v q_v log p_v = (1 - epsilon) * (lse(z) - z_y) + epsilon * (lse(z) - mean_v z_v)
    d loss / d z = p - q

where lse is log-sum-exp. Written as one autograd function, the backward pass builds p - q in
one (N, V) buffer instead of differentiating log_softmax, gather and mean one by one (three
(N, V) buffers): on the CPU benchmark this is ~15% of a training step (docs/performance.md).
"""

import torch

from nmt.tokenizer import PAD_ID


class _SmoothedCrossEntropy(torch.autograd.Function):
    """logits (N, V) fp32, target (N,) -> (loss (N,), nll (N,)) per position."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor, epsilon: float):
        lse = torch.logsumexp(logits, dim=-1)  # (N,)
        nll = lse - logits.gather(-1, target[:, None])[:, 0]  # -log p_y
        smooth = lse - logits.mean(dim=-1)  # mean_v(-log p_v)
        ctx.save_for_backward(logits, target, lse)
        ctx.epsilon = epsilon
        ctx.set_materialize_grads(False)
        return (1.0 - epsilon) * nll + epsilon * smooth, nll

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor | None, grad_nll: torch.Tensor | None):
        logits, target, lse = ctx.saved_tensors
        eps, v = ctx.epsilon, logits.size(-1)
        zeros = torch.zeros_like(lse)
        g_loss = zeros if grad_loss is None else grad_loss  # (N,)
        g_nll = zeros if grad_nll is None else grad_nll  # (N,)
        # loss: g_loss * (p - (1 - eps) * onehot(y) - eps / V); nll: g_nll * (p - onehot(y))
        grad = logits.sub(lse[:, None]).exp_().mul_((g_loss + g_nll)[:, None])  # (N, V): p * g, one buffer
        grad.sub_((eps / v) * g_loss[:, None])
        grad.scatter_add_(-1, target[:, None], -((1.0 - eps) * g_loss + g_nll)[:, None])
        return grad, None, None


def label_smoothed_nll(logits: torch.Tensor, target: torch.Tensor, epsilon: float) -> tuple[torch.Tensor, torch.Tensor, int]:
    """logits (..., V), target (...) -> (loss, nll, n_tokens), both sums over non-pad tokens
    (training passes only the non-pad positions: logits (N, V), target (N,)).

    At epsilon = 0 the loss is the NLL. Divide by n_tokens to normalise per target token.
    """
    keep = target != PAD_ID  # (...)
    n_tokens = int(keep.sum())
    if n_tokens != keep.numel():
        logits, target = logits[keep], target[keep]
    logits = logits.reshape(-1, logits.size(-1)).float()  # (N, V), fp32 even under mixed precision
    loss, nll = _SmoothedCrossEntropy.apply(logits, target.reshape(-1), epsilon)
    return loss.sum(), nll.sum(), n_tokens
