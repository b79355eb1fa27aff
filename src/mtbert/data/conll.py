"""CoNLL-style files of a token task: one `word<TAB or spaces>...<tag>` line per word, a blank line after each
sentence, `-DOCSTART-` lines skipped (CoNLL-2003's document breaks).

The word is the first column and the tag the last unless the task sets `conll_columns: [WORD_INDEX, TAG_INDEX]`
(from 0; negative counts from the end). An unlabeled file (test) may hold words alone. A sentence is one example:
its id is its number in the file (from 1, skipped sentences counted) and its line the line of its first word; a
sentence with a malformed line is skipped with that line and the reason. A sentence task (single, multi-label) reads
the words alone, as one text, and its labels from `label_files` (`mtbert.data.label_files`).
"""

from __future__ import annotations

from pathlib import Path

from mtbert.data.rows import Example, LabelParser, ReadResult
from mtbert.errors import DataError
from mtbert.tasks import CONLL_SUFFIXES, TaskSpec, reads_label_files

__all__ = ["CONLL_SUFFIXES", "DOCSTART", "read_conll"]
DOCSTART = "-DOCSTART-"


def read_conll(path: Path, spec: TaskSpec, labeled: bool, parse: LabelParser) -> ReadResult:
    """Every sentence of a CoNLL file as an example (its words as the task's kind reads a list of words, and its
    tags when `labeled`), or skipped with its line and reason. A sentence task's labels are not in the file: reading
    it `labeled` is a DataError (`read_split` adds them from the task's `label_files`)."""
    if labeled and reads_label_files(spec):
        raise DataError(f"{path}: a CoNLL file holds words and their tags, not the labels of the {spec.kind} task "
                        f"{spec.name}; give them in a second file (the task's label_files)")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror})") from None
    data = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: not valid UTF-8 text") from None
    word_at, tag_at = spec.conll_columns or (0, -1)
    result = ReadResult(path=path)
    sentence: list[tuple[int, list[str]]] = []
    number = 0

    def close() -> None:
        nonlocal number
        if not sentence:
            return
        number += 1
        first = sentence[0][0]
        words, tags, reason = [], [], None
        for line, fields in sentence:
            try:
                words.append(fields[word_at])
                if labeled:
                    if len(fields) < 2:
                        raise IndexError
                    tags.append(fields[tag_at])
            except IndexError:
                want = "a word and a tag" if labeled else "a word"
                reason = f"line {line} has {len(fields)} field(s), where {want} are needed"
                break
        label = text = None
        if reason is None:
            text, reason = spec.task_kind.read_text(words, spec.text_columns[0])  # words, or one text of them
        if reason is None and labeled:
            label, reason = parse(tags)
        if reason is not None:
            result.skipped.append((first, reason))
        else:
            result.examples.append(Example(id=str(number), texts=(text,), label=label, line=first))
        sentence.clear()

    for line, raw in enumerate(text.splitlines(), start=1):
        fields = raw.split()
        if not fields:
            close()
        elif fields[0] == DOCSTART:
            close()
        else:
            sentence.append((line, fields))
    close()
    if not result.examples and not result.skipped:
        raise DataError(f"{path}, line 1: the file holds no sentence")
    return result
