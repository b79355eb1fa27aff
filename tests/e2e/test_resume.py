"""A training subprocess killed with SIGKILL and resumed ends exactly where an uninterrupted run ends (the runs
nobody kills train in the test's own process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers.runs import assert_same_run as _assert_same_run
from helpers.runs import train_here

pytestmark = pytest.mark.e2e


def _config(tiny_config: dict, tmp_path: Path, name: str, **extra) -> Path:
    cfg = {**tiny_config, "output_dir": str(tmp_path / name), "samples_per_task_per_epoch": 40,
           "num_train_epochs": 3, "save_steps": 2, "save_total_limit": 2, **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mtbert", "train", *args], capture_output=True, text=True,
                          timeout=600)


def _kill_when(args: list[str], marker: str) -> None:
    """Start training and SIGKILL it as soon as a path matching `marker` exists."""
    folder, pattern = os.path.split(marker)
    proc = subprocess.Popen([sys.executable, "-m", "mtbert", "train", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if list(Path(folder).glob(pattern)):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"


# `sum` resumes under torchrun in tests/e2e/test_distributed.py; FAMO has state of its own (its task logits);
# PCGrad accumulates each step's gradient over two micro-batches, so the kill can fall between them
@pytest.mark.parametrize(("method", "accumulation"), [("pcgrad", 2), ("famo", 1)])
def test_sigkill_then_resume_matches_uninterrupted(tiny_config, tmp_path, method, accumulation):
    extra = {"method": method, "gradient_accumulation_steps": accumulation}
    whole = _config(tiny_config, tmp_path, "whole", **extra)
    broken = _config(tiny_config, tmp_path, "broken", **extra)
    train_here([str(whole)])
    _kill_when([str(broken)], str(tmp_path / "broken" / "checkpoint-*"))
    train_here([str(broken), "--resume_from_checkpoint", "last"])
    _assert_same_run(tmp_path / "whole", tmp_path / "broken")


def test_sigkill_in_stage_two_then_resume_matches_uninterrupted(tiny_config, tmp_path):
    extra = {"method": "pcgrad", "task_ratio": "0:1:1", "num_train_epochs": 1,
             "two_step": {"num_train_epochs": 2, "learning_rate": 5e-4}}
    whole = _config(tiny_config, tmp_path, "whole", **extra)
    broken = _config(tiny_config, tmp_path, "broken", **extra)
    train_here([str(whole)])
    _kill_when([str(broken)], str(tmp_path / "broken" / "tasks" / "para" / "checkpoint-*"))
    assert (tmp_path / "broken" / "tasks" / "sst" / "results.json").is_file()
    train_here([str(broken), "--resume_from_checkpoint", "last"])
    _assert_same_run(tmp_path / "whole", tmp_path / "broken", sub="tasks/para/best")
    for task in ("sst", "sts"):
        _assert_same_run(tmp_path / "whole" / "tasks" / task, tmp_path / "broken" / "tasks" / task)


def test_resume_without_checkpoint_is_one_clear_error(tiny_config, tmp_path):
    cfg = _config(tiny_config, tmp_path, "empty")
    result = _run([str(cfg), "--resume_from_checkpoint", "last"])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: --resume_from_checkpoint: no checkpoint in")
    assert "Traceback" not in result.stderr
