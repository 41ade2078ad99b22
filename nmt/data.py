"""Parallel data through `datasets`: loading, cleaning, token-bucket batching, the DataModule.

    raw split (src, tgt text) --clean--> tokenised (src_ids, tgt_ids) --TokenBatchSampler--> batches

Sources (`data.source`): line-aligned text files, TSV/CSV and JSONL with named fields, a Hugging
Face hub dataset (name/config/split + field mapping), the embedded HSK corpus and a synthetic
reverse task. Map-style datasets are cached as Arrow files by `datasets`; `data.streaming: true`
reads any source as an iterable and batches it from a bounded look-ahead buffer.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
from dataclasses import dataclass
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

import datasets
from datasets.distributed import split_dataset_by_node
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from nmt.batching import length_order, make_batches
from nmt.config import DataConfig, ExperimentConfig
from nmt.errors import DataError
from nmt.textio import check_text_file, decode_lines, read_text_lines  # noqa: F401  (re-exported)
from nmt.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer

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


def _text_source(cfg: DataConfig, prefix: str, streaming: bool):
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
    return datasets.Dataset.from_generator(_text_pairs, gen_kwargs=kwargs)


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


def _file_source(cfg: DataConfig, path: str, streaming: bool):
    file = Path(path)
    check_text_file(file)
    builder = {"tsv": "csv", "csv": "csv", "jsonl": "json"}[cfg.source]
    kwargs = {"delimiter": "\t", "quoting": 3} if cfg.source == "tsv" else {}  # 3 = csv.QUOTE_NONE
    try:
        ds = datasets.load_dataset(builder, data_files=str(file), split="train", streaming=streaming, **kwargs)
    except Exception as err:  # datasets wraps parser errors in several exception types
        raise DataError(f"{file}: cannot read as {cfg.source} ({str(err).strip().splitlines()[0]})") from None
    return _select_fields(ds, cfg, str(file))


def _hub_source(cfg: DataConfig, split: str, streaming: bool):
    try:
        ds = datasets.load_dataset(cfg.hub_name, cfg.hub_config, split=split, streaming=streaming)
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


def load_raw(cfg: DataConfig, split: str, *, streaming: bool = False):
    """One split as a `datasets` dataset with columns `src` and `tgt` (iterable if streaming).
    A list of corpora (`data.train: [a, b]`) is read in that order, one after the other."""
    where = getattr(cfg, split)
    if isinstance(where, list):
        parts = [_load_one(cfg, w, streaming) for w in where]
        ds = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    else:
        ds = _load_one(cfg, where, streaming)
    limit = {"train": cfg.limit_train, "valid": cfg.limit_valid}.get(split, 0)
    if limit:
        ds = ds.take(limit) if streaming else ds.select(range(min(limit, len(ds))))
    return ds


def _load_one(cfg: DataConfig, where: str, streaming: bool):
    if cfg.source == "text":
        ds = _text_source(cfg, where, streaming)
    elif cfg.source in ("tsv", "csv", "jsonl"):
        ds = _file_source(cfg, where, streaming)
    elif cfg.source == "hub":
        ds = _hub_source(cfg, where, streaming)
    else:
        pairs = toy_reverse_split(where) if cfg.source == "toy_reverse" else hsk_split(where)
        ds = datasets.Dataset.from_dict({"src": [p[0] for p in pairs], "tgt": [p[1] for p in pairs]})
        ds = ds.to_iterable_dataset() if streaming else ds
    return ds


# ------------------------------------------------------------------------------------------------
# Cleaning and tokenisation
# ------------------------------------------------------------------------------------------------


def _encode(batch: dict[str, list[str]], tokenizer: Tokenizer) -> dict[str, list]:
    src = [s.strip() for s in batch["src"]]
    tgt = [t.strip() for t in batch["tgt"]]
    return {"src": src, "tgt": tgt, "src_ids": tokenizer.encode_src(src), "tgt_ids": tokenizer.encode_tgt(tgt)}


def keep_pair(example: dict[str, Any], *, max_len: int, max_len_ratio: float) -> str:
    """'' if the pair is kept, else the reason it is dropped: empty, too_long or ratio."""
    ns, nt = len(example["src_ids"]), len(example["tgt_ids"])
    if ns == 0 or nt == 0:
        return "empty"
    if ns > max_len or nt > max_len:
        return "too_long"
    if max(ns, nt) / min(ns, nt) > max_len_ratio:
        return "ratio"
    return ""


@dataclass
class CleanStats:
    read: int = 0
    empty: int = 0
    too_long: int = 0
    ratio: int = 0

    @property
    def kept(self) -> int:
        return self.read - self.empty - self.too_long - self.ratio

    def __str__(self) -> str:
        return (f"read {self.read}, kept {self.kept}; dropped {self.empty} empty, "
                f"{self.too_long} over max_len, {self.ratio} over max_len_ratio")


def encode_and_clean(ds, tokenizer: Tokenizer, cfg: DataConfig, *, max_len: int | None = None):
    """Tokenise with `map` (num_proc workers, Arrow-cached) and drop bad pairs, counting them."""
    max_len = cfg.max_len if max_len is None else max_len
    ds = ds.map(partial(_encode, tokenizer=tokenizer), batched=True, batch_size=1000,
                num_proc=cfg.num_proc if cfg.num_proc > 1 and len(ds) > 10000 else None)
    check = partial(keep_pair, max_len=max_len, max_len_ratio=cfg.max_len_ratio)
    reasons = ds.map(lambda ex: {"why": check(ex)}, remove_columns=ds.column_names)["why"]
    stats = CleanStats(read=len(ds), empty=reasons.count("empty"), too_long=reasons.count("too_long"),
                       ratio=reasons.count("ratio"))
    kept = ds.select([i for i, why in enumerate(reasons) if not why])
    return kept, stats


# ------------------------------------------------------------------------------------------------
# Batching
# ------------------------------------------------------------------------------------------------


class TokenBatchSampler:
    """Length-bucketed batches of at most `max_tokens`, in shuffled order, one share per rank.

    The order is a pure function of (seed, epoch): sentences are sorted by length with random
    tie-breaking, cut into batches, the batches shuffled, and rank r takes batches r, r+W, r+2W...
    (all ranks get the same number, so DDP never waits on a missing batch). `skip(n)` drops the
    first n batches of the next epoch: a run resumed mid-epoch sees exactly the unseen batches.
    """

    def __init__(self, src_lens: np.ndarray, tgt_lens: np.ndarray, *, max_tokens: int,
                 max_sentences: int = 0, shuffle: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        self.src_lens, self.tgt_lens = np.asarray(src_lens), np.asarray(tgt_lens)
        self.max_tokens, self.max_sentences = max_tokens, max_sentences
        self.shuffle, self.seed, self.rank, self.world_size = shuffle, seed, rank, world_size
        self.epoch, self._skip = 0, 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip(self, n_batches: int) -> None:
        self._skip = n_batches

    def batches(self, epoch: int) -> list[list[int]]:
        if self._cache and self._cache[0] == epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, epoch])
        order = length_order(self.src_lens, self.tgt_lens, rng.random(len(self.src_lens)) if self.shuffle else None)
        all_batches = make_batches(self.src_lens, self.tgt_lens, max_tokens=self.max_tokens,
                                   max_sentences=self.max_sentences, order=order)
        if self.shuffle:
            all_batches = [all_batches[i] for i in rng.permutation(len(all_batches))]
        usable = len(all_batches) - len(all_batches) % self.world_size if self.world_size > 1 else len(all_batches)
        mine = all_batches[self.rank:usable:self.world_size]
        self._cache = (epoch, mine)
        return mine

    def __iter__(self) -> Iterator[list[int]]:
        start, self._skip = self._skip, 0
        yield from self.batches(self.epoch)[start:]

    def __len__(self) -> int:
        return len(self.batches(self.epoch))


def collate(examples: dict[str, list]) -> dict[str, Any]:
    """Columns of one batch -> padded tensors. src gets EOS; tgt_in = BOS + y, tgt_out = y + EOS."""
    src = [ids + [EOS_ID] for ids in examples["src_ids"]]
    tgt_in = [[BOS_ID] + ids for ids in examples["tgt_ids"]]
    tgt_out = [ids + [EOS_ID] for ids in examples["tgt_ids"]]
    return {
        "src": _pad(src),  # (B, S)
        "tgt_in": _pad(tgt_in),  # (B, T)
        "tgt_out": _pad(tgt_out),  # (B, T)
        "src_text": examples["src"],
        "tgt_text": examples["tgt"],
    }


def _pad(seqs: list[list[int]]) -> torch.Tensor:
    out = torch.full((len(seqs), max(len(s) for s in seqs)), PAD_ID, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


class BatchView(torch.utils.data.Dataset):
    """Indexable by a list of indices (one batch from the sampler) -> a collated batch."""

    def __init__(self, ds: datasets.Dataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, indices: list[int]) -> dict[str, Any]:
        return {**collate(self.ds[indices]), "index": list(indices)}  # index: position in the dataset


class StreamingBatches(torch.utils.data.IterableDataset):
    """Batches from an iterable dataset: read `buffer` examples ahead, tokenise, drop bad pairs,
    sort by length, cut into token batches and yield them in shuffled order. Memory is bounded by
    the buffer, so corpora larger than memory work. Under DDP each rank reads its own shard."""

    def __init__(self, ds, tokenizer: Tokenizer, cfg: DataConfig, *, seed: int, rank: int = 0,
                 world_size: int = 1) -> None:
        self.ds = split_dataset_by_node(ds, rank=rank, world_size=world_size)
        self.tokenizer, self.cfg, self.seed, self.epoch = tokenizer, cfg, seed, 0
        self.stats = CleanStats()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _flush(self, buffer: list[dict], rng: random.Random) -> Iterator[dict[str, Any]]:
        src_lens = np.array([len(ex["src_ids"]) for ex in buffer])
        tgt_lens = np.array([len(ex["tgt_ids"]) for ex in buffer])
        batches = make_batches(src_lens, tgt_lens, max_tokens=self.cfg.max_tokens,
                               max_sentences=self.cfg.max_sentences)
        rng.shuffle(batches)
        for batch in batches:
            yield collate({key: [buffer[i][key] for i in batch] for key in buffer[0]})

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rng = random.Random(f"{self.seed}-{self.epoch}")
        ds = self.ds.shuffle(seed=self.seed, buffer_size=self.cfg.stream_buffer)
        ds.set_epoch(self.epoch)
        buffer: list[dict] = []
        for raw in ds.iter(batch_size=1000):
            encoded = _encode(raw, self.tokenizer)
            for i in range(len(encoded["src"])):
                ex = {key: encoded[key][i] for key in encoded}
                self.stats.read += 1
                why = keep_pair(ex, max_len=self.cfg.max_len, max_len_ratio=self.cfg.max_len_ratio)
                if why:
                    setattr(self.stats, why, getattr(self.stats, why) + 1)
                    continue
                buffer.append(ex)
            if len(buffer) >= self.cfg.stream_buffer:
                yield from self._flush(buffer, rng)
                buffer = []
        if buffer:
            yield from self._flush(buffer, rng)


# ------------------------------------------------------------------------------------------------
# The Lightning DataModule
# ------------------------------------------------------------------------------------------------


def dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class TranslationDataModule(L.LightningDataModule):
    """Holds the tokenised splits and builds the loaders. The tokenizer is trained beforehand
    (`nmt.training.run.prepare_tokenizer`) so the model can be sized from its vocabulary."""

    def __init__(self, cfg: ExperimentConfig, tokenizer: Tokenizer) -> None:
        super().__init__()
        self.cfg, self.tokenizer = cfg, tokenizer
        self.train_ds = self.valid_ds = None
        self.train_stats = self.valid_stats = None
        self._train_sampler: TokenBatchSampler | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.valid_ds is not None:
            return
        d = self.cfg.data
        if d.streaming:
            self.train_raw = load_raw(d, "train", streaming=True)
        else:
            self.train_ds, self.train_stats = encode_and_clean(load_raw(d, "train"), self.tokenizer, d)
            if len(self.train_ds) == 0:
                raise DataError(f"no training pairs left after cleaning ({self.train_stats})")
        # Validation keeps every non-empty pair up to the positional table's length.
        self.valid_ds, self.valid_stats = encode_and_clean(
            load_raw(d, "valid"), self.tokenizer, d, max_len=self.cfg.model.max_positions - 2)
        if len(self.valid_ds) == 0:
            raise DataError(f"no validation pairs left after cleaning ({self.valid_stats})")

    def train_dataloader(self) -> DataLoader:
        rank, world = dist_rank_world()
        d, t = self.cfg.data, self.cfg.trainer
        if d.streaming:
            stream = StreamingBatches(self.train_raw, self.tokenizer, d, seed=t.seed, rank=rank, world_size=world)
            return DataLoader(stream, batch_size=None, num_workers=t.num_workers)
        self._train_sampler = TokenBatchSampler(
            np.array([len(x) for x in self.train_ds["src_ids"]]), np.array([len(x) for x in self.train_ds["tgt_ids"]]),
            max_tokens=d.max_tokens, max_sentences=d.max_sentences, shuffle=True, seed=t.seed,
            rank=rank, world_size=world)
        self._skip_seen_batches()
        return DataLoader(BatchView(self.train_ds), batch_size=None, sampler=self._train_sampler,
                          num_workers=t.num_workers)

    def _skip_seen_batches(self) -> None:
        """On resume mid-epoch, Lightning restarts the loader; skip what the checkpoint had seen."""
        trainer = self.trainer
        if trainer is None:
            return
        seen = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        self._train_sampler.set_epoch(trainer.current_epoch)
        if 0 < seen < len(self._train_sampler):
            self._train_sampler.skip(seen)

    def val_dataloader(self) -> DataLoader:
        """Every rank validates its share of the sentences (i = rank mod W), none dropped."""
        rank, world = dist_rank_world()
        mine = np.arange(rank, len(self.valid_ds), world)
        src_lens = np.array([len(x) for x in self.valid_ds["src_ids"]])[mine]
        tgt_lens = np.array([len(x) for x in self.valid_ds["tgt_ids"]])[mine]
        batches = make_batches(src_lens, tgt_lens, max_tokens=self.cfg.data.valid_max_tokens)
        batches = [mine[b].tolist() for b in batches]
        return DataLoader(BatchView(self.valid_ds), batch_size=None, sampler=batches)
