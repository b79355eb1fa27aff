"""Prediction files: the CS224N format (`id \t Predicted_...` then `{id} , {value} `) and plain CSV.

Predictions are written in the task's label space: a class name when the task has `label_names`, else the class
index or the value.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mtbert.io import atomic_write_text

if TYPE_CHECKING:
    from mtbert.tasks import TaskSpec


def format_value(spec: TaskSpec, value: float) -> str:
    """A prediction as written, as the task's kind writes it: the value (regression), the class name
    (`label_names`), else the class index."""
    return spec.task_kind.format_value(spec, value)


def parse_value(spec: TaskSpec | None, text: str) -> float:
    """The inverse of `format_value`, as the task's kind reads it (a class name back to its index); ValueError when
    it is not a prediction."""
    if spec is None:
        return float(text.strip())
    return spec.task_kind.parse_value(spec, text)


def write_cs224n(path: str | Path, spec: TaskSpec, ids: list[str], predictions: np.ndarray) -> None:
    """Header `id \\t {spec.output_header}`, then one line `{id} , {prediction} ` per input row."""
    lines = [f"id \t {spec.output_header} "]
    lines += [f"{i} , {format_value(spec, p)} " for i, p in zip(ids, predictions, strict=True)]
    atomic_write_text(path, "\n".join(lines) + "\n")


def write_csv(path: str | Path, spec: TaskSpec, ids: list[str], predictions: np.ndarray) -> None:
    """Plain CSV: `id,prediction` (fields quoted where they hold a comma or a quote)."""
    handle = io.StringIO()
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(["id", "prediction"])
    writer.writerows([i, format_value(spec, p)] for i, p in zip(ids, predictions, strict=True))
    atomic_write_text(path, handle.getvalue())


def write_scores(path: str | Path, spec: TaskSpec, ids: list[str], scores: np.ndarray) -> None:
    """The scores a soft ensemble averages, in the kind's columns (class probabilities `prob_k`, the paraphrase
    probability `prob_1`, the `value`), tab-separated."""
    columns = spec.task_kind.score_columns(spec)
    lines = ["\t".join(["id", *columns])]
    lines += ["\t".join([i, *(f"{v:.6g}" for v in row)]) for i, row in zip(ids, scores, strict=True)]
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_cs224n(path: str | Path, spec: TaskSpec | None = None) -> tuple[str, dict[str, float]]:
    """Read a CS224N prediction file: (header column name, {id: value}) in file order.

    With `spec`, class names (its `label_names`) are read back as class indices.
    """
    from mtbert.errors import DataError

    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot be read ({err})") from None
    if not lines or "\t" not in lines[0]:
        raise DataError(f"{path}, line 1: not a CS224N prediction file (no 'id \\t Predicted_...' header)")
    header = lines[0].split("\t", 1)[1].strip()
    values: dict[str, float] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split(",", 1) if spec is not None and spec.label_names else line.split(",")  # names may hold ","
        if len(parts) != 2:
            raise DataError(f"{path}, line {number}: expected '{{id}} , {{prediction}}'")
        try:
            values[parts[0].strip()] = parse_value(spec, parts[1])
        except ValueError:
            raise DataError(f"{path}, line {number}: prediction '{parts[1].strip()}' is not a number") from None
    return header, values
