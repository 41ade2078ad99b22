"""Batched beam search in three pieces: a pure `beam_step`, hypothesis bookkeeping, and a driver
whose loop has numbered phases (encode -> step -> expand -> retire finished -> choose beams ->
reorder cache -> stop). The decomposition follows fairseq's `search.BeamSearch.step` and
OpenNMT-py's driver/strategy split.

Dimensions: B sentences, A sentences still active, K beam size, V vocabulary, S source length,
t target positions so far. Rows of the decoder batch are (sentence, beam) pairs: row = a * K + k,
except at the first step, when the K beams are still identical and each sentence has one row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from nmt.decoding.constraints import ConstraintState, ban_early_eos, constrained_step
from nmt.decoding.greedy import check_decoding_vocab, max_output_lengths
from nmt.decoding.options import DecodingOptions
from nmt.decoding.penalties import final_score
from nmt.decoding.results import Hypothesis
from nmt.masks import make_pad_mask
from nmt.tokenizer import BOS_ID, EOS_ID, PAD_ID

if TYPE_CHECKING:
    from nmt.models import Seq2Seq

NEG_INF = float("-inf")


# -- 1. the pure step -----------------------------------------------------------------------------


def beam_step(lprobs: torch.Tensor, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """lprobs (A, K, V) next-token log-probs, scores (A, K) cumulative -> the 2K best extensions
    per sentence: (cand_scores, cand_tokens, cand_beams), each (A, 2K), best first.

    2K, not K: up to K of the candidates can end in EOS and retire, and K must remain to go on.
    """
    a, k, v = lprobs.shape
    total = (scores.unsqueeze(-1) + lprobs).view(a, k * v)  # (A, K*V)
    cand_scores, flat = total.topk(min(2 * k, k * v), dim=-1)  # (A, 2K)
    return cand_scores, flat % v, torch.div(flat, v, rounding_mode="floor")


# -- 2. constraints on the next token -------------------------------------------------------------


def constrain(lprobs: torch.Tensor, prefixes: torch.Tensor, max_lens: torch.Tensor, step: int,
              opts: DecodingOptions) -> torch.Tensor:
    """lprobs (N, V), prefixes (N, 1 + step) with BOS, max_lens (N,) -> lprobs with banned tokens at -inf."""
    lprobs[:, PAD_ID] = NEG_INF
    lprobs[:, BOS_ID] = NEG_INF
    if step < opts.min_len:
        lprobs[:, EOS_ID] = NEG_INF
    at_max = step >= max_lens  # (N,): only EOS may follow
    if bool(at_max.any()):
        eos = lprobs[at_max, EOS_ID].clone()
        lprobs[at_max] = NEG_INF
        lprobs[at_max, EOS_ID] = torch.where(torch.isfinite(eos), eos, torch.zeros_like(eos))
    if opts.no_repeat_ngram_size:
        ban_repeated_ngrams(lprobs, prefixes[:, 1:], opts.no_repeat_ngram_size)
    return lprobs


def ban_repeated_ngrams(lprobs: torch.Tensor, generated: torch.Tensor, n: int) -> None:
    """In place: a token that would complete an n-gram already in the hypothesis gets -inf."""
    if generated.size(1) < n - 1 or n < 1:
        return
    for row, seq in enumerate(generated.tolist()):
        tail = tuple(seq[len(seq) - n + 1:]) if n > 1 else ()
        for i in range(len(seq) - n + 1):
            if tuple(seq[i : i + n - 1]) == tail:
                lprobs[row, seq[i + n - 1]] = NEG_INF


# -- 3. the driver --------------------------------------------------------------------------------


@torch.inference_mode()
def beam_search(model: Seq2Seq[Any], src: torch.Tensor, opts: DecodingOptions, vocab: torch.Tensor | None = None,
                constraints: list[list[list[int]]] | None = None, follow: torch.Tensor | None = None
                ) -> list[list[Hypothesis]]:
    """src (B, S) -> per sentence the `n_best` hypotheses, best first (with their last-layer
    cross-attention if `opts.attention`). `vocab`: the sorted target ids (U,) to decode over (a
    shortlist's candidates, nmt/shortlist.py) with the special ids 0-3 first, so that a special
    id's column is the id itself; None: the whole vocabulary. `constraints`: per sentence the
    phrases (target ids) that its outputs must contain (nmt/decoding/constraints.py); a sentence
    whose phrases do not fit its length limit is a ValueError. `follow` (V,) bool over target ids:
    the tokens that may come right after a phrase (EOS always may; None: any token). Its hypotheses meet every phrase,
    but where none could (a ban such as no_repeat_ngram_size stood in the way) it gets those that
    reached the end with a phrase unmet, marked `constraints_met=False`."""
    check_decoding_vocab(vocab)
    k = opts.beam_size
    # Phase 1: encode once. The K beams of a sentence start identical: the first step decodes one
    # row per sentence (fan = K decoder rows' worth each), then every sentence gets K rows, so
    # the first step and the cross-attention keys and values are computed once per sentence (and
    # kept once per sentence by a cache that can: its K rows then attend to them together).
    src_mask = make_pad_mask(src)  # (B, 1, 1, S)
    memory = model.encode(src, src_mask)  # (B, S, D)
    max_lens = max_output_lengths(model, src_mask, opts.max_len_a, opts.max_len_b)  # (B,)
    cache = model.make_cache(record_attention=opts.attention, capacity=int(max_lens.max()) + 1)  # BOS + tokens
    active = torch.arange(src.size(0), device=src.device)  # (A,) original sentence ids
    prefixes = torch.full((src.size(0), 1), BOS_ID, dtype=torch.long, device=src.device)  # (B, 1), then (A*K, t)
    scores = torch.full((src.size(0), k), NEG_INF, device=src.device)
    scores[:, 0] = 0.0  # all beams start identical: expand only the first
    finished: list[list[Hypothesis]] = [[] for _ in range(src.size(0))]
    fan = k  # beams per decoder row: K at the first step, then 1
    states = None  # with constraints: per active sentence its K hypotheses' ConstraintState
    if constraints is not None and any(constraints):
        if follow is not None:  # over the decoding columns, EOS included
            follow = follow.to(src.device).clone()
            follow[EOS_ID] = True
            follow = follow if vocab is None else follow[vocab]
        followers = None if follow is None else frozenset(follow.nonzero().flatten().tolist())
        states = [[ConstraintState.start(_columns(phrases, vocab, b, int(max_lens[b])), followers)] * k
                  for b, phrases in enumerate(constraints)]

    for step in range(int(max_lens.max()) + 1):
        # Phase 2: next-token log-probabilities of every row.
        logits = model.decode(prefixes[:, -1:], memory, src_mask, cache, vocab=vocab)[:, -1]  # (A*K/fan, V or U)
        lprobs = F.log_softmax(logits.float(), dim=-1)
        columns = prefixes if vocab is None or not opts.no_repeat_ngram_size else torch.searchsorted(vocab, prefixes)
        lprobs = constrain(lprobs, columns, max_lens.repeat_interleave(k // fan), step, opts)
        if states is not None:  # no EOS before every phrase is met
            ban_early_eos(lprobs, [row[: k // fan] for row in states], EOS_ID)
        lprobs = lprobs.view(len(active), k // fan, -1).expand(-1, k, -1)  # (A, K, V or U)
        # Phase 3: the 2K best extensions per sentence (with constraints: in striped bank order).
        if states is None:
            cand_scores, cand_tokens, cand_beams = beam_step(lprobs, scores)
            met = None
        else:
            cand_scores, cand_tokens, cand_beams, cand_states = constrained_step(lprobs, scores, states, follow)
            met = [[s.done if s.phrases else None for s in row] for row in cand_states]  # None: no phrases
        if vocab is not None:
            cand_tokens = vocab[cand_tokens]  # columns -> target ids
        # Phase 4: EOS among the K best retires a hypothesis.
        is_eos = cand_tokens == EOS_ID  # (A, 2K)
        _retire(finished, active, prefixes, cand_scores, cand_beams, is_eos, k, fan, opts,
                getattr(cache, "attention", None), met)
        done = torch.tensor([len(finished[s]) >= k for s in active.tolist()], device=src.device)
        done |= step >= max_lens
        if bool(done.all()):
            break
        # Phase 5: the K best candidates that do not end in EOS become the new beams.
        pick = torch.argsort(is_eos.to(torch.int8), dim=1, stable=True)[:, :k]  # (A, K), score order kept
        new_scores, new_tokens, new_beams = (x.gather(1, pick) for x in (cand_scores, cand_tokens, cand_beams))
        # Phase 6: drop finished sentences and follow the surviving beams.
        keep = ~done  # (A,)
        base = (torch.arange(len(active), device=src.device) * k)[keep]  # (A',)
        rows = (base.unsqueeze(1) + new_beams[keep]).view(-1) // fan  # (A'*K,) rows of the current batch
        prefixes = torch.cat([prefixes[rows], new_tokens[keep].view(-1, 1)], dim=1)  # (A'*K, t+1)
        scores, active, max_lens = new_scores[keep], active[keep], max_lens[keep]
        if states is not None:
            states = [[cand_states[a][j] for j in pick[a].tolist()] for a in keep.nonzero().flatten().tolist()]
        if fan == 1 and bool(keep.all()):  # beams only moved within their sentences: the source side is unchanged
            cache.reorder(rows, same_sources=True)
        else:  # a cache may keep the source side once per sentence (its K rows: cache.group == K)
            cache.reorder(rows, group=k)
            pick = rows if cache.group == 1 else keep.nonzero().flatten()  # per decoder row, or per sentence
            memory, src_mask = memory[pick], src_mask[pick]
        fan = 1
    return [_best(hyps, opts.n_best) for hyps in finished]


def _best(hyps: list[Hypothesis], n: int) -> list[Hypothesis]:
    """The n best finished hypotheses; with constraints only those that meet them all, unless none does."""
    ranked = sorted(hyps, key=lambda h: -h.score)
    met = [h for h in ranked if h.constraints_met is not False]
    return (met or ranked)[:n] or [Hypothesis([], NEG_INF, NEG_INF)]


def _columns(phrases: list[list[int]], vocab: torch.Tensor | None, sentence: int, limit: int) -> list[list[int]]:
    """A sentence's phrases of target ids -> of decoding columns (the ids themselves without a
    shortlist), checked: not empty, no special id, within the vocabulary, within the length limit."""
    if sum(len(p) for p in phrases) > limit:
        raise ValueError(f"sentence {sentence}: its constraints have {sum(len(p) for p in phrases)} target tokens, "
                         f"more than its length limit of {limit}")
    if any(not p or min(p) <= EOS_ID for p in phrases):
        raise ValueError(f"sentence {sentence}: a constraint is empty or holds a special id: {phrases}")
    if vocab is None:
        return phrases
    ids = torch.tensor([t for p in phrases for t in p], device=vocab.device)
    cols = torch.searchsorted(vocab, ids).clamp(max=len(vocab) - 1)
    if not bool((vocab[cols] == ids).all()):
        raise ValueError(f"sentence {sentence}: a constraint's target id is not in the decoding vocabulary")
    it = iter(cols.tolist())
    return [[next(it) for _ in p] for p in phrases]


def _retire(finished, active, prefixes, cand_scores, cand_beams, is_eos, k: int, fan: int, opts: DecodingOptions,
            attention: torch.Tensor | None, met: list[list[bool | None]] | None = None) -> None:
    """Hypothesis bookkeeping: EOS candidates ranked within the top K (with a finite score) end.
    A beam's decoder row is (a * K + beam) // fan. `met` (A lists of 2K): with constraints,
    whether each candidate has met all its phrases."""
    for a, j in (is_eos[:, :k] & torch.isfinite(cand_scores[:, :k])).nonzero().tolist():
        sentence = int(active[a])
        if len(finished[sentence]) >= k:
            continue
        row = (a * k + int(cand_beams[a, j])) // fan
        tokens = prefixes[row, 1:].tolist()
        logprob = float(cand_scores[a, j])
        score = final_score(logprob, len(tokens) + 1, penalty=opts.length_penalty, alpha=opts.alpha)
        weights = None if attention is None else attention[row].float().cpu()  # (t, S), float32 whatever the model's dtype
        finished[sentence].append(Hypothesis(tokens, score, logprob, weights,
                                             constraints_met=None if met is None else met[a][j]))
