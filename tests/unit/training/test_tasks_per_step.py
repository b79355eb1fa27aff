"""`tasks_per_step: k`: each step trains k of the active tasks, drawn by the sampling's shares from (seed, step)
alone (so every rank and a resumed run draw the same), with surgery over those k (a k-row buffer)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from mtbert.config import build_config
from mtbert.data.sampling import tasks_of_step
from mtbert.errors import ConfigError


def test_the_draw_depends_on_seed_and_step_alone_and_keeps_the_tasks_order():
    per_step = {"sst": 8, "para": 8, "sts": 8, "nli": 8}
    draws = [tasks_of_step(per_step, 2, seed=3, step=s) for s in range(1, 50)]
    assert draws == [tasks_of_step(dict(per_step), 2, seed=3, step=s) for s in range(1, 50)]  # as a resume draws
    assert all(len(d) == 2 and d == sorted(d, key=list(per_step).index) for d in draws)
    assert len({tuple(d) for d in draws}) > 1
    assert draws != [tasks_of_step(per_step, 2, seed=4, step=s) for s in range(1, 50)]
    assert tasks_of_step(per_step, 4, seed=3, step=1) == list(per_step)


def test_tasks_are_drawn_in_proportion_to_their_samples_per_step():
    counts = Counter(t for s in range(4000) for t in tasks_of_step({"big": 24, "small": 8}, 1, seed=0, step=s))
    assert counts["big"] / counts["small"] == pytest.approx(3.0, rel=0.1)


def test_the_key_is_checked_against_the_method_and_the_active_tasks():
    assert build_config({"method": "pcgrad", "tasks_per_step": 2}).tasks_per_step == 2
    with pytest.raises(ConfigError, match="tasks_per_step: must be between 1 and the 3 active tasks, not 4"):
        build_config({"method": "pcgrad", "tasks_per_step": 4})
    with pytest.raises(ConfigError, match="tasks_per_step: must be between 1 and the 2 active tasks, not 3"):
        build_config({"method": "pcgrad", "tasks_per_step": 3, "task_ratio": "1:0:1"})
    with pytest.raises(ConfigError, match="tasks_per_step: works with the gradient-surgery methods and sum, not famo"):
        build_config({"method": "famo", "tasks_per_step": 2})


def test_a_run_trains_the_drawn_tasks_each_step_with_a_k_row_buffer(tiny_config, monkeypatch):
    from mtbert.methods import method as method_module
    from mtbert.training.run import train

    methods = []
    real = method_module.Method.__init__

    def recording(self, *args, **kwargs):
        real(self, *args, **kwargs)
        methods.append(self)

    monkeypatch.setattr(method_module.Method, "__init__", recording)
    cfg = build_config({**tiny_config, "method": "pcgrad", "tasks_per_step": 2, "max_steps": 4})
    train(cfg)
    assert len(methods) == 1 and methods[0].buffer.grads.shape[0] == 2  # the engine's rows: the step's 2 tasks
    unit = cfg.per_device_train_batch_size
    lines = [json.loads(x) for x in (Path(cfg.output_dir) / "train_log.jsonl").open()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4]
    for line in lines:
        drawn = tasks_of_step({"sst": unit, "para": unit, "sts": unit}, 2, cfg.seed, line["step"])
        assert list(line["loss"]) == drawn
    assert len({tuple(x["loss"]) for x in lines}) > 1  # the draw moves from step to step


def test_a_run_with_tasks_per_step_resumes_as_uninterrupted(tiny_config, tmp_path):
    import shutil

    import torch
    from helpers.runs import assert_same_run
    from safetensors.torch import load_file

    from mtbert.training.run import train

    settings = {**tiny_config, "method": "pcgrad", "tasks_per_step": 2, "max_steps": 6, "save_steps": 2,
                "save_total_limit": None, "logging_steps": 1}
    whole = tmp_path / "whole"
    train(build_config({**settings, "output_dir": str(whole)}))
    again = tmp_path / "again"
    shutil.copytree(whole, again)
    (again / "results.json").unlink()  # as a run stopped after step 3 leaves it
    for name in ("checkpoint-4", "checkpoint-6"):
        shutil.rmtree(again / name)
    train(build_config({**settings, "output_dir": str(again)}), resume_from_checkpoint=str(again / "checkpoint-2"))
    assert_same_run(whole, again)
    logs = [[json.loads(x)["loss"] for x in (run / "train_log.jsonl").open()] for run in (whole, again)]
    assert [list(x) for x in logs[0]] == [list(x) for x in logs[1]]  # the same 2 tasks drawn at every step
    first, second = (load_file(str(run / "checkpoint-6" / "model.safetensors")) for run in (whole, again))
    for key in first:
        torch.testing.assert_close(second[key], first[key], atol=1e-6, rtol=0, msg=key)
