"""Loss-level task weighting: methods that need no per-task gradients and cost one backward per task.

- `uncertainty`: homoscedastic uncertainty weighting, Kendall, Gal & Cipolla 2018
  (https://arxiv.org/abs/1705.07115): each task's loss becomes exp(-s_t) L_t + s_t with a learned s_t.
- `famo`: Fast Adaptive Multitask Optimization, Liu et al. 2023 (https://arxiv.org/abs/2306.03792):
  task weights z = softmax(w) on the log-losses; after each step, w moves to favour the tasks whose
  loss fell least.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

LOSS_WEIGHTINGS = ("uncertainty", "famo")


class UncertaintyWeighting(nn.Module):
    """Learned log-variances s_t; `weigh(t, L)` returns exp(-s_t) L + s_t (trained with the model)."""

    def __init__(self, tasks: list[str]) -> None:
        super().__init__()
        self.log_vars = nn.ParameterDict({t: nn.Parameter(torch.zeros(())) for t in tasks})

    def weigh(self, task: str, loss: torch.Tensor) -> torch.Tensor:
        s = self.log_vars[task]
        return torch.exp(-s) * loss + s

    def after_step(self, losses: dict[str, float]) -> None:
        """Nothing to do: the log-variances are ordinary parameters."""

    def weights(self) -> dict[str, float]:
        """The weight exp(-s_t) of each task's loss (logged as `task_weight`)."""
        return {t: math.exp(-s.item()) for t, s in self.log_vars.items()}



class FAMO:
    """FAMO's task weights (Algorithm 1 of the paper) without its extra forward pass.

    The objective is sum_t (z_t / c) log L_t with z = softmax(w) and c = sum_j z_j / L_j, whose gradient is
    sum_t z_t / (c L_t) grad L_t: `weigh` scales each task's loss by that detached factor, with c taken from
    the previous step's losses (a global scale). The logits then move by the decrease of each task's
    log-loss; the paper measures it on the same batch after the update (one more forward pass), we measure
    it between consecutive steps.
    """

    def __init__(self, tasks: list[str], lr: float = 0.025, weight_decay: float = 1e-3, eps: float = 1e-8) -> None:
        self.tasks = list(tasks)
        self.logits = torch.zeros(len(tasks), requires_grad=True)
        self.optimizer = torch.optim.Adam([self.logits], lr=lr, weight_decay=weight_decay)
        self.eps = eps
        self.previous: torch.Tensor | None = None

    def _z(self) -> torch.Tensor:
        return torch.softmax(self.logits.detach(), dim=0)

    def weigh(self, task: str, loss: torch.Tensor) -> torch.Tensor:
        z = self._z()[self.tasks.index(task)]
        norm = float((self._z() / self.previous).sum()) if self.previous is not None else 1.0
        return loss * float(z / (loss.detach().clamp(min=0) + self.eps) / norm)

    def after_step(self, losses: dict[str, float]) -> None:
        """Move the logits by the change of each task's log-loss since the previous step."""
        current = torch.tensor([max(losses[t], 0.0) + self.eps for t in self.tasks])
        if self.previous is not None:
            delta = self.previous.log() - current.log()
            self.optimizer.zero_grad()
            torch.autograd.backward(torch.softmax(self.logits, dim=0), grad_tensors=delta)
            self.optimizer.step()
        self.previous = current

    def weights(self) -> dict[str, float]:
        """The task weights z = softmax(w) (logged as `task_weight`)."""
        return dict(zip(self.tasks, self._z().tolist(), strict=True))

    def state_dict(self) -> dict[str, Any]:
        """Logits, their Adam state and the previous step's losses, as JSON numbers (kept in checkpoints)."""
        adam = self.optimizer.state.get(self.logits, {})
        return {
            "logits": self.logits.detach().tolist(),
            "previous": None if self.previous is None else self.previous.tolist(),
            "adam": {k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in adam.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned: the weighting continues exactly where it was saved."""
        with torch.no_grad():
            self.logits.copy_(torch.tensor(state["logits"], dtype=self.logits.dtype))
        previous = state.get("previous")
        self.previous = None if previous is None else torch.tensor(previous, dtype=self.logits.dtype)
        self.optimizer.state.clear()
        if state.get("adam"):
            self.optimizer.state[self.logits] = {k: torch.tensor(v, dtype=self.logits.dtype)
                                                 for k, v in state["adam"].items()}


def make_weighting(method: str, tasks: list[str], **options: Any) -> UncertaintyWeighting | FAMO | None:
    """The loss weighting a method names (`uncertainty`, `famo` with its keyword `options`), or None for the other
    methods."""
    if method == "uncertainty":
        return UncertaintyWeighting(tasks)
    if method == "famo":
        return FAMO(tasks, **options)
    return None
