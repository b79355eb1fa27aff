"""Training with an input_group beside a separate task: one stream of the sampler, one batch and one encoder pass per
step, its frame accuracy beside the tasks' metrics (and able to pick the best model), resume, two-step and
`mtbert predict --group`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.runs import assert_same_run
from safetensors.torch import load_file

from mtbert.cli import main
from mtbert.config import build_config
from mtbert.data.groups import GroupBatch
from mtbert.training.run import train
from mtbert.training.stage import Stage


@pytest.fixture(scope="module")
def group_run(tmp_path_factory, tiny_model_dir, group_data_dir) -> Path:
    """PCGrad (exact) on the group (intent with loss_weight 2, mood) and sst: 4 steps, checkpoints kept at 2 and 4,
    best/ picked by the group's frame accuracy."""
    from helpers.groups import group_tasks

    out = tmp_path_factory.mktemp("group-run") / "run"
    cfg = {"output_dir": str(out), "model_name_or_path": str(tiny_model_dir), "data_dir": str(group_data_dir),
           "tasks": [*group_tasks(loss_weight=2.0), "sst"], "method": "pcgrad", "per_device_train_batch_size": 4,
           "per_device_eval_batch_size": 16, "samples_per_task_per_epoch": 8, "max_steps": 4,
           "learning_rate": 1e-3, "max_length": 32, "logging_steps": 1, "seed": 0, "save_steps": 2,
           "save_total_limit": None, "metric_for_best_model": "utt_frame_acc"}
    train(build_config(cfg))
    return out


def _predicted(run: Path, task: str) -> dict[str, str]:
    """{id: class name} of a CS224N dev prediction file."""
    lines = (run / "predictions" / f"{task}-dev-output.csv").read_text().splitlines()[1:]
    return {i.strip(): v.strip() for i, v in (line.split(",") for line in lines)}


def _labels(data_dir: Path, column: str) -> dict[str, str]:
    rows = [json.loads(line) for line in (data_dir / "utt-dev.jsonl").read_text().splitlines()]
    return {r["id"]: r[column] for r in rows}


def test_a_group_run_logs_its_tasks_and_frame_accuracy(group_run, group_data_dir):
    lines = [json.loads(x) for x in (group_run / "metrics.jsonl").open()]
    assert [line["step"] for line in lines] == [2, 4]
    assert all({"intent_acc", "mood_acc", "sst_acc", "overall", "utt_frame_acc"} <= set(line) for line in lines)
    log = [json.loads(x) for x in (group_run / "train_log.jsonl").open()]
    assert all(set(line["loss"]) == {"intent", "mood", "sst"} for line in log)
    assert all(set(line["cosine"]) == {"intent-mood", "intent-sst", "mood-sst"} for line in log)
    results = json.loads((group_run / "results.json").read_text())
    # the frame accuracy is that of the written dev predictions: an utterance counts when both tasks are right
    right = None
    for task in ("intent", "mood"):
        labels, predicted = _labels(group_data_dir, task), _predicted(group_run, task)
        correct = np.array([predicted[i] == labels[i] for i in labels])
        right = correct if right is None else right & correct
        assert results[f"{task}_acc"] == pytest.approx(correct.mean())
    assert results["utt_frame_acc"] == pytest.approx(right.mean())
    assert results["utt_frame_acc"] <= min(results["intent_acc"], results["mood_acc"])
    best = max(lines, key=lambda line: line["utt_frame_acc"])  # the first of the best, as `improves` keeps it
    assert results["best_step"] == best["step"]


def test_a_step_draws_one_batch_of_the_group_and_scales_by_loss_weight(group_run):
    cfg = build_config({**json.loads(json.dumps(_config_of(group_run))), "output_dir": str(group_run.parent / "s")})
    stage = Stage(cfg, Path(cfg.output_dir))
    assert stage.sizes == {"utt": 40, "sst": 40}  # the group is one stream of the sampler
    batches, scale = stage.next_batches(1)
    assert isinstance(batches["utt"], GroupBatch) and set(batches["utt"].tasks) == {"intent", "mood"}
    assert scale == {"intent": 2.0 / 4, "mood": 1.0 / 4, "sst": 1.0 / 4}
    assert stage.sampler.positions == {"utt": 4, "sst": 4}
    cfg = build_config({**_config_of(group_run), "output_dir": str(group_run.parent / "r"), "task_ratio": "2:2:1"})
    batches, _ = Stage(cfg, Path(cfg.output_dir)).next_batches(1)  # the group takes its tasks' ratio
    assert [len(batches["utt"].tasks[t]["labels"]) for t in ("intent", "mood")] == [8, 8]
    assert len(batches["sst"]["labels"]) == 4


def _config_of(run: Path) -> dict:
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text())


def test_a_group_run_resumes_as_uninterrupted(group_run, tmp_path):
    again = tmp_path / "again"
    shutil.copytree(group_run, again)
    (again / "results.json").unlink()  # as a run stopped after step 3 would leave it (best/ is step 2's or older)
    shutil.rmtree(again / "checkpoint-4")
    cfg = build_config({**_config_of(group_run), "output_dir": str(again)})
    train(cfg, resume_from_checkpoint=str(again / "checkpoint-2"))
    assert_same_run(group_run, again)
    first, second = (load_file(str(run / "checkpoint-4" / "model.safetensors")) for run in (group_run, again))
    assert first.keys() == second.keys()
    for key in first:  # the last step's weights, whichever evaluation was best
        torch.testing.assert_close(second[key], first[key], atol=1e-6, rtol=0, msg=key)


def test_predict_group_writes_every_task_of_the_group_per_input(group_run, group_data_dir, tmp_path, capsys):
    out = tmp_path / "utt.jsonl"
    assert main(["predict", str(group_run), "--group", "utt", "--input", str(group_data_dir / "utt-dev.jsonl"),
                 "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == list(_labels(group_data_dir, "intent"))
    assert all(set(r) == {"id", "tokens", "intent", "mood"} for r in rows)
    for task in ("intent", "mood"):  # the same predictions as the run's own dev files
        predicted = _predicted(group_run, task)
        assert [r[task] for r in rows] == [predicted[r["id"]] for r in rows]
    assert main(["predict", str(group_run), "--group", "nope", "--input", "-"]) == 2
    assert "error: --group: the run has no input_group nope (groups: utt)" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [{"surgery_scope": "representation", "packing": False, "tasks_per_step": 1},
                                   {"two_step": {"max_steps": 2}, "gradient_accumulation_steps": 2}])
def test_representation_tasks_per_step_two_step_and_accumulation_train_a_group(group_config, extra):
    cfg = build_config({**group_config, "method": "pcgrad", "max_steps": 2, **extra})
    results = train(cfg)
    assert {"intent_acc", "mood_acc", "sst_acc"} <= set(results)
    assert 0.0 <= results["utt_frame_acc"] <= min(results["intent_acc"], results["mood_acc"])
