"""Hostile config files are refused quickly, in one sentence naming the file (and line), with bounded memory."""

from __future__ import annotations

import os
import time
import tracemalloc

import pytest

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


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_yaml_is_refused_quickly_with_bounded_memory(tmp_path, name):
    text, pattern = CASES[name]
    path = tmp_path / "c.yaml"
    path.write_text(text)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=f"^{path}{pattern}") as caught:
        load_config(path)
    elapsed = time.perf_counter() - start
    assert "\n" not in str(caught.value)
    assert elapsed < 3, f"{name} took {elapsed:.1f} s"
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError):
            load_config(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, f"{name} used {peak / 2**20:.0f} MiB"


def test_a_huge_file_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as handle:
        handle.truncate(4 * 2**30)  # 4 GiB, sparse
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=f"^{path}: larger than 256 KiB, so not a config"):
        load_config(path)
    assert time.perf_counter() - start < 2


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
