"""A per-sentence confidence users can act on: the probability that a translation is good (its
sentence chrF at least a threshold), from signals of the search, by a logistic model fitted on
the valid split (`nmt-calibrate`) and stored in the checkpoint. No torch here.

Signals of one hypothesis (`signals`):
- mean_logprob: its log-probability per token, EOS included (how sure the model was);
- length_deviation: how far log(output length / source length) is from the valid split's median
  (outputs much shorter or longer than usual for the pair drop or invent content);
- repeats: the share of its 3-grams that already occurred in it (a looping output).
Degenerate outputs (`Calibration.degenerate`): a repeated 3-gram share of at least 0.3 (a loop),
or a length ratio outside the valid split's 1st-99th percentile range widened by half its width
(too short: content dropped; too long). The Translator decodes them once more (`redecode`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

FEATURES = ("mean_logprob", "length_deviation", "repeats")
LOOP_SHARE = 0.3  # repeated 3-gram share from which an output counts as looping


def repeated_share(tokens: Sequence[int], n: int = 3) -> float:
    """The share of the n-grams of `tokens` that already occurred earlier in it (0 for < n tokens)."""
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def length_ratio(n_target: int, n_source: int) -> float:
    """log((target tokens + 1) / (source tokens + 1)): EOS counted on both sides."""
    return math.log((n_target + 1) / (n_source + 1))


def signals(tokens: Sequence[int], logprob: float, n_source: int, median_ratio: float = 0.0) -> tuple[float, ...]:
    """The FEATURES of one hypothesis (tokens without EOS, its summed log-probability with EOS)."""
    return (logprob / (len(tokens) + 1), abs(length_ratio(len(tokens), n_source) - median_ratio), repeated_share(tokens))


@dataclass(frozen=True)
class Calibration:
    """P(sentence chrF >= threshold) = sigmoid(weights . (features - mean) / std + bias)."""

    threshold: float  # sentence chrF of a good translation
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    median_ratio: float  # valid split: median log length ratio
    ratio_range: tuple[float, float]  # valid split: 1st and 99th percentile of the log length ratio
    search: str  # the decoding options it was fitted under (DecodingOptions.describe())
    sentences: int  # valid sentences it was fitted on
    good_share: float  # of them, the share at or above the threshold

    def signals(self, tokens: Sequence[int], logprob: float, n_source: int) -> tuple[float, ...]:
        return signals(tokens, logprob, n_source, self.median_ratio)

    def confidence(self, features: Sequence[float]) -> float:
        z = sum(w * (x - m) / s for w, x, m, s in zip(self.weights, features, self.mean, self.std)) + self.bias
        return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))

    def degenerate(self, tokens: Sequence[int], n_source: int) -> str | None:
        """Why an output is degenerate, or None: "loop" (a repeated 3-gram share of at least
        LOOP_SHARE), "short" or "long" (a length ratio far outside the valid split's range)."""
        low, high = self.ratio_range
        margin = (high - low) / 2
        ratio = length_ratio(len(tokens), n_source)
        if repeated_share(tokens) >= LOOP_SHARE:
            return "loop"
        return "short" if ratio < low - margin else "long" if ratio > high + margin else None

    def shortest(self, n_source: int) -> int:
        """The fewest output tokens (EOS not counted) usual for a source of `n_source` tokens: the
        valid split's 1st-percentile length ratio. A too-short output is decoded again with this as
        its minimum length."""
        return max(0, math.ceil(math.exp(self.ratio_range[0]) * (n_source + 1)) - 1)

    def state_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict) -> Calibration:
        state = dict(state)
        for key in ("mean", "std", "weights", "ratio_range"):
            state[key] = tuple(float(x) for x in state[key])
        return cls(**state)


def fit(features: np.ndarray, good: np.ndarray, *, threshold: float, ratios: np.ndarray, search: str,
        l2: float = 1e-2) -> Calibration:
    """Logistic regression (Newton's method, a small L2 penalty) of `good` (N,) on standardised
    `features` (N, F); `ratios` (N,) the log length ratios of the same outputs."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(good, dtype=np.float64)
    mean, std = x.mean(axis=0), x.std(axis=0)
    std = np.where(std > 1e-9, std, 1.0)
    z = np.hstack([(x - mean) / std, np.ones((len(x), 1))])  # (N, F+1): the last column is the bias
    w = np.zeros(z.shape[1])
    reg = l2 * np.eye(z.shape[1])
    reg[-1, -1] = 0.0
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-z @ w))
        grad = z.T @ (p - y) + reg @ w
        hess = (z * (p * (1 - p))[:, None]).T @ z + reg
        step = np.linalg.solve(hess + 1e-9 * np.eye(len(w)), grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    low, high = np.percentile(ratios, [1, 99])
    return Calibration(threshold=float(threshold), mean=tuple(mean.tolist()), std=tuple(std.tolist()),
                       weights=tuple(w[:-1].tolist()), bias=float(w[-1]), median_ratio=float(np.median(ratios)),
                       ratio_range=(float(low), float(high)), search=search, sentences=len(x),
                       good_share=float(y.mean()))


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve of `scores` for `labels` (the Mann-Whitney statistic, ties halved)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    values = np.concatenate([pos, neg])[order]
    i = 0
    while i < len(values):  # average ranks over ties
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def expected_calibration_error(probs: Sequence[float], labels: Sequence[bool], bins: int = 10) -> float:
    """Sum over 10 equal-width bins of (share of items) * |mean confidence - share good|."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    which = np.minimum((p * bins).astype(int), bins - 1)
    return float(sum(abs(p[which == b].mean() - y[which == b].mean()) * (which == b).mean()
                     for b in range(bins) if (which == b).any()))


def read_calibration(state: object, where: object) -> Calibration | None:
    """A checkpoint's or export's stored calibration (None if there is none); damaged: an error."""
    from nmt.errors import CheckpointError

    try:
        return None if state is None else Calibration.from_state_dict(state)  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{where}: damaged confidence calibration entry; fit it again with nmt-calibrate") from None
