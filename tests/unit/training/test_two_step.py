"""Tests of mtbert.training.two_step: keep_stage1 and the keys stage 2 refuses."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from mtbert.config import build_config
from mtbert.errors import ConfigError
from mtbert.training.run import train


def test_keep_stage1_lets_the_stage1_model_compete_as_step_0(tiny_config, tmp_path):
    out = tmp_path / "run"
    results = train(build_config({**tiny_config, "output_dir": str(out), "method": "pcgrad",
                                  "two_step": {"num_train_epochs": 2, "keep_stage1": True}}))
    stage1 = json.loads((out / "stage1" / "results.json").read_text())
    for task, key in (("sst", "sst_acc"), ("para", "para_acc"), ("sts", "sts_corr")):
        lines = [json.loads(x) for x in (out / "tasks" / task / "metrics.jsonl").read_text().splitlines()]
        assert lines[0]["step"] == 0
        assert lines[0][key] == pytest.approx(stage1[key], abs=1e-9)  # stage 1's model, unchanged
        best = max(lines, key=lambda r: r["overall"])  # the first of equals wins: step 0 on a tie
        task_results = json.loads((out / "tasks" / task / "results.json").read_text())
        assert task_results["best_step"] == best["step"]
        assert results[key] == pytest.approx(best[key], abs=1e-9)
        heads = load_file(str(out / "tasks" / task / "best" / "heads.safetensors"))
        stage1_heads = load_file(str(out / "stage1" / "best" / "heads.safetensors"))
        same = all(torch.equal(v, stage1_heads[k]) for k, v in heads.items())
        assert same == (best["step"] == 0)


def test_keep_stage1_adds_a_candidate_without_changing_stage_2_training(tiny_config, tmp_path):
    runs, logs = {}, {}
    for keep in (False, True):
        out = tmp_path / f"keep-{keep}"
        train(build_config({**tiny_config, "output_dir": str(out), "dropout": 0.3,
                            "two_step": {"num_train_epochs": 2, "keep_stage1": keep}}))
        lines = (out / "tasks" / "sst" / "metrics.jsonl").read_text().splitlines()
        runs[keep] = [{k: v for k, v in json.loads(x).items() if k != "train_seconds"} for x in lines]
        logs[keep] = (out / "tasks" / "sst" / "train_log.jsonl").read_text()
    assert [r["step"] for r in runs[True]] == [0] + [r["step"] for r in runs[False]]
    assert runs[True][1:] == runs[False]
    assert logs[True] == logs[False]  # every step's loss and gradient norm: dropout drew the same masks


def test_keep_stage1_must_be_a_boolean(tiny_config):
    with pytest.raises(ConfigError, match=r"^two_step\.keep_stage1: must be true or false"):
        build_config({**tiny_config, "two_step": {"keep_stage1": "maybe"}})


@pytest.mark.parametrize(("two_step", "message"), [
    ({"init_from": "runs/x"}, r"^mlm_steps: has no effect with two_step\.init_from"),
    ({"pooling": "cls"}, r"^two_step\.pooling: not a key that stage 2 can change"),
    ({"pair_architecture": "bi-cosine"}, r"^two_step\.pair_architecture: not a key that stage 2 can change"),
])
def test_two_step_refuses_keys_it_would_ignore(tiny_config, two_step, message):
    with pytest.raises(ConfigError, match=message):
        build_config({**tiny_config, "mlm_steps": 5 if "init_from" in two_step else 0, "two_step": two_step})


def test_keep_stage1_with_a_task_left_out_of_stage_1(tiny_config, tmp_path):
    out = tmp_path / "run"
    train(build_config({**tiny_config, "output_dir": str(out), "task_ratio": "0:1:1",
                        "two_step": {"num_train_epochs": 2, "keep_stage1": True}}))
    steps = {t: [json.loads(x)["step"] for x in (out / "tasks" / t / "metrics.jsonl").read_text().splitlines()]
             for t in ("sst", "para", "sts")}
    assert steps["sst"][0] != 0 and steps["para"][0] == 0 and steps["sts"][0] == 0  # no untrained SST candidate
    combined = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in combined] == steps["sst"]  # rows go by step, the same step of every task

