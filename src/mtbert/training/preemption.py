"""Stopping cleanly on SIGTERM (Slurm, Kubernetes, spot instances) and Ctrl-C (SIGINT).

Inside `with Preemption() as stop:` a SIGTERM or SIGINT is only recorded; the training loop asks
`stop.should_stop(ranks)` after each step (every rank at every step: with several ranks it is one all-reduce
MAX of a flag, so all of them stop after the same step), then writes a checkpoint and raises `stop.exit(...)`
(a `Preempted`, a SystemExit with code 143 for SIGTERM, 130 for SIGINT). The same signal a second time ends
the process at once, as it would without the handler. The old handlers are back after the `with` block.
"""

from __future__ import annotations

import logging
import shlex
import signal
import threading
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mtbert.distributed import Ranks

logger = logging.getLogger(__name__)
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(SystemExit):
    """Training stopped on a signal after writing a checkpoint; `code` is the exit status (128 + signal)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code)
        self.message = message

    def __str__(self) -> str:
        return self.message


class Preemption:
    """Records SIGTERM/SIGINT while installed (a `with` block in the main thread) instead of dying at once."""

    def __init__(self, signals: tuple[int, ...] = SIGNALS) -> None:
        self.signals = signals
        self.received: int | None = None  # the first signal received
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Preemption:
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
            for signum in self.signals:
                self._old[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        for signum, old in self._old.items():
            signal.signal(signum, old)
        self._old.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received == signum:  # asked twice: stop now, as the old handler would
            old = self._old.get(signum, signal.SIG_DFL)
            self.__exit__(None, None, None)
            if callable(old):
                old(signum, frame)
            else:
                signal.raise_signal(signum)
            return
        if self.received is None:
            self.received = signum
        logger.warning("%s received: stopping after this step and writing a checkpoint (send it again to stop now)",
                       signal.Signals(signum).name)

    @property
    def requested(self) -> bool:
        """Whether this process received a signal."""
        return self.received is not None

    def should_stop(self, ranks: Ranks) -> bool:
        """Whether any rank received a signal; every rank must call this at the same step (a collective)."""
        if not ranks.distributed:
            return self.requested
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self.requested
        signum = torch.tensor([int(self.received or 0)], dtype=torch.int32, device=ranks.device)
        dist.all_reduce(signum, op=dist.ReduceOp.MAX)  # the signal's number: SIGTERM (15) wins over SIGINT (2)
        received = int(signum.item())
        if received and self.received is None:
            self.received = received  # another rank was signalled: stop, and exit, as that rank does
        return bool(received)

    @property
    def exit_code(self) -> int:
        """128 + the signal's number: 143 for SIGTERM, 130 for SIGINT (0 when none was received)."""
        return 128 + int(self.received) if self.received is not None else 0

    def exit(self, step: int, checkpoint: Path, how_to_resume: str) -> Preempted:
        """The exception that ends the run after its checkpoint is written (log its message on rank 0);
        `how_to_resume`: the message's last part (see `resume_advice`)."""
        name = signal.Signals(self.received).name if self.received is not None else "a signal"
        message = f"stopped by {name} after step {step}; the checkpoint is {checkpoint}; {how_to_resume}"
        return Preempted(self.exit_code, message)


def resume_advice(argv: list[str]) -> str:
    """How to resume the process whose command line is `argv`: `mtbert train` takes --resume_from_checkpoint last,
    `mtbert bench quality` resumes an unfinished row by itself, and from Python train() takes
    resume_from_checkpoint='last'."""
    command = argv[1:]
    if command[:1] == ["train"] and "--resume_from_checkpoint" not in command:
        return f"resume with {shlex.join(['mtbert', *command])} plus --resume_from_checkpoint last"
    if command[:1] == ["train"] or command[:2] == ["bench", "quality"]:
        return f"resume with {shlex.join(['mtbert', *command])} again"
    return "resume with resume_from_checkpoint='last' (on the command line: --resume_from_checkpoint last)"
