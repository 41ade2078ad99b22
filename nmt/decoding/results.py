"""The one result type of decoding, from the engines up to every front door (no torch here).

An engine returns `Hypothesis` lists (token ids, scores, attention); the Translator adds the text
and wraps them in a `Translation`; nmt-translate's jsonl and nmt-serve's JSON are `as_dict()`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

NAN = float("nan")


@dataclass
class Hypothesis:
    tokens: list[int]  # generated target ids, without BOS and EOS
    score: float  # what hypotheses are ranked by: logprob after the length penalty (nan: greedy, sampling)
    logprob: float = NAN  # summed log-probability of tokens + EOS (nan where the engine does not give it)
    attention: Any = None  # (len(tokens) + 1, source ids + EOS) cross-attention weights, when asked for
    text: str = ""  # the detokenised tokens (set by the Translator)
    constraints_met: bool | None = None  # with constraints (terms): whether it holds all (None: none asked)


@dataclass
class Translation:
    source: str
    hypotheses: list[Hypothesis]  # n-best, best first
    truncated: bool = False  # the source was longer than the model's positions and was cut
    source_ids: list[int] = field(default_factory=list)  # subword ids of the (truncated) source
    # Document mode: the translations of its sentences (pieces of cut ones), in order, and how
    # many sentences were longer than the limit and cut (nmt.documents).
    sentences: list[Translation] | None = None
    split: int = 0
    constraints: list[str] | None = None  # the target phrases it had to hold (given, or from a glossary)
    confidence: float | None = None  # calibrated P(good translation) of the best hypothesis (nmt-calibrate)
    redecoded: bool = False  # its first output was degenerate (a loop, a length far off) and was decoded again

    @property
    def best(self) -> Hypothesis:
        return self.hypotheses[0]

    @property
    def text(self) -> str:
        return self.best.text

    @property
    def score(self) -> float:
        return self.best.score

    @property
    def target_ids(self) -> list[int]:
        return self.best.tokens

    @property
    def attention(self) -> Any:
        return self.best.attention

    def as_dict(self, tokenizer: Any = None) -> dict[str, Any]:
        """JSON-ready: source, text, score, n-best hypotheses, truncated, and with a tokenizer and
        recorded attention the best hypothesis' weights with their subword labels."""
        out: dict[str, Any] = {"source": self.source, "text": self.text, "score": json_score(self.score),
                               "hypotheses": [{"text": h.text, "score": json_score(h.score)} for h in self.hypotheses],
                               "truncated": self.truncated, "attention": None}
        if tokenizer is not None and self.attention is not None:
            weights = self.attention.tolist() if hasattr(self.attention, "tolist") else list(self.attention)
            out["attention"] = {"source_tokens": tokenizer.src_pieces(self.source_ids) + ["</s>"],
                                "target_tokens": tokenizer.tgt_pieces(self.target_ids) + ["</s>"],
                                "weights": [[round(float(w), 4) for w in row] for row in weights]}
        if self.constraints is not None:
            out["constraints"], out["constraints_met"] = self.constraints, self.best.constraints_met
        if self.confidence is not None:
            out["confidence"], out["redecoded"] = round(self.confidence, 4), self.redecoded
        if self.sentences is not None:
            out["sentences"] = [s.as_dict(tokenizer) for s in self.sentences]
            out["split"] = self.split
        return out


def json_score(value: float) -> float | None:
    """nan (no score: greedy search, sampling) and infinities are null in JSON."""
    return None if value is None or not math.isfinite(value) else round(float(value), 4)
