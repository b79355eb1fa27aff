"""Reading a task's CS224N-style file: every row loaded or reported with its file, line and reason."""

from __future__ import annotations

import csv
import io
import logging
import math
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mtbert.errors import DataError
from mtbert.tasks import TaskSpec

logger = logging.getLogger(__name__)

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass
class Example:
    """One row of a task file: its id, its one or two texts, and its label (None when unlabeled)."""

    id: str
    texts: tuple[str, ...]
    label: float | None
    line: int


@dataclass
class ReadResult:
    """What reading a file gave: the loaded examples and every skipped row with its line and reason."""

    path: Path
    examples: list[Example] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        """Rows in the file (after the header): always loaded + skipped."""
        return len(self.examples) + len(self.skipped)


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


def read_task_file(path: str | Path, spec: TaskSpec, labeled: bool = True) -> ReadResult:
    """Read one tab-separated task file; skip and record rows that cannot be used.

    Raises DataError (naming the file and line) when the file is missing, not UTF-8, has no header,
    lacks a needed column, or cannot be parsed at all.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    wanted = [spec.id_column, *spec.text_columns] + ([spec.label_column] if labeled else [])
    result = ReadResult(path=path)
    seen_ids: dict[str, int] = {}
    line = 1
    try:
        data = path.read_bytes()
        data = data[3:] if data.startswith(b"\xef\xbb\xbf") else data  # a byte-order mark
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            # Name the line of the first bad byte (the line breaks csv counts: \r\n, \r or \n).
            line = len(re.findall(rb"\r\n?|\n", data[: err.start])) + 1
            raise
        with io.StringIO(text, newline="") as handle:
            reader = csv.reader(handle, delimiter="\t")
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}, line 1: the file is empty (a header line is needed)")
            positions = {}
            for column in wanted:
                if column not in header:
                    shown = ", ".join(repr(h) for h in header)
                    raise DataError(f"{path}, line 1: missing column '{column}' (the header has {shown})")
                positions[column] = header.index(column)
            width = len(header)
            line = reader.line_num + 1
            for row in reader:
                start, line = line, reader.line_num + 1
                reason = None
                if len(row) != width:
                    reason = f"{len(row)} fields where the header has {width}"
                    # A row with a missing trailing empty field is still usable when every wanted column is there.
                    if len(row) > max(positions.values()) and len(row) < width:
                        reason = None
                if reason is None:
                    label = None
                    if labeled:
                        label, reason = _parse_label(row[positions[spec.label_column]], spec)
                if reason is None:
                    example_id = row[positions[spec.id_column]].strip()
                    if not example_id:
                        reason = "empty id"
                    elif example_id in seen_ids:
                        reason = f"duplicate id {example_id[:30]} (first on line {seen_ids[example_id]})"
                if reason is not None:
                    result.skipped.append((start, reason))
                    continue
                seen_ids[example_id] = start
                texts = tuple(row[positions[c]].strip() for c in spec.text_columns)
                result.examples.append(Example(id=example_id, texts=texts, label=label, line=start))
    except UnicodeDecodeError:
        raise DataError(f"{path}, line {line}: not valid UTF-8 text") from None
    except csv.Error as err:
        raise DataError(f"{path}, line {line}: cannot be parsed as tab-separated text ({err})") from None
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror})") from None
    if result.skipped:
        shown = ", ".join(f"{n} ({why})" for n, why in result.skipped[:5])
        more = f" and {len(result.skipped) - 5} more" if len(result.skipped) > 5 else ""
        logger.warning(
            "%s: skipped %d of %d rows: line %s%s", path, len(result.skipped), result.rows, shown, more
        )
    return result
