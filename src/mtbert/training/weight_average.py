"""`ema_decay`: an exponential moving average of the weights, the model that is evaluated and saved as best/.

After every optimizer step the average moves towards the trained weights: avg <- d * avg + (1 - d) * weights,
with d = min(ema_decay, (1 + n) / (10 + n)) after n updates, so that the first steps' average follows the weights
closely instead of holding on to the starting model (the warm-up of TensorFlow's ExponentialMovingAverage and
timm's ModelEma). It is torch's `AveragedModel` with that update, over every parameter (a frozen one stays as it
is: the average of equal values; the buffers are the model's own). Evaluations, best/ and so the run's
predictions read the average; training itself is unchanged. A checkpoint keeps the average (`ema.safetensors`)
and its number of updates, so a resumed run continues it exactly.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_model, save_model
from torch import nn
from torch.optim.swa_utils import AveragedModel

from mtbert.errors import MtbertError

FILE = "ema.safetensors"  # in a checkpoint folder


def ema_decay_at(decay: float, updates: int) -> float:
    """The decay of the update after `updates` earlier ones: `decay`, less during the first steps."""
    return min(decay, (1 + updates) / (10 + updates))


class WeightAverage:
    """The exponential moving average of `model`'s parameters (see the module docstring)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay

        def update(averaged: list[torch.Tensor], current: list[torch.Tensor], _: torch.Tensor) -> None:
            # the count as kept on the CPU (AveragedModel hands the function a copy on the weights' device)
            torch._foreach_lerp_(averaged, current, 1.0 - ema_decay_at(self.decay, self.updates))

        # without a device, AveragedModel keeps its count of updates on the CPU: reading it is no device sync
        self.averaged = AveragedModel(model, multi_avg_fn=update, use_buffers=False)
        self.averaged.requires_grad_(False)

    @property
    def model(self) -> nn.Module:
        """The averaged model (a copy of the trained one's modules)."""
        return self.averaged.module

    def follow(self, model: nn.Module) -> nn.Module:
        """The averaged model, moved to `model`'s device if it is elsewhere (its count stays on the CPU)."""
        device = next(model.parameters()).device
        if next(self.model.parameters()).device != device:
            self.model.to(device)
        return self.model

    @property
    def updates(self) -> int:
        """The optimizer steps averaged so far."""
        return int(self.averaged.n_averaged)

    def update(self, model: nn.Module) -> None:
        """Move the average towards `model`'s weights (the first call copies them)."""
        self.averaged.update_parameters(model)

    def save(self, folder: Path) -> None:
        """Write the average into a checkpoint folder (`ema.safetensors`); its updates go in the trainer state."""
        save_model(self.model, str(folder / FILE))

    def load(self, folder: Path, updates: int | None) -> None:
        """Restore the average a checkpoint folder holds, after `updates` updates (its trainer state's
        `ema_updates`)."""
        if updates is None or not (folder / FILE).is_file():
            raise MtbertError(f"{folder}: this checkpoint holds no moving average of the weights (it was saved "
                              "without ema_decay); resume it without ema_decay, or train from the start")
        load_model(self.model, str(folder / FILE))
        self.averaged.n_averaged.fill_(updates)
