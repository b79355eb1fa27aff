"""Task registry: what a task is (kind, files, columns, metric), the three CS224N tasks, and the overall score.

Nothing outside this module knows the built-in tasks by name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from mtbert.errors import ConfigError
from mtbert.kinds import KINDS, TaskKind, aliases
from mtbert.kinds.sentence import SentenceKind

SPLITS = ("train", "dev", "test")
CONLL_SUFFIXES = (".conll", ".bio", ".iob", ".conllu")  # a CoNLL file of words (and tags), by its name
LABELED_SPLITS = ("train", "dev")  # the splits whose labels a task reads (test is predicted)


@dataclass(frozen=True)
class TaskSpec:
    """One task: its kind, data (files relative to the data folder, or a `datasets` dataset), columns, labels, head.

    `id_column` None: the column `id` when the data has one, else the row's line or row number.
    `label_names`: class names in index order; labels are then names, and predictions are written as names.
    `input_group`: the tasks that name the same group read the same data and text columns, and a step draws them as
    one batch with one encoder forward pass (data/groups.py); `loss_weight` multiplies the task's loss.
    `label_files`: {split: file} of a one-text sentence task whose words come from a CoNLL file: its labels, one
    per sentence (line-aligned, or `id<TAB>label` lines; data/label_files.py).
    """

    name: str
    kind: str
    train_file: str | None = None
    dev_file: str | None = None
    test_file: str | None = None
    id_column: str | None = None
    text_columns: tuple[str, ...] = ("sentence",)
    label_column: str = "label"
    num_labels: int = 2
    label_min: float = 0.0
    label_max: float = 5.0
    head_hidden_sizes: tuple[int, ...] = (128,)
    output_header: str = "Predicted_Label"
    delimiter: str | None = None  # of .csv/.tsv files; None: tab for .tsv, else detected from the header line
    label_names: tuple[str, ...] | None = None
    dataset: str | None = None  # a Hugging Face dataset name or a local dataset folder, instead of files
    dataset_config: str | None = None
    train_split: str = "train"
    dev_split: str = "validation"
    test_split: str | None = "test"
    # the primary metric and what the multi-label, multiple-choice and token-classification kinds read
    metric: str | None = None  # None: the kind's own (`acc`, `corr`, ...); filled in on construction
    label_separator: str | None = None  # multi-label: the labels of a row given as one string, e.g. "#"
    threshold: float | str = 0.5  # multi-label: a probability, `tune` (one on dev) or `tune-per-label`
    tuned_thresholds: tuple[float, ...] | None = None  # multi-label: written by training into the saved model
    choices_column: str | None = None  # multiple-choice: the list column of candidate texts
    conll_columns: tuple[int, int] | None = None  # a CoNLL file's word and tag columns (default: first and last)
    label_all_subwords: bool = False  # token tasks: every subword of a word carries its tag (not only the first)
    constrained_decoding: bool = False  # token tasks: the most probable tag sequence valid in BIO/IOBES (Viterbi)
    ordered_labels: bool = False  # classification: classes 0 < 1 < ... are ordered (an ensemble vote takes their mean)
    input_group: str | None = None  # tasks of one group read the same examples: one batch, one encoder pass
    loss_weight: float = 1.0  # multiplies the task's loss (JointBERT's coefficient)
    label_files: dict[str, str] | None = field(default=None, hash=False)  # {train, dev: file}: labels of CoNLL words

    def __post_init__(self) -> None:
        if self.metric is None and isinstance(self.kind, str) and self.kind in KINDS:
            object.__setattr__(self, "metric", KINDS[self.kind].metric(self))

    @property
    def task_kind(self) -> TaskKind:
        """The kind object (`mtbert.kinds.KINDS[kind]`) that answers every kind-dependent question."""
        return KINDS[self.kind]

    @property
    def is_pair(self) -> bool:
        """Whether the task reads two texts (kept for callers of earlier versions)."""
        return len(self.text_columns) == 2

    @property
    def is_regression(self) -> bool:
        """Whether the task's kind scores by a correlation (kept for callers of earlier versions)."""
        return self.task_kind.metric(self) == "corr"

    @property
    def num_outputs(self) -> int:
        """Width of the head's output per unit, as the task's kind decides it."""
        return self.task_kind.head_outputs(self)

    @property
    def metric_key(self) -> str:
        """`<task>_<metric>`: the primary metric's key in results.json and metrics.jsonl."""
        return f"{self.name}_{self.metric}"


BUILTIN_TASKS: dict[str, TaskSpec] = {
    "sst": TaskSpec(
        name="sst",
        id_column="id",
        delimiter="\t",
        kind="single",
        train_file="ids-sst-train.csv",
        dev_file="ids-sst-dev.csv",
        test_file="ids-sst-test-student.csv",
        text_columns=("sentence",),
        label_column="sentiment",
        num_labels=5,
        head_hidden_sizes=(128,),
        output_header="Predicted_Sentiment",
        ordered_labels=True,  # sentiment 0 (negative) .. 4 (positive): the report's vote takes the mean class
    ),
    "para": TaskSpec(
        name="para",
        id_column="id",
        delimiter="\t",
        kind="pair-classification",
        train_file="quora-train.csv",
        dev_file="quora-dev.csv",
        test_file="quora-test-student.csv",
        text_columns=("sentence1", "sentence2"),
        label_column="is_duplicate",
        num_labels=2,
        head_hidden_sizes=(64,),
        output_header="Predicted_Is_Paraphrase",
    ),
    "sts": TaskSpec(
        name="sts",
        id_column="id",
        delimiter="\t",
        kind="pair-regression",
        train_file="sts-train.csv",
        dev_file="sts-dev.csv",
        test_file="sts-test-student.csv",
        text_columns=("sentence1", "sentence2"),
        label_column="similarity",
        num_labels=1,
        label_min=0.0,
        label_max=5.0,
        head_hidden_sizes=(64,),
        output_header="Predicted_Similiary",  # sic: the course's spelling
    ),
}

_FIELD_NAMES = {f.name for f in fields(TaskSpec)}
# keys only some kinds read (their `task_keys`), with their defaults: another kind refuses them
KIND_KEYS = {"label_separator": None, "threshold": 0.5, "tuned_thresholds": None, "choices_column": None,
             "conll_columns": None, "label_all_subwords": False, "constrained_decoding": False,
             "ordered_labels": False}


def task_from_config(entry: Any, where: str) -> TaskSpec:
    """Build a TaskSpec from a config entry: a built-in name, or a mapping (a built-in name with overrides, or a new
    task)."""
    if isinstance(entry, str):
        if entry not in BUILTIN_TASKS:
            raise ConfigError(
                f"{where}: unknown task '{entry}'; built-in tasks are {', '.join(BUILTIN_TASKS)}, "
                "or declare one as a mapping with name, kind and files"
            )
        return BUILTIN_TASKS[entry]
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: a task must be a name or a mapping, not {type(entry).__name__}")
    values = dict(entry)
    name = values.get("name")
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"{where}.name: a task needs a name made of letters, digits and underscores")
    for key in values:
        if key not in _FIELD_NAMES:
            raise ConfigError(f"{where}.{key}: unknown task key; known keys are {', '.join(sorted(_FIELD_NAMES))}")
    base = BUILTIN_TASKS.get(name)
    if base is None and "kind" not in values:
        raise ConfigError(f"{where}.kind: task '{name}' needs a kind ({' | '.join(KINDS)})")
    for key in ("text_columns", "head_hidden_sizes", "label_names", "tuned_thresholds", "conll_columns"):
        if key in values and not (key in ("label_names", "tuned_thresholds", "conll_columns") and values[key] is None):
            if not isinstance(values[key], list | tuple):
                raise ConfigError(f"{where}.{key}: must be a list")
            values[key] = tuple(values[key])
    if values.get("label_names") is not None:  # YAML reads `[1, 2, 3]` as numbers: classes are names
        values["label_names"] = tuple(str(n) if isinstance(n, int) and not isinstance(n, bool) else n
                                      for n in values["label_names"])
    if isinstance(values.get("kind"), str):
        values["kind"] = aliases().get(values["kind"], values["kind"])
    if isinstance(values.get("label_files"), dict):  # the spec's own copy of the config's mapping
        values["label_files"] = dict(values["label_files"])
    if base is not None and "kind" in values and "metric" not in values:
        values["metric"] = None  # another kind than the built-in's: its own primary metric
    if base is not None and values.get("kind") in KINDS:  # the built-in's kind-only keys another kind does not read
        values.update({key: default for key, default in KIND_KEYS.items()
                       if key not in values and key not in KINDS[values["kind"]].task_keys})
    if values.get("label_names") is not None and "num_labels" not in values:
        values["num_labels"] = len(values["label_names"])
    if base is not None and "dataset" in values:
        for split in SPLITS:  # a dataset replaces the built-in task's files
            values.setdefault(f"{split}_file", None)
    if base is not None and "delimiter" not in values and any(f"{s}_file" in values for s in SPLITS):
        values["delimiter"] = None  # other files than the course's: detect their delimiter
    merged = {f.name: getattr(base, f.name) for f in fields(TaskSpec)} if base else {}
    merged.update(values)
    try:
        spec = TaskSpec(**merged)
    except TypeError as err:
        raise ConfigError(f"{where}: {err}") from None
    _validate(spec, where)
    return spec


def _validate(spec: TaskSpec, where: str) -> None:
    if not isinstance(spec.kind, str) or spec.kind not in KINDS:
        kinds = " | ".join(name for k in KINDS.values() for name in (k.name, *k.aliases))
        raise ConfigError(f"{where}.kind: '{spec.kind}' is not one of {kinds}")
    for key in ("train_file", "dev_file", "test_file"):
        if getattr(spec, key) is not None and not isinstance(getattr(spec, key), str):
            raise ConfigError(f"{where}.{key}: must be a file name")
    for key in ("dataset", "dataset_config", "test_split"):
        if getattr(spec, key) is not None and (not isinstance(getattr(spec, key), str) or not getattr(spec, key)):
            raise ConfigError(f"{where}.{key}: must be a non-empty string")
    for key in ("label_column", "output_header", "train_split", "dev_split"):
        if not isinstance(getattr(spec, key), str) or not getattr(spec, key):
            raise ConfigError(f"{where}.{key}: must be a non-empty string")
    if spec.id_column is not None and (not isinstance(spec.id_column, str) or not spec.id_column):
        raise ConfigError(f"{where}.id_column: must be a non-empty string (or left out: ids from the row number)")
    if spec.delimiter is not None and (not isinstance(spec.delimiter, str) or len(spec.delimiter) != 1
                                       or spec.delimiter in "\"\r\n"):
        raise ConfigError(f"{where}.delimiter: must be one character, such as ',' or '\\t'")
    if spec.dataset is not None and any(getattr(spec, f"{s}_file") for s in SPLITS):
        raise ConfigError(f"{where}.dataset: give either dataset or train_file/dev_file/test_file, not both")
    if spec.dataset is None and (spec.dataset_config is not None):
        raise ConfigError(f"{where}.dataset_config: needs dataset")
    if spec.label_names is not None:
        names = spec.label_names
        if not spec.task_kind.has_classes:
            raise ConfigError(f"{where}.label_names: a {spec.kind} task has no classes")
        if len(names) < 2 or any(not isinstance(n, str) or not n.strip() for n in names):
            raise ConfigError(f"{where}.label_names: must list at least two non-empty class names")
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}.label_names: the class names must differ")
        if spec.num_labels != len(names):
            raise ConfigError(f"{where}.num_labels: is {spec.num_labels} but label_names lists {len(names)} classes")
    if any(not isinstance(c, str) or not c for c in spec.text_columns):
        raise ConfigError(f"{where}.text_columns: every column must be a non-empty string")
    for key in ("label_min", "label_max"):
        value = getattr(spec, key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(f"{where}.{key}: must be a number")
    spec.task_kind.validate(spec, where)
    for key, default in KIND_KEYS.items():
        if getattr(spec, key) != default and key not in spec.task_kind.task_keys:
            raise ConfigError(f"{where}.{key}: a {spec.kind} task does not read this key")
    computed = spec.task_kind.metric_keys(spec)
    if spec.metric not in computed:
        raise ConfigError(f"{where}.metric: '{spec.metric}' is not a metric of a {spec.kind} task "
                          f"({' | '.join(computed)})")
    if any(isinstance(h, bool) or not isinstance(h, int) or h <= 0 for h in spec.head_hidden_sizes):
        raise ConfigError(f"{where}.head_hidden_sizes: every size must be a positive integer")
    if spec.input_group is not None and (not isinstance(spec.input_group, str) or not spec.input_group.isidentifier()):
        raise ConfigError(f"{where}.input_group: a group needs a name made of letters, digits and underscores")
    weight = spec.loss_weight
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight) or weight <= 0:
        raise ConfigError(f"{where}.loss_weight: must be a positive number, not {weight!r}")
    _check_label_files(spec, where)


def is_conll(name: str | None) -> bool:
    """Whether a file name is a CoNLL file's (by its suffix)."""
    return isinstance(name, str) and name.lower().endswith(CONLL_SUFFIXES)


def reads_label_files(spec: TaskSpec) -> bool:
    """Whether the task's kind reads one text and one label per example, so that a CoNLL file can give its words
    and `label_files` its labels (single, single-regression, multi-label)."""
    kind = spec.task_kind
    return isinstance(kind, SentenceKind) and kind.texts == 1


def _check_label_files(spec: TaskSpec, where: str) -> None:
    """`label_files`: a mapping of train and dev to file names, of a one-text sentence task whose files of those
    splits are CoNLL files; and such a task reading a CoNLL train or dev file has them."""
    given = spec.label_files
    where = f"{where}.label_files"
    example = "such as {train: train-labels.txt, dev: dev-labels.txt}"
    if given is None:
        for split in LABELED_SPLITS:
            name = getattr(spec, f"{split}_file")
            if is_conll(name) and reads_label_files(spec):
                raise ConfigError(f"{where}: task {spec.name} reads the words of the CoNLL file {name} "
                                  f"({split}_file) and needs its labels from a second file per split, {example}")
        return
    if not isinstance(given, dict) or not given:
        raise ConfigError(f"{where}: must be a mapping of split to file, {example}")
    if not reads_label_files(spec):
        raise ConfigError(f"{where}: a {spec.kind} task does not read labels from a second file (a one-text "
                          "sentence task does: single, single-regression, multi-label)")
    for split, name in given.items():
        if split not in LABELED_SPLITS:
            raise ConfigError(f"{where}.{split}: not a split with labels; give train and dev (test is predicted)")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{where}.{split}: must be a file name")
        words = getattr(spec, f"{split}_file")
        if not is_conll(words):
            raise ConfigError(f"{where}.{split}: labels the sentences of a CoNLL {split}_file "
                              f"({', '.join(CONLL_SUFFIXES)}), but {split}_file is {words!r}")


# what the tasks of one input_group must share: the same rows (files, or dataset, configuration and splits), ids and
# inputs
GROUP_SOURCE_KEYS = ("train_file", "dev_file", "test_file", "dataset", "dataset_config", "train_split", "dev_split",
                     "test_split", "id_column", "text_columns")


def input_groups(specs: list[TaskSpec]) -> dict[str, list[TaskSpec]]:
    """The tasks of each `input_group`, in the tasks' order (tasks without a group are not listed)."""
    groups: dict[str, list[TaskSpec]] = {}
    for spec in specs:
        if spec.input_group is not None:
            groups.setdefault(spec.input_group, []).append(spec)
    return groups


def task_streams(specs: list[TaskSpec]) -> dict[str, list[str]]:
    """The streams of examples a step samples from: each input_group (by its name, where its first task stands) and
    each task without one (by the task's name), with the names of their tasks."""
    streams: dict[str, list[str]] = {}
    for spec in specs:
        streams.setdefault(spec.input_group or spec.name, []).append(spec.name)
    return streams


def check_input_groups(specs: list[TaskSpec]) -> None:
    """Raise ConfigError (`tasks[i].input_group: ...`) unless the tasks of each group read the same data and text
    columns, and no group is named as a task is."""
    names = {s.name for s in specs}
    for group, members in input_groups(specs).items():
        where = f"tasks[{specs.index(members[0])}].input_group"
        if group in names:
            raise ConfigError(f"{where}: the group '{group}' is named like a task; give the group another name")
        first = members[0]
        for spec in members[1:]:
            for key in GROUP_SOURCE_KEYS:
                if getattr(spec, key) != getattr(first, key):
                    raise ConfigError(
                        f"tasks[{specs.index(spec)}].input_group: task {spec.name} has {key} "
                        f"{_shown(getattr(spec, key))} but task {first.name} of input_group '{group}' has "
                        f"{_shown(getattr(first, key))}; the tasks of a group read the same data (files, or dataset, "
                        "dataset_config and splits), id_column and text_columns")
            word, first_word = ((s.conll_columns or (0, -1))[0] for s in (spec, first))
            if word != first_word and any(is_conll(getattr(first, f"{split}_file")) for split in SPLITS):
                raise ConfigError(
                    f"tasks[{specs.index(spec)}].input_group: task {spec.name} reads its words from CoNLL column "
                    f"{word} but task {first.name} of input_group '{group}' from column {first_word}; the tasks of a "
                    "group read the same words (a task with label_files reads the first column)")


def _shown(value: Any) -> str:
    return f"[{', '.join(value)}]" if isinstance(value, tuple) else repr(value)


def task_score(spec: TaskSpec, value: float) -> float:
    """A task's contribution to the overall score (its primary metric): accuracy as is, a correlation r as
    (1 + r) / 2."""
    return spec.task_kind.task_score(spec, value)


def overall_score(specs: list[TaskSpec], metrics: dict[str, float]) -> float:
    """The course's overall score generalised to any tasks: the mean of the task scores.

    For sst, para and sts it is (sst_acc + para_acc + (1 + sts_corr) / 2) / 3.
    """
    return sum(task_score(s, metrics[s.metric_key]) for s in specs) / len(specs)
