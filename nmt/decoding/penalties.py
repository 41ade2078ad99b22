"""Length penalties: how a finished hypothesis' summed log-probability becomes its final score.

Beam search favours short outputs because every token adds a negative log-probability; these
divide the sum by a function of the length (the number of generated tokens, EOS included).
"""


def gnmt_length_penalty(length: int, alpha: float) -> float:
    """Wu et al. 2016 (GNMT), eq. 14: lp(Y) = (5 + |Y|)^alpha / (5 + 1)^alpha. alpha = 0: no penalty."""
    return ((5.0 + length) / 6.0) ** alpha


def length_normalized(length: int, alpha: float) -> float:
    """Plain length normalisation (|Y|^alpha; alpha = 1 is the average log-probability per token)."""
    return float(length) ** alpha


PENALTIES = {"gnmt": gnmt_length_penalty, "length": length_normalized, "none": lambda length, alpha: 1.0}


def final_score(logprob: float, length: int, *, penalty: str, alpha: float) -> float:
    return logprob / PENALTIES[penalty](length, alpha)
