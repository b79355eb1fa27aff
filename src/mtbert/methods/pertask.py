"""Per-task gradients of the shared encoder, collected after each task's own backward pass.

Each task has its own batch, so summed-loss training already runs one backward per task. After task t's
backward, the shared parameters' gradients are moved into row t of a T x P buffer and cleared; after the
aggregation the update is written back as `.grad`. No `retain_graph`, no extra backward pass.

The input word-embedding matrix (half of MiniLM's parameters) gets gradient only in the rows of tokens
that occur in the step's batches; the buffer keeps just those rows, which halves the cost of the
Gramian and of the update without changing the result (the other rows are zero for every task).
"""

from __future__ import annotations

import re

import torch
from torch import nn


class PerTaskGradients:
    """A T x P buffer of per-task gradients of `params`, with the embedding matrix stored by touched rows."""

    def __init__(self, params: list[nn.Parameter], num_tasks: int, embedding: nn.Parameter | None = None,
                 names: list[str] | None = None) -> None:
        self.embedding = embedding
        names = names or [str(i) for i in range(len(params))]
        self.params = [p for p in params if p is not embedding]
        self.names = [n for n, p in zip(names, params, strict=True) if p is not embedding]
        self.num_tasks = num_tasks
        self.dense_size = sum(p.numel() for p in self.params)
        self.rows: torch.Tensor | None = None
        self.grads: torch.Tensor | None = None
        self.used = [False] * len(self.params)

    def begin_step(self, touched_rows: torch.Tensor | None) -> None:
        """Start a step; `touched_rows` are the embedding rows (token ids) any task's batch uses."""
        device = self.params[0].device
        self.rows = None
        width = self.dense_size
        if self.embedding is not None:
            self.rows = torch.unique(touched_rows.to(device)) if touched_rows is not None else None
            if self.rows is None:
                self.rows = torch.arange(self.embedding.shape[0], device=device)
            width += self.rows.numel() * self.embedding.shape[1]
        self.grads = torch.empty(self.num_tasks, width, device=device, dtype=self.params[0].dtype)
        self.used = [False] * len(self.params)

    def collect(self, task_index: int) -> None:
        """Move the shared gradients of the backward just run into row `task_index`, and clear them."""
        row = self.grads[task_index]
        offset = 0
        for k, p in enumerate(self.params):
            n = p.numel()
            if p.grad is None:
                row[offset : offset + n].zero_()
            else:
                row[offset : offset + n].copy_(p.grad.view(-1))
                self.used[k] = True
                p.grad = None
            offset += n
        if self.embedding is not None:
            segment = row[offset:]
            if self.embedding.grad is None:
                segment.zero_()
            else:
                segment.copy_(self.embedding.grad.index_select(0, self.rows).view(-1))
                self.embedding.grad = None

    def write(self, update: torch.Tensor) -> None:
        """Set every shared parameter's `.grad` from the aggregated P-vector (unused parameters keep None)."""
        offset = 0
        for k, p in enumerate(self.params):
            n = p.numel()
            p.grad = update[offset : offset + n].view_as(p) if self.used[k] else None
            offset += n
        if self.embedding is not None:
            grad = torch.zeros_like(self.embedding)
            grad.index_copy_(0, self.rows, update[offset:].view(-1, self.embedding.shape[1]))
            self.embedding.grad = grad

    def layer_groups(self) -> list[list[tuple[int, int]]]:
        """Column ranges of the buffer grouped by encoder layer (`.layer.<i>.`); the rest (embeddings, the
        word-embedding rows, anything else) is one group. Valid after `begin_step`."""
        groups: dict[str, list[tuple[int, int]]] = {}
        offset = 0
        for name, p in zip(self.names, self.params, strict=True):
            match = re.search(r"\.layers?\.(\d+)\.", f".{name}")
            key = f"layer{match.group(1)}" if match else "other"
            groups.setdefault(key, []).append((offset, offset + p.numel()))
            offset += p.numel()
        if self.embedding is not None and self.grads.shape[1] > offset:
            groups.setdefault("other", []).append((offset, self.grads.shape[1]))
        return list(groups.values())


def aggregate_per_layer(aggregate, grads: torch.Tensor, groups: list[list[tuple[int, int]]],
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply a gradient method to each group of columns separately (`surgery_scope: per-layer`)."""
    update = torch.empty(grads.shape[1], dtype=grads.dtype, device=grads.device)
    for group in groups:
        columns = torch.cat([torch.arange(s, e, device=grads.device) for s, e in group])
        update[columns] = aggregate(grads.index_select(1, columns), generator=generator)
    return update
