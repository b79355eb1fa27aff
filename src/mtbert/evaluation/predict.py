"""Prediction files: the CS224N format (`id \t Predicted_...` then `{id} , {value} `) and plain CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtbert.io import atomic_write_text
from mtbert.tasks import TaskSpec


def format_value(spec: TaskSpec, value: float) -> str:
    if spec.is_regression:
        return f"{float(value):.6g}"
    return str(int(value))


def write_cs224n(path: str | Path, spec: TaskSpec, ids: list[str], predictions: np.ndarray) -> None:
    """Header `id \\t {spec.output_header}`, then one line `{id} , {prediction} ` per input row."""
    lines = [f"id \t {spec.output_header} "]
    lines += [f"{i} , {format_value(spec, p)} " for i, p in zip(ids, predictions, strict=True)]
    atomic_write_text(path, "\n".join(lines) + "\n")


def write_csv(path: str | Path, spec: TaskSpec, ids: list[str], predictions: np.ndarray) -> None:
    """Plain CSV: `id,prediction`."""
    lines = ["id,prediction"] + [f"{i},{format_value(spec, p)}" for i, p in zip(ids, predictions, strict=True)]
    atomic_write_text(path, "\n".join(lines) + "\n")


def write_scores(path: str | Path, spec: TaskSpec, ids: list[str], scores: np.ndarray) -> None:
    """Class probabilities (`prob_k`), the paraphrase probability (`prob_1`) or the value (`value`), tab-separated."""
    if spec.is_regression:
        columns = ["value"]
    elif spec.num_outputs == 1:
        columns = ["prob_1"]
    else:
        columns = [f"prob_{k}" for k in range(scores.shape[1])]
    lines = ["\t".join(["id", *columns])]
    lines += ["\t".join([i, *(f"{v:.6g}" for v in row)]) for i, row in zip(ids, scores, strict=True)]
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_cs224n(path: str | Path) -> tuple[str, dict[str, float]]:
    """Read a CS224N prediction file: (header column name, {id: value}) in file order."""
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
        parts = line.split(",")
        if len(parts) != 2:
            raise DataError(f"{path}, line {number}: expected '{{id}} , {{prediction}}'")
        try:
            values[parts[0].strip()] = float(parts[1])
        except ValueError:
            raise DataError(f"{path}, line {number}: prediction '{parts[1].strip()}' is not a number") from None
    return header, values
