"""The CTranslate2 engine: translate with a directory written by `nmt-export --format ctranslate2`.

Needs only ctranslate2, sentencepiece and numpy -- not torch -- so a translation process stays
small (see docs/performance.md). Search options map onto CTranslate2's so that its beam search
returns what ours returns (tests/test_export.py):
- length penalty |Y|^alpha with |Y| counting EOS, as ours does (`return_end_token`); GNMT's
  penalty, which CTranslate2 does not have, ranks the beam_size finished hypotheses here;
- per-sentence length limits a * src_len + b: CTranslate2 takes one limit per call, so rows go in
  tiers of similar limits, and a sentence whose output runs past its own limit is decoded again
  at that limit.
Where a hypothesis reaches the limit, ours forces EOS and scores it; CTranslate2 stops without it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from nmt.config import ConfigError, ExperimentConfig, from_dict
from nmt.confidence import read_calibration
from nmt.decoding.options import DecodingOptions
from nmt.decoding.penalties import final_score
from nmt.decoding.results import NAN, Hypothesis
from nmt.errors import CheckpointError, ExportError, TranslationError
from nmt.tokenizer import EOS_ID, Tokenizer

EXPORT_FORMAT = 1  # nmt.json's format; bumped on incompatible changes
META_FILE = "nmt.json"
LIMIT_TIER = 8  # rows whose length limits share limit // LIMIT_TIER are decoded in one call


def import_ctranslate2():
    try:
        import ctranslate2
    except ImportError:
        raise ExportError("the CTranslate2 engine needs the ctranslate2 package: pip install 'nmt[ctranslate2]'") from None
    return ctranslate2


def read_export_config(directory: Path) -> ExperimentConfig:
    if not (directory / META_FILE).is_file() or not (directory / "model.bin").is_file():
        raise CheckpointError(f"{directory}: not a CTranslate2 export by nmt-export (needs model.bin and {META_FILE})")
    try:
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        if meta.get("format") != EXPORT_FORMAT:
            raise CheckpointError(f"{directory}: export format {meta.get('format')!r} is not the one this version "
                                  f"reads ({EXPORT_FORMAT})")
        return from_dict(meta["config"])
    except (ValueError, KeyError, TypeError, AttributeError, ConfigError) as err:
        raise CheckpointError(f"{directory}/{META_FILE}: unreadable export metadata ({err})") from None


class CTranslate2Engine:
    """An export directory loaded into a `ctranslate2.Translator`, with its config and tokenizer."""

    name = "ctranslate2"

    def __init__(self, directory: str | Path, *, device: str = "cpu", int8: bool = False,
                 inter_threads: int | None = None, intra_threads: int = 1, max_tokens: int | None = None,
                 max_sentences: int = 0, compute_type: str | None = None) -> None:
        """On CPUs, batches run in parallel on `inter_threads` (default: the cores, up to 4) with
        one thread each: on 2 cores that decodes 2x faster than one batch on 2 threads
        (docs/performance.md). Batches hold `max_tokens` source tokens divided by the beam size
        (default 1,024: small batches run fastest and leanest on CPUs) or `max_sentences` sentences.
        compute_type: CTranslate2's (e.g. float16, bfloat16); None: the stored weights' ("default")."""
        self.max_tokens, self.max_sentences = max_tokens or 1024, max_sentences
        ctranslate2 = import_ctranslate2()
        directory = Path(directory)
        self.has_shortlist = (directory / "vmap.txt").is_file()  # nmt-export writes the checkpoint's shortlist there
        self.cfg = read_export_config(directory)
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        self.calibration = read_calibration(meta.get("calibration"), directory / META_FILE)
        try:
            self.tokenizer = Tokenizer.load(directory)
        except (OSError, RuntimeError) as err:
            raise CheckpointError(f"{directory}: cannot load the SentencePiece model(s) ({err})") from None
        device_type, _, index = device.partition(":")
        if compute_type is not None:
            try:
                supported = ctranslate2.get_supported_compute_types(device_type, int(index or 0))
            except (RuntimeError, ValueError):  # no such device: the Translator below says so
                supported = {compute_type}
            if compute_type not in supported:
                raise TranslationError(f"dtype {compute_type}: CTranslate2 {ctranslate2.__version__} on this {device_type} "
                                       f"computes in {', '.join(sorted(supported))} only")
        try:
            if inter_threads is None:
                inter_threads = min(os.cpu_count() or 1, 4) if device_type == "cpu" else 1
            self.translator = ctranslate2.Translator(str(directory), device=device_type, device_index=int(index or 0),
                                                     compute_type="int8" if int8 else compute_type or "default",
                                                     inter_threads=inter_threads, intra_threads=intra_threads)
        except (RuntimeError, ValueError) as err:
            raise CheckpointError(f"{directory}: CTranslate2 cannot load this model ({str(err).splitlines()[0]})") from None

    def decode(self, rows: list[list[int]], options: DecodingOptions,
               constraints: list[list[list[int]]] | None = None) -> list[list[Hypothesis]]:
        """rows: source ids + EOS -> per row its n-best, best first, in row order. All rows go to
        CTranslate2 in one call, which sorts them, cuts batches of at most max_tokens / beam source
        tokens (or max_sentences sentences) and runs them in parallel. CTranslate2 has no
        lexically constrained search (its target_prefix fixes the start only): constraints are an error."""
        if constraints is not None and any(constraints):
            raise TranslationError("constraints and glossary terms need the torch engine: CTranslate2 has no "
                                   "lexically constrained search (docs/terminology.md)")
        if options.shortlist and not self.has_shortlist:
            raise TranslationError("this export has no vocabulary shortlist (vmap.txt): build one with nmt-shortlist "
                                   "CKPT and export again, or decode without --shortlist")
        batching = (dict(max_batch_size=self.max_sentences, batch_type="examples") if self.max_sentences
                    else dict(max_batch_size=max(self.max_tokens // options.width, 1), batch_type="tokens"))
        cap = self.cfg.model.max_positions - 1  # BOS and all but the final EOS need a position, as Transformer.max_output_len
        limits = [min(int(len(row) * options.max_len_a + options.max_len_b), cap) for row in rows]  # as max_output_lengths
        # CTranslate2 takes one length limit per call: rows are decoded in tiers of similar limits
        # (one call each, at the tier's largest), all submitted before any is awaited so that they
        # run in parallel on the inter_threads; a row that generated beyond its own limit is then
        # decoded again at that limit. Sampling stays in one call: its seed is set per call.
        asynchronous = not options.sampling
        tiers: dict[int, list[int]] = {}
        for j, limit in enumerate(limits):
            tiers.setdefault(limit // LIMIT_TIER if asynchronous else 0, []).append(j)
        results: list[list[Hypothesis]] = [[] for _ in rows]
        self._decode_tiers(rows, limits, list(tiers.values()), options, batching, asynchronous, results)
        overrun: dict[int, list[int]] = {}  # limit -> rows that generated beyond their own limit
        for j, limit in enumerate(limits):
            if len(results[j][0].tokens) > limit:
                overrun.setdefault(limit, []).append(j)
        self._decode_tiers(rows, limits, list(overrun.values()), options, batching, asynchronous, results)
        return results

    def _decode_tiers(self, rows: list[list[int]], limits: list[int], tiers: list[list[int]], options: DecodingOptions,
                      batching: dict, asynchronous: bool, results: list[list[Hypothesis]]) -> None:
        """Decodes each tier (row indices) in one call at its largest limit, all submitted before
        any is awaited; writes each row's n-best into results."""
        pending = [(max(limits[j] for j in js), js) for js in tiers]
        submitted = [self._submit([rows[j] for j in js], limit, options, batching, asynchronous) for limit, js in pending]
        for (limit, js), results_of_tier in zip(pending, submitted):
            for j, result in zip(js, results_of_tier):
                results[j] = self._nbest(result.result() if asynchronous else result, limit, options)

    def _submit(self, rows: list[list[int]], limit: int, options: DecodingOptions, batching: dict,
                asynchronous: bool = False) -> list:
        """One translate_batch call: its results, or with `asynchronous` its pending results."""
        # GNMT's penalty is not CTranslate2's: it returns all beam_size finished hypotheses with
        # their summed log-probabilities (no penalty), and they are ranked here. Its beam search
        # ends when beam_size hypotheses have finished, whatever the penalty, as ours does.
        gnmt = _ranked_here(options)
        kwargs = dict(**batching, beam_size=options.beam_size, return_scores=True, return_end_token=True,
                      num_hypotheses=options.beam_size if gnmt else options.n_best,
                      max_decoding_length=limit + 1, min_decoding_length=options.min_len,
                      length_penalty=0.0 if options.length_penalty != "length" else options.alpha,
                      no_repeat_ngram_size=options.no_repeat_ngram_size, return_attention=options.attention,
                      use_vmap=options.shortlist, asynchronous=asynchronous)
        if options.sampling:
            import ctranslate2

            ctranslate2.set_random_seed(options.seed)
            kwargs.update(beam_size=1, num_hypotheses=1, sampling_topk=min(options.top_k, self.tokenizer.tgt_vocab_size),
                          sampling_topp=options.top_p, sampling_temperature=options.temperature)
        pieces = [self.tokenizer.src_pieces(row) for row in rows]  # the EOS id becomes "</s>"
        return self.translator.translate_batch(pieces, **kwargs)

    def _nbest(self, result, limit: int, options: DecodingOptions) -> list[Hypothesis]:
        """One CTranslate2 TranslationResult -> our n-best, best first."""
        gnmt = _ranked_here(options)
        nbest = []
        for j, (hyp, score) in enumerate(zip(result.hypotheses, result.scores)):
            ids = self.tokenizer.tgt_ids(hyp)
            ids = ids[:-1] if ids and ids[-1] == EOS_ID else ids[:limit]  # cut at the limit, as ours stops there
            if gnmt:
                nbest.append(Hypothesis(ids, final_score(score, len(ids) + 1, penalty="gnmt", alpha=options.alpha),
                                        logprob=score))
            else:  # greedy search and sampling have no score, as with the torch engine
                nbest.append(Hypothesis(ids, NAN if options.sampling or options.greedy else score))
            if options.attention:
                nbest[-1].attention = np.asarray(result.attention[j], dtype=np.float32)
        if gnmt:
            nbest = sorted(nbest, key=lambda h: -h.score)[: options.n_best]
        return nbest


def _ranked_here(options: DecodingOptions) -> bool:
    """GNMT's length penalty is applied here, not by CTranslate2 (beam search only)."""
    return options.length_penalty == "gnmt" and not options.sampling and not options.greedy
