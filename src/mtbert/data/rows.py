"""The rows of a task's data: examples, the result of reading a split, and how labels are parsed."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtbert.tasks import TaskSpec

logger = logging.getLogger("mtbert.data.files")  # the name the reading reports have always used


@dataclass
class Example:
    """One row of a task file: its id, its one or two texts, its label (None when unlabeled) and its line or row."""

    id: str
    texts: tuple[str, ...]
    label: float | None
    line: int


@dataclass
class ReadResult:
    """What reading a file gave: the loaded examples and every skipped row with its line (or row) and reason.

    `unit` is "line" for text files (the physical line a row starts on) and "row" (1-based) otherwise;
    `source` names a dataset split when there is no file.
    """

    path: Path
    examples: list[Example] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    unit: str = "line"
    source: str = ""

    @property
    def rows(self) -> int:
        """Rows in the file (after the header): always loaded + skipped."""
        return len(self.examples) + len(self.skipped)

    @property
    def where(self) -> str:
        return self.source or str(self.path)

    def log_summary(self) -> None:
        """One warning line counting the skipped rows and naming the first five with their reasons."""
        if self.skipped:
            shown = ", ".join(f"{n} ({why})" for n, why in self.skipped[:5])
            more = f" and {len(self.skipped) - 5} more" if len(self.skipped) > 5 else ""
            logger.warning("%s: skipped %d of %d rows: %s %s%s", self.where, len(self.skipped), self.rows,
                           self.unit, shown, more)


LabelParser = Callable[[Any], tuple[float | None, str | None]]


def _parse_label(raw: str, spec: TaskSpec) -> tuple[float | None, str | None]:
    """Return (label, None) or (None, reason to skip the row)."""
    text = raw.strip()
    if not text:
        return None, "empty label"
    try:
        value = float(text)
    except ValueError:
        return None, f"label '{text[:20]}' is not a number"
    if not math.isfinite(value):
        return None, f"label '{text[:20]}' is not finite"
    if spec.is_regression:
        if not spec.label_min <= value <= spec.label_max:
            return None, f"label {value:g} is outside {spec.label_min:g}..{spec.label_max:g}"
        return value, None
    if value != int(value) or not 0 <= value < spec.num_labels:
        return None, f"label {text[:20]} is not a class in 0..{spec.num_labels - 1}"
    return float(int(value)), None


def _parse_name(raw: Any, spec: TaskSpec) -> tuple[float | None, str | None]:
    """A label given by its class name (`spec.label_names`): (index, None) or (None, reason)."""
    text = ("true" if raw else "false") if isinstance(raw, bool) else "" if raw is None else str(raw).strip()
    if not text:
        return None, "empty label"
    names = spec.label_names or ()
    if text not in names:
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        return None, f"label '{text[:20]}' is not one of the label_names ({shown})"
    return float(names.index(text)), None


def label_parser(spec: TaskSpec) -> LabelParser:
    """How a raw label becomes a number: through `label_names` when the task has them, else as a number."""
    if spec.label_names is not None:
        return lambda raw: _parse_name(raw, spec)
    return lambda raw: _parse_label(raw if isinstance(raw, str) else as_text(raw), spec)


def as_text(value: Any) -> str:
    """A non-text field value as the text a delimited file would hold ('' for a missing value)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return repr(value)
    return str(value)
