"""Task metrics (from scikit-learn and scipy), the overall score, and its bootstrap interval."""

from __future__ import annotations

import numpy as np

from mtbert.tasks import TaskSpec, input_groups, overall_score, task_score


def task_metric(spec: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> float:
    """The task's primary metric as its kind computes it: accuracy of classes, Pearson r of values, ..."""
    return spec.task_kind.metric_value(spec, predictions, labels)


def task_metrics(spec: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Every metric the task's kind computes, as `<task>_<metric>` (the primary one among them)."""
    values = spec.task_kind.metric_values(spec, _numbers(predictions), _numbers(labels))
    return {f"{spec.name}_{key}": float(value) for key, value in values.items()}


def _numbers(values: np.ndarray) -> np.ndarray:
    """Per-example values as floats, unless they are arrays of their own (a token task's tags: an object array)."""
    values = np.asarray(values)
    return values if values.dtype == object else values.astype(float)


def compute_metrics(results: dict[str, tuple[TaskSpec, np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Metrics of several tasks plus `overall`: {task: (spec, predictions, labels)} -> {`<task>_<metric>`: value}
    with every metric of each task's kind; `overall` reads each task's primary metric (`spec.metric_key`); and the
    frame accuracy of each input_group (`frame_accuracies`)."""
    metrics = {key: value for spec, p, y in results.values() for key, value in task_metrics(spec, p, y).items()}
    metrics["overall"] = overall_score([spec for spec, _, _ in results.values()], metrics)
    metrics.update(frame_accuracies(results))
    return metrics


def frame_accuracies(results: dict[str, tuple[TaskSpec, np.ndarray, np.ndarray]]) -> dict[str, float]:
    """`<group>_frame_acc` of each input_group among the results: the share of its examples on which every task of
    the group is right (its kind's `example_correct`; the intent AND every slot tag). A group with a task whose kind
    has no per-example right or wrong (a value), or whose tasks were scored on different numbers of examples, has
    none."""
    out = {}
    for group, members in input_groups([spec for spec, _, _ in results.values()]).items():
        correct = [s.task_kind.example_correct(s, results[s.name][1], results[s.name][2]) for s in members]
        if any(c is None for c in correct) or len({len(c) for c in correct}) != 1 or not len(correct[0]):
            continue
        out[f"{group}_frame_acc"] = float(np.logical_and.reduce([np.asarray(c, dtype=bool) for c in correct]).mean())
    return out


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


def resampled_column(results: Results, column: str, indices: np.ndarray) -> np.ndarray | None:
    """One metric column (`<task>_<primary metric>` or `<group>_frame_acc`) on each row of resampled example
    indices, or None when `results` cannot give it (the task or a task of the group is missing)."""
    for spec, predictions, labels in results.values():
        if column == spec.metric_key:
            return np.asarray(spec.task_kind.resampled_metric(spec, predictions, labels, indices), dtype=float)
    for group, members in input_groups([spec for spec, _, _ in results.values()]).items():
        if column == f"{group}_frame_acc":
            correct = [s.task_kind.example_correct(s, results[s.name][1], results[s.name][2]) for s in members]
            if len(members) < 2 or any(c is None for c in correct) or len({len(c) for c in correct}) != 1:
                return None
            both = np.logical_and.reduce([np.asarray(c, dtype=bool) for c in correct])
            return both[indices].mean(axis=1)
    return None


def column_examples(results: Results, column: str) -> int | None:
    """How many dev examples a column is scored on (its task's, or its group's first task's)."""
    for spec, _, labels in results.values():
        if column in (spec.metric_key, f"{spec.input_group}_frame_acc"):
            return len(labels)
    return None


def column_value(results: Results, column: str) -> float | None:
    """A metric column on the dev examples as they are (see `resampled_column`), or None."""
    n = column_examples(results, column)
    found = None if n is None else resampled_column(results, column, np.arange(n)[None, :])
    return None if found is None else float(found[0])


def bootstrap_column_difference(first: Results, second: Results, column: str, resamples: int = 1000,
                                seed: int = 0) -> tuple[float, float, float] | None:
    """column(first) - column(second) on the same dev examples and its paired 95% bootstrap interval (both scored
    on the same resampled examples; a group's tasks share them: utterances, not tasks, are resampled); None when
    either lacks the column or they were not scored on as many examples."""
    n = column_examples(first, column)
    if n is None or n != column_examples(second, column) or n == 0:
        return None
    rng = np.random.default_rng(seed)
    indices = np.concatenate([np.arange(n)[None, :], rng.integers(0, n, (resamples, n))])  # row 0: as observed
    a, b = resampled_column(first, column, indices), resampled_column(second, column, indices)
    if a is None or b is None:
        return None
    differences = a - b
    low, high = np.percentile(differences[1:], [2.5, 97.5])
    return float(differences[0]), float(low), float(high)
