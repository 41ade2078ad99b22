"""Linear layers through oneDNN for decoding on CPUs (issue 20).

torch sends a float32 `nn.Linear` on the CPU to MKL's sgemm. On AMD CPUs MKL takes a generic code
path; oneDNN (torch's other CPU math library, and what CTranslate2 uses on AMD) with the weight
reordered once into its blocked layout ran the decoder's products about twice as fast on this
project's machine (AMD EPYC, docs/performance.md). Same float32 maths, in a different order of
summation: outputs agree to about 1e-5 relative, not bit for bit.

`pack_linears(model)` swaps every `nn.Linear` of an inference model for a `PackedLinear` holding
the reordered weight; the original parameters stay on it (`weight`, `bias`), so tied matrices stay
tied; a shortlist's output layer is cut from them once per batch and packed again (`select_rows`).
A Transformer feed-forward layer's ReLU runs inside its first product (oneDNN's fused post-op):
one pass over the d_ff-wide hidden layer less at every step.
Nothing changes for training: a PackedLinear that needs gradients uses plain `F.linear`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def onednn_available() -> bool:
    """torch was built with oneDNN and has the (internal, used by torch.compile's CPU backend)
    prepacked linear operator."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise") \
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


class PackedLinear(nn.Module):
    """y = x W^T + b with W reordered for oneDNN once, or relu(x W^T + b) with `activation` "relu";
    x (..., in) -> (..., out)."""

    def __init__(self, linear: nn.Linear, activation: str = "none") -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias  # the same Parameters: tying is kept
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach())  # opaque oneDNN layout
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            y = F.linear(x, self.weight, self.bias)  # the packed operator records no gradient
            return F.relu(y) if self.activation == "relu" else y
        bias = None if self.bias is None else self.bias.detach()
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, bias, self.activation, [], "")

    def select_rows(self, index: torch.Tensor) -> PackedLinear:
        """The layer restricted to output rows `index` (U,), packed anew: a shortlist's output layer."""
        rows = nn.Linear(self.in_features, len(index), bias=self.bias is not None, device=self.weight.device)
        with torch.no_grad():
            rows.weight.copy_(self.weight.index_select(0, index))
            if self.bias is not None:
                rows.bias.copy_(self.bias.index_select(0, index))
        return PackedLinear(rows)

    def extra_repr(self) -> str:
        fused = f", fused {self.activation}" if self.activation != "none" else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, oneDNN{fused}"


def pack_linears(model: nn.Module) -> nn.Module:
    """In place: every float32 CPU nn.Linear of `model` -> a PackedLinear; returns the model.
    A model on another device or dtype, or a torch without oneDNN, is returned unchanged."""
    if not onednn_available():
        return model
    from nmt.models.transformer import FeedForward

    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear and child.weight.device.type == "cpu" and child.weight.dtype == torch.float32:
                setattr(module, name, PackedLinear(child))
        if isinstance(module, FeedForward) and module.activation is F.relu and isinstance(module.w1, PackedLinear):
            # FFN(x) = W2 dropout(relu(W1 x + b1)) + b2: the ReLU inside W1's product
            module.w1.activation, module.activation = "relu", _identity
    return model


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x
