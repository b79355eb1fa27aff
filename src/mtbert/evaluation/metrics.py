"""Task metrics (from scikit-learn and scipy), the overall score, and its bootstrap interval."""

from __future__ import annotations

import numpy as np

from mtbert.tasks import TaskSpec, overall_score, task_score


def task_metric(spec: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> float:
    """The task's primary metric as its kind computes it: accuracy of classes, Pearson r of values, ..."""
    return spec.task_kind.metric_value(spec, np.asarray(predictions, dtype=float), np.asarray(labels, dtype=float))


def task_metrics(spec: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Every metric the task's kind computes, as `<task>_<metric>` (the primary one among them)."""
    values = spec.task_kind.metric_values(spec, np.asarray(predictions, dtype=float), np.asarray(labels, dtype=float))
    return {f"{spec.name}_{key}": float(value) for key, value in values.items()}


def compute_metrics(results: dict[str, tuple[TaskSpec, np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Metrics of several tasks plus `overall`: {task: (spec, predictions, labels)} -> {`<task>_<metric>`: value}
    with every metric of each task's kind; `overall` reads each task's primary metric (`spec.metric_key`)."""
    metrics = {key: value for spec, p, y in results.values() for key, value in task_metrics(spec, p, y).items()}
    metrics["overall"] = overall_score([spec for spec, _, _ in results.values()], metrics)
    return metrics


Results = dict[str, tuple[TaskSpec, np.ndarray, np.ndarray]]


def bootstrap_overall(results: Results, resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the overall score, resampling each task's dev examples.

    Each task's primary metric is resampled by its kind in one vectorised pass (the same values as
    `task_metric`, which the tests check); sklearn's per-call validation would make 1000 resamples slow.
    """
    scores = resampled_overall(results, resample_indices(results, resamples, seed))
    low, high = np.percentile(scores, [2.5, 97.5])
    return float(low), float(high)


def bootstrap_difference(first: Results, second: Results, resamples: int = 1000,
                         seed: int = 0) -> tuple[float, float, float]:
    """Overall(first) - overall(second) on the same dev examples, and its paired 95% bootstrap interval.

    Both are scored on the same resampled examples in every resample, so the interval measures the
    difference between the two models, not the noise each score has on its own (which mostly cancels).
    """
    for task, (_, _, labels) in first.items():
        if task not in second or not np.array_equal(np.asarray(second[task][2]), np.asarray(labels)):
            raise ValueError(f"task {task}: both results need the same dev examples in the same order")
    if set(second) != set(first):
        raise ValueError("both results need the same tasks")
    indices = resample_indices(first, resamples, seed)
    differences = resampled_overall(first, indices) - resampled_overall(second, indices)
    low, high = np.percentile(differences, [2.5, 97.5])
    observed = compute_metrics(first)["overall"] - compute_metrics(second)["overall"]
    return float(observed), float(low), float(high)


def resample_indices(results: Results, resamples: int, seed: int) -> dict[str, np.ndarray]:
    """For each task, `resamples` rows of example indices drawn with replacement."""
    rng = np.random.default_rng(seed)
    return {task: rng.integers(0, len(labels), (resamples, len(labels))) for task, (_, _, labels) in results.items()}


def resampled_overall(results: Results, indices: dict[str, np.ndarray]) -> np.ndarray:
    """The overall score on each resample of the examples."""
    resamples = len(next(iter(indices.values())))
    scores = np.zeros(resamples)
    for task, (spec, predictions, labels) in results.items():
        values = spec.task_kind.resampled_metric(spec, predictions, labels, indices[task])
        scores += np.array([task_score(spec, v) for v in values])
    return scores / len(results)
