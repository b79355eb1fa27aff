"""One run per folder: a live holder refuses a second run in one sentence naming its pid; a dead one does not."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mtbert.errors import MtbertError
from mtbert.runs import lock as lock_module
from mtbert.runs.layout import RunDir
from mtbert.runs.lock import RunLock

HOLDER = """
import sys, time
from mtbert.runs.lock import RunLock
with RunLock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def _start_holder(folder: Path) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_lock_file_names_the_holder_and_is_removed_at_the_end(tmp_path):
    run = RunDir(tmp_path / "run")
    with RunLock(run.root) as held:
        assert held.held
        record = json.loads(run.lock.read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
    assert not run.lock.exists() and not held.held
    with pytest.raises(RuntimeError), RunLock(run.root):  # an error inside the block releases it too
        raise RuntimeError("boom")
    assert not run.lock.exists()


def test_a_live_holder_refuses_a_second_run(tmp_path):
    child = _start_holder(tmp_path)
    try:
        with pytest.raises(MtbertError) as caught:
            RunLock(tmp_path).acquire()
        message = str(caught.value)
        assert f"process {child.pid} on {socket.gethostname()}" in message and str(tmp_path) in message
        assert "\n" not in message
    finally:
        child.terminate()
        child.wait()


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path):
    child = _start_holder(tmp_path)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert RunDir(tmp_path).lock.exists()  # kill -9 leaves the file behind
    with RunLock(tmp_path):
        assert json.loads(RunDir(tmp_path).lock.read_text())["pid"] == os.getpid()
    assert not RunDir(tmp_path).lock.exists()


def test_the_same_folder_twice_in_one_process_is_refused(tmp_path):
    with RunLock(tmp_path), pytest.raises(MtbertError, match=f"process {os.getpid()}"):
        RunLock(tmp_path).acquire()


def test_the_next_run_takes_the_lock_after_release(tmp_path, monkeypatch):
    for _ in range(3):
        with RunLock(tmp_path):
            pass
    child = _start_holder(tmp_path)
    child.terminate()  # SIGTERM: the default action ends it without running the `with` exit
    child.wait()
    tries = []
    real_flock = lock_module._flock
    monkeypatch.setattr(lock_module, "_flock", lambda fd: tries.append(fd) or real_flock(fd))
    with RunLock(tmp_path):
        assert len(tries) == 1  # taken at the first try: the dead holder's lock did not block
        assert json.loads(RunDir(tmp_path).lock.read_text())["pid"] == os.getpid()


def test_without_flock_a_dead_pid_of_this_host_does_not_block(tmp_path, monkeypatch):
    monkeypatch.setattr(lock_module, "_flock", lambda fd: None)  # a file system without locks
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = RunDir(tmp_path).lock
    path.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    with RunLock(tmp_path):
        pass
    path.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))  # alive
    with pytest.raises(MtbertError, match=f"process {os.getppid()}"):
        RunLock(tmp_path).acquire()
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere"}))  # another host: cannot tell, so it holds
    with pytest.raises(MtbertError, match="process 1 on elsewhere"):
        RunLock(tmp_path).acquire()


def test_only_rank_0_holds_the_lock(tmp_path):
    class Rank1:
        is_main = False

        @staticmethod
        def main_only(fn, *args):  # rank 0 took it and reported success
            return None

    with RunLock(tmp_path, Rank1()) as held:  # type: ignore[arg-type]
        assert not held.held and not RunDir(tmp_path).lock.exists()
