"""Translate sentences with a loaded model: encode, sort by length, batch, decode, restore order."""

from __future__ import annotations

import sys
from functools import partial

import torch

from nmt.batching import Translation, translate_in_batches
from nmt.checkpoint import LoadedModel
from nmt.decoding.beam import beam_search
from nmt.decoding.greedy import greedy_decode
from nmt.decoding.options import BeamOptions, SamplingOptions
from nmt.decoding.sampling import sample_decode
from nmt.errors import TranslationError
from nmt.tokenizer import PAD_ID

__all__ = ["Translation", "TranslationError", "translate", "split_on_oom"]


def translate(loaded: LoadedModel, sentences: list[str], *, options: BeamOptions | None = None,
              max_tokens: int = 4096, max_sentences: int = 0, device: str | torch.device = "cpu",
              record_attention: bool = False, sampling: SamplingOptions | None = None) -> list[Translation]:
    """One Translation per input sentence, in input order (see `nmt.batching.translate_in_batches`).
    Beam size 1 with one hypothesis runs greedy search (the same result, less bookkeeping);
    `sampling` draws one output per sentence instead (beam options give only the max length)."""
    options = options or BeamOptions(beam_size=1, max_len_a=loaded.cfg.trainer.max_decode_len_a,
                                     max_len_b=loaded.cfg.trainer.max_decode_len_b)
    greedy = options.beam_size == 1 and options.n_best == 1 and not record_attention

    def decode(rows: list[list[int]], first: int) -> list:
        src = torch.full((len(rows), max(map(len, rows))), PAD_ID, dtype=torch.long)
        for r, row in enumerate(rows):
            src[r, : len(row)] = torch.tensor(row)
        src = src.to(device)
        generator = None if sampling is None else torch.Generator(device=src.device).manual_seed(sampling.seed + first)
        return split_on_oom(partial(_decode_batch, loaded.model, options=options, greedy=greedy,
                                    record_attention=record_attention, sampling=sampling, generator=generator), src)

    return translate_in_batches(loaded.tokenizer, sentences, decode, limit=loaded.cfg.model.max_positions - 1,
                                max_tokens=max_tokens, max_sentences=max_sentences,
                                width=1 if greedy else options.beam_size)


def _decode_batch(model, src: torch.Tensor, *, options: BeamOptions, greedy: bool, record_attention: bool,
                  sampling: SamplingOptions | None, generator: torch.Generator | None) -> list:
    """src (b, S) -> per sentence: the n-best (token ids, score) and the best one's attention."""
    if sampling is not None:
        return [([(ids, float("nan"))], None) for ids in sample_decode(
            model, src, temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p,
            max_len_a=options.max_len_a, max_len_b=options.max_len_b, generator=generator)]
    if greedy:
        return [([(ids, float("nan"))], None)
                for ids in greedy_decode(model, src, max_len_a=options.max_len_a, max_len_b=options.max_len_b)]
    results = beam_search(model, src, options, record_attention=record_attention)
    return [([(h.tokens, h.score) for h in nbest], nbest[0].attention) for nbest in results]


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
