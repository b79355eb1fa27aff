"""Tests of mtbert.evaluation.metrics: accuracy, Pearson, bootstrap intervals and paired differences."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.task_results import results
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.stats import pearsonr
from sklearn.metrics import accuracy_score

from mtbert.evaluation.metrics import bootstrap_difference, bootstrap_overall, compute_metrics, task_metric
from mtbert.tasks import BUILTIN_TASKS

SST, PARA, STS = BUILTIN_TASKS["sst"], BUILTIN_TASKS["para"], BUILTIN_TASKS["sts"]




# ---- metrics against scikit-learn and scipy ----------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(data=st.data(), n=st.integers(1, 60), task=st.sampled_from(["sst", "para"]))
def test_accuracy_matches_sklearn(data, n, task):
    spec = BUILTIN_TASKS[task]
    classes = max(spec.num_labels, 2)
    labels = data.draw(hnp.arrays(np.int64, n, elements=st.integers(0, classes - 1)))
    predictions = data.draw(hnp.arrays(np.int64, n, elements=st.integers(0, classes - 1)))
    expected = accuracy_score(labels, predictions)
    assert task_metric(spec, predictions, labels) == pytest.approx(expected, abs=1e-6)
    assert task_metric(spec, predictions.astype(float), labels.astype(float)) == pytest.approx(expected, abs=1e-6)


@settings(max_examples=40, deadline=None)
@given(pairs=st.lists(st.tuples(st.floats(-10, 10), st.floats(0, 5)), min_size=3, max_size=60))
def test_pearson_matches_scipy(pairs):
    predictions, labels = (np.array(x) for x in zip(*pairs, strict=True))
    if np.ptp(predictions) < 1e-3 or np.ptp(labels) < 1e-3:
        return  # (near-)constant inputs: Pearson's r is undefined
    expected = pearsonr(predictions, labels).statistic
    assert task_metric(STS, predictions, labels) == pytest.approx(expected, abs=1e-6)


def test_pearson_of_constant_predictions_is_zero():
    assert task_metric(STS, np.full(5, 2.5), np.array([0, 1, 2, 3, 4.0])) == 0.0
    assert task_metric(STS, np.array([1.0]), np.array([3.0])) == 0.0


def test_bootstrap_interval_contains_the_point_estimate_and_is_reproducible():
    res = results(np.random.default_rng(1))
    point = compute_metrics(res)["overall"]
    low, high = bootstrap_overall(res, resamples=100, seed=7)
    assert low <= point <= high and low < high
    assert high - low < 0.2
    assert bootstrap_overall(res, resamples=100, seed=7) == (low, high)
    assert bootstrap_overall(res, resamples=100, seed=8) != (low, high)


def test_bootstrap_interval_narrows_with_more_data():
    small = bootstrap_overall(results(np.random.default_rng(2), n=50), resamples=100, seed=0)
    large = bootstrap_overall(results(np.random.default_rng(2), n=2000), resamples=100, seed=0)
    assert large[1] - large[0] < small[1] - small[0]


def test_bootstrap_of_perfect_predictions_is_a_point():
    y = np.arange(10) % 5
    low, high = bootstrap_overall({"sst": (SST, y, y)}, resamples=50, seed=0)
    assert low == high == 1.0


def test_paired_difference_of_a_model_with_itself_is_zero():
    res = results(np.random.default_rng(3))
    assert bootstrap_difference(res, res, resamples=100) == (0.0, 0.0, 0.0)


def test_paired_difference_is_tighter_than_the_two_intervals_and_holds_the_observed_gap():
    rng = np.random.default_rng(4)
    worse = results(rng, n=400)
    better = {t: (spec, p.copy(), y) for t, (spec, p, y) in worse.items()}
    wrong = np.flatnonzero(better["sst"][1] != better["sst"][2])[:30]
    better["sst"][1][wrong] = better["sst"][2][wrong]  # 30 more SST examples right, nothing else changed
    gap, low, high = bootstrap_difference(better, worse, resamples=500, seed=0)
    assert gap == pytest.approx(30 / 400 / 3)
    assert 0 < low <= gap <= high
    lone = bootstrap_overall(worse, resamples=500, seed=0)
    assert high - low < (lone[1] - lone[0]) / 2
    reverse = bootstrap_difference(worse, better, resamples=500, seed=0)
    assert reverse[0] == pytest.approx(-gap) and reverse[2] < 0


def test_paired_difference_needs_the_same_examples():
    res = results(np.random.default_rng(5))
    shuffled = {t: (spec, p, y[::-1]) for t, (spec, p, y) in res.items()}
    with pytest.raises(ValueError, match="same dev examples"):
        bootstrap_difference(res, shuffled)
    with pytest.raises(ValueError, match="same tasks"):
        bootstrap_difference({"sst": res["sst"]}, res)

