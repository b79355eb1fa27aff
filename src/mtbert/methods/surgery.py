"""`GradientSurgery`: mtbert's one gradient-surgery engine, the public API and what every training path runs.

`mtbert train` (its `Method`, methods/method.py, which adds loss scaling and loss weighting on top),
`MultiTaskTrainer` and any PyTorch loop of your own all go through this module: it alone holds the per-task
buffer (`PerTaskGradients`), the union of the touched embedding rows, the averaging over ranks (`exact` or
`local`), the accumulation of micro-batches into a task's row, the float16 unscaling and the aggregation
(global or per encoder layer).

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
union of their batches (mtbert's `ddp_mode: exact`; `ddp_mode="local"` aggregates each rank's own rows and
averages the updates instead). Every rank must collect the same tasks in the same order.
With a DDP-wrapped model run every task's forward and backward inside `model.no_sync()` (or
`accelerator.no_sync(model)`), so that DDP does not all-reduce each backward, and pass the parameters outside
the surgery (the heads) as `other_params`: `apply()` averages their gradients over the ranks too.

Gradient accumulation: `begin_step` with the token ids of all the step's micro-batches, then after each
micro-batch's backward `collect(task, accumulate=True)`, and `apply()` once. Float16 with a gradient scaler:
`apply(scaler=scaler)` aggregates the unscaled gradients.

Memory: the buffer is T rows of the shared parameters (about 43 MB a row for MiniLM: its dense parameters and the
step's embedding rows) plus the update; the embedding's `.grad` is written into the rows' memory once they are
spent. `buffer_dtype="bfloat16"` stores the T rows in bfloat16 (half of that); the update stays in the parameters'
dtype. The Gramian and the update are bfloat16 products accumulated in float32 where the device multiplies
bfloat16 natively (a CPU with AVX512-BF16 or AMX), else accumulated in float32 over column chunks of a few
MB (`mtbert.methods.aggregators`). At T = 16 (`mtbert bench scaling`, MiniLM, a CPU with AVX512-BF16) PCGrad with
bfloat16 rows costs 1.04x `sum`'s step at 1.28x its peak memory; with float32 rows 1.07x at 1.66x. Measured on real
MiniLM PCGrad steps (`benchmarks/buffer_precision.py`, T = 3 and 16): the update's relative error against a float32
buffer was 0.23-0.33% (cosine 0.999995) and no conflict decision (the sign of g_i.g_j) changed, though some pairs'
cosine was 4e-5. On several ranks a bfloat16 buffer is averaged in bfloat16 (the all-reduce's sums rounded to it).
"""

from __future__ import annotations

import functools
import inspect
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn

from mtbert.errors import ConfigError, MtbertError
from mtbert.methods.aggregators import Aggregator, GradVac, NashMTL, diagnose, make_aggregator

SCOPES = ("global", "per-layer")
DDP_MODES = ("exact", "local")
BUFFER_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}  # the per-task rows' storage


def buffer_dtype_of(value: str | torch.dtype | None) -> torch.dtype | None:
    """The dtype `buffer_dtype` names (`"float32"`, `"bfloat16"` or that torch dtype; None: the parameters')."""
    if value is None:
        return None
    for name, dtype in BUFFER_DTYPES.items():
        if value == name or value == dtype:
            return dtype
    raise ConfigError(f"buffer_dtype: {value!r} is not one of {', '.join(BUFFER_DTYPES)}")


class GradScale(Protocol):
    """What `apply` reads of a float16 gradient scaler (`torch.amp.GradScaler`): the losses' scale factor."""

    def get_scale(self) -> float: ...


# ---- the per-task buffer ---------------------------------------------------------------------------------------
class PerTaskGradients:
    """A T x P buffer of per-task gradients of `params`, with the embedding matrix stored by touched rows.

    Each task has its own batch, so summed-loss training already runs one backward per task. After task t's
    backward, the shared parameters' gradients are moved into row t and cleared; after the aggregation the update
    is written back as `.grad`. No `retain_graph`, no extra backward pass. The input word-embedding matrix (half
    of MiniLM's parameters) gets gradient only in the rows of the step's tokens; the buffer keeps just those rows,
    which halves the cost of the Gramian and of the update without changing the result (the other rows are zero
    for every task).

    The buffer's memory and the embedding's gradient matrix are kept from step to step (grown when a step needs
    more), and so is the update (`update`, a P-vector in the parameters' dtype, which `GradientSurgery.apply` has
    the method write into; not kept with low-precision rows: `keeps_update`): on the CPU a fresh tensor this large
    is new pages from the system on every step, whose faults cost more than the surgery itself on a small model.
    So the rows (`grads`) are valid until `write`, the shared `.grad` that `write` sets are views of
    the kept update (a step whose `.grad` still point into it takes a fresh one), and the embedding's `.grad` is
    written (zeroed, then the step's rows) into the start of the rows' memory, spent once the update is computed
    (where it is large enough, else into a kept tensor of its own; a `.grad` still set at the next `begin_step` is
    moved out first). A step with more tasks than the rows hold grows
    them in place where the memory has room, else into memory for twice the rows (so the first step's growth never
    holds two copies of many rows).

    `buffer_dtype` (None: the parameters' dtype) is the rows' storage: `torch.bfloat16` halves it; each collected
    gradient is rounded once to it (an accumulated micro-batch adds in float32 and rounds the sum once more).
    """

    def __init__(self, params: list[nn.Parameter], num_tasks: int, embedding: nn.Parameter | None = None,
                 names: list[str] | None = None, buffer_dtype: torch.dtype | None = None) -> None:
        self.embedding = embedding
        self.buffer_dtype = buffer_dtype
        names = names or [str(i) for i in range(len(params))]
        self.params = [p for p in params if p is not embedding]
        self.names = [n for n, p in zip(names, params, strict=True) if p is not embedding]
        self.num_tasks = num_tasks
        self.dense_size = sum(p.numel() for p in self.params)
        self.rows: torch.Tensor | None = None
        self.grads: torch.Tensor | None = None
        self.update: torch.Tensor | None = None
        self.used = [False] * len(self.params)
        self._memory: torch.Tensor | None = None  # kept across steps: the rows of every step
        self._update_memory: torch.Tensor | None = None  # kept across steps: the update (the shared `.grad`)
        self._embedding_grad: torch.Tensor | None = None  # kept across steps, zeroed and written by `write`

    def begin_step(self, touched_rows: torch.Tensor | None) -> None:
        """Start a step; `touched_rows` are the embedding rows (token ids) any task's batch uses."""
        device = self.params[0].device if self.params else self.embedding.device
        dtype = self.params[0].dtype if self.params else self.embedding.dtype
        self.rows = None
        width = self.dense_size
        if self.embedding is not None:
            self.rows = torch.unique(touched_rows.to(device)) if touched_rows is not None else None
            if self.rows is None:
                self.rows = torch.arange(self.embedding.shape[0], device=device)
            width += self.rows.numel() * self.embedding.shape[1]
        self.grads = self.update = None  # no view keeps memory alive that a fresh one replaces
        if self._holds_embedding_grad():  # a `.grad` left set (backward adds into it): moved out of the rows
            self.embedding.grad = self.embedding.grad.clone()
        memory = self._kept("_memory", self.num_tasks * width, device, self.buffer_dtype or dtype)
        self.grads = memory[: self.num_tasks * width].view(self.num_tasks, width)
        if self.keeps_update:
            self.update = self._kept("_update_memory", width, device, dtype, check_use=True)[:width]  # `apply` fills
        else:  # taken by `apply` (`take_update`), let go with the `.grad` that view it
            self._update_memory = None
        self.used = [False] * len(self.params)

    def _kept(self, name: str, size: int, device: torch.device, dtype: torch.dtype,
              check_use: bool = False) -> torch.Tensor:
        """The kept memory called `name` if it holds `size` elements of `dtype` on `device` (and, with `check_use`,
        no parameter's `.grad` still points into it: a `.grad` that `write` set and nobody cleared), else fresh
        memory (a quarter more than asked, for the next steps' other widths), the old one let go first."""
        memory = getattr(self, name)
        if memory is not None and (memory.device != device or memory.dtype != dtype or memory.numel() < size
                                   or (check_use and self._in_use(memory))):
            memory = None
            setattr(self, name, None)
        if memory is None:
            memory = torch.empty(size + size // 4, device=device, dtype=dtype)
            setattr(self, name, memory)
        return memory

    @property
    def keeps_update(self) -> bool:
        """Whether the update's memory is kept from step to step: with rows in the parameters' dtype. With
        low-precision rows (chosen to save memory) it is taken at `apply` instead, so that it does not sit beside
        the rows through the next step's backward passes."""
        return self.buffer_dtype is None or self.buffer_dtype == self._param_dtype()

    def take_update(self) -> torch.Tensor:
        """The P-vector the step's update is written into (`update`; fresh where it is not kept)."""
        if self.update is None:
            self.update = self.grads.new_empty(self.grads.shape[1], dtype=self._param_dtype())
        return self.update

    def _param_dtype(self) -> torch.dtype:
        return self.params[0].dtype if self.params else self.embedding.dtype

    def add_row(self) -> None:
        """One more task row (the rows collected so far kept): in place when the memory has room, else in fresh
        memory for twice the rows."""
        width, rows = self.grads.shape[1], self.num_tasks + 1
        if self._memory.numel() < rows * width:
            memory = self._memory.new_empty(max(rows, 2 * self.num_tasks) * width)
            memory[: self.num_tasks * width].copy_(self._memory[: self.num_tasks * width])
            self.grads, self._memory = None, memory
        self.num_tasks = rows
        self.grads = self._memory[: rows * width].view(rows, width)

    def _in_use(self, memory: torch.Tensor) -> bool:
        """Whether a shared parameter's `.grad` lives in `memory` (an update `write` set, not yet cleared)."""
        start = memory.untyped_storage().data_ptr()
        return any(p.grad is not None and p.grad.untyped_storage().data_ptr() == start for p in self.params)

    def collect(self, task_index: int, accumulate: bool = False) -> None:
        """Move the shared gradients of the backward just run into row `task_index` (added to it with
        `accumulate`: the task's next micro-batch), and clear them."""
        row = self.grads[task_index]
        offset = 0
        for k, p in enumerate(self.params):
            n = p.numel()
            if p.grad is not None:
                segment = row[offset : offset + n]
                segment.add_(p.grad.view(-1)) if accumulate else segment.copy_(p.grad.view(-1))
                self.used[k] = True
                p.grad = None
            elif not accumulate:
                row[offset : offset + n].zero_()
            offset += n
        if self.embedding is not None:
            segment = row[offset:]
            if self.embedding.grad is not None:
                rows = self.embedding.grad.index_select(0, self.rows).view(-1)
                segment.add_(rows) if accumulate else segment.copy_(rows)
                self.embedding.grad = None
            elif not accumulate:
                segment.zero_()

    def write(self, update: torch.Tensor) -> None:
        """Set every shared parameter's `.grad` from the aggregated P-vector (unused parameters keep None)."""
        offset = 0
        for k, p in enumerate(self.params):
            n = p.numel()
            p.grad = update[offset : offset + n].view_as(p) if self.used[k] else None
            offset += n
        if self.embedding is not None:
            grad = self._spent_rows_as_embedding_grad()
            if grad is None:
                grad = self._embedding_grad
                if grad is None or grad.shape != self.embedding.shape or grad.dtype != self.embedding.dtype \
                        or grad.device != self.embedding.device:
                    grad = self._embedding_grad = torch.empty_like(self.embedding)
            # zeroed whole: clipping or a gradient scaler may have scaled all of it in place (by NaN, after an
            # overflow), so no row can be assumed still zero
            grad.zero_().index_copy_(0, self.rows, update[offset:].view(-1, self.embedding.shape[1]))
            self.embedding.grad = grad
        if not self.keeps_update:
            self.update = None  # the `.grad` hold it, until the optimizer lets go of them

    def _spent_rows_as_embedding_grad(self) -> torch.Tensor | None:
        """The start of the rows' memory as an embedding-shaped tensor, where it is large enough (None if not): the
        rows are spent once the update is computed, so the embedding's `.grad` needs no memory of its own."""
        memory, embedding = self._memory, self.embedding
        size = embedding.numel() * embedding.element_size()
        if memory is None or memory.device != embedding.device or size % memory.element_size() \
                or memory.numel() * memory.element_size() < size:
            return None
        return memory[: size // memory.element_size()].view(embedding.dtype).view_as(embedding)

    def _holds_embedding_grad(self) -> bool:
        """Whether the embedding's `.grad` (one `write` set and nobody cleared) lives in the rows' memory."""
        grad = None if self.embedding is None else self.embedding.grad
        return grad is not None and self._memory is not None \
            and grad.untyped_storage().data_ptr() == self._memory.untyped_storage().data_ptr()

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
                        generator: torch.Generator | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """Apply a gradient method to each group of columns separately (`surgery_scope: per-layer`), into `out` when
    given. A group of one column range (an encoder layer) is aggregated from a view of its columns straight into
    its part of the update; only a group of several ranges is copied."""
    dtype = torch.promote_types(grads.dtype, torch.float32)  # a float32 update of bfloat16 rows
    update = torch.empty(grads.shape[1], dtype=dtype, device=grads.device) if out is None else out
    for group in groups:
        if len(group) == 1:
            start, end = group[0]
            aggregate(grads[:, start:end], generator=generator, out=update[start:end])
            continue
        columns = torch.cat([torch.arange(s, e, device=grads.device) for s, e in group])
        update[columns] = aggregate(grads.index_select(1, columns), generator=generator)
    return update


# ---- method options --------------------------------------------------------------------------------------------
def check_options(method: str, target: Any, options: Mapping[str, Any], skip: tuple[str, ...] = ()) -> None:
    """Raise ConfigError unless every option is a keyword of `target` (a function or a class) with a value of its
    default's type (a finite number where the default is a float, an integer where it is an integer)."""
    parameters = {name: p for name, p in inspect.signature(target).parameters.items()
                  if name not in ("self", "grads", "generator", "out", *skip)
                  and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    for key, value in options.items():
        if key not in parameters:
            choices = ", ".join(parameters) if parameters else "none"
            raise ConfigError(f"gradient method {method!r} has no option {key!r} (its options: {choices})")
        default = parameters[key].default
        number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if isinstance(default, int) and not isinstance(default, bool) and not (number and isinstance(value, int)):
            raise ConfigError(f"gradient method {method!r}: option {key!r} must be an integer, not {value!r}")
        if isinstance(default, float) and not number:
            raise ConfigError(f"gradient method {method!r}: option {key!r} must be a number, not {value!r}")


def make_method_aggregator(method: str, options: Mapping[str, Any] | None = None) -> Aggregator:
    """The aggregator called `method` with its keyword options (`cagrad`: `c`; `gradvac`: `beta`, `eps`; ...).

    An unknown method or option, or an option value of the wrong type, is a `ConfigError` naming it.
    """
    aggregator = make_aggregator(method)
    if not options:
        return aggregator
    stateful = isinstance(aggregator, GradVac | NashMTL)
    check_options(method, type(aggregator).__init__ if stateful else aggregator, options)
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
    torch.distributed is initialised with several processes; False never does. `ddp_mode`: `exact` averages
    the per-task buffer over the ranks before the aggregation, `local` aggregates each rank's own buffer and
    averages the updates (a cheaper, different algorithm). `buffer_dtype`: the per-task rows' storage, `"float32"`
    or `"bfloat16"` (half the memory; the Gramian and the update still accumulate in float32, the update is in the
    parameters' dtype; None: the parameters' dtype); on several ranks a bfloat16 buffer is averaged in bfloat16.
    `method_options` go to the method (`c=0.4` for `cagrad`).
    """

    def __init__(self, params: Iterable[nn.Parameter] | Iterable[tuple[str, nn.Parameter]], method: str = "pcgrad",
                 seed: int = 0, *, embedding: nn.Parameter | None = None, scope: str = "global",
                 other_params: Iterable[nn.Parameter] = (), distributed: bool | None = None,
                 ddp_mode: str = "exact", buffer_dtype: str | torch.dtype | None = None,
                 **method_options: Any) -> None:
        if scope not in SCOPES:
            raise ConfigError(f"scope: {scope!r} is not one of {', '.join(SCOPES)}")
        if ddp_mode not in DDP_MODES:
            raise ConfigError(f"ddp_mode: {ddp_mode!r} is not one of {', '.join(DDP_MODES)}")
        dtype = buffer_dtype_of(buffer_dtype)
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
        self.ddp_mode = ddp_mode
        self.aggregate: Aggregator = make_method_aggregator(method, method_options)
        self.generator = torch.Generator().manual_seed(seed)
        shared = {id(p) for _, p in named}
        self.other_params = [p for p in other_params if p.requires_grad and id(p) not in shared]
        self.distributed = distributed
        self._buffer = PerTaskGradients([p for _, p in named], 1, embedding, names=[n for n, _ in named],
                                        buffer_dtype=dtype)
        self._capacity = 1
        self._tasks: list[str] = []
        self._begun = False

    # ---- one step --------------------------------------------------------------------------------
    @property
    def embedding(self) -> nn.Parameter | None:
        """The word-embedding matrix kept by touched rows (None: every shared parameter is kept densely)."""
        return self._buffer.embedding

    @property
    def buffer(self) -> PerTaskGradients:
        """The per-task buffer (its layout: `dense_size`, `embedding`; its rows after `begin_step`)."""
        return self._buffer

    @property
    def tasks(self) -> list[str]:
        """The tasks collected so far in this step, in collection order (row order of the buffer)."""
        return list(self._tasks)

    @property
    def grads(self) -> torch.Tensor | None:
        """The collected rows of this step (tasks x shared parameters; the embedding by its touched rows; in
        `buffer_dtype`); `apply` writes the embedding's `.grad` over their memory, so copy what must outlive it."""
        return None if self._buffer.grads is None else self._buffer.grads[: len(self._tasks)]

    def begin_step(self, input_ids: torch.Tensor | Sequence[torch.Tensor] | None = None) -> None:
        """Start a step (optional: `collect` starts one too); `input_ids`: every token id of every task's batch
        (of every micro-batch, with gradient accumulation).

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
            if self._is_distributed():  # the rows any rank's batches touch: every buffer has the same layout
                mask = torch.zeros(vocab, dtype=torch.uint8, device=device)
                mask[rows] = 1
                dist.all_reduce(mask, op=dist.ReduceOp.MAX)
                rows = mask.nonzero().squeeze(1)
        buffer.num_tasks = self._capacity
        buffer.begin_step(rows)
        self._begun = True

    def collect(self, task: str, *, accumulate: bool = False) -> None:
        """Call right after `task`'s backward: its shared gradients move into its row and `.grad` is cleared.

        With gradient accumulation, call it after each micro-batch's backward with `accumulate=True`: the
        gradients are added to the task's row (started by its first micro-batch). Or run all of a task's
        micro-batches' backward passes first (they add up in `.grad`) and collect once.
        """
        if task in self._tasks and not accumulate:
            raise MtbertError(f"GradientSurgery.collect: task {task!r} was collected twice in one step; "
                              "call apply() after the last task's backward (or collect(task, accumulate=True) "
                              "after each micro-batch)")
        if not self._begun:
            self.begin_step()
        buffer = self._buffer
        if task in self._tasks:
            buffer.collect(self._tasks.index(task), accumulate=True)
            return
        index = len(self._tasks)
        if index == buffer.grads.shape[0]:  # a task more than any step before: one more row
            buffer.add_row()
            self._capacity = buffer.num_tasks
        buffer.collect(index)
        self._tasks.append(task)

    def apply(self, diagnostics: bool = True, scaler: GradScale | None = None,
              aggregator: Aggregator | None = None) -> dict[str, Any] | None:
        """Aggregate the collected rows, write the update into the shared `.grad`, and end the step.

        On several ranks the rows (`ddp_mode: exact`) and `other_params`' gradients are first averaged over the
        ranks. `scaler` (float16 mixed precision): the losses were scaled by `scaler.get_scale()`, so the rows are
        unscaled before the aggregation (methods such as Nash-MTL are not scale-equivariant) and the update is
        written back scaled, as `scaler.unscale_` expects `.grad`; rows that overflowed write NaN, so that the
        scaler skips the step.

        `aggregator`: this step's rows are combined by it instead of the method (`sum_rows` averages one row over
        the ranks: representation-level surgery has aggregated already).

        Returns (with `diagnostics`) the gradient statistics of `mtbert.methods.aggregators.diagnose`:
        `grad_norm` per task, `cosine` and `conflict` per task pair, and `removed_norm` (how far the update is
        from the plain sum); on several ranks, of the rank-averaged gradients. None without `diagnostics` or
        when the rows overflowed.
        """
        if not self._tasks:
            raise MtbertError("GradientSurgery.apply: no task was collected this step; call collect(task) after "
                              "each task's backward")
        buffer, tasks = self._buffer, self._tasks
        grads = buffer.grads[: len(tasks)]
        distributed = self._is_distributed()
        if distributed:
            self._average(grads)
        overflowed, grad_scale = False, 1.0
        if scaler is not None:  # fp16: aggregate the true gradients
            grad_scale = float(scaler.get_scale())
            overflowed = not bool(torch.stack([torch.isfinite(row).all() for row in grads]).all())  # a row at a time
            grads.div_(grad_scale)
        out = buffer.take_update() if scaler is None else None  # fp16 writes the update back scaled: a new tensor
        if aggregator is not None:
            update = aggregator(grads, generator=self.generator, out=out)
        elif self.scope == "per-layer":
            update = aggregate_per_layer(self.aggregate, grads, buffer.layer_groups(), self.generator, out=out)
        else:
            update = self.aggregate(grads, generator=self.generator, out=out)
        stats = diagnose(grads, update, list(tasks)) if diagnostics and not overflowed else None
        if overflowed:
            update = torch.full_like(update, float("nan"))
        if distributed and self.ddp_mode == "local":  # the mean of the ranks' updates
            _mean_(update)
        buffer.write(update * grad_scale if scaler is not None else update)
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
        """Mean over the ranks of the buffer (`exact`) and of `other_params`' gradients; a parameter that got a
        gradient on any rank gets one on every rank (the others keep None, as on one process).

        Each rank's losses are scaled by 1/(its own samples), so the mean over ranks of equal batches is the
        gradient of the union of their batches.
        """
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
        if self.ddp_mode == "exact":  # one all-reduce of T x P floats
            _mean_(grads)
        reached = [p for p, u in zip(others, used, strict=True) if u]
        if reached:
            flat = torch.cat([p.grad.reshape(-1) if p.grad is not None else p.new_zeros(p.numel()) for p in reached])
            _mean_(flat)
            for p, part in zip(reached, flat.split([p.numel() for p in reached]), strict=True):
                p.grad = part.view_as(p)


def _mean_(tensor: torch.Tensor) -> None:
    """In place: the mean of `tensor` over the ranks."""
    dist.all_reduce(tensor)  # SUM, then divide: gloo has no AVG
    tensor.div_(dist.get_world_size())


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
