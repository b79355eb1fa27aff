"""Loading every task's splits: find each split (a file, or a split of a `datasets` dataset), read, check, tokenize."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtbert.data.encoding import EncodedSet, encode_examples
from mtbert.data.files import LabelParser, ReadResult, label_parser, read_task_file
from mtbert.data.groups import align_sets
from mtbert.data.label_files import add_labels
from mtbert.errors import DataError
from mtbert.tasks import BUILTIN_TASKS, SPLITS, TaskSpec, input_groups

logger = logging.getLogger(__name__)


DATA_HELP = (
    "the CS224N files (ids-sst-*.csv, quora-*.csv, sts-*.csv, published with the course's default project "
    "at https://github.com/gpoesia/minbert-default-final-project under data/) are needed there; "
    "run `mtbert data download --to DIR` to fetch them, and set MTBERT_DATA or data_dir to the folder that holds them"
)


@dataclass
class TaskData:
    """A task's tokenized splits; dev and test are None when their file is absent. `spec` has its label names."""

    spec: TaskSpec
    train: EncodedSet | None
    dev: EncodedSet | None
    test: EncodedSet | None


def read_split(spec: TaskSpec, split: str, data_dir: Path, labeled: bool | None = None,
               parse: LabelParser | None = None, report: bool = True) -> ReadResult | None:
    """Read one split ("train", "dev" or "test") of a task: its file under data_dir, or its dataset's split.

    Returns None when the task has no such split, or when its test file or split is absent (logged). A missing
    train or dev source is a DataError. `labeled` defaults to every split but test. A task with `label_files`
    reads the split's words from its CoNLL file and their labels from the split's label file (`add_labels`).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    labeled = split != "test" if labeled is None else labeled
    parse = parse or label_parser(spec)
    if spec.dataset is not None:
        from mtbert.data import formats

        if split == "test" and not formats.has_dataset_split(spec, split, data_dir):
            if spec.test_split is not None:
                logger.warning("task %s: dataset '%s' has no split '%s', skipping %s test predictions", spec.name,
                               spec.dataset, spec.test_split, spec.name)
            return None
        return formats.read_dataset_split(spec, split, labeled, parse, data_dir, report=report)
    name = getattr(spec, f"{split}_file")
    if not name:
        return None
    path = data_dir / name
    if not path.is_file():
        if split == "test":
            logger.warning("%s: test file not found, skipping %s test predictions", path, spec.name)
            return None
        hint = DATA_HELP if spec.name in BUILTIN_TASKS else f"{split}_file is relative to data_dir ({data_dir})"
        raise DataError(f"{path}: file not found; {hint}")
    label_file = (spec.label_files or {}).get(split) if labeled else None
    if label_file is None:
        return read_task_file(path, spec, labeled=labeled, parse=parse, report=report)
    words = read_task_file(path, spec, labeled=False, parse=parse, report=False)
    result = add_labels(words, data_dir / label_file, spec, parse)
    if report:
        result.log_summary()
    return result


class _NumericLabel(Exception):
    """A training label is a number: the task's labels are class indices, not names."""


def resolve_labels(spec: TaskSpec, data_dir: Path) -> TaskSpec:
    """The task with its `label_names` filled in when its classification labels are names.

    Given `label_names` are kept (their order is the class order); else the training split's ClassLabel names;
    else, when no training label is a number, the sorted distinct training labels. Numeric labels stay class
    indices 0..num_labels-1. A kind that reads more off the data (`TaskKind.fit_data`) reads every split.
    """
    def every_example() -> list[Any]:
        read = (read_split(spec, split, data_dir, report=False) for split in SPLITS)
        return [example for result in read if result is not None for example in result.examples]

    spec = spec.task_kind.fit_data(spec, every_example)
    if not spec.task_kind.has_classes or spec.label_names is not None:
        return spec
    names: list[str] | None = None
    if spec.dataset is not None:
        from mtbert.data import formats

        found = formats.class_label_names(spec, data_dir)
        names = list(found) if found is not None else None
    if names is None:
        seen: set[str] = set()

        def collect(raw: Any) -> tuple[float | None, str | None]:
            found, reason = spec.task_kind.label_names_of(spec, raw)  # one name, or a multi-label row's names
            if reason is not None:
                return None, reason
            for text in found:
                try:
                    float(text)
                except ValueError:
                    continue
                if spec.task_kind.index_labels:
                    raise _NumericLabel
            seen.update(found)
            return 0.0, None

        try:
            read_split(spec, "train", data_dir, labeled=True, parse=collect, report=False)
        except _NumericLabel:
            return spec
        names = sorted(seen)
    if not names:
        return spec
    if len(names) < 2:
        raise DataError(f"task {spec.name}: every training label is '{names[0]}'; a classification task needs "
                        "at least two classes")
    logger.info("task %s: %d classes by name: %s", spec.name, len(names), ", ".join(names[:20]))
    return dataclasses.replace(spec, label_names=tuple(names), num_labels=len(names))


def load_task_data(specs: list[TaskSpec], data_dir: Path, tokenizer, max_length: int, pair_architecture: str,
                   max_train_samples: int | None = None, max_eval_samples: int | None = None,
                   max_predict_samples: int | None = None,
                   splits: tuple[str, ...] = ("train", "dev", "test")) -> dict[str, TaskData]:
    """Read and tokenize every task's splits. A missing train or dev source is an error; a missing test one is
    skipped. Each TaskData's spec has the task's label names resolved (see `resolve_labels`). The tasks of an
    input_group keep the rows they all loaded, in the same order (`mtbert.data.groups.align_sets`)."""
    if any(spec.dataset is None for spec in specs) and not data_dir.is_dir():
        raise DataError(f"{data_dir}: data folder not found; {DATA_HELP}")
    out = {}
    for spec in specs:
        spec = resolve_labels(spec, data_dir)
        sets: dict[str, EncodedSet | None] = {"train": None, "dev": None, "test": None}
        for split in splits:
            result = read_split(spec, split, data_dir)
            if result is None:
                continue
            examples = result.examples
            limit = {"train": max_train_samples, "dev": max_eval_samples, "test": max_predict_samples}[split]
            if limit is not None:
                examples = examples[:limit]
            if split != "test" and not examples:
                raise DataError(f"{result.where}: no usable rows")
            sets[split] = encode_examples(tokenizer, spec, examples, max_length, pair_architecture)
        out[spec.name] = TaskData(spec=spec, **sets)
    for group, members in input_groups(specs).items():  # the tasks of a group keep the same rows, in one order
        for split in splits:
            aligned = align_sets(group, {s.name: getattr(out[s.name], split) for s in members})
            for task, encoded in aligned.items():
                setattr(out[task], split, encoded)
    return out
