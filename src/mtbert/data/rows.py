"""The rows of a task's data: examples, the result of reading a split, and how labels are parsed."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from mtbert.kinds.base import LabelParser
from mtbert.kinds.sentence import as_text
from mtbert.tasks import TaskSpec

__all__ = ["Example", "LabelParser", "ReadResult", "as_text", "label_parser"]

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


def label_parser(spec: TaskSpec) -> LabelParser:
    """How a raw label becomes a number, as the task's kind reads it (by `label_names` when the task has them)."""
    return spec.task_kind.label_parser(spec)
