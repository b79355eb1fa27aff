"""Reading a task file: every row loaded or reported with its file, line (or row) and reason.

Delimited text (.csv, .tsv, the CS224N files) is read here; JSON, JSON Lines and Parquet in `formats`.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import sys
from pathlib import Path

from mtbert.data.conll import CONLL_SUFFIXES, read_conll
from mtbert.data.rows import (  # noqa: F401 - the reading API, re-exported
    Example,
    LabelParser,
    ReadResult,
    as_text,
    label_parser,
)
from mtbert.errors import DataError
from mtbert.tasks import TaskSpec

logger = logging.getLogger(__name__)

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def delimiter_of(path: Path, spec: TaskSpec, first_line: str) -> str:
    """The task's `delimiter`, else tab for .tsv, else tab or comma, whichever the header line has (tab first)."""
    if spec.delimiter is not None:
        return spec.delimiter
    if path.suffix.lower() == ".tsv" or "\t" in first_line:
        return "\t"
    return "," if "," in first_line else "\t"


def read_task_file(path: str | Path, spec: TaskSpec, labeled: bool = True,
                   parse: LabelParser | None = None, report: bool = True) -> ReadResult:
    """Read one task file of any supported format (by suffix: .json, .jsonl/.ndjson, .parquet, .conll/.bio, else
    delimited).

    Every row is loaded or recorded in `skipped` with its line (row for JSON arrays and Parquet) and reason;
    a summary warning counts the skipped rows. Raises DataError, one sentence naming the file (and line), when
    the file is missing, unreadable, not UTF-8, has no header, lacks a needed column, or cannot be parsed at all.
    `parse` overrides how labels are read (default: `label_parser(spec)`); `report=False` logs no summary.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    from mtbert.data import formats

    parse = parse or label_parser(spec)
    suffix = path.suffix.lower()
    if suffix in CONLL_SUFFIXES:
        result = read_conll(path, spec, labeled, parse)
    elif suffix in formats.JSON_SUFFIXES:
        result = formats.read_json(path, spec, labeled, parse)
    elif suffix in formats.PARQUET_SUFFIXES:
        result = formats.read_parquet(path, spec, labeled, parse)
    else:
        result = _read_delimited(path, spec, labeled, parse)
    if report:
        result.log_summary()
    return result


def _read_delimited(path: Path, spec: TaskSpec, labeled: bool, parse: LabelParser) -> ReadResult:
    """Delimited text; the CS224N files are tab-separated with an `id` column."""
    from mtbert.data.formats import RowBuilder, wanted_columns

    result = ReadResult(path=path)
    delimiter = "\t"
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
        delimiter = delimiter_of(path, spec, text.split("\n", 1)[0])
        with io.StringIO(text, newline="") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}, line 1: the file is empty (a header line is needed)")
            id_column = spec.id_column or ("id" if "id" in header else None)
            positions = {}
            for column in wanted_columns(spec, labeled, id_column):
                if column not in header:
                    from mtbert.data.formats import shown_columns

                    shown = shown_columns(header)
                    raise DataError(f"{path}, line 1: missing column '{column[:40]}' (the header has {shown})")
                positions[column] = header.index(column)
            builder = RowBuilder(result, spec, labeled, parse, id_column)
            width = len(header)
            line = reader.line_num + 1
            for row in reader:
                start, line = line, reader.line_num + 1
                # A row with a missing trailing empty field is still usable when every wanted column is there.
                if len(row) != width and not max(positions.values()) < len(row) < width:
                    builder.skip(start, f"{len(row)} fields where the header has {width}")
                    continue
                builder.add(start, {column: row[at] for column, at in positions.items()})
    except UnicodeDecodeError:
        raise DataError(f"{path}, line {line}: not valid UTF-8 text") from None
    except csv.Error as err:
        kind = {"\t": "tab", ",": "comma"}.get(delimiter, repr(delimiter))
        raise DataError(f"{path}, line {line}: cannot be parsed as {kind}-separated text ({err})") from None
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror})") from None
    return result
