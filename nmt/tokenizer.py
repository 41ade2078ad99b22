"""SentencePiece subwords; the special ids are defined here and nowhere else.

A `Tokenizer` holds one model (joint vocabulary) or two (source and target). Its state is the raw
SentencePiece model bytes, so it is stored inside checkpoints as plain data and pickles cheaply
into `datasets.map` worker processes.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from pathlib import Path

import sentencepiece as spm

from nmt.config import TokenizerConfig

# The only definition of the special ids in the project.
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
SPECIAL_IDS = (PAD_ID, UNK_ID, BOS_ID, EOS_ID)


class TokenizerError(RuntimeError):
    pass


def _processor(model: bytes) -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_proto=model)


class Tokenizer:
    """Source and target subword models (the same model when the vocabulary is joint)."""

    def __init__(self, *, src_model: bytes, tgt_model: bytes | None = None) -> None:
        self.src_model, self.tgt_model = src_model, tgt_model
        self._src = _processor(src_model)
        self._tgt = self._src if tgt_model is None else _processor(tgt_model)

    @property
    def joint(self) -> bool:
        return self.tgt_model is None

    @property
    def src_vocab_size(self) -> int:
        return self._src.get_piece_size()

    @property
    def tgt_vocab_size(self) -> int:
        return self._tgt.get_piece_size()

    def encode_src(self, texts: list[str]) -> list[list[int]]:
        return self._src.encode(texts)

    def encode_tgt(self, texts: list[str]) -> list[list[int]]:
        return self._tgt.encode(texts)

    def decode_tgt(self, ids: list[int]) -> str:
        """Detokenised text; stops at the first EOS and ignores the other special ids."""
        out = []
        for i in ids:
            if i == EOS_ID:
                break
            if i not in SPECIAL_IDS:
                out.append(i)
        return self._tgt.decode(out)

    def src_pieces(self, ids: list[int]) -> list[str]:
        return [self._src.id_to_piece(i) for i in ids]

    def tgt_pieces(self, ids: list[int]) -> list[str]:
        return [self._tgt.id_to_piece(i) for i in ids]

    def tgt_ids(self, pieces: list[str]) -> list[int]:
        return [self._tgt.piece_to_id(p) for p in pieces]

    # -- persistence: plain bytes, never pickled objects -----------------------------------------
    def state_dict(self) -> dict[str, bytes | None]:
        return {"src_model": self.src_model, "tgt_model": self.tgt_model}

    @classmethod
    def from_state_dict(cls, state: dict[str, bytes | None]) -> "Tokenizer":
        return cls(src_model=state["src_model"], tgt_model=state["tgt_model"])

    def __getstate__(self) -> dict:
        return self.state_dict()

    def __setstate__(self, state: dict) -> None:
        self.__init__(src_model=state["src_model"], tgt_model=state["tgt_model"])

    def save(self, directory: str | Path) -> list[Path]:
        """Write `spm.model` (joint) or `spm.src.model` + `spm.tgt.model` for other tools."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.joint:
            files = {"spm.model": self.src_model}
        else:
            files = {"spm.src.model": self.src_model, "spm.tgt.model": self.tgt_model}
        for name, blob in files.items():
            (directory / name).write_bytes(blob)
        return [directory / name for name in files]

    @classmethod
    def load(cls, directory: str | Path) -> "Tokenizer":
        directory = Path(directory)
        if (directory / "spm.model").is_file():
            return cls(src_model=(directory / "spm.model").read_bytes())
        return cls(
            src_model=(directory / "spm.src.model").read_bytes(),
            tgt_model=(directory / "spm.tgt.model").read_bytes(),
        )


def _train_model(sentences: Iterable[str], cfg: TokenizerConfig) -> bytes:
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
        )
    except RuntimeError as err:
        if seen[0] == 0:
            raise TokenizerError("no text to train the tokenizer on: every training line is empty or whitespace") from None
        raise TokenizerError(f"SentencePiece training failed: {str(err).strip().splitlines()[-1]}") from None
    return buffer.getvalue()


def train_tokenizer(
    src_texts: Iterable[str], tgt_texts: Iterable[str], cfg: TokenizerConfig
) -> Tokenizer:
    """Train a joint model on both sides, or one model per side."""
    if cfg.joint:
        return Tokenizer(src_model=_train_model(_chain(src_texts, tgt_texts), cfg))
    return Tokenizer(src_model=_train_model(src_texts, cfg), tgt_model=_train_model(tgt_texts, cfg))


def _chain(*iterables: Iterable[str]) -> Iterator[str]:
    for it in iterables:
        yield from it
