"""Parallel data through `datasets`: loading, cleaning, token-bucket batching, the DataModule.

    raw split (src, tgt text) --clean--> tokenised (src_ids, tgt_ids) --TokenBatchSampler--> batches

Sources (`data.source`): line-aligned text files, TSV/CSV and JSONL with named fields, a Hugging
Face hub dataset (name/config/split + field mapping), the embedded HSK corpus and a synthetic
reverse task. Map-style datasets are cached as Arrow files by `datasets`; `data.streaming: true`
reads any source as an iterable and batches it from a bounded look-ahead buffer.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import random
import re
import shutil
import sys
import time
from dataclasses import dataclass
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Sequence

import datasets
from datasets.distributed import split_dataset_by_node
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from nmt.batching import batch_starts, bucket_order, make_batches
from nmt.config import DataConfig, ExperimentConfig
from nmt.errors import DataError
from nmt.textio import check_text_file, decode_lines, read_text_lines  # noqa: F401  (re-exported)
from nmt.tokenizer import BOS_ID, EOS_ID, PAD_ID, NBest, Tokenizer, train_tokenizer

log = logging.getLogger("nmt")

datasets.logging.set_verbosity_error()
datasets.disable_progress_bars()


# ------------------------------------------------------------------------------------------------
# Loading raw pairs: every source ends as a dataset with string columns `src` and `tgt`
# ------------------------------------------------------------------------------------------------

_WARNED: set[str] = set()
HSK_EVERY = 20  # hsk split: item i (after de-duplication) is valid if i % 20 == 5, test if i % 20 == 10


def _text_pairs(src_path: str, tgt_path: str, stamp: str, skip: tuple[int, ...] = ()) -> Iterator[dict[str, str]]:
    del stamp  # part of the datasets cache key only: a changed file gets a new cache
    skip_lines = set(skip)
    with open(src_path, "rb") as fs, open(tgt_path, "rb") as ft:
        for n, (src, tgt) in enumerate(zip(fs, ft), start=1):
            if n not in skip_lines:
                yield {"src": src.decode("utf-8").rstrip("\r\n"), "tgt": tgt.decode("utf-8").rstrip("\r\n")}


def _text_source(cfg: DataConfig, prefix: str, streaming: bool, cache_dir: str | None = None):
    src_path, tgt_path = Path(f"{prefix}.{cfg.src_lang}"), Path(f"{prefix}.{cfg.tgt_lang}")
    invalid: list[int] | None = [] if cfg.skip_invalid_utf8 else None
    n_src, n_tgt = check_text_file(src_path, invalid), check_text_file(tgt_path, invalid)
    if n_src != n_tgt:
        raise DataError(f"{src_path} has {n_src} lines but {tgt_path} has {n_tgt}: files must be line-aligned")
    if n_src == 0:
        raise DataError(f"{src_path} is empty")
    skip = tuple(sorted(set(invalid or ())))
    if skip and str(prefix) not in _WARNED:  # load_raw runs more than once per split
        _WARNED.add(str(prefix))
        print(f"warning: {prefix}.{{{cfg.src_lang},{cfg.tgt_lang}}}: skipped {len(skip)} line pair(s) with invalid "
              f"UTF-8 (data.skip_invalid_utf8), first at line {skip[0]}", file=sys.stderr)
    if len(skip) == n_src:
        raise DataError(f"{src_path}: no line pair is valid UTF-8")
    stamp = "|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in (src_path, tgt_path))
    kwargs = {"src_path": str(src_path), "tgt_path": str(tgt_path), "stamp": stamp, "skip": skip}
    if streaming:
        return datasets.IterableDataset.from_generator(_text_pairs, gen_kwargs=kwargs)
    return datasets.Dataset.from_generator(_text_pairs, gen_kwargs=kwargs, cache_dir=cache_dir)


def _get_field(example: dict[str, Any], dotted: str) -> Any:
    value: Any = example
    for part in dotted.split("."):
        value = value[part]
    return value


def _has_field(features: Any, dotted: str) -> bool:
    for part in dotted.split("."):
        if not hasattr(features, "keys") or part not in features:
            return False
        features = features[part]
    return True


def _select_fields(ds, cfg: DataConfig, where: str):
    features = ds.features
    if features is None:  # streaming without known features: peek at the first example
        features = next(iter(ds))
    for key in ("src_field", "tgt_field"):
        name = getattr(cfg, key)
        if not _has_field(features, name):
            raise DataError(f"{where}: data.{key} '{name}' not found (fields: {', '.join(features.keys())})")

    def pick(example):
        return {"src": str(_get_field(example, cfg.src_field) or ""), "tgt": str(_get_field(example, cfg.tgt_field) or "")}

    return ds.map(pick, remove_columns=list(features.keys()))


def _file_source(cfg: DataConfig, path: str, streaming: bool, cache_dir: str | None = None):
    file = Path(path)
    check_text_file(file)
    builder = {"tsv": "csv", "csv": "csv", "jsonl": "json"}[cfg.source]
    kwargs = {"delimiter": "\t", "quoting": 3} if cfg.source == "tsv" else {}  # 3 = csv.QUOTE_NONE
    try:
        ds = datasets.load_dataset(builder, data_files=str(file), split="train", streaming=streaming,
                                  cache_dir=cache_dir, **kwargs)
    except Exception as err:  # datasets wraps parser errors in several exception types
        raise DataError(f"{file}: cannot read as {cfg.source} ({str(err).strip().splitlines()[0]})") from None
    return _select_fields(ds, cfg, str(file))


def _hub_source(cfg: DataConfig, split: str, streaming: bool, cache_dir: str | None = None):
    try:
        ds = datasets.load_dataset(cfg.hub_name, cfg.hub_config, split=split, streaming=streaming, cache_dir=cache_dir)
    except Exception as err:
        raise DataError(
            f"hub dataset {cfg.hub_name} ({cfg.hub_config}, split {split}): {str(err).strip().splitlines()[0]}"
        ) from None
    return _select_fields(ds, cfg, f"hub dataset {cfg.hub_name}")


def hsk_pairs() -> list[tuple[str, str]]:
    """The embedded corpus (package `hsk-sentences-audio` 1.0.0, 4,354 items): whitespace
    normalised, the 80 items whose English is a placeholder ("placeholder", "placeholder-p1", ...)
    and the exact duplicate pairs removed, in the package's order."""
    blob = resources.files("hsk_sentences_audio").joinpath("data", "sentences.json").read_text("utf-8")
    seen, pairs = set(), []
    for item in json.loads(blob):
        pair = (" ".join(item["chinese"].split()), " ".join(item["translation"]["en"].split()))
        if not pair[1].startswith("placeholder") and pair not in seen:
            seen.add(pair)
            pairs.append(pair)
    return pairs


def hsk_split(split: str) -> list[tuple[str, str]]:
    """Fixed split, stratified over the corpus' HSK-level order: every 20th item from offset 5 is
    valid, from offset 10 test, the rest train (4,272 pairs -> 3,844 / 214 / 214)."""
    offsets = {"valid": {5}, "test": {10}, "train": set(range(HSK_EVERY)) - {5, 10}}
    if split not in offsets:
        raise DataError(f"hsk has splits train, valid and test, not '{split}'")
    return [p for i, p in enumerate(hsk_pairs()) if i % HSK_EVERY in offsets[split]]


def toy_reverse_split(split: str) -> list[tuple[str, str]]:
    """Synthetic task: a sequence of 3-12 letters a-j, target reversed. Learns in seconds."""
    sizes = {"train": 20000, "valid": 200, "test": 200}
    if split not in sizes:
        raise DataError(f"toy_reverse has splits train, valid and test, not '{split}'")
    rng = random.Random(f"toy_reverse-{split}")
    pairs = []
    for _ in range(sizes[split]):
        seq = [rng.choice("abcdefghij") for _ in range(rng.randint(3, 12))]
        pairs.append((" ".join(seq), " ".join(reversed(seq))))
    return pairs


def load_raw(cfg: DataConfig, split: str, *, streaming: bool = False, cache_dir: str | None = None):
    """One split as a `datasets` dataset with columns `src` and `tgt` (iterable if streaming).
    A list of corpora (`data.train: [a, b]`) is read in that order, one after the other; with
    `data.train_weights` or `train_tags` the training split also gets a column `corpus` (0, 1, ...
    in list order).
    `cache_dir`: where `datasets` writes its Arrow cache (default: its own cache directory)."""
    where = getattr(cfg, split)
    by_corpus = split == "train" and bool(cfg.train_weights or cfg.train_tags) and not streaming
    if by_corpus and not isinstance(where, list):
        where = [where]
    if isinstance(where, list):
        parts = [_load_one(cfg, w, streaming, cache_dir) for w in where]
        if by_corpus:  # which corpus each pair is from
            parts = [p.add_column("corpus", np.full(len(p), i, dtype=np.int16)) for i, p in enumerate(parts)]
        ds = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    else:
        ds = _load_one(cfg, where, streaming, cache_dir)
    limit = {"train": cfg.limit_train, "valid": cfg.limit_valid}.get(split, 0)
    if limit:
        ds = ds.take(limit) if streaming else ds.select(range(min(limit, len(ds))))
    return ds


def _load_one(cfg: DataConfig, where: str, streaming: bool, cache_dir: str | None = None):
    if cfg.source == "text":
        ds = _text_source(cfg, where, streaming, cache_dir)
    elif cfg.source in ("tsv", "csv", "jsonl"):
        ds = _file_source(cfg, where, streaming, cache_dir)
    elif cfg.source == "hub":
        ds = _hub_source(cfg, where, streaming, cache_dir)
    else:
        pairs = toy_reverse_split(where) if cfg.source == "toy_reverse" else hsk_split(where)
        ds = datasets.Dataset.from_dict({"src": [p[0] for p in pairs], "tgt": [p[1] for p in pairs]})
        ds = ds.to_iterable_dataset() if streaming else ds
    return ds


# ------------------------------------------------------------------------------------------------
# Cleaning and tokenisation
# ------------------------------------------------------------------------------------------------


def _encode(batch: dict[str, list], tokenizer: Tokenizer, tags: list[str] | None = None,
            domain: str | None = None) -> dict[str, list]:
    """Tokenise; the sources of a tagged corpus (`tags`: per corpus, by the `corpus` column) or of
    one `domain` start with their domain's tag."""
    src = [s.strip() for s in batch["src"]]
    tgt = [t.strip() for t in batch["tgt"]]
    if tags:
        tag_ids = [tokenizer.domain_id(t) if t else None for t in tags]
        rows = tokenizer.encode_src(src)
        src_ids = [[tag_ids[c], *row] if row and tag_ids[c] is not None else row for c, row in zip(batch["corpus"], rows)]
    else:
        src_ids = tokenizer.encode_src(src, domain=domain)
    return {"src": src, "tgt": tgt, "src_ids": src_ids, "tgt_ids": tokenizer.encode_tgt(tgt)}


def drop_reasons(src_lens: np.ndarray, tgt_lens: np.ndarray, *, max_len: int, max_len_ratio: float,
                 matched: np.ndarray | None = None) -> np.ndarray:
    """Per pair '' (kept) or why it is dropped: empty, pattern (`matched`: the pair matched
    data.drop_pattern), too_long or ratio (first rule that applies)."""
    src_lens, tgt_lens = np.asarray(src_lens, dtype=np.int64), np.asarray(tgt_lens, dtype=np.int64)
    why = np.full(len(src_lens), "", dtype="<U8")
    shorter = np.maximum(np.minimum(src_lens, tgt_lens), 1)
    why[np.maximum(src_lens, tgt_lens) / shorter > max_len_ratio] = "ratio"
    why[(src_lens > max_len) | (tgt_lens > max_len)] = "too_long"
    if matched is not None:
        why[np.asarray(matched, dtype=bool)] = "pattern"
    why[(src_lens == 0) | (tgt_lens == 0)] = "empty"
    return why


def dropped_by_pattern(pattern: str | None):
    """A test (src, tgt) -> bool: whether data.drop_pattern drops the pair (either side, stripped,
    matches it as a whole); None without a pattern."""
    if not pattern:
        return None
    match = re.compile(pattern).fullmatch
    return lambda src, tgt: match(src.strip()) is not None or match(tgt.strip()) is not None


def pattern_matches(pattern: str | None, src: Sequence[str], tgt: Sequence[str]) -> np.ndarray | None:
    """(N,) bool: the pairs data.drop_pattern drops; None without a pattern."""
    dropped = dropped_by_pattern(pattern)
    if dropped is None:
        return None
    return np.fromiter((dropped(s, t) for s, t in zip(src, tgt)), dtype=bool, count=len(src))


def training_pairs(cfg: DataConfig, *, streaming: bool = False) -> Iterator[dict[str, str]]:
    """The raw training pairs that data.drop_pattern keeps (what the tokenizer is trained on)."""
    dropped = dropped_by_pattern(cfg.drop_pattern)
    for ex in load_raw(cfg, "train", streaming=streaming):
        if dropped is None or not dropped(ex["src"], ex["tgt"]):
            yield ex


def column_lengths(ds, column: str) -> np.ndarray:
    """Lengths of a list column, read from Arrow (no Python object per row)."""
    import pyarrow.compute as pc

    return pc.list_value_length(ds.with_format("arrow")[column]).to_numpy(zero_copy_only=False)


@dataclass
class CleanStats:
    read: int = 0
    empty: int = 0
    too_long: int = 0
    ratio: int = 0
    pattern: int = 0

    @property
    def kept(self) -> int:
        return self.read - self.empty - self.too_long - self.ratio - self.pattern

    def add(self, reasons: np.ndarray) -> None:
        self.read += len(reasons)
        for name in ("empty", "too_long", "ratio", "pattern"):
            setattr(self, name, getattr(self, name) + int((reasons == name).sum()))

    def __str__(self) -> str:
        matched = f", {self.pattern} matching data.drop_pattern" if self.pattern else ""
        return (f"read {self.read}, kept {self.kept}; dropped {self.empty} empty, "
                f"{self.too_long} over max_len, {self.ratio} over max_len_ratio{matched}")


def encode_and_clean(ds, tokenizer: Tokenizer, cfg: DataConfig, *, max_len: int | None = None,
                     domain: str | None = None, drop_pattern: bool = True):
    """Tokenise with `map` (num_proc workers, Arrow-cached) and drop bad pairs, counting them.
    Domain tags: by corpus (`data.train_tags`, where `ds` has the `corpus` column), else `domain`.
    `drop_pattern`: apply data.drop_pattern (training data; not valid or test)."""
    max_len = cfg.max_len if max_len is None else max_len
    tags = cfg.train_tags if cfg.train_tags and "corpus" in ds.column_names else None
    if tags:
        for tag in dict.fromkeys(t for t in tags if t):
            tokenizer.domain_id(tag)  # an unknown one fails here, once, not in every map worker
    ds = ds.map(partial(_encode, tokenizer=tokenizer, tags=tags, domain=domain), batched=True, batch_size=1000,
                num_proc=cfg.num_proc if cfg.num_proc > 1 and len(ds) > 10000 else None)
    matched = pattern_matches(cfg.drop_pattern, ds["src"], ds["tgt"]) if drop_pattern else None
    reasons = drop_reasons(column_lengths(ds, "src_ids"), column_lengths(ds, "tgt_ids"), max_len=max_len,
                           max_len_ratio=cfg.max_len_ratio, matched=matched)
    stats = CleanStats()
    stats.add(reasons)
    return ds.select(np.flatnonzero(reasons == "")), stats


class SampledSegmentation:
    """Subword regularisation (`tokenizer.sampling_alpha`; Kudo, 2018, l-best sampling): each epoch,
    every training sentence is cut into one of its `nbest` best segmentations under the unigram
    model, drawn with probability proportional to P(x)^alpha by a generator seeded with (seed,
    epoch, side): a resumed run, each loader worker and the sampler draw the same pieces. Pairs
    keep their places and domain tags (`tags`: per pair its tag's id, or -1); a segmentation
    longer than `max_len` (with the tag) is not drawn, the best one always may be. A sentence that
    an epoch draws more than once (data.train_weights above 1) has the same pieces each time. The
    candidates are found once, at the start; they take about `nbest` times the memory of the
    corpus's pieces, plus `nbest` floats per sentence and side (in-memory corpora only).

    The sampler batches an epoch by that epoch's lengths (`lengths`); BatchView reads the pieces
    of the epoch set last (`rows`). Setting the epoch draws it, so loader workers forked after
    that inherit the draw."""

    def __init__(self, ds, tokenizer: Tokenizer, *, alpha: float, nbest: int, seed: int, max_len: int,
                 tags: np.ndarray | None = None) -> None:
        src, tgt = [s.strip() for s in ds["src"]], [t.strip() for t in ds["tgt"]]
        self.nbest = (tokenizer.nbest_src(src, nbest), tokenizer.nbest_tgt(tgt, nbest))
        self.seed, self.tags, self.epoch = seed, tags, 0
        tagged = np.zeros(len(src), np.int64) if tags is None else (tags >= 0).astype(np.int64)
        limits = (max_len - tagged, np.full(len(tgt), max_len))  # per sentence; a tag takes a source position
        self._logits = [self._logits_of(found, nbest, limit, alpha) for found, limit in zip(self.nbest, limits)]
        self._drawn: tuple[int, list[np.ndarray]] | None = None

    @staticmethod
    def _logits_of(found: NBest, nbest: int, max_len: np.ndarray, alpha: float) -> np.ndarray:
        """(texts, nbest) float32: alpha * log P of each text's candidates, best first; -inf where
        a text has fewer candidates or one is longer than `max_len` (per text), but never the best."""
        counts, column = np.diff(found.first), np.arange(nbest)
        if len(counts) and counts.min() < 1:
            raise DataError("subword sampling: a training sentence has no segmentation")
        exists = column[None, :] < counts[:, None]
        candidates = np.where(exists, found.first[:-1, None] + column[None, :], found.first[:-1, None])
        limit = max_len[:, None]
        allowed = exists & ((np.diff(found.starts)[candidates] <= limit) | (column[None, :] == 0))
        return np.where(allowed, alpha * found.scores[candidates], -np.inf).astype(np.float32)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.drawn(epoch)

    def drawn(self, epoch: int) -> list[np.ndarray]:
        """Per side, the segmentation (index into its NBest) each sentence takes in `epoch`, by
        Gumbel-max: the argmax of logits plus Gumbel noise is a draw from their softmax."""
        if self._drawn is None or self._drawn[0] != epoch:
            picks = []
            for side, (found, logits) in enumerate(zip(self.nbest, self._logits)):
                noise = np.random.default_rng([self.seed, epoch, side]).gumbel(size=logits.shape)
                picks.append(found.first[:-1] + np.argmax(logits + noise, axis=1))
            self._drawn = (epoch, picks)
        return self._drawn[1]

    def lengths(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Source and target lengths of every pair in `epoch`, which becomes the current epoch."""
        self.set_epoch(epoch)
        src, tgt = (np.diff(found.starts)[pick] for found, pick in zip(self.nbest, self.drawn(epoch)))
        return (src if self.tags is None else src + (self.tags >= 0)), tgt

    def rows(self, indices: list[int]) -> tuple[list[list[int]], list[list[int]]]:
        """The source and target ids of pairs `indices` in the current epoch."""
        (src_found, tgt_found), (src_pick, tgt_pick) = self.nbest, self.drawn(self.epoch)
        src = [src_found.segmentation(int(src_pick[i])) for i in indices]
        if self.tags is not None:
            src = [[int(self.tags[i]), *row] if self.tags[i] >= 0 else row for i, row in zip(indices, src)]
        return src, [tgt_found.segmentation(int(tgt_pick[i])) for i in indices]


# ------------------------------------------------------------------------------------------------
# Batching
# ------------------------------------------------------------------------------------------------


class TokenBatchSampler:
    """Length-bucketed batches of at most `max_tokens`, in shuffled order, one share per rank.

    The order is a pure function of (seed, epoch): sentences are sorted by length with random
    tie-breaking, cut into batches, the batches shuffled, and rank r takes batches r, r+W, r+2W...
    When the number of batches does not divide by W, the largest batches are split in two until
    it does: every rank gets the same number of batches (DDP never waits on a missing one), the
    shares are disjoint and together they hold every sentence once. `skip(n)` drops the first n
    batches of the next epoch: a run resumed mid-epoch sees exactly the unseen batches.

    Memory is one int32 index per sentence plus a start and end per batch (numpy, no Python list
    per sentence), so 10M sentences cost about 40 MB here.

    Weighted corpora (`corpus`: which corpus each sentence is from, `weights`: one per corpus):
    an epoch first draws its sentences, weight w taking every sentence of its corpus floor(w)
    times plus a random share w - floor(w) of them without repeats (a different share each
    epoch, still a pure function of (seed, epoch)), then batches that draw as above.

    Subword regularisation (`segmentation`, a SampledSegmentation): each epoch is batched by the
    lengths of that epoch's segmentation, and setting the epoch here sets it there.
    """

    def __init__(self, src_lens: np.ndarray, tgt_lens: np.ndarray, *, max_tokens: int,
                 max_sentences: int = 0, shuffle: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1, corpus: np.ndarray | None = None,
                 weights: Sequence[float] = (), segmentation: SampledSegmentation | None = None) -> None:
        self.src_lens, self.tgt_lens = np.asarray(src_lens), np.asarray(tgt_lens)
        self.segmentation = segmentation
        self.max_tokens, self.max_sentences = max_tokens, max_sentences
        self.shuffle, self.seed, self.rank, self.world_size = shuffle, seed, rank, world_size
        self.epoch, self._skip = 0, 0
        self._plan: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None
        self.weights = tuple(float(w) for w in weights)
        self._members: list[np.ndarray] = []  # per corpus: the indices of its sentences
        if self.weights:
            if corpus is None or len(corpus) != len(self.src_lens):
                raise ValueError("weighted corpora need the corpus of every sentence")
            corpus = np.asarray(corpus)
            self._members = [np.flatnonzero(corpus == c) for c in range(len(self.weights))]
        per_epoch = self.epoch_size()
        if per_epoch == 0:
            raise DataError(f"the training weights {list(self.weights)} draw no sentence per epoch "
                            f"(corpus sizes {[len(m) for m in self._members]})")
        if world_size > 1 and per_epoch < world_size:
            raise DataError(f"{per_epoch} training pair(s) cannot be shared among {world_size} processes")

    def epoch_size(self) -> int:
        """Sentences one epoch draws (over all ranks)."""
        if not self.weights:
            return len(self.src_lens)
        return sum(drawn_per_epoch(len(m), w) for w, m in zip(self.weights, self._members))

    def _draw(self, rng: np.random.Generator) -> np.ndarray | None:
        """This epoch's sentences (indices, with repeats for weights above 1); None: each once."""
        if not self.weights:
            return None
        parts = []
        for w, members in zip(self.weights, self._members):
            parts += [members] * int(w)
            share = drawn_per_epoch(len(members), w - int(w))
            if share:
                parts.append(np.sort(rng.choice(members, share, replace=False)))
        return np.concatenate(parts)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.segmentation is not None:
            self.segmentation.set_epoch(epoch)

    def skip(self, n_batches: int) -> None:
        self._skip = n_batches

    def plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(order, starts, ends): this rank's batches of `epoch` are order[starts[i]:ends[i]]."""
        if self._plan and self._plan[0] == epoch:
            return self._plan[1:]
        rng = np.random.default_rng([self.seed, epoch])
        drawn = self._draw(rng)
        src_lens, tgt_lens = (self.src_lens, self.tgt_lens) if self.segmentation is None else self.segmentation.lengths(epoch)
        if drawn is not None:
            src_lens, tgt_lens = src_lens[drawn], tgt_lens[drawn]
        order, widths = bucket_order(src_lens, tgt_lens, rng if self.shuffle else None)
        starts = batch_starts(src_lens, tgt_lens, order, max_tokens=self.max_tokens,
                              max_sentences=self.max_sentences, widths=widths)
        del widths
        ends = np.append(starts[1:], len(src_lens))
        if drawn is not None:
            order = drawn[order]  # positions in the draw -> sentences of the dataset
        if self.world_size > 1 and len(starts) % self.world_size:
            starts, ends = _split_largest(starts, ends, self.world_size - len(starts) % self.world_size)
        pick = rng.permutation(len(starts)) if self.shuffle else np.arange(len(starts))
        pick = pick[self.rank::self.world_size]
        self._plan = (epoch, order, starts[pick], ends[pick])
        return self._plan[1:]

    def batches(self, epoch: int) -> list[list[int]]:
        order, starts, ends = self.plan(epoch)
        return [order[a:b].tolist() for a, b in zip(starts.tolist(), ends.tolist())]

    def __iter__(self) -> Iterator[list[int]]:
        start, self._skip = self._skip, 0
        order, starts, ends = self.plan(self.epoch)
        for a, b in zip(starts[start:].tolist(), ends[start:].tolist()):
            yield order[a:b].tolist()

    def __len__(self) -> int:
        return len(self.plan(self.epoch)[1])


def _split_largest(starts: np.ndarray, ends: np.ndarray, n_more: int) -> tuple[np.ndarray, np.ndarray]:
    """Split the n_more batches with the most sentences in two halves (each then fits max_tokens)."""
    sizes = ends - starts
    while n_more > 0:
        biggest = np.argsort(-sizes, kind="stable")[:n_more]
        biggest = biggest[sizes[biggest] > 1]
        if len(biggest) == 0:
            raise DataError("too few training sentences to give every process the same number of batches")
        middle = starts[biggest] + sizes[biggest] // 2
        starts = np.sort(np.concatenate([starts, middle]))
        ends = np.append(starts[1:], ends[-1])
        sizes, n_more = ends - starts, n_more - len(biggest)
    return starts, ends


def collate(examples: dict[str, list]) -> dict[str, Any]:
    """Columns of one batch -> padded tensors. src gets EOS; tgt_in = BOS + y, tgt_out = y + EOS.
    Prepared data stores no text: src_text/tgt_text are then None (training does not use them)."""
    src = [list(ids) + [EOS_ID] for ids in examples["src_ids"]]
    tgt_in = [[BOS_ID] + list(ids) for ids in examples["tgt_ids"]]
    tgt_out = [list(ids) + [EOS_ID] for ids in examples["tgt_ids"]]
    return {
        "src": _pad(src),  # (B, S)
        "tgt_in": _pad(tgt_in),  # (B, T)
        "tgt_out": _pad(tgt_out),  # (B, T)
        "src_text": examples.get("src"),
        "tgt_text": examples.get("tgt"),
    }


def _pad(seqs: list[list[int]]) -> torch.Tensor:
    out = torch.full((len(seqs), max(len(s) for s in seqs)), PAD_ID, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


MADV_DONTNEED = 4  # Linux <sys/mman.h>


def _file_mappings(paths: set[str], table: str = "maps") -> list[tuple[int, int, int]]:
    """(start, end, resident kB) of this process's read-only mappings of `paths`, from
    /proc/self/maps (cheap; resident unknown: -1) or /proc/self/smaps (a few ms in a torch
    process; for diagnostics and tests). Empty where /proc is missing (not Linux)."""
    found: list[list[int]] = []
    current: list[int] | None = None
    try:
        with open(f"/proc/self/{table}", encoding="utf-8") as f:
            for line in f:
                head = line.split(maxsplit=5)
                if ":" not in head[0] and len(head) >= 5:  # a mapping: range perms offset dev inode [path]
                    current = None
                    if len(head) == 6 and head[5].rstrip("\n") in paths and "w" not in head[1]:
                        start, end = (int(x, 16) for x in head[0].split("-"))
                        current = [start, end, -1]
                        found.append(current)
                elif current is not None and head[0] == "Rss:":
                    current[2] = int(head[1])
    except OSError:
        return []
    return [(a, b, kb) for a, b, kb in found]


def _cache_paths(ds: datasets.Dataset) -> set[str]:
    return {os.path.realpath(f["filename"]) for f in ds.cache_files}


def mapped_corpus_kb(ds: datasets.Dataset) -> int:
    """Resident kB of `ds`'s memory-mapped Arrow files in this process (page cache mapped in)."""
    return sum(kb for _, _, kb in _file_mappings(_cache_paths(ds), "smaps"))


def release_mapped_pages(ds: datasets.Dataset) -> int:
    """Unmap from this process the pages of `ds`'s memory-mapped Arrow files that reading has
    mapped in; returns the number of mappings advised. The pages stay in the page cache (shared,
    clean), so the next read maps them again without I/O. Without this, RSS grows with the corpus
    as random batches touch it (fault-around maps 64 kB per touched page). Only read-only
    mappings of the dataset's own cache files are touched (MADV_DONTNEED on them loses nothing)."""
    paths = _cache_paths(ds)
    mappings = _file_mappings(paths) if paths else []
    if not mappings:
        return 0
    madvise = _madvise()
    return sum(madvise(start, end - start, MADV_DONTNEED) == 0 for start, end, _ in mappings)


@functools.cache
def _madvise():
    """libc's madvise, loaded once per process (Linux only: reached only when /proc lists mappings)."""
    import ctypes  # noqa: PLC0415

    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return madvise


class BatchView(torch.utils.data.Dataset):
    """Indexable by a list of indices (one batch from the sampler) -> a collated batch.

    Every `release_every` batches (default 4) it unmaps the corpus pages its reads mapped in
    (`release_mapped_pages`), so the run's RSS does not grow with the corpus (docs/scale.md).
    With a `segmentation` (subword regularisation) the ids are those of its current epoch."""

    def __init__(self, ds: datasets.Dataset, release_every: int = 4,
                 segmentation: SampledSegmentation | None = None) -> None:
        self.ds, self.release_every, self._served = ds, release_every, 0
        self.segmentation = segmentation

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, indices: list[int]) -> dict[str, Any]:
        rows = self.ds[indices]
        if self.segmentation is not None:
            src, tgt = self.segmentation.rows(indices)
            rows = {**rows, "src_ids": src, "tgt_ids": tgt}
        batch = {**collate(rows), "index": list(indices)}  # index: position in the dataset
        self._served += 1  # counted per process: each loader worker has its own copy and mappings
        if self.release_every and self._served % self.release_every == 0:
            release_mapped_pages(self.ds)
        return batch


class StreamingBatches(torch.utils.data.IterableDataset):
    """Batches from an iterable dataset: read `buffer` examples ahead, tokenise, drop bad pairs,
    sort by length, cut into token batches and yield them in shuffled order. Memory is bounded by
    the buffer, so corpora larger than memory work.

    Shares: the stream is split among the ranks and, within a rank, among its DataLoader workers
    (`datasets.distributed.split_dataset_by_node` with rank * workers + worker of ranks * workers),
    so no two workers anywhere yield the same pair. Passes: each pass reshuffles (the shuffle
    buffer and the shard order take the pass as their epoch); by default the stream repeats
    forever and `trainer.max_steps`/`max_time` end training: streamed shares differ in length, so
    a rank that ran out at the end of a pass would leave the others waiting in an all-reduce.
    Resume: `skip` batches are read and dropped again (each worker drops its round-robin share),
    which is exact but costs the reading time; the prepared path (`data.prepared_dir`) resumes at
    once.
    """

    def __init__(self, ds, tokenizer: Tokenizer, cfg: DataConfig, *, seed: int, rank: int = 0,
                 world_size: int = 1, passes: int | None = None) -> None:
        self.ds, self.rank, self.world_size = ds, rank, world_size
        self.tokenizer, self.cfg, self.seed, self.passes = tokenizer, cfg, seed, passes
        self.skip = 0  # batches this rank's loader already delivered
        self.stats = CleanStats()

    def _share(self) -> tuple[Any, int, int]:
        """This reader's share of the stream, its role and the number of workers. The DataLoader
        takes batches from workers 0, 1, 2... in turn, starting at 0 each time; after `skip`
        batches the next one was due from worker skip % W, so worker w of a resumed loader plays
        the role of worker (w + skip) % W of the first one."""
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        role = (worker + self.skip) % workers
        share = split_dataset_by_node(self.ds, rank=self.rank * workers + role, world_size=self.world_size * workers)
        return share, role, workers

    def _flush(self, buffer: list[dict], rng: random.Random) -> Iterator[dict[str, Any]]:
        src_lens = np.array([len(ex["src_ids"]) for ex in buffer])
        tgt_lens = np.array([len(ex["tgt_ids"]) for ex in buffer])
        batches = make_batches(src_lens, tgt_lens, max_tokens=self.cfg.max_tokens,
                               max_sentences=self.cfg.max_sentences)
        rng.shuffle(batches)
        for batch in batches:
            yield collate({key: [buffer[i][key] for i in batch] for key in buffer[0]})

    def _one_pass(self, share, pass_: int, worker: int) -> Iterator[dict[str, Any]]:
        rng = random.Random(f"{self.seed}-{pass_}-{self.rank}-{worker}")
        ds = share.shuffle(seed=self.seed, buffer_size=self.cfg.stream_buffer)
        ds.set_epoch(pass_)
        buffer: list[dict] = []
        for raw in ds.iter(batch_size=1000):
            encoded = _encode(raw, self.tokenizer)
            why = drop_reasons(np.array([len(x) for x in encoded["src_ids"]]),
                               np.array([len(x) for x in encoded["tgt_ids"]]),
                               max_len=self.cfg.max_len, max_len_ratio=self.cfg.max_len_ratio,
                               matched=pattern_matches(self.cfg.drop_pattern, encoded["src"], encoded["tgt"]))
            self.stats.add(why)
            buffer += [{key: encoded[key][i] for key in encoded} for i in np.flatnonzero(why == "")]
            if len(buffer) >= self.cfg.stream_buffer:
                yield from self._flush(buffer, rng)
                buffer = []
        if buffer:
            yield from self._flush(buffer, rng)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        share, worker, workers = self._share()
        to_skip = max(0, -(-(self.skip - worker) // workers))  # role w delivered the i < skip with i % W == w
        pass_ = 0
        while self.passes is None or pass_ < self.passes:
            empty = True
            for batch in self._one_pass(share, pass_, worker):
                empty = False
                if to_skip:
                    to_skip -= 1
                    continue
                yield batch
            if empty:
                raise DataError(f"rank {self.rank}, loader worker {worker}: no training pair in its share of the "
                                f"stream (fewer stream shards or pairs than the {self.world_size * workers} readers?)")
            pass_ += 1


# ------------------------------------------------------------------------------------------------
# Prepared data: the training split tokenised once, lengths stored (data.prepared_dir)
# ------------------------------------------------------------------------------------------------

PREPARED_FORMAT = 1
# The settings a prepared directory depends on; a run whose config differs in one of them must not use it.
PREPARED_DATA_KEYS = ("source", "src_lang", "tgt_lang", "train", "src_field", "tgt_field", "hub_name", "hub_config",
                      "skip_invalid_utf8", "limit_train", "max_len", "max_len_ratio", "drop_pattern")


@dataclass
class Prepared:
    """An opened prepared directory: the Arrow dataset (memory-mapped), the lengths and the stats."""

    path: Path
    dataset: datasets.Dataset  # columns src_ids, tgt_ids (uint16 when the vocabulary allows)
    src_lens: np.ndarray  # (N,) subword tokens per source sentence, without EOS
    tgt_lens: np.ndarray  # (N,)
    stats: CleanStats
    meta: dict

    def tokenizer(self) -> Tokenizer:
        return Tokenizer.load(self.path / "tokenizer")


def prepared_settings(cfg: ExperimentConfig) -> dict[str, Any]:
    d = cfg.data
    return {"data": {key: getattr(d, key) for key in PREPARED_DATA_KEYS}, "tokenizer": dataclasses.asdict(cfg.tokenizer)}


def _encoded_rows(shards: list[int], *, cfg: DataConfig, n_readers: int, tokenizer: Tokenizer,
                  work_dir: str) -> Iterator[dict[str, list[int]]]:
    """One preparation process: read its share of the training stream, tokenise, clean, yield rows."""
    for shard in shards:
        stream = split_dataset_by_node(load_raw(cfg, "train", streaming=True), rank=shard, world_size=n_readers)
        stats = CleanStats()
        for raw in stream.iter(batch_size=2000):
            encoded = _encode(raw, tokenizer)
            src_ids, tgt_ids = encoded["src_ids"], encoded["tgt_ids"]
            why = drop_reasons(np.array([len(x) for x in src_ids]), np.array([len(x) for x in tgt_ids]),
                               max_len=cfg.max_len, max_len_ratio=cfg.max_len_ratio,
                               matched=pattern_matches(cfg.drop_pattern, encoded["src"], encoded["tgt"]))
            stats.add(why)
            for i in np.flatnonzero(why == "").tolist():
                yield {"src_ids": src_ids[i], "tgt_ids": tgt_ids[i]}
        Path(work_dir, f"stats-{shard}.json").write_text(json.dumps(dataclasses.asdict(stats)), encoding="utf-8")


def _tokenizer_sample(cfg: ExperimentConfig, n_pairs: int) -> tuple[list[str], list[str]]:
    """A sample of the training pairs for SentencePiece: the stream shuffled (shard order and a
    10k-pair buffer), its first n_pairs. Reads about n_pairs, not the corpus."""
    stream = load_raw(cfg.data, "train", streaming=True).shuffle(seed=cfg.tokenizer.seed, buffer_size=10_000)
    dropped = dropped_by_pattern(cfg.data.drop_pattern)
    src, tgt = [], []
    for raw in stream.iter(batch_size=1000):
        for s, t in zip(raw["src"], raw["tgt"]):
            if dropped is None or not dropped(s, t):
                src.append(s)
                tgt.append(t)
        if len(src) >= n_pairs:
            break
    return src[:n_pairs], tgt[:n_pairs]


SMALL_CORPUS_BYTES = 16 * 2**20  # text training files below this are prepared in one process


def _text_bytes(d: DataConfig) -> int | None:
    """Bytes of the training text files (source and target), or None for other sources."""
    if d.source != "text":
        return None
    prefixes = d.train if isinstance(d.train, (list, tuple)) else [d.train]
    try:
        return sum(Path(f"{prefix}.{lang}").stat().st_size for prefix in prefixes for lang in (d.src_lang, d.tgt_lang))
    except (OSError, TypeError):
        return None


def prepare_corpus(cfg: ExperimentConfig, out: Path, *, tokenizer: Tokenizer | None = None,
                   say=print) -> Prepared:
    """Tokenise the training split once into `out` (what `nmt-prepare` does):

        out/tokenizer/     SentencePiece model(s), trained on a sample (or the given tokenizer)
        out/train/         Arrow dataset (datasets.save_to_disk): src_ids, tgt_ids of the kept pairs
        out/lengths.npy    (N, 2) source and target lengths: start-up never re-reads the corpus
        out/meta.json      the settings it was made with, counts, cleaning stats, timings

    `data.num_proc` processes read disjoint shares of the corpus (its files, or every n-th pair)
    and write their rows through `datasets.Dataset.from_generator`. Everything is built in
    `out.partial/` and renamed to `out` at the end, so a killed preparation leaves no directory
    that looks finished; it is started again from the beginning.
    """
    import fcntl

    out.parent.mkdir(parents=True, exist_ok=True)
    lock = open(out.with_name(out.name + ".lock"), "w")  # noqa: SIM115  (held until the function returns)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise DataError(f"{out}: another process is preparing it (lock {lock.name}); wait for it") from None
    try:
        return _prepare_locked(cfg, out, tokenizer, say)
    finally:
        lock.close()


def _prepare_locked(cfg: ExperimentConfig, out: Path, tokenizer: Tokenizer | None, say) -> Prepared:
    t0 = time.perf_counter()
    d = cfg.data
    partial_dir = out.with_name(out.name + ".partial")
    shutil.rmtree(partial_dir, ignore_errors=True)
    work = partial_dir / ".work"
    work.mkdir(parents=True)
    if tokenizer is None:
        n_pairs = cfg.tokenizer.input_sentence_size // (2 if cfg.tokenizer.joint else 1)
        say(f"nmt-prepare: training the tokenizer on a sample of up to {n_pairs:,} pairs")
        src, tgt = _tokenizer_sample(cfg, n_pairs)
        tokenizer = train_tokenizer(src, tgt, cfg.tokenizer)
        del src, tgt
    tokenizer.save(partial_dir / "tokenizer")
    (partial_dir / "tokenizer" / "DONE").touch()
    t_tok = time.perf_counter()
    id_type = "uint16" if max(tokenizer.src_vocab_size, tokenizer.tgt_vocab_size) <= 65536 else "int32"
    features = datasets.Features({"src_ids": datasets.Sequence(datasets.Value(id_type)),
                                  "tgt_ids": datasets.Sequence(datasets.Value(id_type))})
    n_readers = max(1, d.num_proc)
    size = _text_bytes(d)
    if n_readers > 1 and size is not None and size < SMALL_CORPUS_BYTES:
        # One process: forking costs more than it saves here, and datasets' pool can hang at its
        # exit on small inputs (huggingface/datasets#6393; it hung the tiny GPU check in CI).
        n_readers = 1
    say(f"nmt-prepare: tokenising the training split with {n_readers} process(es)")
    try:
        ds = datasets.Dataset.from_generator(
            _encoded_rows, features=features, cache_dir=str(work / "cache"), num_proc=n_readers if n_readers > 1 else None,
            gen_kwargs={"shards": list(range(n_readers)), "cfg": d, "n_readers": n_readers, "tokenizer": tokenizer,
                        "work_dir": str(work)})
    except ValueError as err:  # datasets: 'Instruction "train" corresponds to no data!' when nothing was kept
        ds, failure = None, err
    stats = CleanStats()
    for shard in range(n_readers):
        for key, value in json.loads((work / f"stats-{shard}.json").read_text(encoding="utf-8")).items():
            setattr(stats, key, getattr(stats, key) + value)
    if ds is None or len(ds) == 0:
        if stats.kept > 0:
            raise failure
        raise DataError(f"no training pairs left after cleaning ({stats})")
    ds.save_to_disk(str(partial_dir / "train"), max_shard_size="1GB")
    lengths = np.stack([column_lengths(ds, "src_ids"), column_lengths(ds, "tgt_ids")], axis=1)
    np.save(partial_dir / "lengths.npy", lengths.astype(np.uint16 if lengths.max() < 65536 else np.uint32))
    del ds
    shutil.rmtree(work)
    t_end = time.perf_counter()
    meta = {"format": PREPARED_FORMAT, "settings": prepared_settings(cfg), "pairs": int(len(lengths)),
            "stats": dataclasses.asdict(stats), "id_type": id_type,
            "src_tokens": int(lengths[:, 0].sum()), "tgt_tokens": int(lengths[:, 1].sum()),
            "seconds": {"tokenizer": round(t_tok - t0, 1), "encode_and_write": round(t_end - t_tok, 1)},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (partial_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    os.replace(partial_dir, out)
    say(f"nmt-prepare: {out}: {stats}; {meta['tgt_tokens']:,} target tokens, {t_end - t0:.0f} s")
    return open_prepared(out)


def open_prepared(path: Path, cfg: ExperimentConfig | None = None) -> Prepared:
    """Open a prepared directory (memory-mapped); with `cfg`, check it was made with its settings."""
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        raise DataError(f"{path} is not a prepared data directory (no meta.json): run nmt-prepare CONFIG first")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"{meta_file}: unreadable ({err})") from None
    if meta.get("format") != PREPARED_FORMAT:
        raise DataError(f"{path}: prepared data format {meta.get('format')!r}, this version reads {PREPARED_FORMAT}")
    if cfg is not None:
        ours = json.loads(json.dumps(prepared_settings(cfg)))  # lists and tuples as JSON has them
        for section, values in ours.items():
            for key, value in values.items():
                theirs = meta["settings"].get(section, {}).get(key)
                if theirs != value:
                    raise DataError(f"{path} was prepared with {section}.{key}={theirs!r} but the config has {value!r}: "
                                    "prepare again (nmt-prepare CONFIG) or set data.prepared_dir to another directory")
    try:
        ds = datasets.load_from_disk(str(path / "train"))
        lengths = np.load(path / "lengths.npy")
    except Exception as err:  # datasets and numpy raise several types for missing or damaged files
        raise DataError(f"{path}: damaged prepared data ({str(err).strip().splitlines()[0]}): prepare it again") from None
    if len(ds) != len(lengths) or len(ds) != meta["pairs"]:
        raise DataError(f"{path}: {len(ds)} rows but {len(lengths)} lengths: damaged, prepare it again")
    # Opening reads the header of every record batch, which maps ~64 kB of the file per batch
    # (0.6 GB of the 10M-pair corpus; peak RSS at start-up grew with the corpus): unmapped now.
    release_mapped_pages(ds)
    return Prepared(path, ds, lengths[:, 0], lengths[:, 1], CleanStats(**meta["stats"]), meta)


def drawn_per_epoch(n: int, weight: float) -> int:
    """Sentences a corpus of n gives one epoch at this weight: n * floor(w) + round(n * frac(w))."""
    return int(weight) * n + round((weight - int(weight)) * n)


def mix_summary(d: DataConfig, corpus: np.ndarray) -> str:
    """'A: 23,818 x 1 = 23,818; B: 27,028 x 0.25 = 6,757' for the weighted training corpora."""
    names = d.train if isinstance(d.train, list) else [d.train]
    sizes = np.bincount(corpus, minlength=len(names))
    return "; ".join(f"{name}: {n:,} x {w:g} = {drawn_per_epoch(n, w):,}"
                     for name, n, w in zip(names, sizes.tolist(), d.train_weights))


# ------------------------------------------------------------------------------------------------
# The Lightning DataModule
# ------------------------------------------------------------------------------------------------


def dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class TranslationDataModule(L.LightningDataModule):
    """Holds the tokenised splits and builds the loaders. The tokenizer is trained beforehand
    (`nmt.training.run.prepare_tokenizer`) so the model can be sized from its vocabulary.

    Training data comes three ways: prepared (`data.prepared_dir`: tokenised once, memory-mapped,
    lengths stored; for large corpora), in memory (tokenised at start through `datasets.map`,
    Arrow-cached) or streamed (`data.streaming`, tokenised on the fly)."""

    def __init__(self, cfg: ExperimentConfig, tokenizer: Tokenizer, prepared: Prepared | None = None) -> None:
        super().__init__()
        self.cfg, self.tokenizer, self.prepared = cfg, tokenizer, prepared
        self.train_ds: Any = None  # a datasets.Dataset (or the streamed corpus) once set up
        self.valid_ds: Any = None
        self.train_stats: CleanStats | None = None
        self.valid_stats: CleanStats | None = None
        self._train_sampler: TokenBatchSampler | None = None
        self._corpus: np.ndarray | None = None  # data.train_weights: the corpus of each training pair
        self._stream: StreamingBatches | None = None
        self.segmentation: SampledSegmentation | None = None  # tokenizer.sampling_alpha: pieces drawn anew each epoch

    def setup(self, stage: str | None = None) -> None:
        if self.valid_ds is not None:
            return
        d = self.cfg.data
        if self.prepared is not None:
            self.train_ds, self.train_stats = self.prepared.dataset, self.prepared.stats
            self._lengths = (self.prepared.src_lens, self.prepared.tgt_lens)
        elif d.streaming:
            self.train_raw = load_raw(d, "train", streaming=True)
        else:
            self.train_ds, self.train_stats = encode_and_clean(load_raw(d, "train"), self.tokenizer, d)
            if len(self.train_ds) == 0:
                raise DataError(f"no training pairs left after cleaning ({self.train_stats})")
            self._lengths = (column_lengths(self.train_ds, "src_ids"), column_lengths(self.train_ds, "tgt_ids"))
            if d.train_weights:
                self._corpus = self.train_ds.with_format("arrow")["corpus"].to_numpy()
                log.info("each epoch draws %s", mix_summary(d, self._corpus))
            tok = self.cfg.tokenizer
            if tok.sampling_alpha:
                tags = None
                if d.train_tags:  # per pair the id of its corpus's tag, -1 for an untagged corpus
                    ids = np.array([self.tokenizer.domain_id(t) if t else -1 for t in d.train_tags])
                    tags = ids[self.train_ds.with_format("arrow")["corpus"].to_numpy()]
                self.segmentation = SampledSegmentation(
                    self.train_ds, self.tokenizer, alpha=tok.sampling_alpha, nbest=tok.sampling_nbest,
                    seed=self.cfg.trainer.seed, max_len=d.max_len, tags=tags)
        # Validation keeps every non-empty pair up to the positional table's length.
        self.valid_ds, self.valid_stats = encode_and_clean(
            load_raw(d, "valid"), self.tokenizer, d, max_len=self.cfg.model.max_positions - 2,
            domain=self.cfg.decoding.domain or None, drop_pattern=False)
        if len(self.valid_ds) == 0:
            raise DataError(f"no validation pairs left after cleaning ({self.valid_stats})")

    @property
    def streaming(self) -> bool:
        return self.prepared is None and self.cfg.data.streaming

    def train_sampler(self) -> TokenBatchSampler:
        """One sampler per process group (its batch plan is computed once per epoch); asked before
        the Trainer starts the other processes, it is made again for the real rank and world size."""
        rank, world = dist_rank_world()
        s = self._train_sampler
        if s is None or (s.rank, s.world_size) != (rank, world):
            d = self.cfg.data
            self._train_sampler = TokenBatchSampler(
                *self._lengths, max_tokens=d.max_tokens, max_sentences=d.max_sentences, shuffle=True,
                seed=self.cfg.trainer.seed, rank=rank, world_size=world, corpus=self._corpus,
                weights=d.train_weights, segmentation=self.segmentation)
        return self._train_sampler  # type: ignore[return-value]  # set just above

    def train_dataloader(self) -> DataLoader:
        t = self.cfg.trainer
        # Its own generator: the loader draws a seed from it for each epoch's iterator, and from the
        # global RNG without one, which would shift dropout after an epoch-end checkpoint (the
        # resumed run makes that draw before LastCheckpoint restores the random state).
        workers: dict[str, Any] = {"num_workers": t.num_workers, "persistent_workers": False,
                   "generator": torch.Generator().manual_seed(t.seed)}
        if self.streaming:
            rank, world = dist_rank_world()
            self._stream = StreamingBatches(self.train_raw, self.tokenizer, self.cfg.data, seed=t.seed, rank=rank,
                                            world_size=world)
            self._stream.skip = self._seen_batches()
            return DataLoader(self._stream, batch_size=None, **workers)
        sampler = self.train_sampler()
        self._skip_seen_batches(sampler)
        return DataLoader(BatchView(self.train_ds, segmentation=self.segmentation), batch_size=None, sampler=sampler,
                          **workers)

    def _seen_batches(self) -> int:
        trainer = self.trainer
        return 0 if trainer is None else trainer.fit_loop.epoch_loop.batch_progress.current.processed  # type: ignore[attr-defined]

    def _skip_seen_batches(self, sampler: TokenBatchSampler) -> None:
        """On resume mid-epoch, Lightning restarts the loader; skip what the checkpoint had seen."""
        if self.trainer is None:
            return
        seen = self._seen_batches()
        sampler.set_epoch(self.trainer.current_epoch)
        if 0 < seen < len(sampler):
            sampler.skip(seen)

    def val_dataloader(self) -> DataLoader:
        """Every rank validates its share of the sentences (i = rank mod W), none dropped."""
        rank, world = dist_rank_world()
        mine = np.arange(rank, len(self.valid_ds), world)
        src_lens = column_lengths(self.valid_ds, "src_ids")[mine]
        tgt_lens = column_lengths(self.valid_ds, "tgt_ids")[mine]
        batches = make_batches(src_lens, tgt_lens, max_tokens=self.cfg.data.valid_max_tokens)
        batches = [mine[b].tolist() for b in batches]
        return DataLoader(BatchView(self.valid_ds), batch_size=None, sampler=batches)
