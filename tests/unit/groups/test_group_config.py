"""The config of tasks that share one input: `input_group`, `loss_weight`, `surgery_scope: representation` and a
group's metric, checked before anything runs (one sentence naming the key)."""

from __future__ import annotations

import pytest
from helpers.groups import group_tasks

from mtbert.config import build_config
from mtbert.errors import ConfigError
from mtbert.tasks import task_streams


def _config(**extra) -> dict:
    return {"tasks": [*group_tasks(), "sst"], **extra}


def test_a_group_is_one_stream_where_its_first_task_stands():
    cfg = build_config(_config())
    assert task_streams(cfg.task_specs()) == {"utt": ["intent", "mood"], "sst": ["sst"]}
    specs = {s.name: s for s in cfg.task_specs()}
    assert specs["intent"].input_group == "utt" and specs["sst"].input_group is None
    assert specs["intent"].loss_weight == 1.0


@pytest.mark.parametrize(("key", "value"), [("train_file", "other.jsonl"), ("text_columns", ["words"]),
                                            ("dev_file", "utt-train.jsonl"), ("id_column", "key")])
def test_tasks_of_a_group_must_read_the_same_data_and_columns(key, value):
    tasks = group_tasks()
    tasks[1] = {**tasks[1], key: value}
    with pytest.raises(ConfigError, match=rf"^tasks\[1\]\.input_group: task mood has {key} .* but task intent of "
                                          "input_group 'utt' has .*; the tasks of a group read the same data"):
        build_config({"tasks": tasks})


def test_a_group_named_as_a_task_and_a_bad_group_name_are_refused():
    tasks = [{**t, "input_group": "sst"} for t in group_tasks()]
    with pytest.raises(ConfigError, match=r"^tasks\[0\]\.input_group: the group 'sst' is named like a task"):
        build_config({"tasks": [*tasks, "sst"]})
    with pytest.raises(ConfigError, match=r"^tasks\[0\]\.input_group: a group needs a name made of letters"):
        build_config({"tasks": [{**group_tasks()[0], "input_group": "a b"}]})


@pytest.mark.parametrize("weight", [0, -1.0, "heavy", True, float("nan")])
def test_loss_weight_is_a_positive_number(weight):
    with pytest.raises(ConfigError, match=r"^tasks\[0\]\.loss_weight: must be a positive number"):
        build_config({"tasks": [{**group_tasks()[0], "loss_weight": weight}]})


def test_the_tasks_of_a_group_take_the_same_ratio():
    with pytest.raises(ConfigError, match="^task_ratio: '1:2:1' gives the tasks of input_group 'utt' different ratios"):
        build_config(_config(task_ratio="1:2:1"))
    build_config(_config(task_ratio="2:2:1"))


def test_a_groups_frame_accuracy_can_pick_the_best_model():
    assert build_config(_config(metric_for_best_model="utt_frame_acc")).metric_for_best_model == "utt_frame_acc"
    with pytest.raises(ConfigError, match="^metric_for_best_model: 'nope_frame_acc' is not one of .*utt_frame_acc"):
        build_config(_config(metric_for_best_model="nope_frame_acc"))


def test_a_group_with_a_value_task_has_no_frame_accuracy():
    tasks = group_tasks()
    tasks[1] = {**tasks[1], "kind": "single-regression", "label_column": "score"}
    with pytest.raises(ConfigError, match="^metric_for_best_model: 'utt_frame_acc' is not one of"):
        build_config({"tasks": tasks, "metric_for_best_model": "utt_frame_acc"})


def test_representation_scope_and_tasks_per_step_count_a_group_once():
    assert build_config(_config(surgery_scope="representation", method="pcgrad")).surgery_scope == "representation"
    with pytest.raises(ConfigError, match="^smart_weight: SMART's penalty reaches the encoder"):
        build_config(_config(surgery_scope="representation", smart_weight=1.0))
    with pytest.raises(ConfigError, match="^tasks_per_step: must be between 1 and the 2 active tasks, not 3"):
        build_config(_config(tasks_per_step=3, method="pcgrad"))
