"""Beam search against a scripted model whose next-token probabilities are written in the test
(fairseq's tests/test_sequence_generator.py style), plus properties on a real random model."""

import itertools
import math

import pytest
import torch

from nmt.decoding.beam import beam_search, beam_step
from nmt.decoding.options import DecodingOptions
from nmt.decoding.greedy import greedy_decode
from nmt.decoding.penalties import final_score
from nmt.decoding.sampling import filter_logits, sample_decode
from nmt.tokenizer import EOS_ID, PAD_ID
from tests.test_model import small_model

A, B, C = 4, 5, 6
V = 7


def dist(**probs: float) -> list[float]:
    """A next-token distribution over the fake vocabulary, e.g. dist(A=0.6, EOS=0.4)."""
    ids = {"A": A, "B": B, "C": C, "EOS": EOS_ID}
    out = [0.0] * V
    for name, p in probs.items():
        out[ids[name]] = p
    return out


class ScriptedCache:
    group = 1  # the memory stays one row per decoder row

    def __init__(self) -> None:
        self.prefixes: list[tuple[int, ...]] | None = None

    def reorder(self, index: torch.Tensor, same_sources: bool = False, group: int = 1) -> None:
        self.prefixes = [self.prefixes[i] for i in index.tolist()]


class ScriptedModel:
    """Sentence i (src[i, 0] == 4 + i) draws its next token from tables[i][prefix], else from
    `default`. The prefix lives in the cache, so a wrong `reorder` gives wrong probabilities."""

    def __init__(self, tables: list[dict[tuple, list[float]]], default: list[float]) -> None:
        self.tables, self.default = tables, default

    def encode(self, src, src_mask):
        return src[:, :1, None].float()  # (B, 1, 1): the sentence id travels with the rows

    def make_cache(self, *, record_attention: bool = False, capacity: int | None = None) -> ScriptedCache:
        return ScriptedCache()

    def decode(self, tgt_in, memory, src_mask, cache, vocab=None):
        if cache.prefixes is None:
            cache.prefixes = [() for _ in range(tgt_in.size(0))]
        else:
            cache.prefixes = [p + (t,) for p, t in zip(cache.prefixes, tgt_in[:, -1].tolist())]
        sentence = (memory[:, 0, 0].long() - 4).tolist()
        probs = [self.tables[s].get(p, self.default) for s, p in zip(sentence, cache.prefixes)]
        return torch.tensor(probs).log().unsqueeze(1)  # (N, 1, V)


def src_for(n: int, length: int = 3) -> torch.Tensor:
    return torch.tensor([[4 + i] + [9] * (length - 1) for i in range(n)])


TWO_WAYS = {(): dist(A=0.5, B=0.5), (A,): dist(C=0.7, EOS=0.3), (A, C): dist(EOS=1.0), (B,): dist(EOS=0.8, A=0.2)}


def test_beam_step_returns_the_2k_best_with_parent_beams():
    lprobs = torch.tensor([[[0.1, 0.5, 0.4], [0.3, 0.25, 0.45]]]).log()  # (A=1, K=2, V=3)
    scores = torch.tensor([[0.0, math.log(0.5)]])  # beam 1's extensions: 0.15, 0.125, 0.225
    s, tok, beam = beam_step(lprobs, scores)
    assert tok.tolist() == [[1, 2, 2, 0]] and beam.tolist() == [[0, 0, 1, 1]]
    torch.testing.assert_close(s.exp(), torch.tensor([[0.5, 0.4, 0.225, 0.15]]))


def test_hypotheses_are_ordered_by_score_with_exact_log_probabilities():
    model = ScriptedModel([{(): dist(A=0.6, B=0.4), (A,): dist(EOS=0.9, A=0.1), (B,): dist(EOS=1.0)}], dist(EOS=1.0))
    hyps = beam_search(model, src_for(1), DecodingOptions(beam_size=2, n_best=2, length_penalty="none"))[0]
    assert [h.tokens for h in hyps] == [[A], [B]]
    assert hyps[0].logprob == pytest.approx(math.log(0.54))
    assert hyps[1].logprob == pytest.approx(math.log(0.4))


@pytest.mark.parametrize("penalty, alpha, best", [("none", 0.0, [B]), ("length", 1.0, [A, C]), ("gnmt", 2.0, [A, C])])
def test_length_penalty_decides_between_short_and_long(penalty, alpha, best):
    # [B]: p = 0.4 with 2 tokens (B, EOS); [A, C]: p = 0.35 with 3 tokens (A, C, EOS).
    model = ScriptedModel([TWO_WAYS], dist(EOS=1.0))
    hyps = beam_search(model, src_for(1), DecodingOptions(beam_size=2, n_best=2, length_penalty=penalty, alpha=alpha))[0]
    assert hyps[0].tokens == best
    if penalty == "length":
        assert hyps[0].score == pytest.approx(math.log(0.35) / 3)


def test_n_best_lists_every_finished_hypothesis_best_first():
    model = ScriptedModel([TWO_WAYS], dist(EOS=1.0))
    hyps = beam_search(model, src_for(1), DecodingOptions(beam_size=2, n_best=2, length_penalty="none"))[0]
    assert [h.tokens for h in hyps] == [[B], [A, C]]
    assert hyps[0].score >= hyps[1].score


def test_eos_ends_a_hypothesis_and_min_len_forbids_early_eos():
    model = ScriptedModel([{(): dist(EOS=0.9, A=0.1)}], dist(EOS=1.0))
    assert beam_search(model, src_for(1), DecodingOptions(beam_size=2, min_len=0))[0][0].tokens == []
    assert beam_search(model, src_for(1), DecodingOptions(beam_size=2, min_len=1))[0][0].tokens == [A]


def test_max_length_forces_eos_at_a_times_src_len_plus_b():
    model = ScriptedModel([{}], dist(A=0.7, B=0.3))  # never chooses EOS by itself
    for a, b, src_len, expected in ((0.0, 3, 3, 3), (1.0, 1, 4, 5)):
        hyp = beam_search(model, src_for(1, src_len), DecodingOptions(beam_size=2, max_len_a=a, max_len_b=b))[0][0]
        assert hyp.tokens == [A] * expected


def test_no_repeat_ngram_keeps_bigrams_unique():
    model = ScriptedModel([{}], dist(A=0.6, B=0.3, C=0.1))
    hyp = beam_search(model, src_for(1), DecodingOptions(beam_size=2, max_len_a=0, max_len_b=6, no_repeat_ngram_size=2))[0][0]
    bigrams = list(zip(hyp.tokens, hyp.tokens[1:]))
    assert len(hyp.tokens) == 6 and len(bigrams) == len(set(bigrams))


def test_sentences_of_a_batch_do_not_interfere_and_finish_at_different_steps():
    tables = [TWO_WAYS, {(): dist(C=1.0), (C,): dist(C=1.0), (C, C): dist(EOS=1.0)}]
    hyps = beam_search(ScriptedModel(tables, dist(EOS=1.0)), src_for(2), DecodingOptions(beam_size=2, length_penalty="none"))
    assert [h[0].tokens for h in hyps] == [[B], [C, C]]


def test_an_output_that_ends_at_the_first_step_in_a_batch_keeps_its_own_sentence():
    """The first step decodes one row per sentence, then K: an EOS there must retire the right
    sentence's (empty) hypothesis with its own log-probability, here the third sentence's log 0.9."""
    tables = [{(): dist(A=1.0)}, {(): dist(B=1.0)}, {(): dist(EOS=0.9, C=0.1)}]
    hyps = beam_search(ScriptedModel(tables, dist(EOS=1.0)), src_for(3), DecodingOptions(beam_size=3, n_best=2, min_len=0,
                                                                                          length_penalty="none"))
    assert [h[0].tokens for h in hyps] == [[A], [B], []]
    assert hyps[2][0].logprob == pytest.approx(math.log(0.9)) and hyps[2][1].tokens == [C]


def test_beam_size_one_equals_greedy_on_a_real_model():
    model = small_model()
    src = torch.randint(4, 50, (4, 6))
    src[2, 3:] = PAD_ID
    greedy = greedy_decode(model, src, max_len_a=1.0, max_len_b=4)
    beam = beam_search(model, src, DecodingOptions(beam_size=1, max_len_a=1.0, max_len_b=4, min_len=0, length_penalty="none"))
    assert [h[0].tokens for h in beam] == greedy


def test_a_batch_gives_the_same_output_as_sentences_one_by_one():
    model = small_model()
    src = torch.randint(4, 50, (3, 7))
    src[1, 4:] = PAD_ID
    src[2, 2:] = PAD_ID
    opts = DecodingOptions(beam_size=3, n_best=2, max_len_a=1.0, max_len_b=3)
    batch = beam_search(model, src, opts)
    for i in range(3):
        alone = beam_search(model, src[i : i + 1, : int((src[i] != PAD_ID).sum())], opts)[0]
        assert [h.tokens for h in alone] == [h.tokens for h in batch[i]]
        assert [h.score for h in alone] == pytest.approx([h.score for h in batch[i]], abs=1e-4)


def test_top_k_and_top_p_filtering_by_hand():
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert torch.isinf(filter_logits(logits, top_k=2)[0, :2]).all()
    assert filter_logits(logits, top_k=2)[0, 2:].tolist() == [3.0, 4.0]
    probs = logits.softmax(-1)[0]  # 0.032, 0.087, 0.237, 0.644
    kept = ~torch.isinf(filter_logits(logits, top_p=0.8)[0])
    assert kept.tolist() == [False, False, True, True]  # 0.644 < 0.8 <= 0.644 + 0.237
    assert probs[3] < 0.8
    for tiny in (1e-300, 1e-45):  # 0 in float32: the most likely token still stays (found by the HTTP fuzzer)
        assert (~torch.isinf(filter_logits(logits, top_p=tiny)[0])).tolist() == [False, False, False, True]


def test_sampling_with_top_k_one_is_greedy():
    model = small_model()
    src = torch.randint(4, 50, (3, 5))
    g = torch.Generator().manual_seed(0)
    assert sample_decode(model, src, top_k=1, max_len_a=1.0, max_len_b=3, generator=g) == greedy_decode(
        model, src, max_len_a=1.0, max_len_b=3)


def test_recorded_attention_rows_sum_to_one_and_skip_padding():
    model = small_model()
    src = torch.randint(4, 50, (2, 6))
    src[1, 4:] = PAD_ID
    opts = DecodingOptions(beam_size=3, max_len_a=1.0, max_len_b=3)
    plain = beam_search(model, src, opts)
    recorded = beam_search(model, src, opts.replace(attention=True))
    for p, r in zip(plain, recorded):  # the explicit attention path decodes the same
        assert p[0].tokens == r[0].tokens and p[0].score == pytest.approx(r[0].score, abs=1e-4)
        attention = r[0].attention
        assert attention.shape == (len(r[0].tokens) + 1, 6)
        torch.testing.assert_close(attention.sum(-1), torch.ones(attention.size(0)))
    assert (recorded[1][0].attention[:, 4:] == 0).all()


def test_beams_that_swap_places_keep_their_own_cache():
    """After step 1 the better beam comes from the second row ([B, A] 0.36 before [A, C] 0.33), so
    the rows swap: the cache must follow (`reorder`), or the next step reads the other beam's
    prefix. Wrong prefixes here fall back to `default`, which never ends a sentence."""
    table = {(): dist(A=0.6, B=0.4), (A,): dist(C=0.55, B=0.45), (B,): dist(A=0.9, C=0.1),
             (B, A): dist(EOS=1.0), (A, C): dist(EOS=1.0), (A, B): dist(EOS=1.0), (B, C): dist(EOS=1.0)}
    model = ScriptedModel([table], dist(A=0.5, B=0.5))
    hyps = beam_search(model, src_for(1), DecodingOptions(beam_size=2, n_best=2, length_penalty="none"))[0]
    assert [h.tokens for h in hyps] == [[B, A], [A, C]]
    assert [h.logprob for h in hyps] == pytest.approx([math.log(0.36), math.log(0.33)])


def random_tables(seed: int, length: int) -> dict[tuple, list[float]]:
    """Every prefix of up to `length` tokens over {A, B, C} gets its own random distribution over
    {A, B, C, EOS}."""
    g = torch.Generator().manual_seed(seed)
    tables, frontier = {}, [()]
    for _ in range(length + 1):
        nxt = []
        for prefix in frontier:
            p = torch.rand(4, generator=g) + 0.05
            tables[prefix] = dist(**dict(zip(("A", "B", "C", "EOS"), (p / p.sum()).tolist())))
            nxt += [prefix + (t,) for t in (A, B, C)]
        frontier = nxt
    return tables


def exhaustive(tables: dict, length: int, penalty: str, alpha: float) -> list[tuple[list[int], float]]:
    """Every output of at most `length` tokens (EOS forced after `length`), best first, with its final score."""
    out = []
    for n in range(length + 1):
        for seq in itertools.product((A, B, C), repeat=n):
            lp = sum(math.log(tables[seq[:i]][t]) for i, t in enumerate(seq))
            lp += math.log(tables[seq][EOS_ID])  # at the limit only EOS may follow, with its own probability
            out.append((list(seq), final_score(lp, n + 1, penalty=penalty, alpha=alpha)))
    return sorted(out, key=lambda x: -x[1])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("penalty, alpha", [("none", 0.0), ("gnmt", 1.0)])
def test_a_beam_wider_than_the_search_space_finds_exactly_the_exhaustive_ranking(seed, penalty, alpha):
    """3 tokens, at most 3 per output: 40 outputs. With 64 beams nothing is ever pruned, so the
    n-best list must be the exhaustive ranking, and beam 2's best can be no better than it."""
    tables = random_tables(seed, 3)
    model = ScriptedModel([tables], dist(EOS=1.0))
    opts = dict(min_len=0, max_len_a=0.0, max_len_b=3, length_penalty=penalty, alpha=alpha)
    hyps = beam_search(model, src_for(1), DecodingOptions(beam_size=64, n_best=40, **opts))[0]
    truth = exhaustive(tables, 3, penalty, alpha)
    assert [h.tokens for h in hyps] == [seq for seq, _ in truth]
    assert [h.score for h in hyps] == pytest.approx([score for _, score in truth])
    narrow = beam_search(model, src_for(1), DecodingOptions(beam_size=2, **opts))[0][0]
    assert narrow.score <= truth[0][1] + 1e-5  # float32 sums
