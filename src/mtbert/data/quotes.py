"""A stray quote that runs on to the end of a tab-separated file: find the line where it opened.

Python's `csv` (the reader of task files) reads a field that starts with `"` up to the next closing quote;
when there is none it silently takes in the rest of the file as one field, and the last row it yields
starts far above the real culprit's reason. These functions name the line of that opening quote.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

_NEWLINE = re.compile(r"\r\n?|\n")


def runaway_quote_line(path: str | Path, delimiter: str = "\t") -> int | None:
    """The 1-based line where a quoted field opens that is never closed before the end of the file, or None.

    The file is read as `read_task_file` reads it (UTF-8, a byte-order mark dropped); an unreadable file
    gives None (its reader reports it).
    """
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    if b'"' not in data:
        return None
    return runaway_quote_line_in_text(data.decode("utf-8-sig", errors="replace"), delimiter)


def runaway_quote_line_in_text(text: str, delimiter: str = "\t") -> int | None:
    """`runaway_quote_line` of text already read (line breaks as csv counts them: \\r\\n, \\r or \\n)."""
    if '"' not in text:
        return None
    offsets = [0]  # offsets[k]: where line k + 1 starts

    def lines():
        for line in io.StringIO(text, newline=""):
            offsets.append(offsets[-1] + len(line))
            yield line

    reader = csv.reader(lines(), delimiter=delimiter)
    last_start = 0  # lines read before the last row began
    read = 0
    try:
        for _ in reader:
            last_start, read = read, reader.line_num
    except csv.Error:
        return None
    segment = text[offsets[last_start]:]
    opened = _open_quote_at_end(segment, delimiter)
    if opened is None:
        return None
    return last_start + 1 + len(_NEWLINE.findall(segment, 0, opened))


def _open_quote_at_end(text: str, delimiter: str) -> int | None:
    """The offset of the quote that opens a field still open at the end of `text` (csv's excel rules), or None."""
    start, in_field, quoted = 0, 1, 2
    state, opened, i, n = start, 0, 0, len(text)
    while i < n:
        if state == quoted:
            j = text.find('"', i)
            if j < 0:
                return opened
            if j + 1 < n and text[j + 1] == '"':  # a doubled quote stands for one quote
                i = j + 2
                continue
            i = j + 1
            if i < n:  # after the closing quote: a delimiter or line break ends the field, anything else joins it
                state = start if text[i] == delimiter or text[i] in "\r\n" else in_field
                i += 1
            else:
                state = start
            continue
        c = text[i]
        if c == delimiter or c in "\r\n":
            state = start
        elif state == start:
            if c == '"':
                state, opened = quoted, i
            else:
                state = in_field
        i += 1
    return opened if state == quoted else None
