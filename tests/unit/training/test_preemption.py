"""Preemption: SIGTERM/SIGINT are recorded (not fatal) inside the block, every rank stops at the same step, the exit
code is 128 + the signal, and the old handlers come back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from mtbert.distributed import ONE_PROCESS
from mtbert.training.preemption import Preempted, Preemption, resume_advice


def _wait_for(condition, seconds: float = 60.0) -> None:
    """Wait for `condition` (a signal handled); `seconds` only guards against a hang, it bounds no timing."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_is_recorded_and_gives_the_exit_code(signum, code):
    before = signal.getsignal(signum)
    with Preemption() as stop:
        assert not stop.should_stop(ONE_PROCESS) and stop.exit_code == 0
        os.kill(os.getpid(), signum)
        _wait_for(lambda: stop.requested)
        assert stop.should_stop(ONE_PROCESS) and stop.received == signum and stop.exit_code == code
        error = stop.exit(12, Path("runs/x/checkpoint-12"), resume_advice(["mtbert", "train", "cfg.yaml"]))
    assert signal.getsignal(signum) is before
    assert isinstance(error, Preempted) and isinstance(error, SystemExit) and error.code == code
    assert str(error) == (f"stopped by {signal.Signals(signum).name} after step 12; the checkpoint is "
                          "runs/x/checkpoint-12; resume with mtbert train cfg.yaml plus --resume_from_checkpoint last")


def test_the_same_signal_twice_stops_at_once():
    # Python's own Ctrl-C handler as the one to come back to (a library imported by other tests may have
    # installed its own in this process)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt), Preemption() as stop:
            os.kill(os.getpid(), signal.SIGINT)
            _wait_for(lambda: stop.requested)
            os.kill(os.getpid(), signal.SIGINT)  # the old handler again: KeyboardInterrupt
            _wait_for(lambda: False)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)


TWICE = """
import os, signal, time
from mtbert.training.preemption import Preemption
with Preemption() as stop:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.2)
    print("first recorded" if stop.requested else "lost", flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
print("survived", flush=True)
"""


def test_sigterm_twice_kills_the_process():
    done = subprocess.run([sys.executable, "-c", TWICE], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["first", "recorded"] and done.returncode == -signal.SIGTERM


def _rank(rank: int, store: str, results) -> None:
    import torch.distributed as dist

    from mtbert.distributed import Ranks

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    ranks = Ranks(rank=rank, world_size=2)
    stopped = None
    with Preemption() as stop:
        for step in range(1, 20):
            if rank == 1 and step == 3:
                os.kill(os.getpid(), signal.SIGTERM)
                _wait_for(lambda: stop.requested)
            if stop.should_stop(ranks):
                stopped = step
                break
    results[rank] = (stopped, stop.exit_code)
    dist.destroy_process_group()


def test_every_rank_stops_at_the_same_step(tmp_path):
    """Two gloo ranks; only rank 1 gets SIGTERM (at step 3), and both stop after step 3 with code 143."""
    results = mp.get_context("fork").Manager().dict()
    mp.start_processes(_rank, args=(str(tmp_path / "store"), results), nprocs=2, join=True, start_method="fork")
    assert dict(results) == {0: (3, 143), 1: (3, 143)}


@pytest.mark.parametrize(("argv", "advice"), [
    (["mtbert", "train", "my run.yaml"], "resume with mtbert train 'my run.yaml' plus --resume_from_checkpoint last"),
    (["mtbert", "train", "c.yaml", "--resume_from_checkpoint", "last"],
     "resume with mtbert train c.yaml --resume_from_checkpoint last again"),
    (["/x/mtbert/__main__.py", "bench", "quality", "--output_dir", "t"],  # bench resumes its unfinished row itself
     "resume with mtbert bench quality --output_dir t again"),
    (["my_script.py"],
     "resume with resume_from_checkpoint='last' (on the command line: --resume_from_checkpoint last)"),
])
def test_the_stop_message_says_how_the_command_that_ran_resumes(argv, advice):
    assert resume_advice(argv) == advice
