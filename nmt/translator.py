"""Translate a list of sentences with a loaded model: encode, sort by length, batch, decode, restore order."""

from __future__ import annotations

import torch

from nmt.checkpoint import LoadedModel
from nmt.data import make_batches
from nmt.decoding.greedy import greedy_decode
from nmt.tokenizer import EOS_ID, PAD_ID


def translate(loaded: LoadedModel, sentences: list[str], *, max_tokens: int = 4096,
              max_len_a: float = 1.5, max_len_b: int = 10, device: str | torch.device = "cpu") -> list[str]:
    """One output per input sentence, in input order. Empty inputs give empty outputs; inputs
    longer than the model's positional table are truncated to it."""
    limit = loaded.cfg.model.max_positions - 1  # room for EOS
    ids = [x[:limit] for x in loaded.tokenizer.encode_src([s.strip() for s in sentences])]
    outputs = [""] * len(sentences)
    todo = [i for i, x in enumerate(ids) if x]
    lens = [len(ids[i]) for i in todo]
    for batch in make_batches(lens, [0] * len(todo), max_tokens=max_tokens):
        rows = [ids[todo[j]] + [EOS_ID] for j in batch]
        src = torch.full((len(rows), max(map(len, rows))), PAD_ID, dtype=torch.long)
        for r, row in enumerate(rows):
            src[r, : len(row)] = torch.tensor(row)
        hyps = greedy_decode(loaded.model, src.to(device), max_len_a=max_len_a, max_len_b=max_len_b)
        for j, hyp in zip(batch, hyps):
            outputs[todo[j]] = loaded.tokenizer.decode_tgt(hyp)
    return outputs
