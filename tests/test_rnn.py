"""Properties of the RNN baseline with answers that can be checked by hand, and that it works
everywhere the Transformer does (beam search, training, the toy task)."""

import pytest
import torch

from nmt.checkpoint import load_model
from nmt.config import ConfigError, ModelConfig, load_config
from nmt.data import toy_reverse_split
from nmt.decoding.beam import beam_search
from nmt.decoding.options import DecodingOptions
from nmt.decoding.greedy import greedy_decode
from nmt.masks import make_pad_mask
from nmt.models import count_parameters
from nmt.models.rnn import Attention, RNNSeq2Seq
from nmt.tokenizer import PAD_ID
from nmt.training.run import train
from nmt.api import Translator
from nmt.translator import TorchEngine

from tests.test_cli import TOY

VARIANTS = [("lstm", "bahdanau", True), ("gru", "general", True), ("lstm", "dot", False)]


def small_rnn(cell: str = "lstm", attention: str = "bahdanau", input_feeding: bool = True, **overrides) -> RNNSeq2Seq:
    cfg = ModelConfig(type="rnn", d_model=16, rnn_hidden_size=24, rnn_cell=cell, rnn_attention=attention,
                      input_feeding=input_feeding, n_encoder_layers=2, n_decoder_layers=2, dropout=0.0, **overrides)
    torch.manual_seed(0)
    return RNNSeq2Seq(cfg, src_vocab_size=40, tgt_vocab_size=50, shared_vocab=False).eval()


def padded(rows: list[list[int]]) -> torch.Tensor:
    out = torch.full((len(rows), max(map(len, rows))), PAD_ID)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row)
    return out


@pytest.mark.parametrize("cell,attention,input_feeding", VARIANTS)
def test_shapes(cell, attention, input_feeding):
    model = small_rnn(cell, attention, input_feeding)
    src, tgt = padded([[5, 6, 7, 3], [8, 3]]), torch.randint(4, 50, (2, 6))
    memory = model.encode(src, make_pad_mask(src))
    assert memory.shape == (2, 4, 24)  # (B, S, H): both directions, 12 each
    assert model.decode(tgt, memory, make_pad_mask(src)).shape == (2, 6, 50)  # (B, T, V)
    assert memory[1, 2:].abs().sum() == 0  # annotations of padding are zeros


def test_parameter_count_by_hand():
    model = small_rnn("gru", "general", input_feeding=True)
    e, h, half = 16, 24, 12
    gru = lambda inp, hid: 3 * (hid * inp + hid * hid + 2 * hid)  # noqa: E731  (W_ih, W_hh, b_ih, b_hh)
    expected = (40 * e + 50 * e  # embeddings; the output layer is tied to the target one
                + 2 * gru(e, half) + 2 * gru(2 * half, half)  # 2 bidirectional encoder layers
                + gru(2 * e, h) + gru(h, h)  # 2 decoder layers over [embedding; h~]
                + half * 2 * h + 2 * h  # W_init
                + h * h  # general attention W_k
                + 2 * h * e + e)  # W_c
    assert count_parameters(model) == expected


def test_attention_weights_sum_to_one_and_are_zero_on_padding():
    torch.manual_seed(1)
    attention = Attention("bahdanau", 8)
    memory = torch.randn(2, 5, 8)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    context, weights = attention(torch.randn(2, 8), attention.keys(memory), memory, mask)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2))
    assert weights[1, 2:].tolist() == [0.0, 0.0, 0.0]
    assert (weights[0] > 0).all()
    torch.testing.assert_close(context[1], weights[1, 0] * memory[1, 0] + weights[1, 1] * memory[1, 1])


@pytest.mark.parametrize("cell,attention,input_feeding", VARIANTS)
def test_recorded_attention_covers_only_real_source_tokens(cell, attention, input_feeding):
    model = small_rnn(cell, attention, input_feeding)
    src = padded([[5, 6, 7, 8, 3], [9, 3]])
    mask = make_pad_mask(src)
    cache = model.make_cache(record_attention=True)
    model.decode(torch.randint(4, 50, (2, 4)), model.encode(src, mask), mask, cache)
    assert cache.attention.shape == (2, 4, 5)  # (B, T, S)
    torch.testing.assert_close(cache.attention.sum(-1), torch.ones(2, 4))
    assert cache.attention[1, :, 2:].abs().sum() == 0


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_packed_batch_equals_each_sentence_alone(cell):
    """Packing: a sentence's annotations and logits do not depend on the padding in its batch."""
    model = small_rnn(cell)
    rows, tgt = [[5, 6, 7, 8, 9, 3], [10, 11, 3], [12, 3]], torch.randint(4, 50, (3, 5))
    src = padded(rows)
    memory = model.encode(src, make_pad_mask(src))
    logits = model.decode(tgt, memory, make_pad_mask(src))
    for i, row in enumerate(rows):
        alone = torch.tensor([row])
        mem_alone = model.encode(alone, make_pad_mask(alone))
        torch.testing.assert_close(memory[i : i + 1, : len(row)], mem_alone, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(logits[i : i + 1], model.decode(tgt[i : i + 1], mem_alone, make_pad_mask(alone)),
                                   atol=1e-5, rtol=1e-5)


def test_unpacked_encoder_would_read_the_padding():
    """The property above is not vacuous: running the RNN over the padded batch without packing
    changes the backward annotations of the short sentence."""
    model = small_rnn("lstm")
    src = padded([[5, 6, 7, 8, 3], [9, 3]])
    packed = model.encode(src, make_pad_mask(src))
    unpacked, _ = model.encoder.rnn(model.src_embed(src))
    assert not torch.allclose(packed[1, :2], unpacked[1, :2], atol=1e-4)
    torch.testing.assert_close(packed[0], unpacked[0], atol=1e-6, rtol=1e-5)  # no padding: the same


@pytest.mark.parametrize("cell,attention,input_feeding", VARIANTS)
def test_cached_step_by_step_decoding_equals_the_full_pass(cell, attention, input_feeding):
    model = small_rnn(cell, attention, input_feeding)
    src = padded([[5, 6, 7, 3], [8, 9, 3]])
    mask = make_pad_mask(src)
    memory = model.encode(src, mask)
    tgt = torch.randint(4, 50, (2, 7))
    full = model.decode(tgt, memory, mask)
    cache = model.make_cache()
    steps = [model.decode(tgt[:, :1], memory, mask, cache), model.decode(tgt[:, 1:3], memory, mask, cache)]
    steps += [model.decode(tgt[:, t : t + 1], memory, mask, cache) for t in range(3, 7)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == 7


def test_future_target_tokens_do_not_change_earlier_logits():
    model = small_rnn()
    src, tgt = torch.randint(4, 40, (2, 5)), torch.randint(4, 50, (2, 6))
    changed = tgt.clone()
    changed[:, 4:] = torch.randint(4, 50, (2, 2))
    a, b = model(src, make_pad_mask(src), tgt), model(src, make_pad_mask(src), changed)
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert not torch.allclose(a[:, 4:], b[:, 4:])


def test_beam_search_runs_on_the_rnn_and_beam_one_is_greedy():
    model = small_rnn()
    src = padded([[5, 6, 7, 3], [8, 9, 10, 11, 12, 3], [13, 3]])
    greedy = greedy_decode(model, src, max_len_a=1.0, max_len_b=4)
    beam1 = [nbest[0].tokens for nbest in beam_search(model, src, DecodingOptions(beam_size=1, max_len_a=1.0, max_len_b=4))]
    assert beam1 == greedy
    beam4 = beam_search(model, src, DecodingOptions(beam_size=4, n_best=4, max_len_a=1.0, max_len_b=4, attention=True))
    for nbest, row in zip(beam4, ([5, 6, 7, 3], [8, 9, 10, 11, 12, 3], [13, 3])):
        assert [h.score for h in nbest] == sorted((h.score for h in nbest), reverse=True)
        alone = beam_search(model, torch.tensor([row]), DecodingOptions(beam_size=4, n_best=4, max_len_a=1.0, max_len_b=4))[0]
        assert [h.tokens for h in nbest] == [h.tokens for h in alone]  # batch == one by one
        assert nbest[0].attention.shape == (len(nbest[0].tokens) + 1, src.size(1))


def test_rnn_config_values_are_checked():
    with pytest.raises(ConfigError, match="model.rnn_cell"):
        load_config(TOY, ["model.type=rnn", "model.rnn_cell=tree"])
    with pytest.raises(ConfigError, match="rnn_hidden_size must be even"):
        load_config(TOY, ["model.type=rnn", "model.rnn_hidden_size=15"])


@pytest.mark.slow  # about 1-2 minutes of training; CI runs the slow tests too (.ci/run)
def test_rnn_learns_toy_reverse(tmp_path):
    """The attentional RNN learns to reverse letter sequences: >= 90% exact match on held-out data."""
    cfg = load_config(TOY, ["model.type=rnn", "model.rnn_hidden_size=128", "model.n_encoder_layers=1",
                            "model.n_decoder_layers=1", "optim.peak_lr=0.003", "trainer.max_steps=600",
                            "trainer.gradient_clip_val=1.0", "trainer.val_check_interval=300",
                            "trainer.val_bleu_sentences=100"])
    result = train(cfg, tmp_path / "toy-rnn", test=False)
    loaded = load_model(result.best_checkpoint)
    assert loaded.cfg.model.type == "rnn"
    pairs = toy_reverse_split("test")
    hyps = [t.text for t in Translator(TorchEngine(loaded)).translate([src for src, _ in pairs], DecodingOptions(beam_size=5))]
    exact = sum(h == ref for h, (_, ref) in zip(hyps, pairs)) / len(pairs)
    assert exact >= 0.90, f"exact match {exact:.1%}"
