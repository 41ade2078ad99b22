"""The torch engine: decode source rows with a checkpoint's model (greedy, beam search, sampling).

Rows are sorted by length and cut into token-bucket batches here; a batch that runs out of memory
is split in two and retried. Dimensions: b sentences of a batch, S source length.
"""

from __future__ import annotations

import sys
import weakref
from typing import TYPE_CHECKING, Any, cast

import torch

from nmt.batching import make_batches
from nmt.checkpoint import LoadedModel
from nmt.decoding.beam import beam_search
from nmt.decoding.greedy import greedy_decode
from nmt.decoding.options import DecodingOptions
from nmt.decoding.results import NAN, Hypothesis
from nmt.decoding.sampling import sample_decode
from nmt.documents import uses_spaces
from nmt.errors import TranslationError
from nmt.tokenizer import PAD_ID

if TYPE_CHECKING:
    from nmt.models import Seq2Seq

__all__ = ["TorchEngine", "split_on_oom"]


class TorchEngine:
    """A checkpoint's model on one device; every decoding option, attention included."""

    name = "torch"

    def __init__(self, loaded: LoadedModel, *, device: str | torch.device = "cpu", max_tokens: int | None = None,
                 max_sentences: int = 0, workers: int = 1) -> None:
        """A batch holds at most `max_tokens` source tokens divided by the beam size (the beam
        multiplies the decoder's batch; default 4,096) and at most `max_sentences` sentences (0: no limit).
        `workers` > 1 (CPU only): batches are decoded in parallel by that many processes of one
        thread each (forked on first use, sharing the weights), as CTranslate2's `inter_threads`,
        instead of one batch at a time on torch's intra-op threads."""
        self.model = cast("Seq2Seq[Any]", loaded.model)  # a Transformer or an RNNSeq2Seq
        self.cfg, self.tokenizer, self.shortlist = loaded.cfg, loaded.tokenizer, loaded.shortlist
        self.calibration = loaded.calibration
        self.has_shortlist = loaded.shortlist is not None
        self.device = torch.device(device)
        self.max_tokens, self.max_sentences = max_tokens or 4096, max_sentences
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if workers > 1 and self.device.type != "cpu":
            raise ValueError("workers > 1 are CPU processes: on a GPU decode with one")
        self.workers = workers
        self._pool: Any = None
        self._followers: torch.Tensor | None = None  # phrase_followers(), built on first use

    def decode(self, rows: list[list[int]], options: DecodingOptions,
               constraints: list[list[list[int]]] | None = None) -> list[list[Hypothesis]]:
        """rows: source ids + EOS, any number -> per row its n-best, best first, in row order.
        constraints: per row the phrases (target ids) its outputs must hold (beam search)."""
        if options.shortlist and self.shortlist is None:
            raise TranslationError("this checkpoint has no vocabulary shortlist: build one with nmt-shortlist CKPT, "
                                   "or decode without --shortlist")
        lens = [len(row) for row in rows]
        tokens = [n - 1 for n in lens]  # batches are sized without the EOS (make_batches adds one)
        budget = max(self.max_tokens // options.width, max(tokens, default=1))
        batches = make_batches(tokens, [0] * len(rows), max_tokens=budget, max_sentences=self.max_sentences)
        jobs = []
        for batch in batches:
            src = torch.full((len(batch), max(lens[i] for i in batch)), PAD_ID, dtype=torch.long)  # (b, S)
            for r, i in enumerate(batch):
                src[r, : lens[i]] = torch.tensor(rows[i])
            phrases = [constraints[i] for i in batch] if constraints is not None and any(constraints[i] for i in batch) else None
            jobs.append((src, options, options.seed + batch[0], phrases))  # the seed: the same samples however batches run
        if self.workers > 1 and len(jobs) > 1:
            done = self._workers().imap(_decode_in_worker, jobs)  # in order, each batch to the next free worker
        else:
            done = (self.decode_batch(*job) for job in jobs)
        out: list[list[Hypothesis]] = [[] for _ in rows]
        for batch, results in zip(batches, done):
            for i, nbest in zip(batch, results):
                for h in nbest:
                    if h.attention is not None:
                        h.attention = torch.as_tensor(h.attention)[:, : lens[i]]  # without the batch's padding columns
                out[i] = nbest
        return out

    def decode_batch(self, src: torch.Tensor, options: DecodingOptions, seed: int,
                     constraints: list[list[list[int]]] | None = None) -> list[list[Hypothesis]]:
        """src (b, S) on the CPU -> per sentence its n-best; a batch that runs out of memory is split."""
        generator = None
        if options.sampling:  # one generator per batch: the same seed gives the same samples
            generator = torch.Generator(device=self.device).manual_seed(seed)
        phrases = constraints or [[] for _ in range(src.size(0))]  # a split batch's halves keep their own
        return split_on_oom(lambda s, c: self._decode_batch(s, options, generator, c if any(c) else None),
                            src.to(self.device), phrases)

    def phrase_followers(self) -> torch.Tensor | None:
        """(V,) bool: the target pieces that may come right after a term. In a language written with
        spaces, those that begin a word (SentencePiece's "▁") and punctuation, so that a term is met
        as a whole word ("machine" not by "machines"); elsewhere any piece (None)."""
        if not uses_spaces(self.cfg.data.tgt_lang):
            return None
        if self._followers is None:
            pieces = self.tokenizer.tgt_pieces(list(range(self.tokenizer.tgt_vocab_size)))
            self._followers = torch.tensor([p.startswith("▁") or not any(c.isalnum() for c in p) for p in pieces])
        return self._followers

    def _workers(self) -> Any:
        if self._pool is None:
            import multiprocessing

            # fork: the workers share the loaded weights copy-on-write and start at once
            # (DataLoader's workers do the same; each runs torch on one thread)
            self._pool = multiprocessing.get_context("fork").Pool(self.workers, _start_worker, (self,))
            # stopped when the engine goes, or at exit while the pool's pipes are still open
            self._stop = weakref.finalize(self, self._pool.terminate)
        return self._pool

    def close(self) -> None:
        """Stop the worker processes, if any."""
        if self._pool is not None:
            self._stop()  # terminates the pool, once
            self._pool = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pool": None, "_stop": None}  # a pool does not travel between processes

    def _decode_batch(self, src: torch.Tensor, options: DecodingOptions, generator: torch.Generator | None,
                      constraints: list[list[list[int]]] | None = None) -> list[list[Hypothesis]]:
        """src (b, S) -> per sentence its n-best."""
        vocab = None
        if options.shortlist and self.shortlist is not None:  # the phrases' pieces must be reachable
            vocab = self.shortlist.candidates(src, [t for phrases in constraints or () for p in phrases for t in p])
        if constraints is not None:
            if options.sampling:
                raise TranslationError("constraints need beam search, not sampling")
            return beam_search(self.model, src, options, vocab, constraints, self.phrase_followers())
        if options.sampling:
            ids = sample_decode(self.model, src, temperature=options.temperature, top_k=options.top_k,
                                top_p=options.top_p, generator=generator, max_len_a=options.max_len_a,
                                max_len_b=options.max_len_b, min_len=options.min_len, vocab=vocab)
            return [[Hypothesis(x, NAN)] for x in ids]
        if options.greedy:
            return [[Hypothesis(x, NAN)] for x in greedy_decode(self.model, src, max_len_a=options.max_len_a,
                                                                      max_len_b=options.max_len_b, min_len=options.min_len,
                                                                      vocab=vocab)]
        return beam_search(self.model, src, options, vocab)


_WORKER: TorchEngine | None = None  # in a decoding worker process: the engine it was forked with


def _start_worker(engine: TorchEngine) -> None:
    global _WORKER
    torch.set_num_threads(1)
    engine.workers, _WORKER = 1, engine


def _decode_in_worker(job: tuple[torch.Tensor, DecodingOptions, int, Any]) -> list[list[Hypothesis]]:
    assert _WORKER is not None
    results = _WORKER.decode_batch(*job)
    for nbest in results:  # as numpy: tensors would travel as shared-memory handles, one file descriptor each
        for h in nbest:
            if h.attention is not None:
                h.attention = h.attention.numpy()
    return results


def is_out_of_memory(err: BaseException) -> bool:
    # CUDA raises torch.OutOfMemoryError; a failed CPU allocation is a RuntimeError from DefaultCPUAllocator
    return isinstance(err, torch.OutOfMemoryError) or "can't allocate memory" in str(err) or "out of memory" in str(err)


def split_on_oom(decode, src: torch.Tensor, *per_sentence: list) -> list:
    """decode(src, *per_sentence) for a batch; when it runs out of memory, the batch is split in
    two (with its `per_sentence` lists) and each half retried (recursively), so one long batch
    does not abort a whole file. A single sentence that does not fit is an error."""
    try:
        return decode(src, *per_sentence)
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
        return split_on_oom(decode, src[:half], *(x[:half] for x in per_sentence)) + \
            split_on_oom(decode, src[half:], *(x[half:] for x in per_sentence))
