"""Vocabulary shortlists, the decoding shortcut of Marian, CTranslate2 and Bergamot: each batch is
decoded over the target pieces its source makes likely plus the most frequent ones, not over the
whole vocabulary, which cuts the output layer (at 8,000 pieces the largest matmul of a decoder
step) and the softmax to a few hundred columns.

The table comes from the training pairs: for every source piece, the `k` target pieces that
co-occur with it most strongly by the Dice coefficient 2 c(s, t) / (c(s) + c(t)), where c counts
sentence pairs (Marian's shortlists use a word aligner's lexical table instead; co-occurrence needs
no aligner and the frequent pieces cover the function words that Dice ranks low). Light on
purpose (numpy; torch only for decoding): ids are the tokenizer's, specials included.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nmt.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID

SPECIAL_IDS = (PAD_ID, UNK_ID, BOS_ID, EOS_ID)  # 0-3: always candidates, so their column is their id


@dataclass
class Shortlist:
    table: torch.Tensor  # (source vocabulary, k) int32 target ids of each source id, best first; -1 where fewer
    frequent: torch.Tensor  # (n,) int32 target ids that are always candidates, the special ids included

    @property
    def k(self) -> int:
        return self.table.size(1)

    def candidates(self, src: torch.Tensor, forced: Iterable[int] = ()) -> torch.Tensor:
        """src (B, S) source ids of a batch -> the sorted target ids (U,) it is decoded over: the
        frequent ones, the table's row of every source id in it, and `forced` (pieces that must be
        reachable, such as those of a required term). The special ids 0-3 come first."""
        rows = self.table[src.unique().cpu().long()].flatten()
        extra = torch.tensor(list(forced), dtype=torch.int32)
        return torch.cat([self.frequent, rows[rows >= 0], extra]).unique().long().to(src.device)  # sorted

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"table": self.table, "frequent": self.frequent}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> Shortlist:
        return cls(table=state["table"].to(torch.int32), frequent=state["frequent"].to(torch.int32))

    def write_vmap(self, path: str | Path, src_pieces: Sequence[str], tgt_pieces: Sequence[str]) -> None:
        """CTranslate2's vocabulary map (`use_vmap`): a line "<TAB>frequent pieces" (always
        candidates), then one "source piece<TAB>its target pieces" per source piece."""
        lines = ["\t" + " ".join(tgt_pieces[i] for i in self.frequent.tolist())]
        for s, row in enumerate(self.table.tolist()):
            targets = [tgt_pieces[t] for t in row if t >= 0]
            if targets and s not in SPECIAL_IDS:
                lines.append(f"{src_pieces[s]}\t{' '.join(targets)}")
        Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def build_shortlist(pairs: Iterable[tuple[Sequence[int], Sequence[int]]], *, src_vocab: int, tgt_vocab: int,
                    k: int = 50, n_frequent: int = 100, chunk: int = 20_000) -> Shortlist:
    """Count over (source ids, target ids) pairs: each source id's k best target ids by Dice and
    the n_frequent target ids found in most pairs (plus the special ids)."""
    c_src = np.zeros(src_vocab, dtype=np.int64)  # pairs holding each source id
    c_tgt = np.zeros(tgt_vocab, dtype=np.int64)
    keys: list[np.ndarray] = []  # co-occurrences s * tgt_vocab + t, merged per chunk
    counts: list[np.ndarray] = []
    for src_rows, tgt_rows in _chunks(pairs, chunk):
        s_pair, s_id = _unique_per_pair(src_rows, src_vocab)
        t_pair, t_id = _unique_per_pair(tgt_rows, tgt_vocab)
        c_src += np.bincount(s_id, minlength=src_vocab)
        c_tgt += np.bincount(t_id, minlength=tgt_vocab)
        # every (source id, target id) of a pair: the product of its two id sets
        n_t = np.bincount(t_pair, minlength=len(src_rows))
        t_start = np.concatenate([[0], np.cumsum(n_t)[:-1]])
        reps = n_t[s_pair]  # each source id of pair p meets the n_t[p] target ids of p
        s_rep = np.repeat(s_id, reps)
        first = np.repeat(t_start[s_pair], reps)
        within = np.arange(len(s_rep)) - np.repeat(np.cumsum(reps) - reps, reps)
        pair_keys = s_rep * tgt_vocab + t_id[first + within]
        u, c = np.unique(pair_keys, return_counts=True)
        keys.append(u)
        counts.append(c)
    if keys:
        pairs_seen, inverse = np.unique(np.concatenate(keys), return_inverse=True)
        together = np.bincount(inverse, minlength=len(pairs_seen), weights=np.concatenate(counts))
    else:
        pairs_seen, together = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    s, t = pairs_seen // tgt_vocab, pairs_seen % tgt_vocab
    dice = 2 * together / (c_src[s] + c_tgt[t])
    keep = ~np.isin(t, SPECIAL_IDS)
    s, t, dice = s[keep], t[keep], dice[keep]
    order = np.lexsort((t, -dice, s))  # by source id, then best Dice first (ties: lower id)
    s, t = s[order], t[order]
    rank = np.arange(len(s)) - np.searchsorted(s, s)  # position within its source id's list
    table = np.full((src_vocab, k), -1, dtype=np.int32)
    top = rank < k
    table[s[top], rank[top]] = t[top]
    by_pairs = np.argsort(-c_tgt, kind="stable")
    common = [i for i in by_pairs[: n_frequent + len(SPECIAL_IDS)].tolist() if i not in SPECIAL_IDS][:n_frequent]
    frequent = np.array(sorted({*SPECIAL_IDS, *common}), dtype=np.int32)
    return Shortlist(table=torch.from_numpy(table), frequent=torch.from_numpy(frequent))


def _chunks(pairs: Iterable[tuple[Sequence[int], Sequence[int]]], size: int) -> Iterator[tuple[list, list]]:
    src, tgt = [], []
    for s, t in pairs:
        src.append(s)
        tgt.append(t)
        if len(src) == size:
            yield src, tgt
            src, tgt = [], []
    if src:
        yield src, tgt


def _unique_per_pair(rows: list[Sequence[int]], vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ids of each row: (row index, id) arrays, sorted by row then id."""
    lens = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    flat = np.fromiter((i for r in rows for i in r), dtype=np.int64, count=int(lens.sum()))
    row = np.repeat(np.arange(len(rows)), lens)
    u = np.unique(row * vocab + flat)
    return u // vocab, u % vocab
