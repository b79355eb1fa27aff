"""Crash-safe writes: a failed write (full disk) names the path and leaves the previous version intact; a write
killed inside its window leaves the old or the new version; files get umask-respecting permissions."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mtbert import io
from mtbert.errors import MtbertError
from mtbert.io import WriteError, append_jsonl, atomic_dir, atomic_write_json, atomic_write_text, read_jsonl


def _fill(text: str):
    def fill(folder: Path) -> None:
        (folder / "a.txt").write_text(text)
        (folder / "sub").mkdir()
        (folder / "sub" / "b.txt").write_text(text * 2)
    return fill


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_full_disk_text_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    atomic_write_json(path, {"overall": 1})
    monkeypatch.setenv(io.FAIL_WRITE_ENV, "results.json")
    with pytest.raises(WriteError) as caught:
        atomic_write_json(path, {"overall": 2})
    message = str(caught.value)
    assert message.startswith(f"{path}: cannot be written (no space left on device)")
    assert "\n" not in message and isinstance(caught.value, MtbertError)
    assert json.loads(path.read_text()) == {"overall": 1}
    assert _hidden(tmp_path) == []  # no temporary left behind


def test_full_disk_folder_keeps_the_old_folder(tmp_path, monkeypatch):
    target = tmp_path / "best"
    atomic_dir(target, _fill("old"))
    monkeypatch.setenv(io.FAIL_WRITE_ENV, "best")
    with pytest.raises(WriteError, match="best: cannot be written .no space left on device"):
        atomic_dir(target, _fill("new"))
    assert (target / "a.txt").read_text() == "old" and (target / "sub" / "b.txt").read_text() == "oldold"
    assert _hidden(tmp_path) == []


def test_real_oserror_and_disk_full_runtime_errors_become_one_sentence(tmp_path, monkeypatch):
    def fails(folder: Path) -> None:
        raise OSError(122, "Disk quota exceeded")  # EDQUOT on Linux

    with pytest.raises(WriteError, match="disk quota exceeded"):
        atomic_dir(tmp_path / "ckpt", fails)

    def torch_style(folder: Path) -> None:  # torch.save reports a full disk as a RuntimeError
        raise RuntimeError("[enforce fail at inline_container.cc] . PytorchStreamWriter failed writing file")

    with pytest.raises(RuntimeError, match="PytorchStreamWriter"):  # a disk with space: a real bug stays visible
        atomic_dir(tmp_path / "ckpt", torch_style)
    monkeypatch.setattr(io, "_disk_full", lambda folder: True)
    with pytest.raises(WriteError, match="no space left on device"):
        atomic_dir(tmp_path / "ckpt", torch_style)
    assert not (tmp_path / "ckpt").exists() and _hidden(tmp_path) == []


def test_unwritable_folder_is_one_sentence(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(WriteError, match="ro/x.json: cannot be written .Permission denied"):
            atomic_write_json(folder / "x.json", {})
    finally:
        folder.chmod(0o700)


def test_append_jsonl_full_disk_and_torn_line(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"step": 1})
    with open(path, "a") as handle:  # a line torn by a kill
        handle.write('{"step": 2, "ove')
    append_jsonl(path, {"step": 3})
    assert [r["step"] for r in read_jsonl(path)] == [1, 3]  # the torn line does not swallow the next record
    before = path.read_bytes()
    monkeypatch.setenv(io.FAIL_WRITE_ENV, "metrics.jsonl")
    with pytest.raises(WriteError, match="metrics.jsonl: cannot be written"):
        append_jsonl(path, {"step": 4})
    assert path.read_bytes() == before


def test_permissions_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "f.txt", "x")
        atomic_dir(tmp_path / "d", _fill("x"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o750
    atomic_write_text(tmp_path / "g.txt", "x")
    assert stat.S_IMODE((tmp_path / "g.txt").stat().st_mode) == 0o666 & ~old


def test_replace_swaps_and_leaves_nothing(tmp_path):
    target = tmp_path / "best"
    for text in ("one", "two", "three"):
        atomic_dir(target, _fill(text))
        assert (target / "a.txt").read_text() == text
    assert _hidden(tmp_path) == []


def test_fallback_swap_without_renameat2(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "_exchange", lambda a, b: False)
    target = tmp_path / "best"
    atomic_dir(target, _fill("one"))
    atomic_dir(target, _fill("two"))
    assert (target / "a.txt").read_text() == "two" and _hidden(tmp_path) == []


def test_recover_dir_restores_what_a_killed_swap_left(tmp_path):
    """The two-rename swap killed between its renames leaves only `.best.old-<host>-<pid>-0`: restored."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    old = tmp_path / f".best.old-{io._HOST}-{dead.pid}-0"
    _fill("kept")(old.mkdir() or old)
    stale = tmp_path / f".best.tmp-{io._HOST}-{dead.pid}-abc"
    stale.mkdir()
    alive = tmp_path / f".best.tmp-{io._HOST}-{os.getpid()}-abc"  # this process: maybe writing right now
    alive.mkdir()
    io.recover_dir(tmp_path / "best")
    assert (tmp_path / "best" / "a.txt").read_text() == "kept"
    assert not old.exists() and not stale.exists() and alive.exists()


KILLED_WRITER = """
import sys
from pathlib import Path
from mtbert.io import atomic_dir, atomic_write_text
kind, target, text = sys.argv[1:4]
if kind == "dir":
    def fill(folder):
        (Path(folder) / "a.txt").write_text(text)
    atomic_dir(target, fill)
else:
    atomic_write_text(target, text)
print("done", flush=True)
"""


@pytest.mark.parametrize("kind", ["dir", "file"])
def test_kill_inside_the_write_window_leaves_the_old_version(tmp_path, kind):
    """A real SIGKILL while the write pauses before its rename (MTBERT_TEST_PAUSE_WRITE): old version intact, and
    the next write cleans up and succeeds."""
    target = tmp_path / "best"
    (atomic_dir(target, _fill("old")) if kind == "dir" else atomic_write_text(target, "old"))
    env = {**os.environ, io.PAUSE_WRITE_ENV: "best:30"}
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, kind, str(target), "new"], env=env)
    deadline = time.monotonic() + 60
    while not any(p.name.startswith(".best.tmp-") for p in tmp_path.iterdir()):
        assert time.monotonic() < deadline and child.poll() is None
        time.sleep(0.05)
    time.sleep(0.2)  # the data is complete and the writer sleeps before the rename
    child.send_signal(signal.SIGKILL)
    child.wait()
    read = (lambda: (target / "a.txt").read_text()) if kind == "dir" else target.read_text
    assert read() == "old"
    (atomic_dir(target, _fill("newer")) if kind == "dir" else atomic_write_text(target, "newer"))
    assert read() == "newer"
    assert _hidden(tmp_path) == []
