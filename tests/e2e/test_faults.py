"""What clusters and users do to a run: SIGTERM and Ctrl-C, SIGKILL inside a write, corrupt checkpoints, a second
run in the same folder, and a run that fails before writing anything."""

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
    cfg = {**tiny_config, "output_dir": str(tmp_path / name), "samples_per_task_per_epoch": 28,
           "num_train_epochs": 2, "save_steps": 3, "save_total_limit": 2, "method": "pcgrad", **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _train(args: list[str], env: dict | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mtbert", "train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}, **kw)


def _wait_for(proc: subprocess.Popen, found, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if found():
            return
        time.sleep(0.02)
    pytest.fail("the run ended before the moment to interrupt it")


def _log_lines(run: Path) -> int:
    path = run / "train_log.jsonl"
    return len(path.read_text().splitlines()) if path.is_file() else 0


@pytest.fixture(scope="module")
def whole(tiny_model_dir, tiny_data_dir, tmp_path_factory) -> Path:
    """The uninterrupted run every interrupted one is compared with (trained once for the module)."""
    folder = tmp_path_factory.mktemp("whole")
    tiny = {"model_name_or_path": str(tiny_model_dir), "data_dir": str(tiny_data_dir), "tasks": ["sst", "para", "sts"],
            "per_device_train_batch_size": 4, "per_device_eval_batch_size": 16, "learning_rate": 1e-3,
            "max_length": 32, "logging_steps": 1, "seed": 0}
    train_here([str(_config(tiny, folder, "whole"))])
    return folder / "whole"


# SIGINT takes the same path (exit 130: tests/unit/training/test_preemption.py)
@pytest.mark.parametrize(("sig", "code", "name"), [(signal.SIGTERM, 143, "SIGTERM")])
def test_a_signal_checkpoints_the_step_exits_and_resume_ends_as_uninterrupted(tiny_config, tmp_path, whole, sig,
                                                                             code, name):
    config = _config(tiny_config, tmp_path, "stopped")
    run = tmp_path / "stopped"
    proc = _train([str(config)])
    _wait_for(proc, lambda: _log_lines(run) >= 4)  # mid-epoch, between checkpoints
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err
    message = err.strip().splitlines()[-1]
    assert f"stopped by {name} after step" in message and "--resume_from_checkpoint last" in message
    step = int(message.split("after step ")[1].split(";")[0])
    assert (run / f"checkpoint-{step}").is_dir() and "Traceback" not in err
    train_here([str(config), "--resume_from_checkpoint", "last"])
    _assert_same_run(whole, run)


def test_sigkill_inside_each_kind_of_write_then_resume_ends_as_uninterrupted(tiny_config, tmp_path, whole):
    """One run killed three times, each time inside a paused write (a checkpoint, best/, the predictions), and
    resumed after each: it ends with the uninterrupted run's parameters and metrics."""
    config = _config(tiny_config, tmp_path, "killed")
    run = tmp_path / "killed"
    windows = [("checkpoint-6", lambda: any(run.glob("*checkpoint-6*"))),  # checkpoint-3 is complete
               ("best", lambda: any(run.glob("*best*"))),
               ("predictions", lambda: (run / "predictions").is_dir())]
    resume: list[str] = []
    for window, seen in windows:
        proc = _train([str(config), *resume], env={"MTBERT_TEST_PAUSE_WRITE": f"{window}:2"})
        _wait_for(proc, seen)
        time.sleep(0.5)  # inside the paused write: its data is complete, the rename has not happened
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        resume = ["--resume_from_checkpoint", "last"]
    train_here([str(config), *resume])
    _assert_same_run(whole, run)


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous_one(tiny_config, tmp_path, whole):
    config = _config(tiny_config, tmp_path, "corrupt")
    run = tmp_path / "corrupt"
    proc = _train([str(config)])
    _wait_for(proc, lambda: len([p for p in run.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]) >= 2)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    newest = max((p for p in run.glob("checkpoint-*") if p.name[11:].isdigit()), key=lambda p: int(p.name[11:]))
    model = newest / "model.safetensors"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    resumed = _train([str(config), "--resume_from_checkpoint", "last"])
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert str(model) in err or newest.name in err  # the warning names the bad file
    _assert_same_run(whole, run)


def test_a_second_run_into_a_held_folder_is_refused_naming_the_holder(tiny_config, tmp_path, capsys):
    from mtbert.cli import main

    config = _config(tiny_config, tmp_path, "held", num_train_epochs=1)
    run = tmp_path / "held"
    first = _train([str(config)], env={"MTBERT_TEST_PAUSE_WRITE": "best:4"})  # held while the second tries
    _wait_for(first, lambda: (run / "metrics.jsonl").is_file())
    assert main(["train", str(config), "--resume_from_checkpoint", "last"]) == 2  # the second, in this process
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(first.pid) in err.strip().splitlines()[-1]
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err  # the holder was not disturbed


def test_a_run_that_fails_on_its_inputs_writes_nothing_and_can_be_rerun(tiny_config, tmp_path, capsys):
    from mtbert.cli import main

    config = _config(tiny_config, tmp_path, "nodata", data_dir=str(tmp_path / "missing"))
    for _ in range(2):  # the same command again gives the same error, not "output_dir is not empty"
        assert main(["train", str(config)]) == 2
        err = capsys.readouterr().err
        assert "data folder not found" in err.strip().splitlines()[-1] and "Traceback" not in err
        assert not (tmp_path / "nodata").exists()
    bad_backbone = _config(tiny_config, tmp_path, "nobackbone", model_name_or_path=str(tmp_path / "no-model"))
    assert main(["train", str(bad_backbone)]) == 2
    assert "model_name_or_path" in capsys.readouterr().err and not (tmp_path / "nobackbone").exists()
