"""A translation server: FastAPI over `nmt.Translator`, with dynamic batching (needs `nmt[serve]`).

    app = create_app(Translator.from_checkpoint(path), ServeOptions(batch_wait_ms=5))

Endpoints: POST /translate, GET /health, GET / (a page with a text box and the attention heatmap),
and the OpenAPI schema FastAPI generates (/openapi.json, /docs).

Dynamic batching: a request's lines wait in a queue; the batcher takes the oldest request, gathers
every other queued request with the same search options for up to `batch_wait_ms` (and up to
`max_batch_lines` lines), decodes them as one batch on a single worker thread, and hands each
caller its own slice of the results. While a batch decodes, new requests queue up, so under load
batches grow by themselves. With batching off each request is decoded alone, one at a time.
"""

import asyncio
import json
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Annotated, Any, Literal, cast

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from nmt.decoding.options import FIELDS, NAMES, DecodingOptions
from nmt.errors import ConstraintError, DataError, TranslationError
from nmt.glossary import Glossary

__all__ = ["ServeOptions", "DynamicBatcher", "create_app", "request_model"]


@dataclass(frozen=True)
class ServeOptions:
    """Limits and batching of one server (the flags of nmt-serve)."""

    max_lines: int = 64  # lines per request; more is 413
    max_chars: int = 20_000  # characters per request, all lines together; more is 413
    max_beam_size: int = 16  # larger beams are refused (422): they multiply decoding cost
    batching: bool = True  # False: every request is decoded alone (the benchmark's reference)
    batch_wait_ms: float = 5.0  # how long the oldest queued request waits for others to join it
    max_batch_lines: int = 128  # lines decoded together at most


Term = Annotated[str, Field(min_length=1, pattern=r"\S")]  # a constraint or glossary term: not blank


class _RequestBase(BaseModel):
    """The fixed part of POST /translate's body; the decoding options are added per server."""

    model_config = ConfigDict(extra="forbid")

    text: list[str] = Field(min_length=1, description="source sentences, one per item (with document: true, "
                                                      "documents: paragraphs, line breaks kept)",
                            examples=[["我们走吧。", "谢谢你。"]])

    constraints: list[list[Term]] | None = Field(None, description="per text item the target phrases (terms) its "
                                                                    "translation must hold; beam search, torch engine")
    glossary: dict[str, Term] | None = Field(None, description="source term -> target term: each applies to the "
                                                              "text items (sentences) its source term occurs in",
                                            examples=[{"机器翻译": "machine translation"}])

    @field_validator("text")
    @classmethod
    def _utf8(cls, text: list[str]) -> list[str]:
        _unicode(text, "text")
        return text

    @field_validator("constraints")
    @classmethod
    def _terms(cls, constraints: list[list[str]] | None) -> list[list[str]] | None:
        for i, terms in enumerate(constraints or []):
            _unicode(terms, f"constraints[{i}]")
        return constraints

    @field_validator("glossary")
    @classmethod
    def _glossary(cls, glossary: dict[str, str] | None) -> dict[str, str] | None:
        for source, target in (glossary or {}).items():
            _unicode([source, target], "glossary")
            if not source.strip():  # (a key pattern would not reach the schema's values: checked here)
                raise ValueError("glossary: a source term must be non-empty text")
        return glossary

    @model_validator(mode="after")
    def _options(self) -> "_RequestBase":
        self.options()  # the checks across fields (n_best <= beam_size) are DecodingOptions'
        if self.constraints is not None and len(self.constraints) != len(self.text):
            raise ValueError(f"constraints: one list per text item: {len(self.text)} items, {len(self.constraints)} lists")
        if self.constraints is not None and any(self.constraints) and getattr(self, "document", False):
            raise ValueError("document mode: constraints apply to sentences; give the terms as a glossary")
        return self

    def options(self) -> DecodingOptions:
        return DecodingOptions(**{name: getattr(self, name) for name in NAMES})


def _unicode(texts: list[str], where: str) -> None:
    for i, line in enumerate(texts):
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate such as "\\ud800" in the JSON
            raise ValueError(f"{where}[{i}] is not valid Unicode (lone surrogate)") from None


def request_model(src_lang: str, tgt_lang: str, max_beam_size: int,
                  defaults: DecodingOptions = DecodingOptions(), has_shortlist: bool = False,
                  domains: tuple[str, ...] = ()) -> type[_RequestBase]:
    """The body of POST /translate for one server, derived from DecodingOptions: every decoding
    option with the model's default and its bounds, so clients (and schema-driven fuzzers) see
    them; the languages and the beam limit of this server are part of it too, and `shortlist` is
    only `false` for a model without one, `domain` one of the model's domains (or ""). Unknown fields are refused, so a misspelt option is an
    error rather than silently ignored."""
    fields: dict[str, Any] = {}
    for name, f in FIELDS.items():
        m = f.metadata
        annotation = Literal[m["choices"]] if m["choices"] else type(f.default)
        if name == "shortlist" and not has_shortlist:
            annotation = Literal[False]
        if name == "domain":
            annotation = Literal[("", *domains)]
        le = max_beam_size if name == "beam_size" else m["le"]
        fields[name] = (annotation, Field(getattr(defaults, name), ge=m["ge"], gt=m["gt"], le=le, description=m["help"]))
    fields["src_lang"] = (Literal[src_lang] | None, Field(None, description="if given, must be the model's source language"))
    fields["tgt_lang"] = (Literal[tgt_lang] | None, Field(None, description="if given, must be the model's target language"))
    model: type[_RequestBase] = create_model("TranslateRequest", __base__=_RequestBase, **fields)
    return model


class Hypothesis(BaseModel):
    text: str
    score: float | None = Field(description="log-probability after the length penalty; null for greedy search")


class Attention(BaseModel):
    source_tokens: list[str] = Field(description="source subwords + </s>: the columns")
    target_tokens: list[str] = Field(description="output subwords + </s>: the rows")
    weights: list[list[float]] = Field(description="rows sum to 1")


class Sentence(BaseModel):
    source: str
    text: str = Field(description="the best hypothesis")
    score: float | None
    hypotheses: list[Hypothesis]
    truncated: bool = Field(description="the source was longer than the model's positions and was cut")
    attention: Attention | None = None
    constraints: list[str] | None = Field(None, description="the terms it had to hold (given or from the glossary)")
    constraints_met: bool | None = Field(None, description="whether the translation holds all of them")
    confidence: float | None = Field(None, description="calibrated probability that the translation is good "
                                                      "(models calibrated by nmt-calibrate; null otherwise)")
    redecoded: bool = Field(False, description="its first output was degenerate (a loop, a length far off) and "
                                               "was decoded again")


class Result(Sentence):
    sentences: list[Sentence] | None = Field(None, description="document mode: its sentences (pieces of cut ones) "
                                                               "and their translations, in order")
    split: int = Field(0, description="document mode: sentences longer than the limit, translated in pieces")


class Timings(BaseModel):
    queue_ms: float = Field(description="waiting for the batch to start")
    decode_ms: float = Field(description="decoding the batch this request was part of")
    total_ms: float = Field(description="from the request's arrival to its response")
    batch_lines: int = Field(description="lines in that batch, this request's included")
    batch_requests: int = Field(description="requests in that batch")


class TranslateResponse(BaseModel):
    translations: list[Result]
    timings: Timings


@dataclass
class _Job:
    texts: list[str]
    key: Any  # the decoding options: only jobs with equal keys share a batch
    future: asyncio.Future
    constraints: list[Any]  # per text what travels with it (the terms it must hold)
    queued: float = field(default_factory=time.perf_counter)


class DynamicBatcher:
    """Gathers queued requests with equal search options into one decoding batch (see module doc).

    `decode(texts, key, constraints)` runs on one worker thread, so the model is never used by two threads."""

    def __init__(self, decode, *, wait_ms: float, max_lines: int, enabled: bool = True) -> None:
        self.decode, self.wait, self.max_lines, self.enabled = decode, wait_ms / 1000, max_lines, enabled
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.pending: deque[_Job] = deque()  # taken from the queue but waiting for a batch of their own key
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nmt-decode")
        self.task: asyncio.Task | None = None
        self.batches = self.lines = 0

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True)

    async def submit(self, texts: list[str], key: Any, constraints: list[Any] | None = None) -> tuple[list[Any], dict]:
        """The translations of `texts` and the timings of the batch they were decoded in."""
        job = _Job(texts, key, asyncio.get_running_loop().create_future(), constraints or [[] for _ in texts])
        await self.queue.put(job)
        return await job.future

    def _take(self, key: Any, room: int) -> list[_Job]:
        """Pending jobs of this key that fit in `room` lines, oldest first."""
        taken = []
        for job in list(self.pending):
            if job.key == key and len(job.texts) <= room:
                self.pending.remove(job)
                taken.append(job)
                room -= len(job.texts)
        return taken

    async def _gather(self) -> list[_Job]:
        first = self.pending.popleft() if self.pending else await self.queue.get()
        batch = [first]
        if not self.enabled:
            return batch
        batch += self._take(first.key, self.max_lines - len(first.texts))
        room = self.max_lines - sum(len(j.texts) for j in batch)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait
        while room > 0:
            if self.queue.empty():
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self.queue.get(), timeout)
                except TimeoutError:
                    break
            else:  # requests that arrived while the previous batch decoded join without waiting
                job = self.queue.get_nowait()
            if job.key == first.key and len(job.texts) <= room:
                batch.append(job)
                room -= len(job.texts)
            else:
                self.pending.append(job)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            texts = [t for job in batch for t in job.texts]
            constraints = [c for job in batch for c in job.constraints]
            start = time.perf_counter()
            try:
                results = await loop.run_in_executor(self.executor, self.decode, texts, batch[0].key, constraints)
                error = None
            except Exception as err:  # noqa: BLE001 -- handed to the callers; the batcher goes on
                results, error = None, err
            seconds = time.perf_counter() - start
            self.batches, self.lines = self.batches + 1, self.lines + len(texts)
            offset = 0
            for job in batch:
                if job.future.done():  # the client went away
                    offset += len(job.texts)
                    continue
                if error is not None:
                    job.future.set_exception(error)
                    continue
                timings = {"queue_ms": (start - job.queued) * 1000, "decode_ms": seconds * 1000,
                           "batch_lines": len(texts), "batch_requests": len(batch)}
                job.future.set_result((results[offset:offset + len(job.texts)], timings))
                offset += len(job.texts)


def page() -> str:
    return resources.files("nmt").joinpath("static/index.html").read_text(encoding="utf-8")


def create_app(translator, options: ServeOptions = ServeOptions(), *, name: str = "") -> FastAPI:
    """The FastAPI application serving `translator` (an nmt.Translator). `name`: what /health
    reports as the model (e.g. the checkpoint's file name; never a path the client can choose)."""

    def decode(texts: list[str], key: tuple[DecodingOptions, Glossary | None], constraints: list[list[str]]) -> list[Any]:
        options, glossary = key
        return translator.translate(texts, options, constraints=constraints if any(constraints) else None,
                                    glossary=glossary)

    batcher = DynamicBatcher(decode, wait_ms=options.batch_wait_ms, max_lines=options.max_batch_lines,
                             enabled=options.batching)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="nmt translation server", version="1", lifespan=lifespan,
                  description=f"{translator.src_lang}->{translator.tgt_lang} translation with dynamic batching.")
    app.state.batcher, app.state.options = batcher, options

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        """FastAPI's 422, written with ASCII escapes: its default echoes the input back as UTF-8,
        which fails (a 500) when the input holds a lone surrogate such as "\\ud800"."""
        body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True)
        return Response(body, status_code=422, media_type="application/json")

    html = page()  # read once, not per request

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return html

    @app.get("/health")
    async def health() -> dict:
        """The model and the server's limits; `batches`/`lines` count what was decoded so far."""
        return {"status": "ok", "model": name, "engine": translator.engine.name, "src_lang": translator.src_lang,
                "tgt_lang": translator.tgt_lang, "batching": options.batching, "batch_wait_ms": options.batch_wait_ms,
                "max_batch_lines": options.max_batch_lines, "max_lines": options.max_lines,
                "max_chars": options.max_chars, "max_beam_size": options.max_beam_size,
                "batches": batcher.batches, "lines": batcher.lines}

    TranslateRequest = request_model(translator.src_lang, translator.tgt_lang, options.max_beam_size,
                                     translator.defaults, translator.engine.has_shortlist,
                                     tuple(getattr(translator, "domains", ())))

    @app.post("/translate", response_model=TranslateResponse,
              responses={413: {"description": "too many lines or characters"},
                         422: {"description": "malformed request or unsupported option"}})
    # (no `from __future__ import annotations` in this module: FastAPI must see this class, not a name)
    async def translate(body: TranslateRequest) -> TranslateResponse:  # type: ignore[valid-type]
        arrived = time.perf_counter()
        request = cast(_RequestBase, body)  # a TranslateRequest: the schema of this server
        if len(request.text) > options.max_lines:
            raise HTTPException(413, f"{len(request.text)} lines; this server takes at most {options.max_lines}")
        chars = sum(len(t) for t in request.text) + sum(len(t) for terms in request.constraints or [] for t in terms) + \
            sum(len(s) + len(t) for s, t in (request.glossary or {}).items())
        if chars > options.max_chars:
            raise HTTPException(413, f"{chars} characters; this server takes at most {options.max_chars}")
        decoding = request.options()  # also the batching key: only equal options share a batch
        glossary = Glossary.of(request.glossary) if request.glossary else None
        try:  # domain and terms checked here, so that one request's impossible term never fails a shared batch
            translator.check_domain(decoding)
            if decoding.document:  # the glossary applies sentence by sentence, inside: part of the key
                key, terms = (decoding, glossary), None
            else:
                key, terms = (decoding, None), translator.terms(request.text, decoding, request.constraints, glossary)
        except ConstraintError as err:
            raise HTTPException(422, f"text[{err.index}]: {err.reason}") from None
        except (TranslationError, DataError) as err:
            raise HTTPException(422, str(err)) from None
        try:
            translations, timings = await batcher.submit(request.text, key, terms)
        except ConstraintError as err:  # document mode: a glossary term too long for one of its sentences
            raise HTTPException(422, f"a sentence of the documents: {err.reason}") from None
        results = [Result(**t.as_dict(translator.tokenizer if decoding.attention else None)) for t in translations]
        return TranslateResponse(translations=results,
                                 timings=Timings(total_ms=(time.perf_counter() - arrived) * 1000, **timings))

    return app
