"""A sentence task's labels in a second file beside the CoNLL file of its words (the task's `label_files`).

Two layouts, told apart by the first line (a tab makes the file id-keyed):
- line-aligned: one label per line, line k for the k-th sentence of the CoNLL file;
- id-keyed: `id<TAB>label` lines in any order, the id being the sentence's id as `read_conll` gives it (its number
  in the file, from 1).
Every sentence needs exactly one label: a blank line, a count that differs from the sentences', an unknown, repeated
or missing id is a DataError naming the file and line, raised while the data is read (before a run writes
anything). A label the task's kind cannot read skips its sentence, as a bad row of any file does.
"""

from __future__ import annotations

from pathlib import Path

from mtbert.data.rows import Example, LabelParser, ReadResult
from mtbert.errors import DataError
from mtbert.tasks import TaskSpec


def read_label_lines(path: Path) -> list[str]:
    """The lines of a label file (UTF-8, a byte-order mark dropped); DataError when it is missing, unreadable, not
    UTF-8 or empty."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (label_files are relative to data_dir)") from None
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror})") from None
    data = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(f"{path}, line {line}: not valid UTF-8 text") from None
    if not lines:
        raise DataError(f"{path}, line 1: the file holds no label")
    return lines


def labels_by_sentence(path: Path, sentences: int, words: Path) -> dict[str, tuple[int, str]]:
    """{sentence id: (line, raw label)} of a label file for the `sentences` sentences of the CoNLL file `words`,
    every sentence labeled once."""
    lines = read_label_lines(path)
    keyed = "\t" in lines[0]
    found: dict[str, tuple[int, str]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise DataError(f"{path}, line {number}: an empty line; a label file gives one sentence's label per line")
        if not keyed:
            if "\t" in line:
                raise DataError(f"{path}, line {number}: a tab, but line 1 has none; give one label per line, or "
                                "id<TAB>label on every line")
            found[str(number)] = (number, line.strip())
            continue
        parts = [part.strip() for part in line.split("\t")]
        if len(parts) != 2 or not all(parts):
            raise DataError(f"{path}, line {number}: expected id<TAB>label (line 1 has a tab, so every line gives a "
                            "sentence's id and its label)")
        sentence, label = parts
        if sentence in found:
            raise DataError(f"{path}, line {number}: sentence {sentence[:30]} again (first on line "
                            f"{found[sentence][0]})")
        if not (sentence.isascii() and sentence.isdigit()) or sentence != str(int(sentence)) \
                or not 1 <= int(sentence) <= sentences:
            raise DataError(f"{path}, line {number}: id {sentence[:30]} names no sentence of {words} (its sentences "
                            f"are 1 to {sentences})")
        found[sentence] = (number, label)
    if not keyed and len(found) != sentences:
        line = min(len(found), sentences) + 1  # where a label is missing, or the first beyond the sentences
        raise DataError(f"{path}, line {line}: {len(found)} labels for the {sentences} sentences of {words}; a "
                        "line-aligned label file holds one label per sentence, line k for the k-th")
    return found


def add_labels(words: ReadResult, path: Path, spec: TaskSpec, parse: LabelParser) -> ReadResult:
    """The sentences of a CoNLL file read without labels (`words`), each with its label from the label file
    `path`; a label that `parse` (or the kind's `check_label`) refuses skips its sentence, with the label's line."""
    starts = sorted([e.line for e in words.examples] + [line for line, _ in words.skipped])  # sentence k: starts[k-1]
    labels = labels_by_sentence(path, len(starts), words.path)
    for sentence, start in enumerate(starts, start=1):
        if str(sentence) not in labels:
            raise DataError(f"{path}: no label for sentence {sentence} of {words.path} (its line {start}); an "
                            "id-keyed label file gives every sentence's id and label")
    result = ReadResult(path=words.path, skipped=list(words.skipped), unit=words.unit, source=words.source)
    for example in words.examples:
        line, raw = labels[example.id]
        label, reason = parse(raw)
        if reason is None:
            label, reason = spec.task_kind.check_label(spec, example.texts, label)
        if reason is not None:
            result.skipped.append((example.line, f"{path.name}, line {line}: {reason}"))
            continue
        result.examples.append(Example(id=example.id, texts=example.texts, label=label, line=example.line))
    result.skipped.sort()
    return result
