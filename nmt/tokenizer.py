"""SentencePiece subwords; the special ids are defined here and nowhere else.

A `Tokenizer` holds one model (joint vocabulary) or two (source and target), and the text
normalisation applied before them (`tokenizer.src_normalize` / `tgt_normalize`, e.g. Traditional ->
Simplified Chinese with OpenCC). Its state is the raw SentencePiece model bytes and the names of
the normalisation steps, so it is stored inside checkpoints as plain data, pickles cheaply into
`datasets.map` worker processes, and a checkpoint normalises its input at translation time exactly
as its training data was.

SentencePiece itself applies its default `nmt_nfkc` rule (NFKC plus whitespace clean-up) inside the
model, so full-width punctuation is already folded without an extra step.

Ids are the SentencePiece model's own, unless the tokenizer has a piece table (`vocab`, a list of
pieces whose index is the id): then the models only cut text into pieces, and both sides share
the table's ids, as models imported from Marian do (vocab.json; nmt/hf_marian.py), or the target
side has a table of its own (`tgt_vocab`: Marian's separate vocabularies, target_vocab.json). A
piece the table lacks is UNK.
"""

from __future__ import annotations

import io
import json
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np
import sentencepiece as spm

from nmt.config import TokenizerConfig

# The only definition of the special ids in the project.
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
SPECIAL_IDS = (PAD_ID, UNK_ID, BOS_ID, EOS_ID)


class TokenizerError(RuntimeError):
    pass


def _processor(model: bytes) -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_proto=model)


def _zh_hans() -> Callable[[str], str]:
    try:
        import opencc
    except ImportError:  # a dependency of the package; only a broken install lacks it
        raise TokenizerError("normalisation step 'zh_hans' needs OpenCC: pip install opencc") from None
    return opencc.OpenCC("t2s").convert  # Traditional -> Simplified characters (OpenCC's t2s table)


# Text normalisation steps by name (config: tokenizer.src_normalize / tgt_normalize), applied in order.
NORMALIZERS: dict[str, Callable[[], Callable[[str], str]]] = {
    "nfkc": lambda: lambda text: unicodedata.normalize("NFKC", text),
    "zh_hans": _zh_hans,
}


def _normalized(texts: list[str], normalize: Callable[[str], str] | None) -> list[str]:
    """`texts` through one side's normalisation steps (unchanged without any)."""
    return [normalize(t) for t in texts] if normalize else texts


def make_normalizer(steps: Iterable[str]) -> Callable[[str], str] | None:
    """The composition of the named steps, or None for no steps."""
    fns = []
    for name in steps:
        if name not in NORMALIZERS:
            raise TokenizerError(f"unknown normalisation step '{name}' (known: {', '.join(NORMALIZERS)})")
        fns.append(NORMALIZERS[name]())
    if not fns:
        return None

    def normalize(text: str) -> str:
        for fn in fns:
            text = fn(text)
        return text

    return normalize


@dataclass
class NBest:
    """The n best segmentations of many texts, flat: segmentation j is ids[starts[j]:starts[j+1]]
    with log-probability scores[j]; text t's are segmentations first[t] .. first[t+1]-1, best first."""

    ids: np.ndarray  # (total pieces,) int32
    starts: np.ndarray  # (segmentations + 1,)
    first: np.ndarray  # (texts + 1,)
    scores: np.ndarray  # (segmentations,)

    def segmentation(self, j: int) -> list[int]:
        return self.ids[self.starts[j]:self.starts[j + 1]].tolist()


class Tokenizer:
    """Source and target subword models (the same model when the vocabulary is joint), each
    preceded by its side's normalisation steps."""

    def __init__(self, *, src_model: bytes, tgt_model: bytes | None = None,
                 src_normalize: Iterable[str] = (), tgt_normalize: Iterable[str] = (),
                 vocab: list[str] | None = None, tgt_vocab: list[str] | None = None) -> None:
        self.src_model, self.tgt_model = src_model, tgt_model
        self.vocab = None if vocab is None else list(vocab)
        self.tgt_vocab = None if tgt_vocab is None else list(tgt_vocab)
        if self.tgt_vocab is not None and (self.vocab is None or tgt_model is None):
            raise TokenizerError("a target piece table needs a source piece table and a target model")
        for table in (self.vocab, self.tgt_vocab):
            if table is not None and tuple(table[:4]) != ("<pad>", "<unk>", "<s>", "</s>"):
                raise TokenizerError(f"a piece table starts with <pad>, <unk>, <s>, </s> (our ids 0-3), got {table[:4]}")
        self._index = None if self.vocab is None else {p: i for i, p in enumerate(self.vocab)}
        self._tgt_index = self._index if self.tgt_vocab is None else {p: i for i, p in enumerate(self.tgt_vocab)}
        self.src_normalize, self.tgt_normalize = list(src_normalize), list(tgt_normalize)
        self._src = _processor(src_model)
        self._tgt = self._src if tgt_model is None else _processor(tgt_model)
        self._norm_src, self._norm_tgt = make_normalizer(self.src_normalize), make_normalizer(self.tgt_normalize)
        self._domains: list[str] | None = None  # found on first use (`domains`)

    @property
    def joint(self) -> bool:
        """One id space for both sides (one model, or one piece table)."""
        return self.tgt_model is None or (self.vocab is not None and self.tgt_vocab is None)

    @property
    def src_vocab_size(self) -> int:
        return self._src.get_piece_size() if self.vocab is None else len(self.vocab)

    @property
    def tgt_vocab_size(self) -> int:
        return self._tgt.get_piece_size() if self.vocab is None else len(self._tgt_table)

    @property
    def _tgt_table(self) -> list[str]:
        assert self.vocab is not None
        return self.vocab if self.tgt_vocab is None else self.tgt_vocab

    def _encode(self, model: spm.SentencePieceProcessor, texts: list[str], index: dict[str, int] | None
                ) -> list[list[int]]:
        if index is None:
            return model.encode(texts)
        return [[index.get(p, UNK_ID) for p in pieces] for pieces in model.encode(texts, out_type=str)]

    def normalize_src(self, text: str) -> str:
        return self._norm_src(text) if self._norm_src else text

    def normalize_tgt(self, text: str) -> str:
        return self._norm_tgt(text) if self._norm_tgt else text

    def encode_src(self, texts: list[str], domain: str | None = None) -> list[list[int]]:
        """Source ids; with `domain`, each non-empty source starts with its tag (domain_id)."""
        ids = self._encode(self._src, _normalized(texts, self._norm_src), self._index)
        if domain:
            tag = self.domain_id(domain)
            ids = [[tag, *row] if row else row for row in ids]
        return ids

    @property
    def domains(self) -> list[str]:
        """The domain tags the source vocabulary holds (pieces <dom:NAME>), by name."""
        if self._domains is None:
            pieces = self.vocab if self.vocab is not None else [self._src.id_to_piece(i) for i in range(self.src_vocab_size)]
            self._domains = [p[len(DOMAIN_PREFIX):-1] for p in pieces if p.startswith(DOMAIN_PREFIX) and p.endswith(">")]
        return self._domains

    def domain_id(self, domain: str) -> int:
        """The source id of a domain's tag; a TokenizerError names the domains there are."""
        if domain not in self.domains:
            known = ", ".join(self.domains) or "none: it was trained without data.train_tags"
            raise TokenizerError(f"unknown domain '{domain}': this model's domains are {known}")
        piece = domain_piece(domain)
        return self._index[piece] if self._index is not None else self._src.piece_to_id(piece)

    def encode_tgt(self, texts: list[str]) -> list[list[int]]:
        return self._encode(self._tgt, _normalized(texts, self._norm_tgt), self._tgt_index)

    def nbest_src(self, texts: list[str], n: int) -> NBest:
        """The (up to) n best segmentations of each text, best first: the candidates of subword
        sampling (unigram models only; no domain tag)."""
        return self._nbest(self._src, _normalized(texts, self._norm_src), n, self._index)

    def nbest_tgt(self, texts: list[str], n: int) -> NBest:
        return self._nbest(self._tgt, _normalized(texts, self._norm_tgt), n, self._tgt_index)

    def _nbest(self, model: spm.SentencePieceProcessor, texts: list[str], n: int, index: dict[str, int] | None,
               chunk: int = 4096) -> NBest:
        piece_scores = np.array([model.get_score(i) for i in range(model.get_piece_size())])
        table = None if index is None else \
            np.array([index.get(model.id_to_piece(i), UNK_ID) for i in range(model.get_piece_size())])  # our ids
        ids, lengths, per_text = [], [], []
        for at in range(0, len(texts), chunk):  # chunks: the Python lists of one chunk at a time
            try:
                found = model.nbest_encode(texts[at:at + chunk], nbest_size=n)
            except RuntimeError:  # BPE, word and char models have no n-best search
                raise TokenizerError("subword sampling draws among the n best segmentations of a unigram model; "
                                     "this tokenizer's model is of another type") from None
            per_text.append(np.fromiter((len(c) for c in found), np.int64, len(found)))
            lengths.append(np.fromiter((len(seg) for c in found for seg in c), np.int64, int(per_text[-1].sum())))
            ids.append(np.fromiter(chain.from_iterable(chain.from_iterable(found)), np.int64, int(lengths[-1].sum())))
        flat = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        seg_lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
        # a segmentation's log-probability under a unigram model: the sum of its pieces' scores
        owner = np.repeat(np.arange(len(seg_lengths)), seg_lengths)
        scores = np.bincount(owner, weights=piece_scores[flat], minlength=len(seg_lengths))
        counts = np.concatenate(per_text) if per_text else np.zeros(0, np.int64)
        return NBest((flat if table is None else table[flat]).astype(np.int32),
                     np.concatenate([[0], np.cumsum(seg_lengths)]), np.concatenate([[0], np.cumsum(counts)]), scores)

    def decode_tgt(self, ids: list[int]) -> str:
        """Detokenised text; stops at the first EOS and ignores the other special ids."""
        out = []
        for i in ids:
            if i == EOS_ID:
                break
            if i not in SPECIAL_IDS:
                out.append(i)
        if self.vocab is None:
            return self._tgt.decode(out)
        # a table's piece the target model lacks (one of the source side's) comes back as it is: its
        # word-start marks become spaces, as transformers' MarianTokenizer does
        return self._tgt.decode_pieces(self.tgt_pieces(out)).replace("▁", " ").strip()

    def src_pieces(self, ids: list[int]) -> list[str]:
        return [self._src.id_to_piece(i) for i in ids] if self.vocab is None else [self.vocab[i] for i in ids]

    def tgt_pieces(self, ids: list[int]) -> list[str]:
        return [self._tgt.id_to_piece(i) for i in ids] if self.vocab is None else [self._tgt_table[i] for i in ids]

    def tgt_ids(self, pieces: list[str]) -> list[int]:
        if self._tgt_index is not None:
            return [self._tgt_index.get(p, UNK_ID) for p in pieces]
        return [self._tgt.piece_to_id(p) for p in pieces]

    # -- persistence: plain bytes, never pickled objects -----------------------------------------
    def state_dict(self) -> dict:
        return {"src_model": self.src_model, "tgt_model": self.tgt_model,
                "src_normalize": list(self.src_normalize), "tgt_normalize": list(self.tgt_normalize),
                "vocab": self.vocab, "tgt_vocab": self.tgt_vocab}

    @classmethod
    def from_state_dict(cls, state: dict) -> "Tokenizer":
        # checkpoints written before normalisation existed have no *_normalize entries
        # (and those written before piece tables no vocab, tgt_vocab)
        return cls(src_model=state["src_model"], tgt_model=state["tgt_model"],
                   src_normalize=state.get("src_normalize", ()), tgt_normalize=state.get("tgt_normalize", ()),
                   vocab=state.get("vocab"), tgt_vocab=state.get("tgt_vocab"))

    def __getstate__(self) -> dict:
        return self.state_dict()

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def save(self, directory: str | Path) -> list[Path]:
        """Write `spm.model` (one model) or `spm.src.model` + `spm.tgt.model` for other tools,
        `vocab.json` with the piece table if there is one (`tgt_vocab.json` the target side's), and
        `normalize.json` with the normalisation steps when there are any."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.tgt_model is None:
            files: dict[str, bytes] = {"spm.model": self.src_model}
        else:
            assert self.tgt_model is not None  # two models
            files = {"spm.src.model": self.src_model, "spm.tgt.model": self.tgt_model}
        if self.src_normalize or self.tgt_normalize:
            steps = {"src_normalize": self.src_normalize, "tgt_normalize": self.tgt_normalize}
            files["normalize.json"] = (json.dumps(steps) + "\n").encode()
        if self.vocab is not None:
            files["vocab.json"] = (json.dumps(self.vocab, ensure_ascii=False) + "\n").encode()
        if self.tgt_vocab is not None:
            files["tgt_vocab.json"] = (json.dumps(self.tgt_vocab, ensure_ascii=False) + "\n").encode()
        for name, blob in files.items():
            (directory / name).write_bytes(blob)
        return [directory / name for name in files]

    @classmethod
    def load(cls, directory: str | Path) -> "Tokenizer":
        directory = Path(directory)
        steps = json.loads((directory / "normalize.json").read_text()) if (directory / "normalize.json").is_file() else {}
        if (directory / "vocab.json").is_file():
            steps["vocab"] = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
        if (directory / "tgt_vocab.json").is_file():
            steps["tgt_vocab"] = json.loads((directory / "tgt_vocab.json").read_text(encoding="utf-8"))
        if (directory / "spm.model").is_file():
            return cls(src_model=(directory / "spm.model").read_bytes(), **steps)
        return cls(
            src_model=(directory / "spm.src.model").read_bytes(),
            tgt_model=(directory / "spm.tgt.model").read_bytes(),
            **steps,
        )


DOMAIN_PREFIX = "<dom:"


def domain_piece(domain: str) -> str:
    """The vocabulary piece of a domain tag (data.train_tags): <dom:NAME>."""
    return f"{DOMAIN_PREFIX}{domain}>"


def _train_model(sentences: Iterable[str], cfg: TokenizerConfig, symbols: Iterable[str] = ()) -> bytes:
    buffer, seen = io.BytesIO(), [0]

    def counted(lines: Iterable[str]) -> Iterator[str]:
        for line in lines:
            seen[0] += bool(line.strip())
            yield line

    spm.set_random_generator_seed(cfg.seed)  # sentence sampling is reproducible
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=counted(sentences),
            model_writer=buffer,
            model_type=cfg.type,
            vocab_size=cfg.vocab_size,
            # On a corpus too small for vocab_size, SentencePiece stops early instead of failing.
            hard_vocab_limit=False,
            character_coverage=cfg.character_coverage,
            input_sentence_size=cfg.input_sentence_size,  # samples this many for big corpora
            shuffle_input_sentence=True,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            minloglevel=2,
            num_threads=2,
            user_defined_symbols=list(symbols),  # pieces of their own, never split (domain tags)
        )
    except RuntimeError as err:
        if seen[0] == 0:
            raise TokenizerError("no text to train the tokenizer on: every training line is empty or whitespace") from None
        raise TokenizerError(f"SentencePiece training failed: {str(err).strip().splitlines()[-1]}") from None
    return buffer.getvalue()


def train_tokenizer(
    src_texts: Iterable[str], tgt_texts: Iterable[str], cfg: TokenizerConfig, domains: Iterable[str] = ()
) -> Tokenizer:
    """Train a joint model on both sides, or one model per side, on normalised text; `domains`:
    tag names whose pieces (<dom:NAME>) the source side gets."""
    src_norm, tgt_norm = make_normalizer(cfg.src_normalize), make_normalizer(cfg.tgt_normalize)
    src_texts = map(src_norm, src_texts) if src_norm else src_texts
    tgt_texts = map(tgt_norm, tgt_texts) if tgt_norm else tgt_texts
    tags = [domain_piece(d) for d in dict.fromkeys(domains) if d]
    if cfg.joint:
        return Tokenizer(src_model=_train_model(_chain(src_texts, tgt_texts), cfg, tags),
                         src_normalize=cfg.src_normalize, tgt_normalize=cfg.tgt_normalize)
    return Tokenizer(src_model=_train_model(src_texts, cfg, tags), tgt_model=_train_model(tgt_texts, cfg),
                     src_normalize=cfg.src_normalize, tgt_normalize=cfg.tgt_normalize)


def _chain(*iterables: Iterable[str]) -> Iterator[str]:
    for it in iterables:
        yield from it
