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
from tests.test_beam import A, B, C, V, ScriptedModel, dist, exhaustive, random_tables, src_for
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


def test_an_abandoned_phrase_goes_on_from_the_longest_end_that_begins_one():
    s = ConstraintState.start([[A, A, B]])
    for token in (A, A, A):  # "A A A": the last two A still begin "A A B"
        s = s.advance(token)
    assert (s.current, s.at) == (0, 2)
    assert s.advance(B).done


def test_with_followers_a_phrase_counts_only_before_one_of_them_or_the_end():
    s = ConstraintState.start([[A]], follow=frozenset({C, EOS_ID}))
    s = s.advance(A)
    assert (s.done, s.may_end, s.pending, s.progress) == (False, True, 0, 1)  # "A" met if C or EOS comes
    assert s.advance(C).done and s.advance(EOS_ID).done
    broken = s.advance(B)  # "A B": as "machine" + "s"
    assert (broken.done, broken.progress, broken.next_tokens()) == (False, 0, {A})
    again = s.advance(A)  # "A A": the second A is the phrase again, pending
    assert (again.done, again.pending) == (False, 0)


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


def holds_before(tokens: list[int], phrase: list[int], follow: set[int] | None) -> bool:
    """`phrase` occurs, followed by the end or (with `follow`) by one of those tokens."""
    n = len(phrase)
    return any(tokens[i : i + n] == phrase and (follow is None or i + n == len(tokens) or tokens[i + n] in follow)
               for i in range(len(tokens) - n + 1))


def test_no_hypothesis_ends_before_its_phrases_are_met():
    """EOS is likely at once and after A; without the ban, "" and "A" would retire first and end
    the search (2 finished hypotheses with beam 2) before "C B" finishes."""
    table = {(): dist(EOS=0.7, A=0.2, C=0.1), (A,): dist(EOS=0.9, A=0.1), (C,): dist(B=0.9, EOS=0.1),
             (C, B): dist(EOS=1.0)}
    model = ScriptedModel([table], dist(EOS=1.0))
    hyps = beam_search(model, src_for(1), DecodingOptions(beam_size=2, n_best=2, length_penalty="none", min_len=0),
                       constraints=[[[C]]])[0]
    # "C" + EOS (0.01) ranks below "A A" in the striping and never retires; "A A" ends unmet and is left out
    assert [h.tokens for h in hyps] == [[C, B]] and hyps[0].constraints_met is True
    assert hyps[0].logprob == pytest.approx(math.log(0.09))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("phrases", [[[C]], [[B, A]], [[A], [C, C]]])
@pytest.mark.parametrize("follow", [None, {B}])
def test_a_wide_constrained_beam_finds_exactly_the_best_outputs_that_hold_the_phrases(seed, phrases, follow):
    """3 tokens, at most 3 per output: 40 outputs. With 64 beams nothing is pruned: the n-best
    list must be the exhaustive ranking of the outputs holding every phrase (followed by the end
    or, with followers, by one of them); a narrow beam's best holds them too and is no better."""
    tables = random_tables(seed, 3)
    model = ScriptedModel([tables], dist(EOS=1.0))
    mask = None if follow is None else torch.tensor([t in follow for t in range(V)])
    opts = dict(min_len=0, max_len_a=0.0, max_len_b=3, length_penalty="none")
    truth = [(seq, score) for seq, score in exhaustive(tables, 3, "none", 0.0)
             if all(holds_before(seq, p, follow) for p in phrases)]
    hyps = beam_search(model, src_for(1), DecodingOptions(beam_size=64, n_best=40, **opts), constraints=[phrases],
                       follow=mask)[0]
    met = [h for h in hyps if h.constraints_met]
    assert [h.tokens for h in met] == [seq for seq, _ in truth]
    assert [h.score for h in met] == pytest.approx([score for _, score in truth])
    if not truth:  # "A" then B or the end, and "C C" then B or the end, do not fit in 3 tokens
        assert hyps and all(h.constraints_met is False for h in hyps)
        return
    for k in (1, 2):
        narrow = beam_search(model, src_for(1), DecodingOptions(beam_size=k, **opts), constraints=[phrases],
                             follow=mask)[0][0]
        if follow is None:  # the highest bank's best always survives: a narrow beam meets them too
            assert narrow.constraints_met is True
        if narrow.constraints_met:  # with followers a narrow beam can miss a phrase that must end the output
            assert all(holds_before(narrow.tokens, p, follow) for p in phrases)
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


def test_with_followers_every_met_phrase_of_a_real_model_is_followed_by_one():
    model = small_model()
    g = torch.Generator().manual_seed(3)
    follow = torch.rand(50, generator=g) < 0.5
    for trial in range(6):
        src = torch.randint(4, 50, (2, 6), generator=g)
        constraints = [[torch.randint(4, 50, (2,), generator=g).tolist()] for _ in range(2)]
        opts = DecodingOptions(beam_size=2 + trial % 3, max_len_a=1.0, max_len_b=8, min_len=0)
        for phrases, nbest in zip(constraints, beam_search(model, src, opts, constraints=constraints, follow=follow)):
            for h in nbest:
                assert h.constraints_met is True  # 14 tokens leave room: the phrase and a follower
                assert all(holds_before(h.tokens, p, set(follow.nonzero().flatten().tolist())) for p in phrases)
    everything = torch.ones(50, dtype=torch.bool)  # every token may follow: as no followers at all
    src = torch.randint(4, 50, (3, 5), generator=g)
    opts = DecodingOptions(beam_size=3, n_best=2, max_len_a=1.0, max_len_b=6, min_len=0)
    with_all = beam_search(model, src, opts, constraints=[[[7]], [[9, 9]], []], follow=everything)
    without = beam_search(model, src, opts, constraints=[[[7]], [[9, 9]], []])
    assert [[h.tokens for h in x] for x in with_all] == [[h.tokens for h in x] for x in without]


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
