"""Lexically constrained beam search: every output contains given target phrases (terms).

Dynamic beam allocation (Post & Vilar 2018), the algorithm behind fairseq's `--constraints`, as
two pure pieces beside `beam_step`:
- `ConstraintState`, one per hypothesis: which of its sentence's phrases (tuples of target ids)
  it has produced, and how far it is into the one it is producing now. Phrases are met in any
  order, each where its tokens occur one after the other; a hypothesis may end (EOS) only when
  every phrase is met (the driver bans EOS before that).
- `constrained_step`: the candidates of plain beam search (the 2K best extensions), plus for each
  beam its best next token and every token that advances its phrases; each candidate falls into
  the bank of its number of constraint tokens met, and the candidates are ordered by striping
  across the banks, highest bank first: the best of every bank, then the second best of every
  bank, and so on. The driver keeps the first K, so progress towards the phrases is never crowded
  out by hypotheses that score higher only because they ignore them.
A sentence without phrases has one bank, and its candidates in their order are plain beam search's.

Dimensions: A sentences, K beams, V vocabulary (or shortlist columns).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

NEG_INF = float("-inf")

Phrase = tuple[int, ...]


@dataclass(frozen=True)
class ConstraintState:
    """One hypothesis' progress through its sentence's phrases."""

    phrases: tuple[Phrase, ...]
    met: tuple[bool, ...]  # per phrase: produced
    current: int = -1  # the phrase being produced (-1: none)
    at: int = 0  # its tokens produced so far
    pending: int = -1  # a phrase just produced, that counts once a token of `follow` (or the end) follows
    follow: frozenset[int] | None = field(default=None, compare=False, repr=False)  # None: any token may

    @classmethod
    def start(cls, phrases: Sequence[Sequence[int]], follow: frozenset[int] | None = None) -> ConstraintState:
        """`follow`: the tokens that may come after a phrase (in languages written with spaces,
        those that begin a word, punctuation and EOS), so that "machine" is not met by "machines"."""
        return cls(tuple(tuple(p) for p in phrases), (False,) * len(phrases), follow=follow)

    @property
    def done(self) -> bool:
        """Every phrase is met."""
        return all(self.met)

    @property
    def may_end(self) -> bool:
        """EOS would meet every phrase (it may follow a pending one)."""
        return all(m or i == self.pending for i, m in enumerate(self.met))

    @property
    def progress(self) -> int:
        """Constraint tokens met: the bank. From 0 to the phrases' total length."""
        pending = len(self.phrases[self.pending]) if self.pending >= 0 else 0
        return sum(len(p) for p, m in zip(self.phrases, self.met) if m) + self.at + pending

    def next_tokens(self) -> set[int]:
        """The tokens that advance: the next of the phrase in progress, else the first of each unmet one."""
        if self.current >= 0:
            return {self.phrases[self.current][self.at]}
        return {p[0] for i, (p, m) in enumerate(zip(self.phrases, self.met)) if not m and i != self.pending}

    def advance(self, token: int) -> ConstraintState:
        """The state after `token`. A pending phrase is met if `token` may follow it, else it
        counts no more; a phrase whose next token does not follow is abandoned, and the longest
        end of what it had produced plus `token` that begins an unmet phrase goes on as that one."""
        state = self
        if self.pending >= 0:
            met = self.met if self.follow is not None and token not in self.follow else self._with(self.pending)
            state = replace(self, met=met, pending=-1)
        return state._step(token)

    def _step(self, token: int) -> ConstraintState:
        if self.current >= 0:
            if token == self.phrases[self.current][self.at]:
                return self._produced(self.current, self.at + 1)
            recent = self.phrases[self.current][: self.at] + (token,)
        else:
            recent = (token,)
        for start in range(len(recent)):  # longest first
            tail = recent[start:]
            for i, (phrase, met) in enumerate(zip(self.phrases, self.met)):
                if not met and phrase[: len(tail)] == tail:
                    return self._produced(i, len(tail))
        return self if self.current < 0 else replace(self, current=-1, at=0)

    def _produced(self, i: int, at: int) -> ConstraintState:
        if at < len(self.phrases[i]):
            return replace(self, current=i, at=at)
        if self.follow is None:
            return replace(self, met=self._with(i), current=-1, at=0)
        return replace(self, current=-1, at=0, pending=i)

    def _with(self, i: int) -> tuple[bool, ...]:
        return self.met[:i] + (True,) + self.met[i + 1:]


def constrained_step(lprobs: torch.Tensor, scores: torch.Tensor, states: list[list[ConstraintState]],
                     follow: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[list[ConstraintState]]]:
    """lprobs (A, K, V), scores (A, K), states (A lists of K) -> (cand_scores, cand_tokens,
    cand_beams), each (A, 2K), and the candidates' states (A lists of 2K), in striped bank order
    (see the module's docstring). Candidates with a score of -inf come last. `follow` (V,) bool:
    the tokens that may follow a phrase; a beam with a pending phrase also offers its best of them."""
    a, k, v = lprobs.shape
    n = min(2 * k, k * v)
    total = scores.unsqueeze(-1) + lprobs  # (A, K, V)
    top = total.view(a, k * v).topk(n, dim=-1).indices  # (A, 2K): plain beam search's candidates
    best = total.argmax(dim=-1)  # (A, K): each beam's best next token
    pending = [(i, b) for i in range(a) for b in range(k) if states[i][b].pending >= 0]
    best_follow = {}  # (sentence, beam) with a pending phrase -> its best token that may follow it
    if follow is not None and pending:
        rows = torch.tensor(pending, device=lprobs.device)  # (P, 2)
        picks = total[rows[:, 0], rows[:, 1]].masked_fill(~follow, NEG_INF).argmax(dim=-1)  # (P,)
        best_follow = dict(zip(pending, picks.tolist()))
    out_scores = torch.full((a, n), NEG_INF, device=lprobs.device)
    out_tokens = torch.zeros((a, n), dtype=torch.long, device=lprobs.device)
    out_beams = torch.zeros((a, n), dtype=torch.long, device=lprobs.device)
    out_states: list[list[ConstraintState]] = []
    for i in range(a):
        pairs = dict.fromkeys((f // v, f % v) for f in top[i].tolist())  # (beam, token), insertion-ordered
        for b in range(k):
            extra = [int(best[i, b]), *sorted(states[i][b].next_tokens())]
            if (i, b) in best_follow:
                extra.append(best_follow[i, b])
            pairs.update(dict.fromkeys((b, t) for t in extra))
        beams, tokens = (torch.tensor(x, device=lprobs.device) for x in zip(*pairs))
        cand = total[i, beams, tokens].tolist()
        new = [states[i][b].advance(t) for b, t in pairs]
        by_score = sorted(range(len(cand)), key=lambda j: -cand[j])  # stable: ties keep the top-k order
        taken: dict[int, int] = {}  # bank -> candidates of it ranked so far
        keys = {}
        for j in by_score:
            bank = new[j].progress
            keys[j] = (not math.isfinite(cand[j]), taken.get(bank, 0), -bank)
            taken[bank] = taken.get(bank, 0) + 1
        chosen = sorted(by_score, key=keys.__getitem__)[:n]  # stable: within a stripe, by score
        out_scores[i] = torch.tensor([cand[j] for j in chosen])  # n of them: the top-k alone are n
        out_tokens[i], out_beams[i] = tokens[chosen], beams[chosen]
        out_states.append([new[j] for j in chosen])
    return out_scores, out_tokens, out_beams, out_states


def ban_early_eos(lprobs: torch.Tensor, states: list[list[ConstraintState]], eos: int) -> None:
    """In place: lprobs (N, V) of rows (sentence, beam) in order, states their hypotheses' -> EOS is
    -inf where a phrase is unmet, except on rows where nothing else may follow (the length limit,
    or bans such as no_repeat_ngram_size): those end with a phrase unmet, and the driver marks them."""
    unmet = torch.tensor([not s.may_end for row in states for s in row], device=lprobs.device)  # (N,)
    if bool(unmet.any()):
        eos_lprobs = lprobs[:, eos].clone()
        lprobs[:, eos] = NEG_INF
        others = lprobs.amax(dim=1) > NEG_INF  # (N,): some other token may follow
        lprobs[:, eos] = torch.where(unmet & others, NEG_INF, eos_lprobs)
