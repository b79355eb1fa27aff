"""Several processes (`torchrun` or `accelerate launch`): ranks, the per-step gradient all-reduce, shared results.

Hugging Face Accelerate's `PartialState` starts the process group from the launcher's environment (gloo on
CPU, nccl on GPU) and gives each process its rank and device; the collectives are torch.distributed's.
There is no DDP wrapper: every rank computes its per-task gradients locally, and then the surgery engine
(`mtbert.methods.surgery.GradientSurgery`) averages them over the ranks:

- `exact` (the default): the T x P per-task buffer is all-reduced ONCE (mean) and every rank aggregates the
  same matrix with the same seeded generator, so N ranks take exactly the step of one process trained on the
  union of their batches (DESIGN.md, "Distributed training on an existing engine");
- `local`: each rank aggregates its own buffer and the P-vector updates are averaged, a cheaper approximation
  that is a different algorithm for every method but `sum`.

Both modes average the heads' gradients and give every buffer the same layout (the embedding rows touched on
ANY rank); the logged losses are averaged here (`mean_values`). With one process nothing here communicates: the
methods return their input (or call the function they are given), so the training loop reads the same either way.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from mtbert.errors import MtbertError

T = TypeVar("T")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes of a run (one process: rank 0 of 1, and nothing communicates)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    ddp_mode: str = "exact"

    @property
    def is_main(self) -> bool:
        """Rank 0, the only process that writes files, logs and progress bars."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    # ---- start of a stage ----------------------------------------------------------------------
    def prepare_model(self, model: nn.Module, seed: int) -> None:
        """Rank 0's weights on every rank; then a dropout RNG of its own on each rank > 0 (seeded seed + rank)."""
        if not self.distributed:
            return
        with torch.no_grad():
            for tensor in model.state_dict().values():
                dist.broadcast(tensor, src=0)
        if self.rank > 0:
            torch.manual_seed(seed + self.rank)

    # ---- the training step ---------------------------------------------------------------------
    # (the per-task gradients' averaging over the ranks is the surgery engine's: mtbert.methods.surgery)
    def mean_values(self, values: dict[str, float]) -> dict[str, float]:
        """Each value averaged over the ranks (one all-reduce; the values themselves on one process)."""
        if not self.distributed:
            return values
        total = torch.tensor(list(values.values()), dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return dict(zip(values, (total / self.world_size).tolist(), strict=True))

    def with_mean_value(self, loss: torch.Tensor) -> torch.Tensor:
        """`loss` carrying the value of its mean over the ranks, and the gradient of this rank's own loss.

        A loss weighting that reads a loss's value (FAMO's 1/L_t) then weighs every rank's gradient by the loss
        of the union of the batches, as one process would. One all-reduce of a scalar.
        """
        if not self.distributed:
            return loss
        mean = loss.detach().clone()
        self._mean_(mean)
        return loss + (mean - loss.detach())

    def _mean_(self, tensor: torch.Tensor) -> None:
        dist.all_reduce(tensor)  # SUM, then divide: gloo has no AVG
        tensor.div_(self.world_size)

    # ---- results, files and checkpoints --------------------------------------------------------
    def shard(self, items: list[T]) -> list[T]:
        """This rank's strided share of `items` (all of them on one process)."""
        return items[self.rank :: self.world_size]

    def gather(self, items: list[T]) -> list[T]:
        """Every rank's `items`, concatenated in rank order, on every rank (picklable items)."""
        if not self.distributed:
            return items
        parts: list[Any] = [None] * self.world_size
        dist.all_gather_object(parts, items)
        return [item for part in parts for item in part]

    def main_only(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(*args, **kwargs)` on rank 0 alone; the other ranks wait for it and get its result or error."""
        if not self.distributed:
            return fn(*args, **kwargs)
        box: list[Any] = [None]
        if self.is_main:
            try:
                box[0] = ("ok", fn(*args, **kwargs))
            except Exception as err:
                message = str(err) if isinstance(err, MtbertError) else f"rank 0 failed: {type(err).__name__}: {err}"
                dist.broadcast_object_list([("error", message)], src=0)
                raise
        dist.broadcast_object_list(box, src=0)
        kind, value = box[0]
        if kind == "error":
            raise MtbertError(value)
        return value

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def rng_states(self) -> list[dict[str, torch.Tensor]] | None:
        """Every rank's dropout RNG state, for rank 0's checkpoint (None on one process)."""
        if not self.distributed:
            return None
        mine = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            mine["cuda"] = torch.cuda.get_rng_state()
        return self.gather([mine])


ONE_PROCESS = Ranks()


def start(ddp_mode: str = "exact") -> Ranks:
    """The ranks of this run, from the launcher's environment (`torchrun`, `accelerate launch`, or none).

    On one process the device is the GPU when there is one, else the CPU, as it always was. With several,
    the process group is started by Accelerate (once per process) and the non-main ranks' log messages
    below ERROR are silenced.
    """
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    if state.num_processes == 1:
        if "ACCELERATE_DYNAMO_BACKEND" in os.environ and "MASTER_ADDR" in os.environ:
            _warn_once_single_process()
        return Ranks(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"), ddp_mode=ddp_mode)
    if not state.is_main_process:
        logging.getLogger("mtbert").setLevel(logging.ERROR)
    _destroy_at_exit()
    return Ranks(rank=state.process_index, world_size=state.num_processes, device=state.device, ddp_mode=ddp_mode)


@functools.cache
def _warn_once_single_process() -> None:
    # `accelerate launch --num_processes N` without --multi_gpu on a machine without GPUs runs ONE process
    logger.warning("accelerate launch started a single process; without GPUs it starts several only with "
                   "--multi_gpu (accelerate launch --multi_gpu --num_processes N ...)")


@functools.cache
def _destroy_at_exit() -> None:
    atexit.register(_destroy)


def _destroy() -> None:
    if dist.is_initialized():  # nccl complains at exit about a process group left open
        dist.destroy_process_group()
