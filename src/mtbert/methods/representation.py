"""`surgery_scope: representation`: gradient surgery on the tasks' gradients of the encoder's output.

Tasks that share a forward pass (an input_group) read the same hidden states H. Each task's gradient of H costs
only a backward through its head (`torch.autograd.grad(loss_t, H, retain_graph=True)`); the method aggregates
those gradients, and ONE backward of H with the aggregated gradient reaches the encoder, as MGDA-UB (Sener and
Koltun 2018, https://arxiv.org/abs/1810.04650) and LibMTL's `rep_grad` do. It is a different algorithm from
surgery on the encoder's parameter gradients (`global`, `per-layer`): the Jacobian of H is left out. Each head
gets its own task's gradient.

A step may hold several blocks of hidden states (a group's batch, a separate task's batch, each micro-batch): the
step's representation is all of them, and a task's gradient is zero on the blocks it does not read, so the T x T
Gramian is the sum of the blocks' Gramians. Every method here is `w @ G` with weights w computed from the Gramian
alone (methods/aggregators.py), so the method runs on a T x T factor F of the Gramian (F F^T = Gramian), and the
weights over the original rows are `update(F) @ pinv(F)`: the same update, without ever concatenating the blocks.
On several ranks the Gramian is averaged over them (one all-reduce of T x T numbers; `ddp_mode: exact`), which is
the Gramian of the union of their batches, so every rank applies the same weights to its own blocks.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from mtbert.methods.aggregators import Aggregator, diagnose


def factor(gramian: torch.Tensor) -> torch.Tensor:
    """A T x T matrix F with F @ F.T equal to the (symmetric, positive semi-definite) `gramian`."""
    eigenvalues, eigenvectors = torch.linalg.eigh((gramian + gramian.T) / 2)
    return eigenvectors * eigenvalues.clamp(min=0.0).sqrt()


def gramian_weights(aggregate: Aggregator, gramian: torch.Tensor, generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(w, F, update(F)): the weights over the original gradient rows whose Gramian is `gramian` (float64, CPU)
    that the method `aggregate` gives, with the factor F it ran on and its update of F."""
    f = factor(gramian.to(dtype=torch.float64, device="cpu"))
    update = aggregate(f, generator=generator).to(torch.float64)
    return update @ torch.linalg.pinv(f), f, update


class RepresentationSurgery:
    """One step of representation-level surgery: `add` each block's hidden states and scaled task objectives (their
    heads' gradients are accumulated into `.grad`), then `backward` once."""

    def __init__(self, aggregate: Aggregator, generator: torch.Generator, head_params: list[nn.Parameter]) -> None:
        self.aggregate = aggregate
        self.generator = generator
        self.head_params = head_params
        self.tasks: list[str] = []
        self.blocks: list[tuple[list[torch.Tensor], list[int], torch.Tensor]] = []

    def add(self, hidden: list[torch.Tensor], objectives: dict[str, torch.Tensor]) -> None:
        """Each task's gradient of `hidden` from its (scaled) objective, through its head only; the heads' (and a
        loss weighting's) parameter gradients go into their `.grad`."""
        rows = []
        for task, objective in objectives.items():
            grads = torch.autograd.grad(objective, [*hidden, *self.head_params], retain_graph=True,
                                        allow_unused=True)
            for p, g in zip(self.head_params, grads[len(hidden):], strict=True):
                if g is not None:
                    p.grad = g if p.grad is None else p.grad + g
            rows.append(torch.cat([(g if g is not None else torch.zeros_like(h)).reshape(-1).float()
                                   for g, h in zip(grads[: len(hidden)], hidden, strict=True)]))
            if task not in self.tasks:
                self.tasks.append(task)
        self.blocks.append((hidden, [self.tasks.index(t) for t in objectives], torch.stack(rows)))

    def backward(self, diagnostics: bool = False, grad_scale: float = 1.0, average_ranks: bool = False
                 ) -> dict[str, Any] | None:
        """Aggregate the tasks' gradients of the step's hidden states and backpropagate the result through the
        encoder (one backward per block). `grad_scale`: the losses' float16 scale (the Gramian is unscaled first);
        `average_ranks`: the Gramian is the mean of the ranks' (the union of their batches). Returns the
        statistics of `aggregators.diagnose` on the representation's gradients with `diagnostics`."""
        t = len(self.tasks)
        gramian = torch.zeros(t, t, dtype=torch.float64)
        for _, index, rows in self.blocks:
            block = (rows @ rows.T).to(device="cpu", dtype=torch.float64)
            gramian[torch.tensor(index).unsqueeze(1), torch.tensor(index)] += block
        if average_ranks:
            world = dist.get_world_size()
            gramian = gramian.to(self.blocks[0][2].device)
            dist.all_reduce(gramian)  # each rank's rows are its own batch's: the union's Gramian is their sum / W^2
            gramian = gramian.cpu() / world**2
        gramian /= grad_scale**2
        stats = None
        if bool(torch.isfinite(gramian).all()):
            weights, f, update = gramian_weights(self.aggregate, gramian, self.generator)
            stats = diagnose(f, update, list(self.tasks)) if diagnostics else None
        else:  # float16 overflow: the scaled gradients are not finite, so that the scaler skips the step
            weights = torch.ones(t, dtype=torch.float64)
        for hidden, index, rows in self.blocks:
            combined = weights[index].to(device=rows.device, dtype=rows.dtype) @ rows
            parts = combined.split([h.numel() for h in hidden])
            torch.autograd.backward(hidden, [p.view_as(h).to(h.dtype) for p, h in zip(parts, hidden, strict=True)])
        self.blocks, self.tasks = [], []
        return stats
