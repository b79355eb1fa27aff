"""Comparing two finished runs: results, weights and dev-metric history equal (to 1e-6); training a reference run
in the test's own process, beside the ranks of a launcher."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file


def assert_same_run(a: Path, b: Path, sub: str = "best") -> None:
    """The two runs end with the same results (but the timings), weights of `sub`, and metrics lines."""
    ra, rb = json.loads((a / "results.json").read_text()), json.loads((b / "results.json").read_text())
    for key, value in ra.items():
        if key not in ("train_seconds",):
            assert rb[key] == pytest.approx(value, abs=1e-6), key
    for name in ("heads.safetensors", "encoder/model.safetensors"):
        ta, tb = load_file(str(a / sub / name)), load_file(str(b / sub / name))
        for key in ta:
            torch.testing.assert_close(tb[key], ta[key], atol=1e-6, rtol=0, msg=key)
    ma = [{k: v for k, v in json.loads(x).items() if k != "train_seconds"} for x in (a / "metrics.jsonl").open()]
    mb = [{k: v for k, v in json.loads(x).items() if k != "train_seconds"} for x in (b / "metrics.jsonl").open()]
    assert len(ma) == len(mb)
    for x, y in zip(ma, mb, strict=True):
        assert x.keys() == y.keys() and all(x[k] == pytest.approx(y[k], abs=1e-6) for k in x)


def train_here(args: list[str]) -> None:
    """`mtbert train ARGS` in this process, as the CLI runs it, asserting exit 0: for the runs a test does not
    interrupt (the uninterrupted reference, a resume), which need no Python and torch of their own."""
    from mtbert.cli import main

    assert main(["train", *args]) == 0


@contextmanager
def beside(ranks: subprocess.Popen) -> Iterator[None]:
    """Run the block in this process with one torch thread, as OMP_NUM_THREADS=1 gives each rank of `ranks` (a
    launcher started before it); if the block fails, `ranks` is killed so that it does not go on competing with
    the other tests."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    except BaseException:
        ranks.kill()
        ranks.communicate()
        raise
    finally:
        torch.set_num_threads(threads)
