"""Search and sampling options: plain dataclasses, shared by every engine (no torch here)."""

from __future__ import annotations

from dataclasses import dataclass

from nmt.decoding.penalties import PENALTIES


@dataclass(frozen=True)
class BeamOptions:
    beam_size: int = 5
    n_best: int = 1  # hypotheses returned per sentence, best first (<= beam_size)
    max_len_a: float = 1.5  # at most a * src_len + b generated tokens (EOS not counted)
    max_len_b: int = 10
    min_len: int = 1  # at least this many tokens before EOS
    length_penalty: str = "gnmt"  # gnmt: ((5+|Y|)/6)^alpha | length: |Y|^alpha | none
    alpha: float = 0.6
    no_repeat_ngram_size: int = 0  # 0: off; n: no n-gram occurs twice in a hypothesis

    def __post_init__(self) -> None:
        if self.beam_size < 1 or not 1 <= self.n_best <= self.beam_size:
            raise ValueError(f"need beam_size >= 1 and 1 <= n_best <= beam_size, got {self.beam_size}, {self.n_best}")
        if self.length_penalty not in PENALTIES:
            raise ValueError(f"length_penalty must be one of {', '.join(PENALTIES)}, got {self.length_penalty!r}")
        if self.min_len < 0 or self.max_len_a < 0 or self.max_len_b < 0 or self.no_repeat_ngram_size < 0:
            raise ValueError("min_len, max_len_a, max_len_b and no_repeat_ngram_size must not be negative")


@dataclass(frozen=True)
class SamplingOptions:
    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k restriction
    top_p: float = 1.0  # 1: no nucleus restriction
    seed: int = 0
