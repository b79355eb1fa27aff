"""Two CPU processes (torchrun, gloo) train exactly as one process does on the union of their batches.

Rank r of 2 draws positions [pos + 4r, pos + 4r + 4) of each task's seeded stream, and one process with batch 8
draws [pos, pos + 8): the same samples. Without dropout, the two runs' weights agree to float rounding.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers.runs import beside, train_here
from safetensors.torch import load_file

pytestmark = pytest.mark.e2e

TIMEOUT = 300


@pytest.fixture(scope="module")
def base(tiny_model_dir, tiny_data_dir, tmp_path_factory) -> dict:
    """Three steps of constant learning rate, no dropout, evaluation at the end only (so best/ = final weights).

    One step per epoch (8 samples per task per epoch), so a checkpoint is saved after steps 1 and 2.
    """
    return {"model_name_or_path": str(tiny_model_dir), "data_dir": str(tiny_data_dir),
            "folder": tmp_path_factory.mktemp("distributed"), "tasks": ["sst", "para", "sts"], "method": "sum",
            "per_device_train_batch_size": 4, "per_device_eval_batch_size": 16, "samples_per_task_per_epoch": 8,
            "max_steps": 3, "lr_scheduler_type": "constant", "learning_rate": 1e-3, "dropout": 0.0,
            "max_length": 32, "eval_strategy": "no", "logging_steps": 1, "seed": 0}


def _config(base: dict, name: str, **extra) -> Path:
    folder = base["folder"]
    cfg = {**{k: v for k, v in base.items() if k != "folder"}, "output_dir": str(folder / name), **extra}
    config = folder / f"{name}.yaml"
    config.write_text(yaml.safe_dump(cfg))
    return config


def _start(base: dict, name: str, processes: int, **extra) -> subprocess.Popen:
    config = _config(base, name, **extra)
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
    command = [sys.executable, *(launcher if processes > 1 else []), "-m", "mtbert", "train", str(config)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _finish(base: dict, runs: dict[str, subprocess.Popen]) -> dict[str, Path]:
    for proc in runs.values():
        _, err = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, err[-3000:]
    return {name: base["folder"] / name for name in runs}


def _pair(base: dict, name: str, **extra) -> tuple[Path, Path]:
    """Train 2 processes with batch 4 per task and, meanwhile, 1 process with batch 8 (this one, with one thread as
    each rank has): their run dirs."""
    two = _start(base, f"{name}-two", 2, **extra)
    with beside(two):
        train_here([str(_config(base, f"{name}-one", per_device_train_batch_size=8, **extra))])
    return _finish(base, {f"{name}-two": two})[f"{name}-two"], base["folder"] / f"{name}-one"


@pytest.fixture(scope="module")
def sum_runs(base) -> tuple[Path, Path]:
    return _pair(base, "sum")


def _assert_same_weights(a: Path, b: Path, files: tuple[str, ...] = ("heads.safetensors", "encoder/model.safetensors")
                         ) -> None:
    for name in files:
        ta, tb = load_file(str(a / "best" / name)), load_file(str(b / "best" / name))
        assert ta.keys() == tb.keys()
        for key in ta:
            torch.testing.assert_close(tb[key], ta[key], atol=1e-6, rtol=0, msg=key)


def _assert_same_losses(a: Path, b: Path) -> None:
    """The logged losses of the two ranks are averaged: the mean over the union of their batches."""
    la, lb = ([json.loads(line)["loss"] for line in (run / "train_log.jsonl").open()] for run in (a, b))
    assert len(la) == len(lb) == 3
    for x, y in zip(la, lb, strict=True):
        assert x.keys() == y.keys() and all(x[t] == pytest.approx(y[t], rel=1e-5) for t in x)


def _rows(path: Path) -> list[tuple[str, float]]:
    """(id, prediction) of each line of a CS224N prediction file."""
    return [(i.strip(), float(v)) for i, v in (line.split(",") for line in path.read_text().splitlines()[1:])]


def _files(run: Path) -> set[str]:
    return {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()}


def test_two_processes_with_sum_equal_one_process_on_the_union(sum_runs):
    _assert_same_weights(*sum_runs)
    _assert_same_losses(*sum_runs)


def test_two_processes_with_sample_weighted_pcgrad_equal_one_process_on_the_union(base):
    two, one = _pair(base, "pcgrad", method="pcgrad", task_ratio="1:2:1", sample_weighting=True)
    _assert_same_weights(two, one)
    _assert_same_losses(two, one)


def test_local_mode_with_famo_equals_one_process_on_the_union(base):
    """FAMO aggregates with `sum`, so `ddp_mode: local` (the mean of the ranks' updates) is the same step; and
    FAMO's weights read the losses' values, which every rank takes from the union of the batches."""
    two, one = _pair(base, "famo", method="famo", ddp_mode="local")
    _assert_same_weights(two, one)
    _assert_same_losses(two, one)


def test_two_processes_with_the_trainer_keys_equal_one_process_on_the_union(base):
    """PCGrad over LoRA adapters (every rank's per-task buffer holds the adapters, averaged over the ranks) with
    gradient accumulation (each rank accumulates its share of the micro-batches), frozen embeddings and lowest
    layer, gradient checkpointing and packed batches: the same step as one process on the union."""
    two, one = _pair(base, "keys", method="pcgrad", lora={"r": 4, "lora_alpha": 8}, gradient_accumulation_steps=2,
                     freeze_embeddings=True, freeze_layers=1, gradient_checkpointing=True, packing=True)
    _assert_same_weights(two, one, ("heads.safetensors", "adapter/adapter_model.safetensors"))
    _assert_same_losses(two, one)


def test_two_processes_stop_early_at_the_step_one_process_stops(base):
    """Every rank scores the gathered dev predictions, so all of them take the early-stopping decision together."""
    two, one = _pair(base, "early", eval_strategy="steps", eval_steps=1, early_stopping_patience=1,
                     metric_for_best_model="sst_acc", learning_rate=1e-9, head_learning_rate=1e-9)
    results = [json.loads((run / "results.json").read_text()) for run in (two, one)]
    assert results[0]["stopped_early_at"] == results[1]["stopped_early_at"] == 2  # step 1 stays best
    _assert_same_weights(two, one)


def test_two_process_run_writes_the_same_files_as_one_process(sum_runs):
    two, one = sum_runs
    assert _files(two) == _files(one)  # rank 0 alone wrote them; the automatic checkpoints were removed
    for path in (two / "predictions").iterdir():  # every dev and test example predicted once, in file order
        rows_two, rows_one = (_rows(run / "predictions" / path.name) for run in (two, one))
        assert [i for i, _ in rows_two] == [i for i, _ in rows_one]
        assert [v for _, v in rows_two] == pytest.approx([v for _, v in rows_one], abs=1e-4)
    metrics = json.loads((two / "results.json").read_text())
    assert metrics.keys() == json.loads((one / "results.json").read_text()).keys()


def test_ranks_draw_the_union_of_one_process_batch():
    """Rank r of N takes positions [pos + r*n, pos + (r+1)*n): together, in rank order, one process's N*n draw."""
    from mtbert.data import MultiTaskSampler

    sizes = {"a": 10, "b": 7}
    one = MultiTaskSampler(sizes, seed=3)
    ranks = [MultiTaskSampler(sizes, seed=3, rank=r, world_size=2) for r in range(2)]
    for _ in range(6):  # crosses several reshuffles of both streams
        for task in sizes:
            assert ranks[0].draw(task, 3) + ranks[1].draw(task, 3) == one.draw(task, 6)
    assert ranks[0].state_dict() == ranks[1].state_dict() == one.state_dict()


def test_sigterm_to_torchrun_stops_every_rank_at_one_step_and_resume_ends_as_uninterrupted(base):
    """SIGTERM to the launcher (what Slurm sends): torchrun passes it to both ranks, which agree on one step,
    checkpoint it and exit (the launcher itself then fails with its own SignalException); resumed under
    torchrun, the run ends as the uninterrupted one (1e-6)."""
    import signal
    import time

    extra = {"max_steps": 40, "save_steps": 0, "method": "pcgrad"}
    whole = _start(base, "term-whole", 2, **extra)
    stopped = _start(base, "term-stopped", 2, **extra)
    log = base["folder"] / "term-stopped" / "train_log.jsonl"
    deadline = time.time() + TIMEOUT
    while time.time() < deadline and stopped.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    stopped.send_signal(signal.SIGTERM)
    _, err = stopped.communicate(timeout=TIMEOUT)
    assert stopped.returncode != 0
    lines = [line for line in err.splitlines() if "stopped by SIGTERM after step" in line]
    assert lines, err[-3000:]
    step = int(lines[-1].split("after step ")[1].split(";")[0])
    assert step < 40 and (base["folder"] / "term-stopped" / f"checkpoint-{step}").is_dir()
    steps = [json.loads(x)["step"] for x in log.read_text().splitlines()]
    assert steps[-1] == step  # rank 0 logged up to the agreed step, and no further
    folder = base["folder"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
               "mtbert", "train", str(folder / "term-stopped.yaml"), "--resume_from_checkpoint", "last"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    _finish(base, {"term-whole": whole})
    a, b = folder / "term-whole" / "best", folder / "term-stopped" / "best"
    for name in ("heads.safetensors", "encoder/model.safetensors"):
        ta, tb = load_file(str(a / name)), load_file(str(b / name))
        for key in ta:
            torch.testing.assert_close(tb[key], ta[key], atol=1e-6, rtol=0, msg=key)
