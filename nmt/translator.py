"""Translate sentences with a loaded model: encode, sort by length, batch, decode, restore order."""

from __future__ import annotations

import sys
from dataclasses import dataclass

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
        if sampling is not None:
            generator = torch.Generator(device=src.device).manual_seed(sampling.seed + batch[0])
            hyps = [[(ids, float("nan"))] for ids in sample_decode(
                loaded.model, src, temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p,
                max_len_a=options.max_len_a, max_len_b=options.max_len_b, generator=generator)]
        elif greedy:
            hyps = [[(ids, float("nan"))] for ids in greedy_decode(
                loaded.model, src, max_len_a=options.max_len_a, max_len_b=options.max_len_b)]
        else:
            results = beam_search(loaded.model, src, options, record_attention=record_attention)
            hyps = [[(h.tokens, h.score) for h in nbest] for nbest in results]
            for j, nbest, row in zip(batch, results, rows):
                if nbest[0].attention is not None:
                    out[todo[j]].attention = nbest[0].attention[:, : len(row)]  # drop the batch's padding
        for j, nbest in zip(batch, hyps):
            out[todo[j]].hypotheses = [(loaded.tokenizer.decode_tgt(ids), score) for ids, score in nbest]
            out[todo[j]].target_ids = nbest[0][0]
    return out


def warn_truncated(translations: list[Translation], first_line: int, name: str, limit: int) -> None:
    for n, t in enumerate(translations, start=first_line):
        if t.truncated:
            print(f"warning: {name}:{n}: source longer than {limit} tokens, truncated", file=sys.stderr)
