"""An exponential moving average of the weights (trainer.ema_decay), Lightning's own
`EMAWeightAveraging`: after every optimizer step e <- d * e + (1 - d) * w, the first step copying
w, with d = min(decay, (1 + n) / (10 + n)) after n updates -- the warm-up of TensorFlow's
`ExponentialMovingAverage(num_updates=...)`, so that the near-random weights of the first steps
fade within tens of steps instead of weighing e^-1 after 1/(1 - decay) of them.
Validation, and so the best checkpoint, runs on the average; every checkpoint's `state_dict` holds
the average, so nmt-translate, nmt-average and nmt-export use it. The resumable last.ckpt also holds
the current weights (`current_model_state`) and the average's step count, so a resumed run goes on
exactly. The weights-only step checkpoints skip the callbacks' save hooks in Lightning: the training
module puts the average in them through `average_state_dict`."""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import EMAWeightAveraging


def warmed_up_ema(decay: float):
    """AveragedModel's avg_fn: (average, current, n updates so far) -> the new average."""

    def avg_fn(average: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d = ((1 + n) / (10 + n)).clamp(max=decay).to(average.dtype)  # a tensor: no host sync on GPUs
        return average.lerp(current, 1 - d)

    return avg_fn


class WeightsEMA(EMAWeightAveraging):
    def __init__(self, decay: float) -> None:
        super().__init__(decay=decay)
        self._kwargs["avg_fn"] = warmed_up_ema(decay)  # in place of Lightning's fixed-decay get_ema_avg_fn

    def average_state_dict(self) -> dict[str, torch.Tensor] | None:
        """The average's weights under the training module's names, or None before training starts."""
        if self._average_model is None:
            return None
        prefix = "module."  # AveragedModel keeps the module as .module
        return {name[len(prefix):]: value for name, value in self._average_model.state_dict().items()
                if name.startswith(prefix)}
