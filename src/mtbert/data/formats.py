"""Task rows from JSON, JSON Lines, Parquet and `datasets` datasets, checked row by row like the CS224N files.

Every row is loaded or recorded with its number (the line of a JSON Lines file, else the 1-based row) and the
reason it cannot be used; a file, split or column that cannot be used at all is one DataError sentence naming it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mtbert.data.rows import Example, LabelParser, ReadResult
from mtbert.errors import DataError
from mtbert.kinds.base import type_name
from mtbert.tasks import TaskSpec

logger = logging.getLogger(__name__)

JSON_SUFFIXES = (".json", ".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")
_type_name = type_name


class RowBuilder:
    """Turns rows (column -> value) into examples, or into skipped rows with their reason, in the order given."""

    def __init__(self, result: ReadResult, spec: TaskSpec, labeled: bool, parse: LabelParser,
                 id_column: str | None) -> None:
        self.result, self.spec, self.labeled, self.parse, self.id_column = result, spec, labeled, parse, id_column
        self.columns = wanted_columns(spec, labeled, id_column)
        self.seen: dict[str, int] = {}

    def skip(self, number: int, reason: str) -> None:
        self.result.skipped.append((number, reason))

    def add(self, number: int, row: Mapping[str, Any]) -> None:
        """Load row `number`, or record why it cannot be used."""
        missing = [c for c in self.columns if c not in row]
        if missing:
            return self.skip(number, f"no field '{missing[0]}'")
        kind = self.spec.task_kind
        texts, reason = kind.read_inputs(self.spec, row)  # the text columns (and what else the kind reads)
        if reason is not None or texts is None:
            return self.skip(number, reason or "no inputs")
        label = None
        if self.labeled:
            label, reason = self.parse(row[self.spec.label_column])
            if reason is None:
                label, reason = kind.check_label(self.spec, texts, label)
            if reason is not None:
                return self.skip(number, reason)
        if self.id_column is None:
            example_id = str(number)
        else:
            raw = row[self.id_column]
            if isinstance(raw, bool) or (raw is not None and not isinstance(raw, str | int)):
                return self.skip(number, f"id is {_type_name(raw)}, not text or an integer")
            example_id = "" if raw is None else str(raw).strip()
            if not example_id:
                return self.skip(number, "empty id")
            if example_id in self.seen:
                unit = self.result.unit
                return self.skip(number, f"duplicate id {example_id[:30]} (first on {unit} {self.seen[example_id]})")
        self.seen[example_id] = number
        self.result.examples.append(Example(id=example_id, texts=tuple(texts), label=label, line=number))
        return None


def wanted_columns(spec: TaskSpec, labeled: bool, id_column: str | None) -> list[str]:
    """The columns a split must have: the id column (when there is one), the inputs (the texts, and any other the
    kind reads), and the label (labeled)."""
    inputs = list(spec.task_kind.input_columns(spec))
    return ([id_column] if id_column else []) + inputs + ([spec.label_column] if labeled else [])


def _decode(path: Path, data: bytes) -> str:
    data = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = len(re.findall(rb"\r\n?|\n", data[: err.start])) + 1
        raise DataError(f"{path}, line {line}: not valid UTF-8 text") from None


def shown_columns(names: list[str], most: int = 20, width: int = 40) -> str:
    """Column names for an error message: the first `most`, each cut to `width` characters (a header line of
    megabytes gives a sentence, not megabytes)."""
    cut = [repr(c if len(c) <= width else c[:width] + "...") for c in names[:most]]
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return (", ".join(cut) or "none") + more


def _check_columns(where: str, spec: TaskSpec, labeled: bool, id_column: str | None, present: set[str],
                   what: str, shown: list[str]) -> None:
    for column in wanted_columns(spec, labeled, id_column):
        if column not in present:
            raise DataError(f"{where}: {what} '{column[:40]}' (its columns: {shown_columns(shown)})")


def read_json(path: Path, spec: TaskSpec, labeled: bool, parse: LabelParser) -> ReadResult:
    """A JSON array of objects, an object of equal-length column lists, or JSON Lines (one object per line)."""
    try:
        text = _decode(path, path.read_bytes())
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror})") from None
    if not text.strip():
        raise DataError(f"{path}, line 1: the file is empty")
    items: list[tuple[int, Any]] = []
    lines = path.suffix.lower() in (".jsonl", ".ndjson")
    if not lines:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            if err.msg != "Extra data":
                raise DataError(f"{path}, line {err.lineno}: not valid JSON ({err.msg})") from None
            lines = True  # several values one after the other: JSON Lines in a .json file
        else:
            items = list(enumerate(_json_rows(path, data), start=1))
    unit = "line" if lines else "row"
    if lines:
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                items.append((number, json.loads(line)))
            except json.JSONDecodeError as err:
                items.append((number, _Bad(f"not valid JSON ({err.msg})")))
    result = ReadResult(path=path, unit=unit)
    objects = [row for _, row in items if isinstance(row, dict)]
    if not objects:
        raise DataError(f"{path}: no {unit} holds a JSON object with the task's fields")
    present = {key for row in objects for key in row}
    id_column = spec.id_column or ("id" if "id" in present else None)
    _check_columns(str(path), spec, labeled, id_column, present, "no row has the field", list(objects[0]))
    builder = RowBuilder(result, spec, labeled, parse, id_column)
    for number, row in items:
        if isinstance(row, _Bad):
            builder.skip(number, row.reason)
        elif not isinstance(row, dict):
            builder.skip(number, f"not a JSON object but {_type_name(row)}")
        else:
            builder.add(number, row)
    return result


class _Bad:
    def __init__(self, reason: str) -> None:
        self.reason = reason


def _json_rows(path: Path, data: Any) -> list[Any]:
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if data and len(lists) == len(data) and len({len(v) for v in lists}) == 1:  # {"column": [values...]}
            keys = list(data)
            return [dict(zip(keys, values, strict=True)) for values in zip(*lists, strict=True)]
        if len(lists) == 1 and all(isinstance(r, dict) for r in lists[0][:1]):  # {"data": [rows...], ...}
            return lists[0]
    raise DataError(f"{path}: expected an array of objects, an object of column lists or JSON Lines, "
                    f"not {_type_name(data)}")


def _is_text_type(arrow_type: Any) -> bool:
    """A column of texts, or of lists of words."""
    import pyarrow as pa

    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return _is_text_type(arrow_type.value_type)
    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or \
        pa.types.is_string_view(arrow_type) or pa.types.is_null(arrow_type)


def read_parquet(path: Path, spec: TaskSpec, labeled: bool, parse: LabelParser) -> ReadResult:
    """A Parquet file: the columns are checked once (names, text types), then every row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable Parquet file ({_first_line(err)})") from None
    names = table.column_names
    id_column = spec.id_column or ("id" if "id" in names else None)
    _check_columns(str(path), spec, labeled, id_column, set(names), "missing column", names)
    for column in spec.text_columns:
        if not _is_text_type(table.schema.field(column).type):
            raise DataError(f"{path}: column '{column}' holds {table.schema.field(column).type}, not text")
    result = ReadResult(path=path, unit="row")
    builder = RowBuilder(result, spec, labeled, parse, id_column)
    for number, row in enumerate(table.select(wanted_columns(spec, labeled, id_column)).to_pylist(), start=1):
        builder.add(number, row)
    return result


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


# ---- `datasets` datasets ------------------------------------------------------------------------------------------
_LOADED: dict[tuple[str, str | None, str], Any] = {}


def dataset_source(spec: TaskSpec, data_dir: Path) -> tuple[Path | None, str]:
    """(local folder or None for a Hub name, its name in messages)."""
    name = str(spec.dataset)
    shown = f"dataset '{name}'" + (f" ({spec.dataset_config})" if spec.dataset_config else "")
    for candidate in (data_dir / name, Path(name).expanduser()):
        if candidate.is_dir():
            return candidate, shown
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name:
        raise DataError(f"task {spec.name}: {shown}: folder not found (nor is it a Hugging Face dataset name)")
    return None, shown


def load_dataset_splits(spec: TaskSpec, data_dir: Path) -> Any:
    """The task's dataset as a DatasetDict (a Hub name, a `save_to_disk` folder or a folder of data files)."""
    import datasets

    local, shown = dataset_source(spec, data_dir)
    key = (str(local or spec.dataset), spec.dataset_config, str(data_dir))
    if key in _LOADED:
        return _LOADED[key]
    try:
        if local is not None and ((local / "dataset_dict.json").is_file() or (local / "state.json").is_file()):
            loaded = datasets.load_from_disk(str(local))
        else:
            loaded = datasets.load_dataset(str(local or spec.dataset), spec.dataset_config)
    except Exception as err:  # the library raises many kinds (hub, network, builder, file errors): one sentence
        raise DataError(_dataset_error(spec, shown, local, err)) from None
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    _LOADED[key] = loaded
    return loaded


def _dataset_error(spec: TaskSpec, shown: str, local: Path | None, err: Exception) -> str:
    from huggingface_hub import constants

    text = _first_line(err)
    network = any(word in text.lower() for word in ("connect", "offline", "network", "resolve", "timed out"))
    if local is None and (constants.is_offline_mode() or network):
        why = " (HF_HUB_OFFLINE is set)" if constants.is_offline_mode() else ""
        return (f"task {spec.name}: cannot load {shown}: the Hugging Face Hub could not be reached{why} and it is "
                "not in the local cache")
    return f"task {spec.name}: cannot load {shown} ({text})"


def dataset_split_name(spec: TaskSpec, split: str) -> str | None:
    return {"train": spec.train_split, "dev": spec.dev_split, "test": spec.test_split}[split]


def has_dataset_split(spec: TaskSpec, split: str, data_dir: Path) -> bool:
    name = dataset_split_name(spec, split)
    return name is not None and name in load_dataset_splits(spec, data_dir)


def class_label_names(spec: TaskSpec, data_dir: Path) -> tuple[str, ...] | None:
    """The names of the label column's ClassLabel feature in the training split, when it has one."""
    import datasets

    splits = load_dataset_splits(spec, data_dir)
    train = splits.get(spec.train_split)
    feature = _inner_feature(train.features.get(spec.label_column)) if train is not None else None
    return tuple(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def _inner_feature(feature: Any) -> Any:
    """The feature of a list column's items (a token task's words or tags), else the feature itself."""
    import datasets

    while isinstance(feature, datasets.Sequence | datasets.List | datasets.LargeList):
        feature = feature.feature
    return feature


class _NotAClass(Exception):
    """A dataset's class index that names no class."""


def read_dataset_split(spec: TaskSpec, split: str, labeled: bool, parse: LabelParser, data_dir: Path,
                       report: bool = True) -> ReadResult:
    """One split of the task's dataset, row by row (rows numbered from 1)."""
    import datasets

    splits = load_dataset_splits(spec, data_dir)
    _, shown = dataset_source(spec, data_dir)
    name = dataset_split_name(spec, split)
    if name not in splits:
        raise DataError(f"task {spec.name}: {shown} has no split '{name}' (its splits: {', '.join(splits)}); "
                        f"set {split}_split")
    table = splits[name]
    where = f"{shown}, split '{name}'"
    features = table.features
    id_column = spec.id_column or ("id" if "id" in features else None)
    _check_columns(where, spec, labeled, id_column, set(features), "missing column", list(features))
    for column in spec.text_columns:
        feature = _inner_feature(features[column])  # a text, or a list of words
        if not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
            raise DataError(f"{where}: column '{column}' holds {features[column]}, not text")
    label_feature = _inner_feature(features.get(spec.label_column)) if labeled else None
    if isinstance(label_feature, datasets.ClassLabel) and spec.label_names is not None:
        names = label_feature.names
        inner = parse

        def name_of(raw: Any) -> Any:  # a class index of the dataset -> its name
            if isinstance(raw, int) and not isinstance(raw, bool):
                if not 0 <= raw < len(names):
                    raise _NotAClass("empty label" if raw == -1 else f"label {raw} is not a class of the dataset")
                return names[raw]
            return raw

        def parse(raw: Any) -> tuple[float | None, str | None]:
            try:
                return inner([name_of(r) for r in raw] if isinstance(raw, list) else name_of(raw))
            except _NotAClass as why:
                return None, str(why)

    result = ReadResult(path=Path(str(spec.dataset)), unit="row", source=where)
    builder = RowBuilder(result, spec, labeled, parse, id_column)
    for number, row in enumerate(table.select_columns(wanted_columns(spec, labeled, id_column)).to_list(), start=1):
        builder.add(number, row)
    if report:
        result.log_summary()
    return result
