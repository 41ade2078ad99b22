"""oneDNN linear layers for CPU decoding (nmt/models/onednn.py): the same products as nn.Linear,
tying kept, gradients untouched, and the translator's outputs unchanged."""

import pytest
import torch
from torch import nn

from nmt.api import Translator
from nmt.decoding.beam import beam_search
from nmt.decoding.options import DecodingOptions
from nmt.models.onednn import PackedLinear, onednn_available, pack_linears

pytestmark = pytest.mark.skipif(not onednn_available(), reason="this torch has no oneDNN prepacked linear")


@pytest.mark.parametrize("bias", [True, False])
def test_packed_linear_computes_the_same_product(bias):
    torch.manual_seed(0)
    linear = nn.Linear(24, 40, bias=bias)
    packed = PackedLinear(linear)
    x = torch.randn(5, 3, 24)  # (B, L, in): the decoder's shape
    with torch.inference_mode():
        assert torch.allclose(packed(x), linear(x), atol=1e-5)
        assert torch.allclose(packed(x[:, :1]), linear(x[:, :1]), atol=1e-5)  # another batch shape, same packing


def test_the_feed_forward_relu_runs_inside_the_packed_product():
    from nmt.models.transformer import FeedForward

    torch.manual_seed(0)
    ffn = FeedForward(24, 64, activation_dropout=0.0).eval()
    x = torch.randn(5, 3, 24)
    with torch.inference_mode():
        expected = ffn(x)
        holder = nn.Sequential(ffn)
        pack_linears(holder)
        assert ffn.w1.activation == "relu" and ffn.w2.activation == "none"
        assert torch.allclose(ffn(x), expected, atol=1e-5)
    swish = FeedForward(24, 64, 0.0, activation="swish")
    pack_linears(nn.Sequential(swish))
    assert swish.w1.activation == "none"  # only ReLU is fused


def test_packed_linear_keeps_gradients_for_training():
    linear = nn.Linear(8, 4)
    packed = PackedLinear(linear)
    packed(torch.randn(2, 8)).sum().backward()  # the packed operator records none: plain F.linear
    assert linear.weight.grad is not None and linear.weight.grad.abs().sum() > 0


def test_pack_linears_swaps_every_linear_and_keeps_tying(toy_ckpt):
    from nmt.checkpoint import load_model

    model = load_model(toy_ckpt).model.eval()
    n_linear = sum(type(m) is nn.Linear for m in model.modules())
    pack_linears(model)
    assert n_linear > 0 and sum(type(m) is nn.Linear for m in model.modules()) == 0
    assert sum(isinstance(m, PackedLinear) for m in model.modules()) == n_linear
    if model.cfg.tie_embeddings:  # the output layer still reads the embedding matrix
        assert model.generator.weight is model.tgt_embed.tokens.weight


def test_translations_equal_with_and_without_onednn(toy_ckpt):
    sources = ["a b c d", "e f g", "h i j k l m", "b a", "c c d e f g h"]
    plain = Translator.from_checkpoint(toy_ckpt, onednn=False).translate(sources, beam_size=4, n_best=2)
    fast = Translator.from_checkpoint(toy_ckpt, onednn=True)
    assert any(isinstance(m, PackedLinear) for m in fast.engine.model.modules())
    for a, b in zip(plain, fast.translate(sources, beam_size=4, n_best=2)):
        assert [h.text for h in a.hypotheses] == [h.text for h in b.hypotheses]
        assert [h.score for h in a.hypotheses] == pytest.approx([h.score for h in b.hypotheses], abs=1e-4)


def test_a_shortlist_decodes_the_same_through_the_packed_output_layer():
    from tests.test_shortlist import tiny_model

    src = torch.randint(4, 60, (5, 7), generator=torch.Generator().manual_seed(0))
    vocab = torch.tensor([0, 1, 2, 3, *range(10, 60, 2)])  # a column subset: output_layer slices the weight
    opts = DecodingOptions(beam_size=3, n_best=2)
    for columns in (None, vocab):
        plain = beam_search(tiny_model(), src, opts, columns)
        packed = beam_search(pack_linears(tiny_model()), src, opts, columns)
        assert [[h.tokens for h in n] for n in plain] == [[h.tokens for h in n] for n in packed]
        assert [h.score for n in plain for h in n] == pytest.approx([h.score for n in packed for h in n], abs=1e-4)


def test_onednn_refuses_int8():
    with pytest.raises(ValueError, match="onednn"):
        Translator.from_checkpoint("unused.ckpt", int8=True, onednn=True)
