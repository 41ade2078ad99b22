"""Lexically constrained beam search (nmt/decoding/constraints.py): the constraint state by hand,
the constrained best of a scripted model against exhaustive enumeration, every output of a real
random model holding every feasible phrase, and sentences without phrases decoded exactly as by
plain beam search."""

import math

import pytest
import torch

from nmt.decoding.beam import beam_search
from nmt.decoding.constraints import ConstraintState, constrained_step
from nmt.decoding.options import DecodingOptions
from nmt.tokenizer import EOS_ID, PAD_ID
from tests.test_beam import A, B, C, ScriptedModel, dist, exhaustive, random_tables, src_for
from tests.test_model import small_model


def holds(tokens: list[int], phrase: list[int]) -> bool:
    return any(tokens[i : i + len(phrase)] == phrase for i in range(len(tokens) - len(phrase) + 1))


def test_the_state_counts_met_tokens_and_abandons_a_broken_phrase():
    s = ConstraintState.start([[A, B], [C]])
    assert (s.progress, s.done, s.next_tokens()) == (0, False, {A, C})
    s = s.advance(A)  # into "A B"
    assert (s.progress, s.next_tokens()) == (1, {B})
    broken = s.advance(A)  # "A A": the phrase starts again at the second A
    assert (broken.progress, broken.current, broken.at) == (1, 0, 1)
    s = s.advance(C)  # "A C": "A B" abandoned, "C" met
    assert (s.progress, s.met, s.next_tokens()) == (1, (False, True), {A})
    s = s.advance(A).advance(B)
    assert (s.progress, s.done, s.next_tokens()) == (3, True, set())
    assert s.advance(C) == s  # nothing left to meet


def test_the_step_stripes_candidates_across_banks_highest_first():
    # one sentence, 2 beams over A, B, C; the phrase is "C", met only by beam 0 + C (0.1)
    lprobs = torch.tensor([[dist(A=0.6, B=0.3, C=0.1), dist(A=0.7, B=0.3)]]).log()  # (1, 2, V)
    scores = torch.tensor([[0.0, math.log(0.5)]])
    start = ConstraintState.start([[C]])
    s, tok, beam, states = constrained_step(lprobs, scores, [[start, start]])
    # bank 1: (0, C) .1; bank 0 by score: (0, A) .6, (1, A) .35, (0, B) .3, (1, B) .15
    assert list(zip(beam[0].tolist(), tok[0].tolist())) == [(0, C), (0, A), (1, A), (0, B)]
    torch.testing.assert_close(s[0].exp(), torch.tensor([0.1, 0.6, 0.35, 0.3]))
    assert [st.done for st in states[0]] == [True, False, False, False]


def test_the_constrained_best_differs_from_the_unconstrained_by_hand():
    table = {(): dist(A=0.6, B=0.4), (A,): dist(EOS=0.9, C=0.1), (A, C): dist(EOS=1.0), (B,): dist(EOS=1.0)}
    model = ScriptedModel([table], dist(EOS=1.0))
    opts = DecodingOptions(beam_size=2, length_penalty="none", min_len=0)
    assert beam_search(model, src_for(1), opts)[0][0].tokens == [A]
    (best,) = beam_search(model, src_for(1), opts, constraints=[[[C]]])[0][:1]
    assert best.tokens == [A, C] and best.constraints_met is True
    assert best.logprob == pytest.approx(math.log(0.6 * 0.1))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("phrases", [[[C]], [[B, A]], [[A], [C, C]]])
def test_a_wide_constrained_beam_finds_exactly_the_best_outputs_that_hold_the_phrases(seed, phrases):
    """3 tokens, at most 3 per output: 40 outputs. With 64 beams nothing is pruned: the n-best
    list must be the exhaustive ranking of the outputs holding every phrase; a narrow beam's
    best holds them too and is no better."""
    tables = random_tables(seed, 3)
    model = ScriptedModel([tables], dist(EOS=1.0))
    opts = dict(min_len=0, max_len_a=0.0, max_len_b=3, length_penalty="none")
    truth = [(seq, score) for seq, score in exhaustive(tables, 3, "none", 0.0) if all(holds(seq, p) for p in phrases)]
    hyps = beam_search(model, src_for(1), DecodingOptions(beam_size=64, n_best=40, **opts), constraints=[phrases])[0]
    assert [h.tokens for h in hyps] == [seq for seq, _ in truth]
    assert [h.score for h in hyps] == pytest.approx([score for _, score in truth])
    for k in (1, 2):
        narrow = beam_search(model, src_for(1), DecodingOptions(beam_size=k, **opts), constraints=[phrases])[0][0]
        assert all(holds(narrow.tokens, p) for p in phrases) and narrow.constraints_met is True
        assert narrow.score <= truth[0][1] + 1e-5


def test_every_output_of_a_real_model_holds_every_feasible_phrase():
    model = small_model()
    g = torch.Generator().manual_seed(0)
    for trial in range(12):
        src = torch.randint(4, 50, (3, 6), generator=g)
        src[1, 3:] = PAD_ID
        constraints = [[torch.randint(4, 50, (int(n),), generator=g).tolist()
                        for n in torch.randint(1, 4, (int(m),), generator=g)] for m in torch.randint(0, 3, (3,), generator=g)]
        k = 1 + trial % 4
        opts = DecodingOptions(beam_size=k, n_best=k, max_len_a=1.0, max_len_b=8, min_len=0)
        for phrases, nbest in zip(constraints, beam_search(model, src, opts, constraints=constraints)):
            for h in nbest:
                assert all(holds(h.tokens, p) for p in phrases), (trial, phrases, h.tokens)
                assert h.constraints_met is (True if phrases else None)


def test_sentences_without_phrases_are_decoded_exactly_as_by_plain_beam_search():
    model = small_model()
    src = torch.randint(4, 50, (3, 7), generator=torch.Generator().manual_seed(1))
    src[2, 4:] = PAD_ID
    opts = DecodingOptions(beam_size=4, n_best=3, max_len_a=1.0, max_len_b=3)
    plain = beam_search(model, src, opts)
    mixed = beam_search(model, src, opts, constraints=[[], [[7, 8]], []])
    for i in (0, 2):
        assert [h.tokens for h in mixed[i]] == [h.tokens for h in plain[i]]
        assert [h.score for h in mixed[i]] == pytest.approx([h.score for h in plain[i]], abs=1e-5)
        assert all(h.constraints_met is None for h in mixed[i])
    assert all(holds(h.tokens, [7, 8]) for h in mixed[1])


def test_phrases_are_met_over_a_shortlist_in_target_ids():
    model = small_model()
    src = torch.randint(4, 50, (2, 5), generator=torch.Generator().manual_seed(2))
    vocab = torch.tensor([0, 1, 2, 3, 5, 9, 11, 20, 31, 44])  # special ids first, sorted
    opts = DecodingOptions(beam_size=3, max_len_a=1.0, max_len_b=4, min_len=0)
    out = beam_search(model, src, opts, vocab=vocab, constraints=[[[31, 5]], [[44]]])
    assert holds(out[0][0].tokens, [31, 5]) and holds(out[1][0].tokens, [44])
    assert set(out[0][0].tokens + out[1][0].tokens) <= set(vocab.tolist())
    with pytest.raises(ValueError, match="not in the decoding vocabulary"):
        beam_search(model, src, opts, vocab=vocab, constraints=[[[30]], []])


def test_phrases_longer_than_the_length_limit_are_an_error_not_a_silent_drop():
    model = small_model()
    src = torch.randint(4, 50, (1, 2))
    opts = DecodingOptions(beam_size=2, max_len_a=1.0, max_len_b=1)  # at most 3 tokens
    with pytest.raises(ValueError, match="4 target tokens, more than its length limit of 3"):
        beam_search(model, src, opts, constraints=[[[5, 6], [7, 8]]])
    with pytest.raises(ValueError, match="special id"):
        beam_search(model, src, opts, constraints=[[[5, EOS_ID]]])


def test_a_phrase_that_cannot_be_met_in_time_ends_marked_unmet():
    """no_repeat_ngram_size 1 forbids the phrase "A A": after "A B" and "B A" only EOS may follow
    (C has no probability); the outputs end there marked unmet, not dropped."""
    model = ScriptedModel([{}], dist(A=0.5, B=0.3, EOS=0.2))
    opts = DecodingOptions(beam_size=2, n_best=2, max_len_a=0.0, max_len_b=3, min_len=0, no_repeat_ngram_size=1)
    hyps = beam_search(model, src_for(1), opts, constraints=[[[A, A]]])[0]
    assert sorted(h.tokens for h in hyps) == [[A, B], [B, A]]
    assert all(h.constraints_met is False for h in hyps)
