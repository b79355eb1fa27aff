"""Hostile config files are refused in one sentence naming the file (and line), with bounded work and memory.

Work is counted, not timed (a timed bound fails at random on a loaded machine): the function calls (Python and C)
made while loading, and the bytes read."""

from __future__ import annotations

import io
import os
import sys
import tracemalloc

import pytest

import mtbert.config
from mtbert.config import load_config
from mtbert.errors import ConfigError

LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8))  # 9^9 values

CASES = {
    "billion laughs": (LAUGHS, r", line \d+: refused: its aliases expand to more than 2,000 values"),
    "recursive alias": ("a: &a [1, *a]\n", r", line 1: refused: an alias refers to the value that contains it"),
    "deep flow nesting": ("x: " + "[" * 5000 + "]" * 5000 + "\n", r", line 1: refused: nested more than 64 levels"),
    "deep block nesting": ("".join("  " * i + f"k{i}:\n" for i in range(100)) + "  " * 100 + "v: 1\n",
                           r", line 6\d: refused: nested more than 64 levels"),
    "many values": ("tasks: [" + ", ".join(["sst"] * 3000) + "]\n", r", line 1: refused: more than 2,000 values"),
    "huge integer": ("max_steps: " + "9" * 5000 + "\n", r", line 1: refused: the integer 9+\.\.\. is too large"),
    "64-bit overflow": ("seed: 18446744073709551616\n", r", line 1: refused: the integer .* is too large"),
    "hex overflow": ("seed: 0x" + "f" * 17 + "\n", r", line 1: refused: the integer 0xf+ is too large"),
    "float overflow": ("learning_rate: 1.0e+999\n", r", line 1: refused: the number 1.0e\+999 overflows to infinity"),
    "python tag": ("x: !!python/object/apply:os.system [echo hi]\n", r", line 1: not valid YAML"),
    "control character": ("method: sum\nx: \x07\n", r", line 2: not valid YAML"),
    "broken syntax": ("method: [sum\n", r", line 2: not valid YAML$"),
}


# the most calls one load may make: a refused 3,000-value list takes about 300,000 (the largest case); expanding the
# alias bomb (9^9 values) or scanning the 5,000 brackets ahead (quadratic) would take hundreds of millions
MAX_CALLS = 500_000


def _calls_while(load) -> int:
    """The Python and C function calls made while `load()` runs (it must raise ConfigError)."""
    calls = 0

    def count(frame, event, arg) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(count)
    try:
        with pytest.raises(ConfigError):
            load()
    finally:
        sys.setprofile(None)
    return calls


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_yaml_is_refused_with_bounded_work_and_memory(tmp_path, name):
    text, pattern = CASES[name]
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"^{path}{pattern}") as caught:
        load_config(path)
    assert "\n" not in str(caught.value)
    calls = _calls_while(lambda: load_config(path))
    assert calls < MAX_CALLS, f"{name} made {calls:,} calls"
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError):
            load_config(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, f"{name} used {peak / 2**20:.0f} MiB"


def test_a_huge_file_is_refused_without_reading_it(tmp_path, monkeypatch):
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as handle:
        handle.truncate(4 * 2**30)  # 4 GiB, sparse
    asked = []

    class Counted(io.BufferedReader):
        def read(self, size: int | None = -1) -> bytes:
            asked.append(size)
            assert size is not None and 0 <= size <= 256 * 1024 + 1, f"asked to read {size} bytes"
            return super().read(size)

    def counted_open(file, mode="r", *args, **kwargs):
        assert mode == "rb"
        return Counted(io.FileIO(file, "r"))

    monkeypatch.setattr(mtbert.config, "open", counted_open, raising=False)  # shadows the builtin in that module
    with pytest.raises(ConfigError, match=f"^{path}: larger than 256 KiB, so not a config"):
        load_config(path)
    assert asked == [256 * 1024 + 1]  # one read of the limit and a byte, not the 4 GiB


def test_a_folder_an_unreadable_file_and_bad_bytes(tmp_path):
    with pytest.raises(ConfigError, match=f"^{tmp_path}: is a folder, not a config file"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"method: sum\nseed: 1\nnote: caf\xe9\n")
    with pytest.raises(ConfigError, match=f"^{latin}: not valid YAML$"):
        load_config(latin)
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.yaml"
        locked.write_text("method: sum\n")
        locked.chmod(0)
        with pytest.raises(ConfigError, match=f"^{locked}: cannot be read .Permission denied"):
            load_config(locked)


def test_ordinary_configs_still_load(tmp_path):
    """Anchors within the limits, merge keys, `.inf`-free numbers, a byte-order mark and YAML 1.2 words stay fine."""
    path = tmp_path / "ok.yaml"
    path.write_bytes("\ufeffmethod: pcgrad\ntask_ratio: 1:2:1\neval_strategy: no\nlearning_rate: &lr 3.0e-5\n"
                     "head_learning_rate: *lr\nlogging_steps: 9223372036854775807\n".encode())
    cfg = load_config(path)
    assert (cfg.method, cfg.task_ratio, cfg.eval_strategy, cfg.logging_steps) == ("pcgrad", "1:2:1", "no", 2**63 - 1)
    assert cfg.learning_rate == cfg.head_learning_rate == 3e-5
