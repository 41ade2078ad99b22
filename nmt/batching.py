"""Length-sorted token-bucket batching, for training data and for translation. Light on purpose
(numpy, no torch): the CTranslate2 engine runs without loading torch."""

from __future__ import annotations

import numpy as np


def length_order(src_lens, tgt_lens, tie_break=None) -> np.ndarray:
    """Indices sorted by the longer side, then target, then source length (then `tie_break`).
    A batch costs n_sentences x its longest side, so sorting on that packs the most real tokens
    into each batch: on the HSK workload 92% of target and 80% of source positions are real
    tokens, against 67% and 97% when sorting by source length first (docs/performance.md)."""
    src_lens, tgt_lens = np.asarray(src_lens), np.asarray(tgt_lens)
    keys = (src_lens, tgt_lens, np.maximum(src_lens, tgt_lens))
    return np.lexsort(keys if tie_break is None else (tie_break, *keys))


def batch_starts(src_lens, tgt_lens, order: np.ndarray, *, max_tokens: int, max_sentences: int = 0) -> np.ndarray:
    """Greedy token-bucket batching of `order`: where each batch starts (an int64 array).

    A batch grows while n_sentences * (longest side + 1 for BOS/EOS) stays within max_tokens (and
    n_sentences within max_sentences, if set); a single over-long sentence is a batch of its own.
    One numpy pass per batch over the at most max_tokens // width candidates, so millions of
    sentences batch in seconds without a Python list per sentence."""
    width = np.maximum(np.asarray(src_lens)[order], np.asarray(tgt_lens)[order]).astype(np.int64) + 1
    n, starts, p = len(width), [], 0
    while p < n:
        k_max = max(1, max_tokens // int(width[p]))
        if max_sentences:
            k_max = min(k_max, max_sentences)
        window = np.maximum.accumulate(width[p:p + k_max])  # the batch's width with 1, 2, ... sentences
        over = np.flatnonzero(window * np.arange(1, len(window) + 1) > max_tokens)
        starts.append(p)
        p += max(1, int(over[0]) if len(over) else len(window))
    return np.asarray(starts, dtype=np.int64)


def make_batches(src_lens, tgt_lens, *, max_tokens: int, max_sentences: int = 0,
                 order: np.ndarray | None = None) -> list[list[int]]:
    """Token-bucket batches (lists of indices) in length order; see `batch_starts`."""
    if order is None:
        order = length_order(src_lens, tgt_lens)
    order = np.asarray(order)
    starts = batch_starts(src_lens, tgt_lens, order, max_tokens=max_tokens, max_sentences=max_sentences)
    return [chunk.tolist() for chunk in np.split(order, starts[1:])] if len(order) else []

