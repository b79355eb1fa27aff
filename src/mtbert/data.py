"""Reading task files with validation, tokenization, dynamic-padding batches and the multi-task sampler."""

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


@dataclass
class EncodedSet:
    """Tokenized examples of one task and split, ready for batching."""

    spec: TaskSpec
    ids: list[str]
    features: list[list[list[int]]]  # per example: one token-id list per encoder input (1 or 2)
    token_types: list[list[list[int]]]
    labels: list[float | None]

    def __len__(self) -> int:
        return len(self.ids)


def encode_examples(tokenizer, spec: TaskSpec, examples: list[Example], max_length: int,
                    pair_architecture: str) -> EncodedSet:
    """Tokenize with the backbone's fast tokenizer, truncating to max_length; no padding here.

    Pairs go into one sequence for the `cross` architecture, into two for the bi-encoders.
    """
    features: list[list[list[int]]] = [[] for _ in examples]
    token_types: list[list[list[int]]] = [[] for _ in examples]
    if spec.is_pair and pair_architecture == "cross":
        groups = [([e.texts[0] for e in examples], [e.texts[1] for e in examples])]
    else:
        groups = [([e.texts[i] for e in examples], None) for i in range(len(spec.text_columns))]
    for first, second in groups:
        if not examples:
            break
        enc = tokenizer(first, second, truncation=True, max_length=max_length, return_token_type_ids=True)
        types = enc.get("token_type_ids") or [[0] * len(ids) for ids in enc["input_ids"]]
        for i, (ids, tt) in enumerate(zip(enc["input_ids"], types, strict=True)):
            features[i].append(list(ids))
            token_types[i].append(list(tt))
    return EncodedSet(
        spec=spec,
        ids=[e.id for e in examples],
        features=features,
        token_types=token_types,
        labels=[e.label for e in examples],
    )


def collate(encoded: EncodedSet, indices: list[int], pad_token_id: int) -> dict:
    """Stack the chosen examples into padded tensors, padding only to the batch's longest member.

    Returns {"inputs": [{input_ids, attention_mask, token_type_ids}, ... one per encoder input],
    "labels": tensor | None}.
    """
    n_inputs = len(encoded.features[indices[0]])
    inputs = []
    for k in range(n_inputs):
        seqs = [encoded.features[i][k] for i in indices]
        types = [encoded.token_types[i][k] for i in indices]
        width = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), width), pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(seqs), width), dtype=torch.long)
        type_ids = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, (s, t) in enumerate(zip(seqs, types, strict=True)):
            input_ids[row, : len(s)] = torch.tensor(s)
            attention[row, : len(s)] = 1
            type_ids[row, : len(t)] = torch.tensor(t)
        inputs.append({"input_ids": input_ids, "attention_mask": attention, "token_type_ids": type_ids})
    labels = None
    if encoded.labels and encoded.labels[indices[0]] is not None:
        labels = torch.tensor([encoded.labels[i] for i in indices], dtype=torch.float)
    return {"inputs": inputs, "labels": labels}


def length_sorted_batches(encoded: EncodedSet, batch_size: int) -> Iterator[list[int]]:
    """Batches of indices sorted by length (longest first), so that padding is minimal in evaluation."""
    order = sorted(range(len(encoded)), key=lambda i: -sum(len(f) for f in encoded.features[i]))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


class MultiTaskSampler:
    """Seeded endless index streams, one per task: each task is reshuffled whenever it is used up.

    `draw(task, n)` returns the next n indices of that task. The whole state is the position in each
    stream, so a run resumes exactly from `state_dict()`.
    """

    def __init__(self, sizes: dict[str, int], seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.sizes = dict(sizes)
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.positions = {name: 0 for name in sizes}
        self._cache: dict[str, tuple[int, list[int]]] = {}

    def _permutation(self, task: str, cycle: int) -> list[int]:
        cached = self._cache.get(task)
        if cached is None or cached[0] != cycle:
            task_index = list(self.sizes).index(task)
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + task_index * 7919 + cycle)
            cached = (cycle, torch.randperm(self.sizes[task], generator=generator).tolist())
            self._cache[task] = cached
        return cached[1]

    def draw(self, task: str, n: int) -> list[int]:
        """The next n indices of `task` for this rank; all ranks together consume n * world_size.

        Rank r takes stream positions [pos + r*n, pos + (r+1)*n): the ranks' draws, in rank order, are exactly
        the n * world_size indices one process would draw (the union of the ranks' batches is that batch).
        """
        size = self.sizes[task]
        out = []
        start = self.positions[task] + self.rank * n
        for pos in range(start, start + n):
            out.append(self._permutation(task, pos // size)[pos % size])
        self.positions[task] += n * self.world_size
        return out

    def state_dict(self) -> dict[str, int]:
        return dict(self.positions)

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.positions = {name: int(state[name]) for name in self.sizes}


DATA_HELP = (
    "the CS224N files (ids-sst-*.csv, quora-*.csv, sts-*.csv, published with the course's default project "
    "at https://github.com/gpoesia/minbert-default-final-project under data/) are needed there; "
    "set MTBERT_DATA or data_dir to the folder that holds them"
)


@dataclass
class TaskData:
    """A task's tokenized splits; dev and test are None when their file is absent."""

    spec: TaskSpec
    train: EncodedSet | None
    dev: EncodedSet | None
    test: EncodedSet | None


def load_task_data(specs: list[TaskSpec], data_dir: Path, tokenizer, max_length: int, pair_architecture: str,
                   max_train_samples: int | None = None, max_eval_samples: int | None = None,
                   max_predict_samples: int | None = None,
                   splits: tuple[str, ...] = ("train", "dev", "test")) -> dict[str, TaskData]:
    """Read and tokenize every task's files. A missing train or dev file is an error; a missing test file is skipped."""
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data folder not found; {DATA_HELP}")
    out = {}
    for spec in specs:
        sets: dict[str, EncodedSet | None] = {"train": None, "dev": None, "test": None}
        for split in splits:
            name = getattr(spec, f"{split}_file")
            if not name:
                continue
            path = data_dir / name
            if split == "test" and not path.is_file():
                logger.warning("%s: test file not found, skipping %s test predictions", path, spec.name)
                continue
            if not path.is_file():
                raise DataError(f"{path}: file not found; {DATA_HELP}")
            result = read_task_file(path, spec, labeled=split != "test")
            examples = result.examples
            limit = {"train": max_train_samples, "dev": max_eval_samples, "test": max_predict_samples}[split]
            if limit is not None:
                examples = examples[:limit]
            if split != "test" and not examples:
                raise DataError(f"{path}: no usable rows")
            sets[split] = encode_examples(tokenizer, spec, examples, max_length, pair_architecture)
        out[spec.name] = TaskData(spec=spec, **sets)
    return out
