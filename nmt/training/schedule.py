"""Learning-rate schedules with warm-up, as multipliers for `LambdaLR` over a base lr of 1.

`noam` and `inverse_sqrt` are functions of the step. `linear` is a function of the share of the
training budget spent (`budget_progress`: steps of trainer.max_steps, or seconds of
trainer.max_time, whichever runs out first): it warms up over a fraction of the budget and
decays linearly to zero at its end, so a run on a slower machine gets the same shape of schedule
over fewer steps instead of being cut off in the middle of a step-defined one (budgeted
training: Li et al. 2020, "Budgeted Training: Rethinking Deep Neural Network Training Under
Resource Constraints").
"""

import math


def noam_lr(step: int, *, d_model: int, warmup_steps: int, scale: float = 1.0) -> float:
    """Paper eq. 3: lrate = d_model^-0.5 * min(step^-0.5, step * warmup_steps^-1.5).
    Rises linearly for warmup_steps, peaks at step == warmup_steps, then decays as 1/sqrt(step)."""
    step = max(step, 1)
    return scale * d_model**-0.5 * min(step**-0.5, step * warmup_steps**-1.5)


def seconds(interval: str) -> int:
    """'DD:HH:MM:SS' (trainer.max_time, trainer.checkpoint_every) -> seconds."""
    days, hours, minutes, secs = (int(x) for x in interval.split(":"))
    return ((days * 24 + hours) * 60 + minutes) * 60 + secs


def budget_progress(step: int, elapsed: float, *, max_steps: int, max_seconds: float | None) -> float:
    """The share of the budget spent after `step` optimizer steps and `elapsed` seconds of
    training: the larger of step / max_steps and elapsed / max_seconds (of the limits that are
    set: max_steps > 0, max_seconds not None), at most 1."""
    shares = ([step / max_steps] if max_steps > 0 else []) + ([elapsed / max_seconds] if max_seconds else [])
    if not shares:
        raise ValueError("a budget needs max_steps > 0 or max_seconds")
    return min(1.0, max(shares))


def linear_lr(progress: float, *, peak_lr: float, warmup_fraction: float) -> float:
    """Linear warm-up to peak_lr over the first warmup_fraction of the budget, then linear decay
    to 0 at its end (progress 1)."""
    if progress < warmup_fraction:
        return peak_lr * progress / warmup_fraction
    return peak_lr * max(0.0, 1.0 - progress) / (1.0 - warmup_fraction)


def inverse_sqrt_lr(step: int, *, peak_lr: float, warmup_steps: int) -> float:
    """fairseq's inverse_sqrt: linear warm-up to peak_lr, then peak_lr * sqrt(warmup / step)."""
    step = max(step, 1)
    if step < warmup_steps:
        return peak_lr * step / warmup_steps
    return peak_lr * math.sqrt(warmup_steps / step)
