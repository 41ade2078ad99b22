"""The Python API: load a checkpoint once, translate lists of sentences or whole files.

    from nmt import Translator

    translator = Translator.from_checkpoint("runs/quickstart/checkpoints/last.ckpt")
    for result in translator.translate(["我们走吧。", "谢谢你。"], beam_size=5, n_best=2):
        print(result.text, [(h.text, h.score) for h in result.hypotheses])

`nmt-translate` is a thin command line over this class (see docs/api.md).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from nmt.decoding.options import DecodingOptions
from nmt.decoding.penalties import PENALTIES
from nmt.decoding.results import NAN, Hypothesis, Translation
from nmt.documents import fit_sentence, split_document, uses_spaces
from nmt.errors import ConstraintError, DataError, TranslationError
from nmt.glossary import Glossary
from nmt.textio import decode_lines
from nmt.tokenizer import EOS_ID, TokenizerError

if TYPE_CHECKING:
    from nmt.confidence import Calibration
    from nmt.config import ExperimentConfig
    from nmt.tokenizer import Tokenizer

__all__ = ["Translator", "Translation", "Hypothesis", "DecodingOptions", "Engine", "quantize_int8", "read_chunks"]

DTYPES = ("float32", "bfloat16", "float16")  # Translator.from_checkpoint(dtype=...), --dtype
CHUNK_LINES = 2000  # lines read, sorted and translated together by translate_file


class Engine(Protocol):
    """What the Translator needs of an engine (nmt.translator.TorchEngine, nmt.ct2.CTranslate2Engine)."""

    name: str  # "torch" | "ctranslate2"
    cfg: ExperimentConfig
    tokenizer: Tokenizer
    has_shortlist: bool  # a vocabulary shortlist came with the model: `shortlist` decoding is possible
    calibration: Calibration | None  # the confidence model that came with it (nmt-calibrate), if any

    def decode(self, rows: list[list[int]], options: DecodingOptions,
               constraints: list[list[list[int]]] | None = None) -> list[list[Hypothesis]]:
        """rows: source ids + EOS (none empty) -> per row its n-best, best first, in row order.
        constraints: per row the phrases (target ids) every output must hold, or None."""


if TYPE_CHECKING:  # mypy checks here that both engines follow the protocol
    from nmt.ct2 import CTranslate2Engine
    from nmt.translator import TorchEngine

    def _follow_the_protocol(t: TorchEngine, c: CTranslate2Engine) -> tuple[Engine, Engine]:
        return t, c


class Translator:
    """A loaded model with its tokenizer and config; every call reuses them.

    Two engines: "torch" (a checkpoint from nmt-train: GPUs, int8 on CPUs) and "ctranslate2" (a
    directory from nmt-export: faster on CPUs, and torch is never imported). The same options
    give the same translations on both (up to floating point)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.cfg, self.tokenizer = engine.cfg, engine.tokenizer
        self.calibration = getattr(engine, "calibration", None)
        self.redecoded = 0  # degenerate outputs decoded again so far (see `translate`)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu", engine: str = "torch", int8: bool = False,
                        max_tokens: int | None = None, max_sentences: int = 0, workers: int | None = None,
                        onednn: bool | None = None, dtype: str = "float32") -> Translator:
        """engine="torch": a checkpoint written by nmt-train; engine="ctranslate2": a directory
        written by `nmt-export --format ctranslate2` (needs the ctranslate2 extra).
        int8: 8-bit weights -- dynamic quantisation of the linear layers (torch, CPU only) or
        CTranslate2's int8 compute type. A batch holds at most `max_tokens` source tokens divided
        by the beam size (default 4,096 for torch, 1,024 for ctranslate2, whose small batches run
        fastest and leanest on CPUs) and `max_sentences` sentences (0: no limit).
        workers (CPU): batches decoded in parallel by that many workers of one thread each -- torch:
        forked processes, ctranslate2: its inter_threads. Default: torch 1 (one batch at a time on
        torch's threads), ctranslate2 the cores up to 4.
        onednn (torch, CPU, float32): the linear layers through oneDNN with weights reordered once
        (nmt/models/onednn.py; about 2x faster products than MKL on AMD CPUs). Default: on where torch
        has it; False: torch's own `nn.Linear`.
        dtype: float32, bfloat16 or float16, the precision of the weights and the products (torch:
        the model cast to it, log-probabilities and scores still in float32; ctranslate2: its
        compute type). The half precisions are for GPUs, and for CPUs with bfloat16 instructions."""
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be >= 1 (or None: the engine's default), got {workers}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if int8 and dtype != "float32":
            raise ValueError(f"int8 and dtype {dtype} are two precisions: choose one")
        if engine == "ctranslate2":
            from nmt.ct2 import CTranslate2Engine

            return cls(CTranslate2Engine(path, device=str(device), int8=int8, max_tokens=max_tokens,
                                         max_sentences=max_sentences, inter_threads=workers,
                                         compute_type=None if dtype == "float32" else dtype))
        if engine != "torch":
            raise ValueError(f"engine must be 'torch' or 'ctranslate2', got {engine!r}")
        import torch

        from nmt.checkpoint import load_model
        from nmt.translator import TorchEngine

        if int8 and torch.device(device).type != "cpu":
            raise ValueError("int8 dynamic quantisation runs on the CPU only (use engine='ctranslate2' on GPUs)")
        if onednn and (int8 or dtype != "float32" or torch.device(device).type != "cpu"):
            raise ValueError("onednn is for float32 on the CPU (not with int8 or another dtype, not on GPUs)")
        loaded = load_model(path, device=device)
        if dtype != "float32":
            loaded.model = loaded.model.to(getattr(torch, dtype))  # pack_linears below leaves these as they are
        if int8:
            loaded.model = quantize_int8(loaded.model)
        elif onednn is not False and torch.device(device).type == "cpu":
            from nmt.models.onednn import onednn_available, pack_linears

            if onednn and not onednn_available():
                raise ValueError(f"onednn: this torch ({torch.__version__}) has no oneDNN prepacked linear")
            loaded.model = pack_linears(loaded.model)
        return cls(TorchEngine(loaded, device=device, max_tokens=max_tokens, max_sentences=max_sentences,
                               workers=1 if workers is None else workers))

    @property
    def src_lang(self) -> str:
        return self.cfg.data.src_lang

    @property
    def tgt_lang(self) -> str:
        return self.cfg.data.tgt_lang

    @property
    def max_source_tokens(self) -> int:
        return self.cfg.model.max_positions - 1

    @property
    def defaults(self) -> DecodingOptions:
        """The model's own decoding options: its config's `decoding` section."""
        return self.cfg.decoding

    def options(self, options: DecodingOptions | None = None, **changes: Any) -> DecodingOptions:
        """`options` (default: the model's), with `changes` (beam_size=4, ...); an impossible or
        unknown option is an nmt.decoding.options.OptionsError (a ValueError) naming it."""
        return (options or self.defaults).replace(**changes)

    def translate(self, texts: list[str] | str, options: DecodingOptions | None = None, *,
                  constraints: list[list[str]] | None = None, glossary: Glossary | dict | str | Path | None = None,
                  **changes: Any) -> list[Translation]:
        """One `Translation` per input (the n-best hypotheses with text and score, attention when
        asked), in input order. Options as for `options`. Empty inputs give empty outputs; inputs
        longer than the model's positions are cut (flagged `truncated`).

        Terms (beam search, torch engine): `constraints` gives per input the target phrases its
        translation must hold; `glossary` (a Glossary, a dict source -> target term, or a TSV
        file) adds the target term of every source term that occurs in an input (docs/terminology.md).
        Every hypothesis holds every phrase (`constraints_met`); phrases that cannot fit the
        length limit are a TranslationError naming the input."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        options = self.options(options, **changes)
        if constraints is not None and len(constraints) != len(texts):
            raise ValueError(f"constraints: one list per input: {len(texts)} inputs, {len(constraints)} lists")
        glossary = None if glossary is None else Glossary.of(glossary)
        if options.document:
            if constraints is not None and any(constraints):
                raise TranslationError("document mode: constraints apply to sentences; give the terms as a glossary")
            return self._translate_documents(texts, options, glossary)
        limit = self.max_source_tokens
        terms = self._gather_terms(texts, constraints, glossary)
        encoded = self.encode([s.strip() for s in texts], options)
        term_ids = self._term_ids(terms, dict(enumerate(encoded)), options) if any(terms) else None
        out = [Translation(s, [Hypothesis([], 0.0, constraints_met=False if t else None)], truncated=len(ids) > limit,
                           source_ids=ids[:limit], constraints=t or None)
               for s, ids, t in zip(texts, encoded, terms)]
        todo = [i for i, ids in enumerate(encoded) if ids]
        if todo:
            rows = [out[i].source_ids + [EOS_ID] for i in todo]
            phrases = None if term_ids is None else [term_ids[i] for i in todo]
            for i, nbest in zip(todo, self._decode(rows, options, phrases)):
                out[i].hypotheses = nbest
            if self.calibration is not None:
                self._check_degenerate([out[i] for i in todo], options, phrases)
            for i in todo:
                for h in out[i].hypotheses:
                    h.text = self.tokenizer.decode_tgt(h.tokens)
                out[i].confidence = self.confidence(out[i].best, len(out[i].source_ids), options)
        return out

    def encode(self, texts: list[str], options: DecodingOptions) -> list[list[int]]:
        """Source ids, each non-empty source led by the tag of `options.domain` if one is set."""
        if not options.domain:
            return self.tokenizer.encode_src(texts)
        self.check_domain(options)
        return self.tokenizer.encode_src(texts, domain=options.domain)

    def check_domain(self, options: DecodingOptions) -> None:
        """A TranslationError naming this model's domains if `options.domain` is none of them."""
        if options.domain:
            try:
                self.tokenizer.domain_id(options.domain)
            except TokenizerError as err:
                raise TranslationError(str(err)) from None

    @property
    def domains(self) -> list[str]:
        """The domains this model was trained with tags for (data.train_tags), for `domain=`."""
        return self.tokenizer.domains

    def _decode(self, rows: list[list[int]], options: DecodingOptions,
                phrases: list[list[list[int]]] | None) -> list[list[Hypothesis]]:
        """The engine's decode; constraints passed only when there are some (an engine without
        constrained search keeps the two-argument form)."""
        return self.engine.decode(rows, options) if phrases is None else self.engine.decode(rows, options, phrases)

    def confidence(self, h: Hypothesis, n_source: int, options: DecodingOptions) -> float | None:
        """The calibrated probability that `h` is a good translation (sentence chrF at least the
        calibration's threshold; nmt/confidence.py); None without a calibration or a score
        (greedy search, sampling)."""
        if self.calibration is None or not math.isfinite(h.score):
            return None
        return self.calibration.confidence(self.calibration.signals(h.tokens, hypothesis_logprob(h, options), n_source))

    def _check_degenerate(self, translations: list[Translation], options: DecodingOptions,
                          phrases: list[list[list[int]]] | None) -> None:
        """Degenerate outputs (Calibration.degenerate) are decoded once more, with
        no_repeat_ngram_size 3, and a too-short one also with the valid split's shortest usual
        length as its minimum (Calibration.shortest); the new output replaces the first, marked
        `redecoded`, counted in `redecoded`. Only with `options.redecode`, for beam search (the
        search the calibration knows) without an n-gram ban of its own."""
        assert self.calibration is not None
        if not options.redecode or options.no_repeat_ngram_size or options.sampling or options.greedy:
            return
        again: dict[DecodingOptions, list[int]] = {}  # the options of the second decoding -> its outputs
        for j, t in enumerate(translations):
            kind = self.calibration.degenerate(t.best.tokens, len(t.source_ids))
            if kind is None:
                continue
            retry = options.replace(no_repeat_ngram_size=3)
            if kind == "short":
                n = len(t.source_ids)
                retry = retry.replace(min_len=max(options.min_len, min(self.calibration.shortest(n),
                                                                       self.output_limit(n, options))))
            again.setdefault(retry, []).append(j)
        for retry, bad in again.items():
            rows = [translations[j].source_ids + [EOS_ID] for j in bad]
            for j, nbest in zip(bad, self._decode(rows, retry, None if phrases is None else [phrases[j] for j in bad])):
                translations[j].hypotheses, translations[j].redecoded = nbest, True
            self.redecoded += len(bad)

    def output_limit(self, n_source: int, options: DecodingOptions) -> int:
        """The most output tokens (EOS not counted) for a source of `n_source` tokens (within the
        model's positions): max_len_a * (n_source + EOS) + max_len_b, as the engines count it."""
        return min(int((n_source + 1) * options.max_len_a + options.max_len_b), self.cfg.model.max_positions - 1)

    def terms(self, texts: list[str], options: DecodingOptions, constraints: list[list[str]] | None = None,
              glossary: Glossary | None = None) -> list[list[str]]:
        """Per input its target phrases: its constraints, then the glossary's terms that apply to
        it. Checked: beam search on the torch engine, and every input's phrases within its length
        limit (else a ConstraintError naming the input)."""
        terms = self._gather_terms(texts, constraints, glossary)
        if any(terms):
            with_terms = [i for i, t in enumerate(terms) if t]
            sources = self.encode([texts[i].strip() for i in with_terms], options)
            self._term_ids(terms, dict(zip(with_terms, sources)), options)
        return terms

    def _gather_terms(self, texts: list[str], constraints: list[list[str]] | None,
                      glossary: Glossary | None) -> list[list[str]]:
        """Per input its constraints, then the glossary's terms that apply to it (each once)."""
        terms = []
        for i, text in enumerate(texts):
            given = list(constraints[i]) if constraints is not None else []
            if not all(isinstance(t, str) and t.strip() for t in given):
                raise ConstraintError(i, f"a constraint must be non-empty text, got {given!r}")
            found = glossary.terms_for(text, self.src_lang, self.tokenizer.normalize_src) if glossary else []
            terms.append(given + [t for t in found if t not in given])
        return terms

    def _term_ids(self, terms: list[list[str]], sources: dict[int, list[int]],
                  options: DecodingOptions) -> list[list[list[int]]]:
        """Per input its phrases as target ids, checked against the search (beam search, torch
        engine), the target vocabulary and the length limit of its source (`sources`: the source
        ids of every input with terms)."""
        if options.sampling:
            raise TranslationError("constraints and glossary terms need beam search, not sampling")
        if self.engine.name != "torch":
            raise TranslationError(f"constraints and glossary terms need the torch engine: {self.engine.name} has "
                                   "no lexically constrained search (docs/terminology.md)")
        ids_of: list[list[list[int]]] = []
        for i, phrases in enumerate(terms):
            pieces = self.tokenizer.encode_tgt(phrases) if phrases else []
            for term, ids in zip(phrases, pieces):
                if not ids or min(ids) <= EOS_ID:  # no pieces, or one the target vocabulary lacks (unknown)
                    raise ConstraintError(i, f"the term {term!r} has characters the target vocabulary lacks")
            need, src = sum(map(len, pieces)), sources.get(i, [])
            most = self.output_limit(min(len(src), self.max_source_tokens), options)
            if src and need > most:
                raise ConstraintError(i, f"its constraints need {need} target tokens, more than its length limit "
                                         f"of {most} (max_len_a * source tokens + max_len_b)")
            ids_of.append(pieces)
        return ids_of

    @property
    def max_sentence_tokens(self) -> int:
        """Document mode's default limit: the longest source the model was trained on."""
        return min(self.cfg.data.max_len, self.max_source_tokens)

    def document_limit(self, options: DecodingOptions) -> int:
        """Source tokens above which document mode cuts a sentence (never above the positions)."""
        return min(options.document_max_tokens or self.max_sentence_tokens, self.max_source_tokens)

    def _translate_documents(self, texts: list[str], options: DecodingOptions,
                             glossary: Glossary | None = None) -> list[Translation]:
        """Each text split into sentences (nmt.documents), the over-long ones cut to fit, all of
        them translated together by the sentence path, then joined in each text's layout."""
        limit = self.document_limit(options)
        docs = [split_document(t, self.src_lang, options.document_splitter) for t in texts]
        sentences = [s for d in docs for s in d.sentences]
        lengths = [len(ids) for ids in self.encode(sentences, options)]
        count = lambda s: len(self.encode([s], options)[0])  # noqa: E731  (only for cut sentences)
        pieces = [[s] if n <= limit else fit_sentence(s, count, limit) for s, n in zip(sentences, lengths)]
        owner = [d for d, doc in enumerate(docs) for _ in doc.sentences]  # sentence -> its document
        flat = [(n, p) for n, ps in enumerate(pieces) for p in ps]
        try:
            translated = iter(self.translate([p for _, p in flat], options.replace(document=False), glossary=glossary))
        except ConstraintError as err:  # a glossary term too long for one sentence: name the document
            raise ConstraintError(owner[flat[err.index][0]], f"a sentence of it: {err.reason}") from None
        gap = " " if uses_spaces(self.tgt_lang) else ""  # between the pieces of a cut sentence
        out, at = [], 0
        for text, doc in zip(texts, docs):
            mine = pieces[at:at + len(doc.sentences)]
            at += len(mine)
            parts = [[next(translated) for _ in ps] for ps in mine]  # per sentence its pieces' translations
            joined = doc.join([gap.join(t.text for t in part) for part in parts], self.tgt_lang)
            out.append(Translation(text, [Hypothesis([], NAN, text=joined)], sentences=[t for part in parts for t in part],
                                   split=sum(len(ps) > 1 for ps in mine)))
        return out

    def translate_file(self, source: str | Path | IO[bytes], target: str | Path | IO[str], *,
                       options: DecodingOptions | None = None, skip_invalid_utf8: bool = False,
                       name: str | None = None, chunk_lines: int | None = None, write=None,
                       jsonl_input: bool = False, glossary: Glossary | dict | str | Path | None = None,
                       **changes: Any) -> int:
        """Translate a file (or binary stream) of one sentence per line into `target` (path or text
        stream), chunk by chunk so memory stays bounded. Returns the number of lines. Options as
        for `options`. `write(translations, first_line, seconds)` replaces the default
        one-line-per-input output. `jsonl_input`: each line is {"text": ..., "constraints": [...]}
        (constraints optional); `glossary` as for `translate`."""
        options = self.options(options, **changes)
        glossary = None if glossary is None else Glossary.of(glossary)
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
                texts, constraints = read_requests(lines, name, first) if jsonl_input else (lines, None)
                try:
                    translations = self.translate(texts, options, constraints=constraints, glossary=glossary)
                except ConstraintError as err:
                    raise TranslationError(f"{name}:{first + err.index}: {err.reason}") from None
                warn_truncated(translations, first, name, self.max_source_tokens, self.document_limit(options))
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


def hypothesis_logprob(h: Hypothesis, options: DecodingOptions) -> float:
    """Its summed log-probability, EOS included: the engine's, or its score times the length penalty."""
    if math.isfinite(h.logprob):
        return h.logprob
    return h.score * PENALTIES[options.length_penalty](len(h.tokens) + 1, options.alpha)


def warn_truncated(translations: list[Translation], first_line: int, name: str, limit: int,
                   sentence_limit: int = 0) -> None:
    """One warning per input that was cut: truncated (sentence mode) or with sentences split
    into pieces (document mode), and per input whose translation misses a constraint."""
    for n, t in enumerate(translations, start=first_line):
        if t.constraints and t.best.constraints_met is False:
            print(f"warning: {name}:{n}: the translation does not hold every constraint "
                  f"({', '.join(map(repr, t.constraints))})", file=sys.stderr)
        if t.truncated:
            print(f"warning: {name}:{n}: source longer than {limit} tokens, truncated", file=sys.stderr)
        if t.split:
            print(f"warning: {name}:{n}: {t.split} sentence(s) longer than {sentence_limit} "
                  "tokens, translated in pieces cut at clause marks", file=sys.stderr)


def read_requests(lines: list[str], name: str, first: int) -> tuple[list[str], list[list[str]]]:
    """jsonl input lines {"text": ..., "constraints": [...]} -> texts and their constraints; a bad
    line is a DataError naming it."""
    texts, constraints = [], []
    for n, line in enumerate(lines, start=first):
        try:
            request = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{name}:{n}: not a JSON object ({err.msg}); with --constraints each line is "
                            '{"text": ..., "constraints": [...]}') from None
        if not isinstance(request, dict) or not isinstance(request.get("text"), str):
            raise DataError(f'{name}:{n}: expected {{"text": "...", "constraints": [...]}}, got {line[:80]!r}')
        unknown = sorted(set(request) - {"text", "constraints"})
        if unknown:
            raise DataError(f"{name}:{n}: unknown field {unknown[0]!r} (known: text, constraints)")
        terms = request.get("constraints", [])
        if not isinstance(terms, list) or not all(isinstance(t, str) and t.strip() for t in terms):
            raise DataError(f"{name}:{n}: constraints must be a list of non-empty strings, got {terms!r}")
        texts.append(request["text"])
        constraints.append(terms)
    return texts, constraints


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
    stream: IO[bytes]
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
