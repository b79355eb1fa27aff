"""Every metric a kind computes, checked against scikit-learn and scipy; the bootstrap's vectorised metrics equal
them on each resample; a task's primary metric (`metric:`) is one of its kind's, and the overall score reads it."""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from mtbert.config import build_config
from mtbert.errors import ConfigError
from mtbert.evaluation.metrics import bootstrap_overall, compute_metrics, resample_indices
from mtbert.kinds import METRICS
from mtbert.tasks import BUILTIN_TASKS, TaskSpec, task_from_config

SST, PARA, STS = (BUILTIN_TASKS[t] for t in ("sst", "para", "sts"))


def classes(rng: np.random.Generator, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, k, n)
    p = np.where(rng.random(n) < 0.6, y, rng.integers(0, k, n))  # better than chance
    return p.astype(float), y.astype(float)


@pytest.mark.parametrize("k", [2, 5])
def test_classification_metrics_are_sklearns(k):
    spec = PARA if k == 2 else SST
    p, y = classes(np.random.default_rng(k), 300, k)
    values = spec.task_kind.metric_values(spec, p, y)
    expected = {"acc": accuracy_score(y, p), "macro_f1": f1_score(y, p, average="macro"),
                "micro_f1": f1_score(y, p, average="micro"), "mcc": matthews_corrcoef(y, p)}
    if k == 2:
        expected["f1"] = f1_score(y, p)
    assert values == pytest.approx(expected, abs=1e-9) and list(values) == list(spec.task_kind.metric_keys(spec))


def test_regression_metrics_are_scipys():
    rng = np.random.default_rng(1)
    y = rng.uniform(0, 5, 200)
    p = y + rng.normal(0, 1.5, 200)
    values = STS.task_kind.metric_values(STS, p, y)
    assert values == pytest.approx({"corr": pearsonr(p, y).statistic, "spearman": spearmanr(p, y).statistic},
                                   abs=1e-9)


@pytest.mark.parametrize(("base", "metric", "k"), [(SST, "macro_f1", 5), (SST, "mcc", 5), (SST, "micro_f1", 5),
                                                     (PARA, "f1", 2), (PARA, "mcc", 2), (STS, "spearman", 0)])
def test_the_bootstrap_resamples_the_chosen_metric_as_the_metric_computes_it(base, metric, k):
    rng = np.random.default_rng(2)
    spec = task_from_config({"name": base.name, "metric": metric}, "tasks[0]")
    if k:
        p, y = classes(rng, 80, k)
        p[:3] = 4 if k == 5 else p[:3]  # a class found in the predictions only, on some resamples
    else:
        y = rng.uniform(0, 5, 80)
        p = np.round(y + rng.normal(0, 1, 80))  # ties: average ranks
    indices = resample_indices({"t": (spec, p, y)}, 40, seed=3)["t"]
    resampled = spec.task_kind.resampled_metric(spec, p, y, indices)
    direct = [spec.task_kind.metric_value(spec, p[row], y[row]) for row in indices]
    assert resampled == pytest.approx(direct, abs=1e-9)


def test_a_task_chooses_its_primary_metric_and_the_overall_score_reads_it():
    sst = task_from_config({"name": "sst", "metric": "macro_f1"}, "tasks[0]")
    assert (sst.metric, sst.metric_key, SST.metric, STS.metric) == ("macro_f1", "sst_macro_f1", "acc", "corr")
    p, y = classes(np.random.default_rng(4), 100, 5)
    metrics = compute_metrics({"sst": (sst, p, y)})
    assert metrics["overall"] == metrics["sst_macro_f1"] != metrics["sst_acc"]
    mcc = task_from_config({"name": "sst", "metric": "mcc"}, "tasks[0]")
    assert compute_metrics({"sst": (mcc, p, y)})["overall"] == pytest.approx((1 + metrics["sst_mcc"]) / 2)
    low, high = bootstrap_overall({"sst": (sst, p, y)}, resamples=200)
    assert low <= metrics["sst_macro_f1"] <= high
    assert METRICS["mcc"].correlation and METRICS["spearman"].correlation and not METRICS["macro_f1"].correlation


def test_metric_for_best_model_may_name_any_primary_metric(tmp_path):
    cfg = build_config({"tasks": [{"name": "sst", "metric": "macro_f1"}, "sts"],
                        "metric_for_best_model": "sst_macro_f1"})
    assert [s.metric_key for s in cfg.task_specs()] == ["sst_macro_f1", "sts_corr"]


@pytest.mark.parametrize(("entry", "message"), [
    ({"name": "sst", "metric": "f2"}, "tasks[0].metric: 'f2' is not a metric of a single task (acc | macro_f1 | "
                                      "micro_f1 | mcc)"),
    ({"name": "sts", "metric": "acc"}, "tasks[0].metric: 'acc' is not a metric of a pair-regression task (corr | "
                                       "spearman)"),
    ({"name": "sst", "metric": "f1"}, "tasks[0].metric: 'f1' is not a metric of a single task (acc | macro_f1 | "
                                      "micro_f1 | mcc)"),
    ({"name": "sst", "label_separator": "#"}, "tasks[0].label_separator: a single task does not read this key"),
    ({"name": "para", "choices_column": "c"}, "tasks[0].choices_column: a pair-classification task does not read "
                                              "this key"),
])
def test_a_metric_the_kind_does_not_compute_is_refused(entry, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        task_from_config(entry, "tasks[0]")


def test_binary_f1_needs_two_classes_once_names_are_read_from_the_data():
    spec = TaskSpec(name="t", kind="single", metric="f1", num_labels=3, label_names=("a", "b", "c"))
    with pytest.raises(ConfigError, match="^task t: metric 'f1' needs two classes and the data has 3; choose one of "):
        spec.task_kind.label_parser(spec)


def test_another_kind_on_a_builtin_task_takes_its_own_default_metric():
    spec = task_from_config({"name": "sts", "kind": "pair-classification", "num_labels": 2}, "tasks[0]")
    assert spec.metric == "acc"


def test_a_kind_written_before_metric_values_reports_its_one_metric():
    from mtbert.kinds.base import TaskKind

    class Old(TaskKind):
        def metric(self, spec):
            return "acc"

        def metric_value(self, spec, predictions, labels):
            return float((predictions == labels).mean())

    assert Old().metric_values(SST, np.array([1.0, 2.0]), np.array([1.0, 0.0])) == {"acc": 0.5}
    with pytest.raises(NotImplementedError):
        TaskKind().metric_values(SST, np.zeros(1), np.zeros(1))
