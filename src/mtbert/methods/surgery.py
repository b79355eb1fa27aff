"""`GradientSurgery`: mtbert's per-task gradient surgery inside any PyTorch training loop.

```python
surgery = GradientSurgery(model.trunk.parameters(), method="pcgrad", seed=0)
for step in range(steps):
    for task, batch in batches().items():
        model(task, batch).backward()   # one backward per task, no retain_graph
        surgery.collect(task)           # moves the shared gradients into row `task` of a T x P buffer
    stats = surgery.apply()             # aggregates the rows and writes the result into `.grad`
    optimizer.step(); optimizer.zero_grad()
```

After each task's own backward, `collect(task)` moves the gradients of the shared parameters into that task's
row of a T x P buffer and clears them (mtbert's `PerTaskGradients`). `apply()` combines the rows with the
method (`mtbert.methods.aggregators`: `sum`, `pcgrad`, `cagrad`, ...; globally or per encoder layer) and
writes the update into the shared parameters' `.grad`; a parameter that no task's backward reached keeps
`.grad = None`. Every other parameter (a task's head) keeps the gradient its own task's backward left.

The word-embedding matrix of a transformer (half of MiniLM's parameters) gets gradient only in the rows of the
step's tokens: pass it as `embedding=` and the step's token ids to `begin_step(input_ids)` before the first
backward, and the buffer keeps just those rows. Without `begin_step` the whole matrix is kept, densely.

Several processes (torchrun, `accelerate launch`): when torch.distributed is initialised, `apply()` first
averages the per-task buffer over the ranks (one all-reduce of T x P floats), so every rank aggregates the
same matrix with the same seeded generator and takes the same step: N ranks equal one process trained on the
union of their batches (mtbert's `ddp_mode: exact`). Every rank must collect the same tasks in the same order.
With a DDP-wrapped model run every task's forward and backward inside `model.no_sync()` (or
`accelerator.no_sync(model)`), so that DDP does not all-reduce each backward, and pass the parameters outside
the surgery (the heads) as `other_params`: `apply()` averages their gradients over the ranks too.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from mtbert.errors import ConfigError, MtbertError
from mtbert.methods.aggregators import Aggregator, GradVac, NashMTL, diagnose, make_aggregator
from mtbert.methods.pertask import PerTaskGradients, aggregate_per_layer

SCOPES = ("global", "per-layer")


def make_method_aggregator(method: str, options: dict[str, Any] | None = None) -> Aggregator:
    """The aggregator called `method` with its keyword options (`cagrad`: `c`; `gradvac`: `beta`, `eps`; ...).

    An unknown method or option is a `ConfigError` naming it.
    """
    aggregator = make_aggregator(method)
    if not options:
        return aggregator
    stateful = isinstance(aggregator, GradVac | NashMTL)
    target = type(aggregator).__init__ if stateful else aggregator
    accepted = [name for name in inspect.signature(target).parameters if name not in ("self", "grads", "generator")]
    for key in options:
        if key not in accepted:
            choices = ", ".join(accepted) if accepted else "none"
            raise ConfigError(f"gradient method {method!r} has no option {key!r} (its options: {choices})")
    if stateful:
        return type(aggregator)(**options)
    return functools.partial(aggregator, **options)


class GradientSurgery:
    """Per-task gradient surgery over the shared parameters of any `nn.Module` (see the module docstring).

    `params`: the shared parameters (those that several tasks' losses reach), or `named_parameters()` pairs
    (the names are needed by `scope="per-layer"`, which applies the method to each `.layer.<i>.` block
    separately); parameters with `requires_grad=False` are left out. `method`: a name of
    `mtbert.methods.aggregators.AGGREGATORS`; `seed` seeds the generator of its random choices (PCGrad's task
    orders), the same on every rank. `embedding`: the input word-embedding matrix, kept by the rows
    `begin_step(input_ids)` names. `other_params`: parameters outside the surgery whose gradients `apply()`
    averages over the ranks (ignored on one process). `distributed`: None averages over the ranks whenever
    torch.distributed is initialised with several processes; False never does. `method_options` go to the
    method (`c=0.4` for `cagrad`).
    """

    def __init__(self, params: Iterable[nn.Parameter] | Iterable[tuple[str, nn.Parameter]], method: str = "pcgrad",
                 seed: int = 0, *, embedding: nn.Parameter | None = None, scope: str = "global",
                 other_params: Iterable[nn.Parameter] = (), distributed: bool | None = None,
                 **method_options: Any) -> None:
        if scope not in SCOPES:
            raise ConfigError(f"scope: {scope!r} is not one of {', '.join(SCOPES)}")
        named = _named(params)
        if scope == "per-layer" and named and all(name.isdigit() for name, _ in named):
            raise ConfigError('scope "per-layer" needs parameter names: pass named_parameters() as params')
        if embedding is not None and not embedding.requires_grad:
            embedding = None
        if embedding is not None and not any(p is embedding for _, p in named):
            named.append(("embedding", embedding))
        if not named:
            raise ConfigError("GradientSurgery: no shared parameter with requires_grad=True was given")
        self.method = method
        self.scope = scope
        self.aggregate: Aggregator = make_method_aggregator(method, method_options)
        self.generator = torch.Generator().manual_seed(seed)
        shared = {id(p) for _, p in named}
        self.other_params = [p for p in other_params if p.requires_grad and id(p) not in shared]
        self.distributed = distributed
        self._buffer = PerTaskGradients([p for _, p in named], 1, embedding, names=[n for n, _ in named])
        self._capacity = 1
        self._tasks: list[str] = []
        self._begun = False

    # ---- one step --------------------------------------------------------------------------------
    @property
    def embedding(self) -> nn.Parameter | None:
        """The word-embedding matrix kept by touched rows (None: every shared parameter is kept densely)."""
        return self._buffer.embedding

    @property
    def tasks(self) -> list[str]:
        """The tasks collected so far in this step, in collection order (row order of the buffer)."""
        return list(self._tasks)

    def begin_step(self, input_ids: torch.Tensor | Sequence[torch.Tensor] | None = None) -> None:
        """Start a step (optional: `collect` starts one too); `input_ids`: every token id of every task's batch.

        Only with `embedding=`: the buffer then keeps the embedding rows of these ids (the others get no
        gradient this step), else the whole matrix. With several ranks every rank must call it, since the rows
        are the union over the ranks (one all-reduce of a vocabulary-sized byte mask).
        """
        if self._tasks:
            raise MtbertError("GradientSurgery.begin_step: tasks were collected already this step; call apply() first")
        buffer = self._buffer
        rows = None
        if buffer.embedding is not None and input_ids is not None:
            parts = [input_ids] if isinstance(input_ids, torch.Tensor) else list(input_ids)
            device = buffer.embedding.device
            rows = torch.cat([t.reshape(-1).to(device=device, dtype=torch.long) for t in parts])
            vocab = buffer.embedding.shape[0]
            if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= vocab):
                raise MtbertError(f"GradientSurgery.begin_step: a token id is outside the embedding's {vocab} rows")
            if self._is_distributed():
                mask = torch.zeros(vocab, dtype=torch.uint8, device=device)
                mask[rows] = 1
                dist.all_reduce(mask, op=dist.ReduceOp.MAX)
                rows = mask.nonzero().squeeze(1)
        buffer.num_tasks = self._capacity
        buffer.begin_step(rows)
        self._begun = True

    def collect(self, task: str) -> None:
        """Call right after `task`'s backward: its shared gradients move into its row and `.grad` is cleared."""
        if task in self._tasks:
            raise MtbertError(f"GradientSurgery.collect: task {task!r} was collected twice in one step; "
                              "call apply() after the last task's backward")
        if not self._begun:
            self.begin_step()
        buffer = self._buffer
        index = len(self._tasks)
        if index == buffer.grads.shape[0]:  # a task more than any step before: one more row
            grown = buffer.grads.new_empty(index + 1, buffer.grads.shape[1])
            grown[:index].copy_(buffer.grads)
            buffer.grads = grown
            self._capacity = buffer.num_tasks = index + 1
        buffer.collect(index)
        self._tasks.append(task)

    def apply(self, diagnostics: bool = True) -> dict[str, Any] | None:
        """Aggregate the collected rows, write the update into the shared `.grad`, and end the step.

        Returns (with `diagnostics`) the gradient statistics of `mtbert.methods.aggregators.diagnose`:
        `grad_norm` per task, `cosine` and `conflict` per task pair, and `removed_norm` (how far the update is
        from the plain sum); on several ranks, of the rank-averaged gradients. Without `diagnostics`, None.
        """
        if not self._tasks:
            raise MtbertError("GradientSurgery.apply: no task was collected this step; call collect(task) after "
                              "each task's backward")
        buffer, tasks = self._buffer, self._tasks
        grads = buffer.grads[: len(tasks)]
        if self._is_distributed():
            self._average(grads)
        if self.scope == "per-layer":
            update = aggregate_per_layer(self.aggregate, grads, buffer.layer_groups(), self.generator)
        else:
            update = self.aggregate(grads, generator=self.generator)
        stats = diagnose(grads, update, list(tasks)) if diagnostics else None
        buffer.write(update)
        self._tasks, self._begun = [], False
        return stats

    # ---- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The generator's state (PCGrad's orders continue after a resume). Stateful methods' history
        (gradvac's targets, nash-mtl's weights) is not included."""
        return {"method": self.method, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`."""
        if state.get("method", self.method) != self.method:
            raise ConfigError(f"GradientSurgery: the saved state is of method {state['method']!r}, not {self.method!r}")
        generator = state["generator"]
        if not isinstance(generator, torch.Tensor):
            generator = torch.tensor(list(generator), dtype=torch.uint8)
        self.generator.set_state(generator)

    # ---- several processes -----------------------------------------------------------------------
    def _is_distributed(self) -> bool:
        if self.distributed is False or not (dist.is_available() and dist.is_initialized()):
            return False
        return dist.get_world_size() > 1

    def _average(self, grads: torch.Tensor) -> None:
        """Mean over the ranks of the buffer and of `other_params`' gradients; a parameter that got a gradient on
        any rank gets one on every rank (the others keep None, as on one process)."""
        buffer, world = self._buffer, dist.get_world_size()
        others = self.other_params
        flags = [float(len(self._tasks)), *map(float, buffer.used), *(float(p.grad is not None) for p in others)]
        small = torch.tensor(flags, dtype=torch.float64, device=grads.device)
        dist.all_reduce(small)
        if int(small[0].item()) != len(self._tasks) * world:
            raise MtbertError(f"GradientSurgery.apply: the ranks collected different numbers of tasks "
                              f"(this rank {len(self._tasks)}: {', '.join(self._tasks)}); every rank must collect "
                              "the same tasks in the same order")
        used = (small[1:] > 0).tolist()
        buffer.used, used = used[: len(buffer.used)], used[len(buffer.used) :]
        dist.all_reduce(grads)  # SUM, then divide: gloo has no AVG
        grads.div_(world)
        reached = [p for p, u in zip(others, used, strict=True) if u]
        if reached:
            flat = torch.cat([p.grad.reshape(-1) if p.grad is not None else p.new_zeros(p.numel()) for p in reached])
            dist.all_reduce(flat)
            flat.div_(world)
            for p, part in zip(reached, flat.split([p.numel() for p in reached]), strict=True):
                p.grad = part.view_as(p)


def _named(params: Iterable[Any]) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) pairs of trainable parameters, without duplicates; unnamed ones are numbered."""
    out: list[tuple[str, nn.Parameter]] = []
    seen: set[int] = set()
    for k, item in enumerate(params):
        name, p = item if isinstance(item, tuple) else (str(k), item)
        if not isinstance(p, torch.Tensor):
            raise ConfigError(f"GradientSurgery: params must be parameters or (name, parameter) pairs, got {type(p)}")
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append((name, p))
    return out
