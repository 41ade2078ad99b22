"""Learning-rate schedules with warm-up, as multipliers for `LambdaLR` over a base lr of 1."""

import math


def noam_lr(step: int, *, d_model: int, warmup_steps: int, scale: float = 1.0) -> float:
    """Paper eq. 3: lrate = d_model^-0.5 * min(step^-0.5, step * warmup_steps^-1.5).
    Rises linearly for warmup_steps, peaks at step == warmup_steps, then decays as 1/sqrt(step)."""
    step = max(step, 1)
    return scale * d_model**-0.5 * min(step**-0.5, step * warmup_steps**-1.5)


def inverse_sqrt_lr(step: int, *, peak_lr: float, warmup_steps: int) -> float:
    """fairseq's inverse_sqrt: linear warm-up to peak_lr, then peak_lr * sqrt(warmup / step)."""
    step = max(step, 1)
    if step < warmup_steps:
        return peak_lr * step / warmup_steps
    return peak_lr * math.sqrt(warmup_steps / step)
