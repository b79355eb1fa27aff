"""Tests of mtbert.tasks: the built-in tasks, task entries of a config, the overall score."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from helpers.task_results import results
from scipy.stats import pearsonr
from sklearn.metrics import accuracy_score

from mtbert.errors import ConfigError
from mtbert.evaluation.metrics import compute_metrics
from mtbert.kinds import KINDS
from mtbert.tasks import BUILTIN_TASKS, TaskSpec, overall_score, task_from_config, task_score

SST, PARA, STS = BUILTIN_TASKS["sst"], BUILTIN_TASKS["para"], BUILTIN_TASKS["sts"]


KNOWN_TASK_KEYS = ", ".join(sorted(f.name for f in dataclasses.fields(TaskSpec)))


BAD_TASKS = [
    ("qnli", "tasks[0]: unknown task 'qnli'; built-in tasks are sst, para, sts, or declare one as a mapping "
             "with name, kind and files"),
    (3, "tasks[0]: a task must be a name or a mapping, not int"),
    ({"kind": "single"}, "tasks[0].name: a task needs a name made of letters, digits and underscores"),
    ({"name": "my-task", "kind": "single"}, "tasks[0].name: a task needs a name made of letters, digits and "
                                            "underscores"),
    ({"name": "x"}, f"tasks[0].kind: task 'x' needs a kind ({' | '.join(KINDS)})"),
    ({"name": "x", "kind": "triple"}, "tasks[0].kind: 'triple' is not one of "
                                      + " | ".join(n for k in KINDS.values() for n in (k.name, *k.aliases))),
    ({"name": "x", "kind": "single", "text_columns": ["a", "b"]},
     "tasks[0].text_columns: a single task needs 1 text column(s)"),
    ({"name": "x", "kind": "pair-regression"}, "tasks[0].text_columns: a pair-regression task needs 2 text column(s)"),
    ({"name": "x", "kind": "single", "text_columns": "a"}, "tasks[0].text_columns: must be a list"),
    ({"name": "x", "kind": "single", "text_columns": [3]},
     "tasks[0].text_columns: every column must be a non-empty string"),
    ({"name": "x", "kind": "single", "num_labels": 1},
     "tasks[0].num_labels: must be an integer of at least 2 for a classification task"),
    ({"name": "x", "kind": "single", "head_hidden_sizes": [0]},
     "tasks[0].head_hidden_sizes: every size must be a positive integer"),
    ({"name": "sts", "label_min": 5, "label_max": 1}, "tasks[0].label_min: must be below label_max"),
    ({"name": "sts", "label_max": "high"}, "tasks[0].label_max: must be a number"),
    ({"name": "sst", "train_file": 7}, "tasks[0].train_file: must be a file name"),
    ({"name": "sst", "label_column": None}, "tasks[0].label_column: must be a non-empty string"),
    ({"name": "sst", "colour": "red"}, "tasks[0].colour: unknown task key; known keys are " + KNOWN_TASK_KEYS),
]




# ---- the registry ------------------------------------------------------------------------------------------------
def test_builtin_tasks():
    assert list(BUILTIN_TASKS) == ["sst", "para", "sts"]
    assert (SST.kind, SST.num_outputs, SST.metric_key, SST.is_pair) == ("single", 5, "sst_acc", False)
    assert (PARA.kind, PARA.num_outputs, PARA.metric_key, PARA.is_pair) == ("pair-classification", 1, "para_acc", True)
    assert (STS.kind, STS.num_outputs, STS.metric_key, STS.is_regression) == ("pair-regression", 1, "sts_corr", True)
    assert (SST.label_column, PARA.label_column, STS.label_column) == ("sentiment", "is_duplicate", "similarity")
    assert STS.output_header == "Predicted_Similiary"  # the course's spelling


def test_task_from_config_names_overrides_and_new_tasks():
    assert task_from_config("sst", "tasks[0]") is SST
    custom = task_from_config({"name": "sst", "train_file": "mine.csv"}, "tasks[0]")
    assert custom.train_file == "mine.csv" and custom.dev_file == SST.dev_file and custom.num_labels == 5
    new = task_from_config({"name": "nli", "kind": "pair-classification", "text_columns": ["p", "h"],
                            "num_labels": 3, "head_hidden_sizes": [32, 16]}, "tasks[2]")
    assert new.num_outputs == 3 and new.text_columns == ("p", "h") and new.head_hidden_sizes == (32, 16)
    assert new.metric_key == "nli_acc"


@pytest.mark.parametrize(("entry", "message"), BAD_TASKS, ids=[str(i) for i in range(len(BAD_TASKS))])
def test_bad_task_entries_name_the_key(entry, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        task_from_config(entry, "tasks[0]")


def test_overall_score_is_the_course_formula():
    res = results(np.random.default_rng(0))
    metrics = compute_metrics(res)
    sst_acc = accuracy_score(res["sst"][2], res["sst"][1])
    para_acc = accuracy_score(res["para"][2], res["para"][1])
    sts_corr = pearsonr(res["sts"][1], res["sts"][2]).statistic
    assert metrics["sst_acc"] == pytest.approx(sst_acc, abs=1e-6)
    assert metrics["para_acc"] == pytest.approx(para_acc, abs=1e-6)
    assert metrics["sts_corr"] == pytest.approx(sts_corr, abs=1e-6)
    assert metrics["overall"] == pytest.approx((sst_acc + para_acc + (1 + sts_corr) / 2) / 3, abs=1e-6)
    assert set(metrics) == {"sst_acc", "sst_macro_f1", "sst_micro_f1", "sst_mcc", "para_acc", "para_macro_f1",
                            "para_micro_f1", "para_f1", "para_mcc", "sts_corr", "sts_spearman", "overall"}


def test_overall_score_by_hand():
    metrics = {"sst_acc": 0.5, "para_acc": 0.8, "sts_corr": 0.6}
    assert overall_score([SST, PARA, STS], metrics) == pytest.approx((0.5 + 0.8 + 0.8) / 3)
    assert overall_score([STS], metrics) == pytest.approx(0.8)
    assert task_score(STS, -1.0) == 0.0 and task_score(SST, 0.25) == 0.25

