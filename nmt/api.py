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
from typing import IO

import torch

from nmt.checkpoint import LoadedModel, load_model
from nmt.data import DataError, decode_lines
from nmt.decoding.beam import BeamOptions
from nmt.decoding.sampling import SamplingOptions
from nmt.translator import Translation, translate, warn_truncated

CHUNK_LINES = 2000  # lines read, sorted and translated together by translate_file


class Translator:
    """A loaded model with its tokenizer and config; every call reuses them."""

    def __init__(self, loaded: LoadedModel, device: str | torch.device = "cpu") -> None:
        self.loaded, self.device = loaded, torch.device(device)
        self.engine = "ctranslate2" if hasattr(loaded.model, "decode_batch") else "torch"

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu", engine: str = "torch",
                        int8: bool = False) -> Translator:
        """engine="torch": a checkpoint written by nmt-train; engine="ctranslate2": a directory
        written by `nmt-export --format ctranslate2` (needs the ctranslate2 extra).
        int8: 8-bit weights -- dynamic quantisation of the linear layers (torch, CPU only) or
        CTranslate2's int8 compute type."""
        if engine == "ctranslate2":
            from nmt.export import load_ctranslate2

            return cls(load_ctranslate2(path, device=str(device), int8=int8), "cpu")  # CTranslate2 holds its own device
        if engine != "torch":
            raise ValueError(f"engine must be 'torch' or 'ctranslate2', got {engine!r}")
        loaded = load_model(path, device=device)
        if int8:
            if torch.device(device).type != "cpu":
                raise ValueError("int8 dynamic quantisation runs on the CPU only (use engine='ctranslate2' on GPUs)")
            loaded.model = quantize_int8(loaded.model)
        return cls(loaded, device)

    @property
    def src_lang(self) -> str:
        return self.loaded.cfg.data.src_lang

    @property
    def tgt_lang(self) -> str:
        return self.loaded.cfg.data.tgt_lang

    @property
    def max_source_tokens(self) -> int:
        return self.loaded.cfg.model.max_positions - 1

    def options(self, *, beam_size: int = 5, n_best: int = 1, length_penalty: str | None = None,
                alpha: float | None = None, min_len: int = 1, max_len_a: float | None = None,
                max_len_b: int | None = None, no_repeat_ngram_size: int = 0) -> BeamOptions:
        """Search options. The length penalty defaults to GNMT's with alpha 0.6 (torch) or |Y|^1
        (ctranslate2, which has no GNMT penalty); the length limit to the checkpoint's
        (trainer.max_decode_len_a/b)."""
        t = self.loaded.cfg.trainer
        length_penalty = length_penalty or ("length" if self.engine == "ctranslate2" else "gnmt")
        alpha = alpha if alpha is not None else (0.6 if length_penalty == "gnmt" else 1.0)
        return BeamOptions(beam_size=beam_size, n_best=n_best, min_len=min_len, length_penalty=length_penalty,
                           alpha=alpha, no_repeat_ngram_size=no_repeat_ngram_size,
                           max_len_a=t.max_decode_len_a if max_len_a is None else max_len_a,
                           max_len_b=t.max_decode_len_b if max_len_b is None else max_len_b)

    def translate(self, texts: list[str] | str, *, sampling: SamplingOptions | None = None, attention: bool = False,
                  max_tokens: int = 4096, **search) -> list[Translation]:
        """One `Translation` per input (text, n-best `(text, score)` hypotheses, attention when
        asked), in input order. `search`: the keyword arguments of `options` (beam_size=5, ...)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        return translate(self.loaded, texts, options=self.options(**search), max_tokens=max_tokens, device=self.device,
                         record_attention=attention, sampling=sampling)

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


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 quantisation (weights int8 per tensor, activations quantised on the fly) of
    every nn.Linear: the projections, the feed-forward layers and the output layer, which hold
    almost all of the decoder's multiply-adds. Embeddings and LayerNorm stay float32."""
    import warnings

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
