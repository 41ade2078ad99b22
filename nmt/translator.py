"""Translate sentences with a loaded model: encode, sort by length, batch, decode, restore order."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import partial

import torch

from nmt.checkpoint import LoadedModel
from nmt.data import make_batches
from nmt.decoding.beam import BeamOptions, beam_search
from nmt.decoding.greedy import greedy_decode
from nmt.decoding.sampling import SamplingOptions, sample_decode
from nmt.tokenizer import EOS_ID, PAD_ID


@dataclass
class Translation:
    source: str
    hypotheses: list[tuple[str, float]]  # n-best (text, score), best first; score nan for greedy
    truncated: bool = False  # the source was longer than the model's positions and was cut
    attention: torch.Tensor | None = None  # best hypothesis: (target pieces + EOS, source pieces + EOS)
    source_ids: list[int] | None = None  # subword ids of the (truncated) source, for labels
    target_ids: list[int] | None = None  # subword ids of the best hypothesis

    @property
    def text(self) -> str:
        return self.hypotheses[0][0]


def translate(loaded: LoadedModel, sentences: list[str], *, options: BeamOptions | None = None,
              max_tokens: int = 4096, device: str | torch.device = "cpu",
              record_attention: bool = False, sampling: SamplingOptions | None = None) -> list[Translation]:
    """One Translation per input sentence, in input order. Empty inputs give empty outputs;
    inputs longer than the model's positional table are truncated to it (flagged `truncated`).
    Beam size 1 with one hypothesis runs greedy search (the same result, less bookkeeping);
    `sampling` draws one output per sentence instead (beam options give only the max length)."""
    options = options or BeamOptions(beam_size=1, max_len_a=loaded.cfg.trainer.max_decode_len_a,
                                     max_len_b=loaded.cfg.trainer.max_decode_len_b)
    limit = loaded.cfg.model.max_positions - 1  # room for EOS
    encoded = loaded.tokenizer.encode_src([s.strip() for s in sentences])
    out = [Translation(s, [("", 0.0)], truncated=len(ids) > limit, source_ids=ids[:limit])
           for s, ids in zip(sentences, encoded)]
    todo = [i for i, ids in enumerate(encoded) if ids]
    lens = [min(len(encoded[i]), limit) for i in todo]
    greedy = options.beam_size == 1 and options.n_best == 1 and not record_attention
    width = 1 if greedy else options.beam_size  # the beam multiplies the decoder's batch
    for batch in make_batches(lens, [0] * len(todo), max_tokens=max(max_tokens // width, max(lens, default=1))):
        rows = [encoded[todo[j]][:limit] + [EOS_ID] for j in batch]
        src = torch.full((len(rows), max(map(len, rows))), PAD_ID, dtype=torch.long)
        for r, row in enumerate(rows):
            src[r, : len(row)] = torch.tensor(row)
        src = src.to(device)
        generator = None if sampling is None else torch.Generator(device=src.device).manual_seed(sampling.seed + batch[0])

        decode = partial(_decode_batch, loaded.model, options=options, greedy=greedy, record_attention=record_attention,
                         sampling=sampling, generator=generator)
        for j, (nbest, attention), row in zip(batch, split_on_oom(decode, src), rows):
            t = out[todo[j]]
            t.hypotheses = [(loaded.tokenizer.decode_tgt(ids), score) for ids, score in nbest]
            t.target_ids = nbest[0][0]
            if attention is not None:
                t.attention = attention[:, : len(row)]  # drop the batch's padding
    return out


def _decode_batch(model, src: torch.Tensor, *, options: BeamOptions, greedy: bool, record_attention: bool,
                  sampling: SamplingOptions | None, generator: torch.Generator | None) -> list:
    """src (b, S) -> per sentence: the n-best (token ids, score) and the best one's attention."""
    if hasattr(model, "decode_batch"):  # another engine (nmt.export.CTranslate2Model) decodes whole batches
        return model.decode_batch(src, options, greedy=greedy, record_attention=record_attention, sampling=sampling)
    if sampling is not None:
        return [([(ids, float("nan"))], None) for ids in sample_decode(
            model, src, temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p,
            max_len_a=options.max_len_a, max_len_b=options.max_len_b, generator=generator)]
    if greedy:
        return [([(ids, float("nan"))], None)
                for ids in greedy_decode(model, src, max_len_a=options.max_len_a, max_len_b=options.max_len_b)]
    results = beam_search(model, src, options, record_attention=record_attention)
    return [([(h.tokens, h.score) for h in nbest], nbest[0].attention) for nbest in results]


class TranslationError(RuntimeError):
    pass


def is_out_of_memory(err: BaseException) -> bool:
    # CUDA raises torch.OutOfMemoryError; a failed CPU allocation is a RuntimeError from DefaultCPUAllocator
    return isinstance(err, torch.OutOfMemoryError) or "can't allocate memory" in str(err) or "out of memory" in str(err)


def split_on_oom(decode, src: torch.Tensor) -> list:
    """decode(src) for a batch; when it runs out of memory, the batch is split in two and each half
    retried (recursively), so one long batch does not abort a whole file. A single sentence that
    does not fit is an error."""
    try:
        return decode(src)
    except (torch.OutOfMemoryError, RuntimeError) as err:
        if not is_out_of_memory(err):
            raise
        if src.is_cuda:
            torch.cuda.empty_cache()
        if src.size(0) == 1:
            raise TranslationError(f"out of memory translating one sentence of {int((src != PAD_ID).sum())} tokens "
                                   f"on {src.device}; lower --beam-size or use a device with more memory") from None
        print(f"warning: out of memory on a batch of {src.size(0)} sentences; splitting it", file=sys.stderr)
        half = src.size(0) // 2
        return split_on_oom(decode, src[:half]) + split_on_oom(decode, src[half:])


def warn_truncated(translations: list[Translation], first_line: int, name: str, limit: int) -> None:
    for n, t in enumerate(translations, start=first_line):
        if t.truncated:
            print(f"warning: {name}:{n}: source longer than {limit} tokens, truncated", file=sys.stderr)
