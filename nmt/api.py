"""The Python API: load a checkpoint once, translate lists of sentences or whole files.

    from nmt import Translator

    translator = Translator.from_checkpoint("runs/quickstart/checkpoints/last.ckpt")
    for result in translator.translate(["我们走吧。", "谢谢你。"], beam_size=5, n_best=2):
        print(result.text, result.hypotheses)

`nmt-translate` is a thin command line over this class (see docs/api.md).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from nmt.batching import Translation, warn_truncated
from nmt.decoding.options import BeamOptions, SamplingOptions
from nmt.errors import DataError
from nmt.textio import decode_lines

__all__ = ["Translator", "Translation", "quantize_int8", "read_chunks"]

CHUNK_LINES = 2000  # lines read, sorted and translated together by translate_file


class Translator:
    """A loaded model with its tokenizer and config; every call reuses them.

    Two engines: "torch" (a checkpoint from nmt-train: every search option, attention, GPUs) and
    "ctranslate2" (a directory from nmt-export: faster on CPUs, and torch is never imported)."""

    def __init__(self, loaded: Any, device: Any = "cpu") -> None:
        """`loaded`: an nmt.checkpoint.LoadedModel (torch) or an nmt.ct2.CTranslate2Engine."""
        self.engine = getattr(loaded, "engine", "torch")
        self.loaded, self.device = loaded, device
        self.cfg, self.tokenizer = loaded.cfg, loaded.tokenizer

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu", engine: str = "torch",
                        int8: bool = False) -> Translator:
        """engine="torch": a checkpoint written by nmt-train; engine="ctranslate2": a directory
        written by `nmt-export --format ctranslate2` (needs the ctranslate2 extra).
        int8: 8-bit weights -- dynamic quantisation of the linear layers (torch, CPU only) or
        CTranslate2's int8 compute type."""
        if engine == "ctranslate2":
            from nmt.ct2 import CTranslate2Engine

            return cls(CTranslate2Engine(path, device=str(device), int8=int8), device)
        if engine != "torch":
            raise ValueError(f"engine must be 'torch' or 'ctranslate2', got {engine!r}")
        import torch

        from nmt.checkpoint import load_model

        if int8 and torch.device(device).type != "cpu":
            raise ValueError("int8 dynamic quantisation runs on the CPU only (use engine='ctranslate2' on GPUs)")
        loaded = load_model(path, device=device)
        if int8:
            loaded.model = quantize_int8(loaded.model)
        return cls(loaded, torch.device(device))

    @property
    def src_lang(self) -> str:
        return self.cfg.data.src_lang

    @property
    def tgt_lang(self) -> str:
        return self.cfg.data.tgt_lang

    @property
    def max_source_tokens(self) -> int:
        return self.cfg.model.max_positions - 1

    def options(self, *, beam_size: int = 5, n_best: int = 1, length_penalty: str | None = None,
                alpha: float | None = None, min_len: int = 1, max_len_a: float | None = None,
                max_len_b: int | None = None, no_repeat_ngram_size: int = 0) -> BeamOptions:
        """Search options. The length penalty defaults to GNMT's with alpha 0.6 (torch) or |Y|^1
        (ctranslate2, which has no GNMT penalty); the length limit to the checkpoint's
        (trainer.max_decode_len_a/b)."""
        t = self.cfg.trainer
        length_penalty = length_penalty or ("length" if self.engine == "ctranslate2" else "gnmt")
        alpha = alpha if alpha is not None else (0.6 if length_penalty == "gnmt" else 1.0)
        return BeamOptions(beam_size=beam_size, n_best=n_best, min_len=min_len, length_penalty=length_penalty,
                           alpha=alpha, no_repeat_ngram_size=no_repeat_ngram_size,
                           max_len_a=t.max_decode_len_a if max_len_a is None else max_len_a,
                           max_len_b=t.max_decode_len_b if max_len_b is None else max_len_b)

    def translate(self, texts: list[str] | str, *, sampling: SamplingOptions | None = None, attention: bool = False,
                  max_tokens: int | None = None, max_sentences: int = 0, **search) -> list[Translation]:
        """One `Translation` per input (text, n-best `(text, score)` hypotheses, attention when
        asked), in input order. `search`: the keyword arguments of `options` (beam_size=5, ...).
        A batch holds at most `max_tokens` source tokens (divided by the beam size; default 4,096
        for torch, 1,024 for ctranslate2, whose small batches run fastest and leanest on CPUs) and
        `max_sentences` sentences (0: no limit)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        options = self.options(**search)
        max_tokens = max_tokens or (1024 if self.engine == "ctranslate2" else 4096)
        if self.engine == "ctranslate2":
            return self.loaded.translate(texts, options, max_tokens=max_tokens, max_sentences=max_sentences,
                                         record_attention=attention, sampling=sampling)
        from nmt.translator import translate

        return translate(self.loaded, texts, options=options, max_tokens=max_tokens, max_sentences=max_sentences,
                         device=self.device, record_attention=attention, sampling=sampling)

    def translate_file(self, source: str | Path | IO[bytes], target: str | Path | IO[str], *,
                       skip_invalid_utf8: bool = False, name: str | None = None, chunk_lines: int | None = None,
                       write=None, **kwargs) -> int:
        """Translate a file (or binary stream) of one sentence per line into `target` (path or text
        stream), chunk by chunk so memory stays bounded. Returns the number of lines.
        `write(translations, first_line, seconds)` replaces the default one-line-per-input output."""
        name = name or (str(source) if isinstance(source, (str, Path)) else "<stdin>")
        out = open(target, "w", encoding="utf-8") if isinstance(target, (str, Path)) else target
        invalid: list[int] | None = [] if skip_invalid_utf8 else None
        n = 0
        try:
            for first, lines in read_chunks(source, name, chunk_lines or CHUNK_LINES, invalid):
                for bad in invalid or ():
                    print(f"warning: {name}:{bad}: invalid UTF-8, empty output line", file=sys.stderr)
                if invalid:
                    invalid.clear()
                start = time.perf_counter()
                translations = self.translate(lines, **kwargs)
                warn_truncated(translations, first, name, self.max_source_tokens)
                if write is None:
                    out.write("".join(t.text + "\n" for t in translations))
                else:
                    write(translations, first, time.perf_counter() - start)
                out.flush()
                n += len(lines)
        finally:
            if out is not target:
                out.close()
        return n


def quantize_int8(model):
    """Dynamic int8 quantisation (weights int8 per tensor, activations quantised on the fly) of
    every nn.Linear: the projections, the feed-forward layers and the output layer, which hold
    almost all of the decoder's multiply-adds. Embeddings and LayerNorm stay float32."""
    import warnings

    import torch
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def read_chunks(source: str | Path | IO[bytes], name: str, size: int,
                invalid: list[int] | None = None) -> Iterator[tuple[int, list[str]]]:
    """(first line number, lines) chunks of a binary stream or file; invalid UTF-8 is an error
    naming the line, or, with an `invalid` list, an empty line whose number is recorded there."""
    if isinstance(source, (str, Path)):
        try:
            stream = open(source, "rb")
        except OSError as err:
            raise DataError(f"cannot read {source}: {err.strerror}") from None
    else:
        stream = source
    chunk, first = [], 1
    try:
        for n, line in enumerate(decode_lines(stream, name, invalid=invalid), start=1):
            chunk.append(line)
            if len(chunk) == size:
                yield first, chunk
                chunk, first = [], n + 1
    finally:
        if stream is not source:
            stream.close()
    if chunk:
        yield first, chunk
