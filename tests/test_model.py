"""Properties of the Transformer with answers that can be checked by hand."""

import math

import pytest
import torch

from nmt.config import ModelConfig
from nmt.masks import make_causal_mask, make_pad_mask
from nmt.models import count_parameters
from nmt.models.transformer import MultiHeadAttention, Transformer, sinusoidal_table
from nmt.tokenizer import PAD_ID


def small_model(**overrides) -> Transformer:
    cfg = ModelConfig(d_model=32, n_heads=4, d_ff=64, n_encoder_layers=2, n_decoder_layers=2,
                      dropout=0.0, max_positions=64, **overrides)
    torch.manual_seed(0)
    return Transformer(cfg, src_vocab_size=50, tgt_vocab_size=50, shared_vocab=True).eval()


def test_sinusoidal_encoding_matches_the_formula():
    table = sinusoidal_table(50, 16)
    for pos in (0, 1, 7, 49):
        for i in range(8):
            angle = pos / 10000 ** (2 * i / 16)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-5)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-5)


def test_the_halves_layout_holds_the_same_sinusoids_sines_first():
    """Marian's layout: column i is sin(pos / 10000^(2i/D)), column D/2 + i its cosine."""
    table = sinusoidal_table(50, 16, "halves")
    for pos in (0, 1, 7, 49):
        for i in range(8):
            angle = pos / 10000 ** (2 * i / 16)
            assert table[pos, i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 8 + i].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_swish_feed_forward_and_an_output_bias_by_hand():
    from nmt.models.transformer import FeedForward

    torch.manual_seed(0)
    ffn, x = FeedForward(8, 16, 0.0, "swish"), torch.randn(2, 3, 8)
    h = ffn.w1(x)
    torch.testing.assert_close(ffn(x), ffn.w2(h * torch.sigmoid(h)))
    relu = FeedForward(8, 16, 0.0)
    torch.testing.assert_close(relu(x), relu.w2(relu.w1(x).clamp(min=0)))  # the paper's max(0, .)
    plain, marian = small_model(), small_model(activation="swish", positions="halves", output_bias=True)
    assert "generator.bias" not in plain.state_dict() and plain.state_dict().keys() == \
        {k for k in marian.state_dict() if k != "generator.bias"}  # the options add no weights but the bias
    assert bool((marian.generator.bias == 0).all())  # starts at zero
    src, tgt, bias = torch.tensor([[5, 6, 7, 3]]), torch.tensor([[2, 8, 9]]), torch.arange(50.0)
    with torch.no_grad():
        marian.load_state_dict({**plain.state_dict(), "generator.bias": bias})  # the plain weights, and a bias
        marian.src_embed.pe.copy_(plain.src_embed.pe)  # (one module with a joint vocabulary): the same positions
        expected = plain(src, make_pad_mask(src), tgt)
        with_swish = marian(src, make_pad_mask(src), tgt) - bias
        for layer in [*marian.encoder.layers, *marian.decoder.layers]:
            layer.ffn.activation = torch.relu
        torch.testing.assert_close(marian(src, make_pad_mask(src), tgt) - bias, expected)  # the bias is added
    assert not torch.allclose(with_swish, expected)  # and swish is used


def test_masks_follow_true_means_may_attend():
    ids = torch.tensor([[5, 6, PAD_ID]])
    assert make_pad_mask(ids).tolist() == [[[[True, True, False]]]]
    assert make_causal_mask(3)[0, 0].tolist() == [[True, False, False], [True, True, False], [True, True, True]]


@pytest.mark.parametrize("norm_first", [False, True])
def test_future_target_tokens_do_not_change_earlier_logits(norm_first):
    model = small_model(norm_first=norm_first)
    src = torch.randint(4, 50, (2, 7))
    tgt = torch.randint(4, 50, (2, 6))
    changed = tgt.clone()
    changed[:, 4:] = torch.randint(4, 50, (2, 2))
    a = model(src, make_pad_mask(src), tgt)
    b = model(src, make_pad_mask(src), changed)
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert not torch.allclose(a[:, 4:], b[:, 4:])


def test_padding_does_not_change_non_pad_outputs():
    model = small_model()
    src = torch.randint(4, 50, (1, 5))
    tgt = torch.randint(4, 50, (1, 4))
    padded_src = torch.cat([src, torch.full((1, 3), PAD_ID)], dim=1)
    padded_tgt = torch.cat([tgt, torch.full((1, 2), PAD_ID)], dim=1)
    plain = model(src, make_pad_mask(src), tgt)
    padded = model(padded_src, make_pad_mask(padded_src), padded_tgt)
    torch.testing.assert_close(plain, padded[:, :4], atol=1e-5, rtol=1e-5)


def test_attention_equals_a_plain_reference_computation():
    torch.manual_seed(0)
    attn = MultiHeadAttention(16, 4, 0.0, cross=False).eval()
    x = torch.randn(2, 5, 16)
    mask = make_pad_mask(torch.tensor([[5, 6, 7, 8, 9], [5, 6, 7, PAD_ID, PAD_ID]]))  # second row: 2 pads
    out, _ = attn(x, mask=mask)
    # Reference: project, split heads, softmax(QK^T/sqrt(d_k)) with -inf on masked keys, merge, project.
    q, k, v = attn.qkv_proj(x).chunk(3, dim=-1)
    heads = lambda t: t.view(2, 5, 4, 4).transpose(1, 2)  # noqa: E731
    scores = heads(q) @ heads(k).transpose(-1, -2) / math.sqrt(4)
    scores = scores.masked_fill(~mask, float("-inf"))
    ref = (scores.softmax(-1) @ heads(v)).transpose(1, 2).reshape(2, 5, 16)
    torch.testing.assert_close(out, attn.out_proj(ref), atol=1e-5, rtol=1e-5)


def test_training_in_bfloat16_on_the_cpu_attends_in_float32(monkeypatch):
    """bf16-mixed training on a CPU: the attention kernel gets float32 (in bfloat16 it is 10x
    slower, nmt.models.transformer.attend), hands bfloat16 on, and gives the float32 result of the
    bfloat16 inputs; without gradients (decoding) it stays in bfloat16."""
    import torch.nn.functional as F

    from nmt.models import transformer

    seen: list[torch.dtype] = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, **kwargs):
        seen.append(q.dtype)
        return sdpa(q, k, v, **kwargs)

    monkeypatch.setattr(transformer.F, "scaled_dot_product_attention", spy)
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 5, 8).bfloat16().requires_grad_() for _ in range(3))
    mask = make_pad_mask(torch.tensor([[5, 6, 7, 8, 9], [5, 6, 7, PAD_ID, PAD_ID]]))  # (2, 1, 1, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = transformer.attend(q, k, v, mask)
        out.float().sum().backward()
        with torch.no_grad():
            transformer.attend(q, k, v, mask)
    assert seen == [torch.float32, torch.bfloat16] and out.dtype == torch.bfloat16
    assert q.grad is not None and q.grad.dtype == torch.bfloat16
    ref = sdpa(q.detach().float(), k.detach().float(), v.detach().float(), attn_mask=mask)
    assert torch.equal(out.detach(), ref.bfloat16())


@pytest.mark.parametrize("capacity", [None, 5, 2])  # growing; preallocated; preallocated too small: grows
def test_cached_step_by_step_logits_equal_the_full_forward_pass(capacity):
    model = small_model()
    src = torch.randint(4, 50, (3, 6))
    src[2, 4:] = PAD_ID
    tgt = torch.randint(4, 50, (3, 5))
    src_mask = make_pad_mask(src)
    full = model(src, src_mask, tgt)
    memory, cache = model.encode(src, src_mask), model.make_cache(capacity=capacity)
    steps = torch.cat([model.decode(tgt[:, i : i + 1], memory, src_mask, cache) for i in range(5)], dim=1)
    torch.testing.assert_close(full, steps, atol=1e-5, rtol=1e-5)
    # a prefix of two positions at once, then single steps, gives the same again
    cache = model.make_cache(capacity=capacity)
    chunked = torch.cat([model.decode(tgt[:, :2], memory, src_mask, cache)]
                        + [model.decode(tgt[:, i : i + 1], memory, src_mask, cache) for i in range(2, 5)], dim=1)
    torch.testing.assert_close(full, chunked, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("capacity", [None, 6])
def test_cache_reorder_follows_selected_rows(capacity):
    model = small_model()
    src = torch.randint(4, 50, (3, 6))
    tgt = torch.randint(4, 50, (3, 5))
    src_mask = make_pad_mask(src)
    memory, cache = model.encode(src, src_mask), model.make_cache(capacity=capacity)
    model.decode(tgt[:, :2], memory, src_mask, cache)
    rows = torch.arange(3)
    for index in (torch.tensor([2, 2, 0]), torch.tensor([1, 0]), torch.tensor([1, 1, 0, 0])):  # keep, shrink, grow
        cache.reorder(index)
        rows = rows[index]
        t = cache.length
        step = model.decode(tgt[rows, t:t + 1], memory[rows], src_mask[rows], cache)
        full = model(src[rows], src_mask[rows], tgt[rows, :t + 1])
        torch.testing.assert_close(step[:, 0], full[:, t], atol=1e-5, rtol=1e-5)


def test_preallocated_cache_decodes_exactly_as_the_growing_one():
    """Beam search (sentences finishing at different steps, beams moving every step) and greedy
    search give the same tokens and scores with the preallocated cache as with torch.cat."""
    from nmt.decoding.beam import beam_search
    from nmt.decoding.greedy import greedy_decode
    from nmt.decoding.options import DecodingOptions

    torch.manual_seed(3)
    model = small_model()
    src = torch.randint(4, 50, (6, 7))
    src[3, 2:] = PAD_ID
    src[4, 5:] = PAD_ID
    opts = DecodingOptions(beam_size=4, n_best=4, min_len=0, max_len_a=1.0, max_len_b=3)
    pre = beam_search(model, src, opts), greedy_decode(model, src)
    assert model.make_cache(capacity=4).self_kv[0].capacity == 4  # the decoders pass one
    make = model.make_cache
    model.make_cache = lambda **kw: make(**{**kw, "capacity": None})  # type: ignore[method-assign]
    growing = beam_search(model, src, opts), greedy_decode(model, src)
    assert [[h.tokens for h in n] for n in pre[0]] == [[h.tokens for h in n] for n in growing[0]]
    assert [h.score for n in pre[0] for h in n] == pytest.approx([h.score for n in growing[0] for h in n], abs=1e-5)
    assert len({len(n[0].tokens) for n in pre[0]}) > 1  # sentences ended at different steps
    assert pre[1] == growing[1]


def test_preallocated_cache_writes_in_place_and_swaps_two_buffers():
    """Per step no allocation: positions are written into the buffer, following the beams gathers
    into the second one and the two swap; attention reads the filled positions without a copy."""
    model = small_model()
    src = torch.randint(4, 50, (4, 6))
    src_mask = make_pad_mask(src)
    memory, cache = model.encode(src, src_mask), model.make_cache(capacity=8)
    seen = set()
    with torch.inference_mode():
        for t in range(6):
            model.decode(torch.randint(4, 30, (4, 1)), memory, src_mask, cache)
            layer = cache.self_kv[0]
            seen.add(layer.k.untyped_storage().data_ptr())
            k, _ = layer.append(torch.zeros(4, 4, 0, 8), torch.zeros(4, 4, 0, 8))  # zero new positions: a view
            assert k.shape == (4, 4, t + 1, 8) and k.untyped_storage().data_ptr() == layer.k.untyped_storage().data_ptr()
            cache.reorder(torch.tensor([1, 0, 3, 3]), same_sources=True)
    assert len(seen) == 2


def test_weights_are_tied_three_ways_with_a_joint_vocabulary():
    model = small_model()
    assert model.src_embed is model.tgt_embed
    assert model.generator.weight.data_ptr() == model.tgt_embed.tokens.weight.data_ptr()
    separate = Transformer(ModelConfig(d_model=32, n_heads=4, d_ff=64, n_encoder_layers=1, n_decoder_layers=1),
                           src_vocab_size=40, tgt_vocab_size=30, shared_vocab=False)
    assert separate.src_embed is not separate.tgt_embed
    assert separate.generator.weight.data_ptr() == separate.tgt_embed.tokens.weight.data_ptr()


def test_base_config_has_the_papers_parameter_count():
    """Table 3: the base model has 65M parameters (with a shared ~37k BPE vocabulary)."""
    model = Transformer(ModelConfig(), src_vocab_size=37000, tgt_vocab_size=37000, shared_vocab=True)
    assert abs(count_parameters(model) - 65e6) / 65e6 < 0.05


def test_embeddings_are_scaled_by_sqrt_d_model():
    model = small_model()
    ids = torch.tensor([[7]])
    expected = model.src_embed.tokens.weight[7] * math.sqrt(32) + sinusoidal_table(1, 32)[0]
    torch.testing.assert_close(model.src_embed(ids)[0, 0], expected)


def test_decoding_stops_at_the_positional_table():
    """A long source may ask for more output than the model has positions (a * src_len + b):
    every decoder stops at max_positions - 1 tokens instead of failing."""
    from nmt.decoding.beam import beam_search
    from nmt.decoding.options import DecodingOptions
    from nmt.decoding.greedy import greedy_decode

    cfg = ModelConfig(d_model=32, n_heads=4, d_ff=64, n_encoder_layers=1, n_decoder_layers=1, dropout=0.0, max_positions=9)
    model = Transformer(cfg, src_vocab_size=50, tgt_vocab_size=50, shared_vocab=True).eval()
    assert model.max_output_len == 8
    src = torch.randint(4, 50, (2, 8))
    for ids in greedy_decode(model, src, max_len_a=3.0, max_len_b=10):
        assert len(ids) <= 8
    for nbest in beam_search(model, src, DecodingOptions(beam_size=3, max_len_a=3.0, max_len_b=10)):
        assert len(nbest[0].tokens) <= 8
    with pytest.raises(ValueError, match="beyond model.max_positions"):
        cache = model.make_cache()
        memory = model.encode(src, make_pad_mask(src))
        for _ in range(10):
            model.decode(torch.full((2, 1), 5), memory, make_pad_mask(src), cache)


def test_reorder_within_sentences_keeps_the_source_side():
    """Beams swapped within their sentences: reordering only the target side (same_sources=True,
    memory not reindexed) gives the same next-step logits as reordering everything."""
    model = small_model()
    src = torch.randint(4, 50, (2, 6))
    rows = torch.tensor([0, 0, 1, 1])  # two beams per sentence
    src_mask = make_pad_mask(src)[rows]
    memory = model.encode(src, make_pad_mask(src))[rows]
    tgt = torch.randint(4, 50, (4, 3))  # a different prefix per beam
    caches = [model.make_cache(), model.make_cache()]
    for cache in caches:
        model.decode(tgt[:, :2], memory, src_mask, cache)
    swap = torch.tensor([1, 0, 3, 2])
    caches[0].reorder(swap)
    caches[1].reorder(swap, same_sources=True)
    everything = model.decode(tgt[swap, 2:3], memory[swap], src_mask[swap], caches[0])
    target_side = model.decode(tgt[swap, 2:3], memory, src_mask, caches[1])
    torch.testing.assert_close(everything, target_side)


def test_a_cache_grouped_by_source_gives_the_logits_and_attention_of_one_row_per_beam():
    """reorder(rows, group=K): the K beams of a sentence share its cross-attention keys and values
    (kept once, per sentence, with the memory's mask per sentence) and attend as K queries of one
    row; the logits and the recorded attention equal those of a cache with one row per beam, also
    after sentences finish and beams move (a shrink by sentence)."""
    model = small_model()
    k, src = 3, torch.randint(4, 50, (3, 7))
    src[1, 4:] = PAD_ID  # a padded source: the mask matters per sentence
    src_mask = make_pad_mask(src)
    memory = model.encode(src, src_mask)
    tgt = torch.randint(4, 50, (9, 4))  # per beam its own prefix
    grouped, per_row = (model.make_cache(record_attention=True, capacity=8) for _ in range(2))
    for cache in (grouped, per_row):  # the first step: one row per sentence
        model.decode(tgt[::k, :1], memory, src_mask, cache)
    beams = torch.arange(3).repeat_interleave(k)  # each sentence's row -> its K beams
    grouped.reorder(beams, group=k)
    per_row.reorder(beams)
    assert grouped.group == k and per_row.group == 1
    assert grouped.cross_kv[0][0].size(0) == 3 and per_row.cross_kv[0][0].size(0) == 9
    a = model.decode(tgt[:, 1:2], memory, src_mask, grouped)
    b = model.decode(tgt[:, 1:2], memory[beams], src_mask[beams], per_row)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    rows = torch.tensor([2, 0, 1, 8, 8, 6])  # sentence 1 finished; beams moved within sentences 0 and 2
    grouped.reorder(rows, group=k)
    per_row.reorder(rows)
    kept = torch.tensor([0, 2])
    a = model.decode(tgt[rows, 2:3], memory[kept], src_mask[kept], grouped)
    b = model.decode(tgt[rows, 2:3], memory[beams][rows], src_mask[beams][rows], per_row)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grouped.attention, per_row.attention, atol=1e-6, rtol=1e-5)
    assert grouped.attention.shape == (6, 3, 7)
