"""The multi-task sampler: a seeded, resumable index stream per task."""

from __future__ import annotations

import torch


class MultiTaskSampler:
    """Seeded endless index streams, one per task: each task is reshuffled whenever it is used up.

    `draw(task, n)` returns the next n indices of that task. The whole state is the position in each
    stream, so a run resumes exactly from `state_dict()`.
    """

    def __init__(self, sizes: dict[str, int], seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.sizes = dict(sizes)
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.positions = {name: 0 for name in sizes}
        self._cache: dict[str, tuple[int, list[int]]] = {}

    def _permutation(self, task: str, cycle: int) -> list[int]:
        cached = self._cache.get(task)
        if cached is None or cached[0] != cycle:
            task_index = list(self.sizes).index(task)
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + task_index * 7919 + cycle)
            cached = (cycle, torch.randperm(self.sizes[task], generator=generator).tolist())
            self._cache[task] = cached
        return cached[1]

    def draw(self, task: str, n: int) -> list[int]:
        """The next n indices of `task` for this rank; all ranks together consume n * world_size.

        Rank r takes stream positions [pos + r*n, pos + (r+1)*n): the ranks' draws, in rank order, are exactly
        the n * world_size indices one process would draw (the union of the ranks' batches is that batch).
        """
        size = self.sizes[task]
        out = []
        start = self.positions[task] + self.rank * n
        for pos in range(start, start + n):
            out.append(self._permutation(task, pos // size)[pos % size])
        self.positions[task] += n * self.world_size
        return out

    def state_dict(self) -> dict[str, int]:
        return dict(self.positions)

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.positions = {name: int(state[name]) for name in self.sizes}
