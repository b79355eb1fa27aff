"""Loading every task's splits: read, check and tokenize."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from mtbert.data.encoding import EncodedSet, encode_examples
from mtbert.data.files import read_task_file
from mtbert.errors import DataError
from mtbert.tasks import TaskSpec

logger = logging.getLogger(__name__)


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
