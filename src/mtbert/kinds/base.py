"""What a task kind is: every answer that differs between kinds of task, in one object.

A kind is one module of `mtbert.kinds` holding one `TaskKind` subclass, and one line of the registry
`mtbert.kinds.KINDS` (name -> instance). Every other layer asks the task's kind (`spec.task_kind`, or
`kind_of(spec)`) and never branches on a kind's name, on whether it is a regression or on its head's width.

A new kind implements, besides `name` (the config's `kind:` value) and `aliases`:

- config: `validate(spec, where)` (its own checks, one ConfigError sentence naming the key), `has_classes`
  (its labels are class indices that may be given by name: `label_names` are then resolved from the data),
  `task_keys` (the kind-only task keys it reads, of `mtbert.tasks.KIND_KEYS`);
- data: `input_columns(spec)` (the columns a row's inputs come from), `read_inputs(spec, row)` (a row's inputs ->
  (texts, None) or (None, reason to skip the row); by default `read_text(value, column)` of each text column),
  `check_label(spec, texts, label)` (a parsed label checked against the row's inputs), `label_names_of(spec,
  raw)` and `index_labels` (how `label_names` are collected from training labels), `fit_data(spec, examples)`
  (what the kind reads off every split's examples, such as the most choices of an example),
  `label_parser(spec)` (a row's raw label -> (value, None) or (None, reason)), `texts_from_line(spec, line)`
  (the inputs of one line typed on standard input), `texts_from_input(spec, item)` and `input_words(spec)` (one
  input of `MultiTaskModel.predict`, and what it takes, in words), `plain_texts(spec, texts)` (an example's inputs
  as the plain texts masked-LM pretraining reads), `encode(tokenizer, spec, examples, max_length,
  architecture)` (token ids per example and encoder input, and any per-example extra such as word ids; by
  default it encodes `text_groups(examples, architecture)`, one group per encoder input),
  `collate(encoded, indices, pad_token_id, packed, row_width)` (a batch, padded or packed into rows) and
  `label_tensor(labels)` (a batch's labels as the loss reads them);
- model: `features(hidden, attention_mask, pooling)` (what the head reads of the encoder's hidden states: one
  pooled vector per example by default, or every token's), `head_architecture(architecture)`,
  `check_architecture(spec, architecture)`, `head_outputs(spec)` (the head's width per unit),
  `init_output(spec, linear)`, `cosine_start(spec)` (a bi-cosine head's start), `shape_outputs(spec, outputs)`;
- training: `loss(spec, outputs, labels, regression_loss)`, SUMMED over the batch's units: sample weighting
  (`1/n_i`) divides it by the number of units a step drew (for today's kinds an example); `divergence(spec,
  outputs, reference)` (SMART's per-unit divergence);
- evaluation: `decide(spec, outputs, batch)` (a batch's predictions and the scores a soft ensemble averages, one
  item per example), `gather(n, done)` (every batch's items in the examples' order), `label_array(labels)`,
  `metric(spec)` (the default primary metric's key in `METRICS`; a task may choose another as `metric:`),
  `metric_keys(spec)` (every metric it computes, primary-metric choices), `metric_values(spec, predictions,
  labels)` (all of them, keys without the task prefix), `resampled_metric(spec, predictions, labels, indices)`
  (the task's primary metric `spec.metric` on each row of resampled example indices, vectorised for the
  bootstrap), `task_score(spec, value)` (its share of the overall score), `tune(spec, scores, labels)` (a
  decision rule fitted on dev outputs, kept in the saved spec; None when the kind fits none);
  `example_correct(spec, predictions, labels)` (a bool per example, or None: an input_group's frame accuracy);
- files: `format_value(spec, value)` (a prediction as written) and `parse_value(spec, text)` (back),
  `json_value(spec, value)` (a prediction as a JSON value), `score_columns(spec)` (the scores file's columns),
  `check_prediction(spec, value)` (why a read prediction is not one of this task, or None), `from_saved(spec,
  saved)` (what a saved model's spec adds to the config's), `prediction_suffix`, `write_predictions(path, spec,
  ids, predictions, extras)`, `write_scores(...)`, `read_predictions(path, spec)`, `read_scores(path, spec)`
  and `prediction_extras(path, spec)` (a split's prediction and scores files);
- ensembles: `vote(spec, predictions)` (a vote that also takes `scores` gets the members' scores, members x
  examples x score columns, when `vote_takes_scores(spec)` and every member has its scores file: a `single` task
  breaks ties by them), `vote_rule(spec, scores)` (that rule in words, for results.json and the ensemble's card)
  and `decide_scores(spec, scores)`;
- export and model card: `export_plan(spec, architecture)`, `hub_task_type(spec)`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from torch import nn

    from mtbert.tasks import TaskSpec

LabelParser = Callable[[Any], tuple[float | None, str | None]]
_JSON_TYPES = {dict: "an object", list: "an array", bool: "a boolean", int: "a number", float: "a number"}


def type_name(value: Any) -> str:
    """A field value's type as a JSON reader names it ("an array", "a number", ...)."""
    return _JSON_TYPES.get(type(value), type(value).__name__)


def as_text(value: Any) -> str:
    """A non-text field value as the text a delimited file would hold ('' for a missing value)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return repr(value)
    return str(value)


@dataclass(frozen=True)
class Metric:
    """A metric a kind reports: its key in `<task>_<key>`, its name in words and on the Hub, and its score."""

    key: str
    words: str  # as a report's axis names it
    hub_type: str  # model-index metric type
    hub_name: str  # model-index metric name
    correlation: bool = False  # a correlation r counts as (1 + r) / 2 in the overall score

    def score(self, value: float) -> float:
        """This metric's contribution to the overall score."""
        return (1.0 + value) / 2.0 if self.correlation else value


METRICS: dict[str, Metric] = {
    "acc": Metric("acc", "accuracy", "accuracy", "Accuracy"),
    "corr": Metric("corr", "Pearson r", "pearsonr", "Pearson correlation", correlation=True),
    # a key names one metric whatever the kind computing it (`f1`: a binary class's F1, or a token task's entity F1)
    "spearman": Metric("spearman", "Spearman rho", "spearmanr", "Spearman correlation", correlation=True),
    "macro_f1": Metric("macro_f1", "macro F1", "f1", "Macro F1"),
    "micro_f1": Metric("micro_f1", "micro F1", "f1", "Micro F1"),
    "f1": Metric("f1", "F1", "f1", "F1"),
    "mcc": Metric("mcc", "Matthews correlation", "matthews_correlation", "Matthews correlation", correlation=True),
    "subset_acc": Metric("subset_acc", "exact-match accuracy", "accuracy", "Subset accuracy"),
    "precision": Metric("precision", "precision", "precision", "Precision"),
    "recall": Metric("recall", "recall", "recall", "Recall"),
    "token_acc": Metric("token_acc", "word accuracy", "accuracy", "Word accuracy"),
}


def values_array(values: Sequence[Any]) -> np.ndarray:
    """Per-example values as one array: numbers as a float array, anything else (a token task's tag arrays) as
    an object array of one item per example."""
    if all(isinstance(v, int | float | np.number) for v in values):
        return np.asarray(values, dtype=float)
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = value
    return out


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """One vector per example of hidden states (examples, tokens, hidden): the first token (`cls`) or the mean
    of the tokens the mask keeps (`mean`)."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


@dataclass(frozen=True)
class ExportPlan:
    """What a task's head becomes on export: the library class, the call that reproduces `mtbert predict`,
    the activation of the library's output, the Hub pipeline tag and a usage snippet for the model card."""

    library_class: str  # "CrossEncoder" | "SentenceTransformer"
    architecture: str  # cross | bi-cosine (single-sentence tasks: cross)
    returns: str  # what the library call returns, in words
    activation: str = "identity"  # "sigmoid" | "identity": the CrossEncoder's activation_fn
    pipeline_tag: str = "text-classification"
    usage: str = ""  # Python code with `{location}` for the folder or Hub id
    library: str = "sentence-transformers"  # the library that loads the folder
    layout: str = "the task's MLP head as `Dense` modules"  # what the head became, in words


class TaskKind:
    """The base of every kind; see the module docstring for what a kind implements."""

    name: str = ""
    aliases: tuple[str, ...] = ()
    has_classes: bool = False
    task_keys: tuple[str, ...] = ()  # kind-only task keys it reads (`mtbert.tasks.KIND_KEYS`)
    index_labels: bool = True  # numeric training labels are class indices (no `label_names` resolved)

    # ---- config ---------------------------------------------------------------------------------
    def validate(self, spec: TaskSpec, where: str) -> None:
        raise NotImplementedError

    # ---- data -----------------------------------------------------------------------------------
    def read_text(self, value: Any, column: str) -> tuple[Any, str | None]:
        """A row's input field as text (a list of words joined by single spaces): (text, None), or (None, why the
        row is skipped)."""
        if value is None:
            return None, f"'{column}' is empty (null)"
        if isinstance(value, list | tuple) and value and all(isinstance(w, str) for w in value):
            return " ".join(w.strip() for w in value), None  # a list of words (a token column): one text
        if not isinstance(value, str):
            return None, f"'{column}' is {type_name(value)}, not text"
        return value.strip(), None

    def texts_from_line(self, spec: TaskSpec, line: str) -> tuple[tuple[Any, ...] | None, str | None]:
        """The inputs of one line typed on standard input (several texts separated by tabs), or why not."""
        texts = line.split("\t")
        if len(texts) != len(spec.text_columns):
            return None, (f"expected {len(spec.text_columns)} tab-separated text(s), found {len(texts)}")
        return tuple(t.strip() for t in texts), None

    def texts_from_input(self, spec: TaskSpec, item: Any) -> tuple[tuple[Any, ...] | None, str | None]:
        """The inputs of one item given to `MultiTaskModel.predict`: a string (a one-text task) or a sequence of as
        many strings as the task has text columns; else (None, what the task takes per input, in words)."""
        width = len(spec.text_columns)
        parts = (item,) if isinstance(item, str) else tuple(item) if isinstance(item, Sequence) else None
        if parts is None or len(parts) != width or not all(isinstance(p, str) for p in parts):
            return None, ("one text (a string)" if width == 1 else "a pair of texts (a, b)" if width == 2
                          else f"{width} texts")
        return parts, None

    def input_words(self, spec: TaskSpec) -> str:
        """What `MultiTaskModel.predict` takes for this task, in words ("texts", "pairs of texts")."""
        width = len(spec.text_columns)
        return "texts" if width == 1 else "pairs of texts" if width == 2 else f"tuples of {width} texts"

    def plain_texts(self, spec: TaskSpec, texts: tuple[Any, ...]) -> tuple[str, ...]:
        """An example's inputs as plain texts (what masked-LM pretraining reads): the texts as they are."""
        return texts

    def prediction_text(self, spec: TaskSpec, texts: tuple[Any, ...], value: Any) -> str | None:
        """The prediction as the text it picks among the example's inputs (a multiple-choice task's chosen
        choice), or None for a kind whose predictions pick none."""
        return None

    def label_parser(self, spec: TaskSpec) -> LabelParser:
        raise NotImplementedError

    def input_columns(self, spec: TaskSpec) -> tuple[str, ...]:
        """The columns a row's inputs are read from."""
        return tuple(spec.text_columns)

    def read_inputs(self, spec: TaskSpec, row: Any) -> tuple[tuple[Any, ...] | None, str | None]:
        """A row's inputs (a mapping of column -> value) as the example's texts, or (None, why it is skipped)."""
        texts = []
        for column in spec.text_columns:
            text, reason = self.read_text(row[column], column)
            if reason is not None:
                return None, reason
            texts.append(text)
        return tuple(texts), None

    def check_label(self, spec: TaskSpec, texts: tuple[Any, ...], label: Any) -> tuple[Any, str | None]:
        """A parsed label checked against the row's inputs: (label, None) or (None, why the row is skipped)."""
        return label, None

    def fit_data(self, spec: TaskSpec, examples: Callable[[], Sequence[Any]]) -> TaskSpec:
        """The task with what its kind reads off the examples of every split (`examples()` reads them); as is by
        default."""
        return spec

    def label_names_of(self, spec: TaskSpec, raw: Any) -> tuple[list[str], str | None]:
        """The class names a raw training label holds, when `label_names` are collected from the data."""
        text = (raw if isinstance(raw, str) else as_text(raw)).strip()
        return ([text], None) if text else ([], "empty label")

    def text_groups(self, spec: TaskSpec, examples: Sequence[Any],
                    architecture: str) -> list[tuple[list[str], list[str] | None]]:
        raise NotImplementedError

    def encode(self, tokenizer: Any, spec: TaskSpec, examples: Sequence[Any], max_length: int,
               architecture: str) -> tuple[list[list[list[int]]], list[list[list[int]]], list[Any] | None]:
        """(token ids, token type ids, extras): per example one id list per encoder input, truncated to
        `max_length`, unpadded; `extras` (None here) is anything else per example that `collate` and `decide`
        need."""
        features: list[list[list[int]]] = [[] for _ in examples]
        token_types: list[list[list[int]]] = [[] for _ in examples]
        for first, second in self.text_groups(spec, examples, architecture):
            if not examples:
                break
            enc = tokenizer(first, second, truncation=True, max_length=max_length, return_token_type_ids=True)
            types = enc.get("token_type_ids") or [[0] * len(ids) for ids in enc["input_ids"]]
            for i, (ids, tt) in enumerate(zip(enc["input_ids"], types, strict=True)):
                features[i].append(list(ids))
                token_types[i].append(list(tt))
        return features, token_types, None

    def label_tensor(self, labels: Sequence[Any]) -> torch.Tensor:
        return torch.tensor(list(labels), dtype=torch.float)

    def collate(self, encoded: Any, indices: list[int], pad_token_id: int, packed: bool,
                row_width: int = 0) -> dict[str, Any]:
        """The chosen examples as a batch: {"inputs": [one dict of tensors per encoder input], "labels": tensor or
        None}, each input padded to the batch's longest member or, `packed`, laid out in rows of concatenated
        examples (`mtbert.model.packing.pack_sequences`; rows up to `row_width` tokens when that is wider)."""
        from mtbert.model.packing import pack_sequences, pad_sequences

        n_inputs = len(encoded.features[indices[0]])
        inputs = []
        for k in range(n_inputs):
            seqs = [encoded.features[i][k] for i in indices]
            types = [encoded.token_types[i][k] for i in indices]
            inputs.append(pack_sequences(seqs, types, pad_token_id, row_width) if packed
                          else pad_sequences(seqs, types, pad_token_id))
        labels = None
        if encoded.labels and encoded.labels[indices[0]] is not None:
            labels = self.label_tensor([encoded.labels[i] for i in indices])
        return {"inputs": inputs, "labels": labels}

    # ---- model ----------------------------------------------------------------------------------
    def features(self, hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
        """What the head reads: one pooled vector per example (`pool`)."""
        return pool(hidden, attention_mask, pooling)

    def head_architecture(self, architecture: str) -> str:
        return "cross"

    def check_architecture(self, spec: TaskSpec, architecture: str) -> None:
        return None

    def head_outputs(self, spec: TaskSpec) -> int:
        raise NotImplementedError

    def init_output(self, spec: TaskSpec, linear: nn.Linear) -> None:
        return None

    def cosine_start(self, spec: TaskSpec) -> tuple[float, float]:
        return (5.0, 0.0)

    def shape_outputs(self, spec: TaskSpec, outputs: torch.Tensor) -> torch.Tensor:
        return outputs

    # ---- training -------------------------------------------------------------------------------
    def loss(self, spec: TaskSpec, outputs: torch.Tensor, labels: torch.Tensor,
             regression_loss: str = "mse") -> torch.Tensor:
        raise NotImplementedError

    def divergence(self, spec: TaskSpec, outputs: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # ---- evaluation -----------------------------------------------------------------------------
    def decide(self, spec: TaskSpec, outputs: torch.Tensor,
               batch: dict[str, Any] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def gather(self, n: int, done: list[tuple[list[int], Any, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """(predictions, scores) of `n` examples from each batch's (indices, predictions, scores): one number per
        example, and one row of scores."""
        predictions = np.zeros(n)
        scores = np.zeros((n, done[0][2].shape[-1])) if done else np.zeros((0, 1))
        for indices, pred, score in done:
            predictions[indices] = pred
            scores[indices] = score
        return predictions, scores

    def label_array(self, labels: Sequence[Any]) -> np.ndarray:
        """Examples' labels as the metrics read them."""
        return np.asarray(labels, dtype=float)

    def metric(self, spec: TaskSpec) -> str:
        raise NotImplementedError

    def metric_keys(self, spec: TaskSpec) -> tuple[str, ...]:
        """Every metric this kind computes for the task (the primary metric is chosen among them)."""
        return (self.metric(spec),)

    def metric_values(self, spec: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """Every metric of `metric_keys` (keys without the task prefix); a kind written before this hook, with
        only `metric_value`, computes its one metric."""
        if type(self).metric_value is TaskKind.metric_value:
            raise NotImplementedError
        return {self.metric(spec): self.metric_value(spec, predictions, labels)}

    def metric_value(self, spec: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> float:
        """The task's primary metric (`spec.metric`)."""
        return self.metric_values(spec, predictions, labels)[spec.metric or self.metric(spec)]

    def tune(self, spec: TaskSpec, scores: np.ndarray, labels: np.ndarray) -> TaskSpec | None:
        """The task with a decision rule fitted on dev scores and labels, or None (nothing to fit)."""
        return None

    def resampled_metric(self, spec: TaskSpec, predictions: np.ndarray, labels: np.ndarray,
                         indices: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def task_score(self, spec: TaskSpec, value: float) -> float:
        return METRICS[spec.metric or self.metric(spec)].score(value)

    def example_correct(self, spec: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> np.ndarray | None:
        """Whether the prediction of each example is right (a bool per example, for the frame accuracy of an
        input_group: every task of the group right), or None for a kind whose predictions are not right or wrong
        (a value)."""
        return None

    # ---- files and ensembles --------------------------------------------------------------------
    def format_value(self, spec: TaskSpec, value: float) -> str:
        raise NotImplementedError

    def score_columns(self, spec: TaskSpec) -> list[str]:
        raise NotImplementedError

    def json_value(self, spec: TaskSpec, value: Any) -> Any:
        """A prediction as a JSON value (`mtbert predict --group`'s lines): a class name, a number, a list of tags."""
        raise NotImplementedError

    def check_prediction(self, spec: TaskSpec, value: float) -> str | None:
        return None

    def parse_value(self, spec: TaskSpec, text: str) -> float:
        """The inverse of `format_value`: a class name back to its index; ValueError when it is neither name nor
        number."""
        text = text.strip()
        if spec.label_names is not None and text in spec.label_names:
            return float(spec.label_names.index(text))
        return float(text)

    def from_saved(self, spec: TaskSpec, saved: dict[str, Any]) -> TaskSpec:
        """The config's task with what its saved model knows beyond it (class names resolved from the data)."""
        import dataclasses

        if not self.has_classes or spec.label_names is not None:
            return spec
        names = saved.get("label_names")
        if isinstance(names, list) and len(names) >= 2 and all(isinstance(n, str) for n in names):
            return dataclasses.replace(spec, label_names=tuple(names), num_labels=len(names))
        return spec

    prediction_suffix: str = ".csv"  # of `predictions/<task>-<split>-output<suffix>`

    def write_predictions(self, path: Path, spec: TaskSpec, ids: Sequence[str], predictions: np.ndarray,
                          extras: Sequence[Any] | None) -> None:
        """A split's prediction file: the CS224N layout (`id \t header`, then `{id} , {prediction} `)."""
        from mtbert.evaluation.predict import write_cs224n

        write_cs224n(path, spec, list(ids), predictions)

    def write_scores(self, path: Path, spec: TaskSpec, ids: Sequence[str], scores: np.ndarray) -> None:
        """A split's scores file (what a soft ensemble averages): one row per example, `id` and `score_columns`."""
        from mtbert.evaluation.predict import write_scores

        write_scores(path, spec, list(ids), scores)

    def read_scores(self, path: Path, spec: TaskSpec) -> dict[str, Any] | None:
        """{id: scores} of a scores file of this kind's own layout, or None: the one-row-per-example layout."""
        return None

    def prediction_extras(self, path: Path, spec: TaskSpec) -> dict[str, Any] | None:
        """{id: extra} that `write_predictions` needs, read back from a prediction file (None: it needs none)."""
        return None

    def read_predictions(self, path: Path, spec: TaskSpec) -> dict[str, Any]:
        """{id: prediction} of a file `write_predictions` wrote (class names read back as indices)."""
        from mtbert.evaluation.predict import read_cs224n

        return read_cs224n(path, spec)[1]

    def vote(self, spec: TaskSpec, predictions: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def vote_takes_scores(self, spec: TaskSpec) -> bool:
        """Whether `vote` reads the members' scores for this task: by default when it has a `scores` parameter."""
        import inspect

        return "scores" in inspect.signature(self.vote).parameters

    def vote_rule(self, spec: TaskSpec, scores: bool) -> str:
        """`vote`'s rule in words (`scores`: whether the members' scores were given): by default the first sentence
        of the kind's `vote` docstring."""
        doc = " ".join((type(self).vote.__doc__ or "").split()).split(". ")[0].rstrip(".")
        return doc[:1].lower() + doc[1:] if doc else f"the {self.name} kind's vote"

    def decide_scores(self, spec: TaskSpec, scores: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def agreement(self, spec: TaskSpec, first: np.ndarray, second: np.ndarray) -> tuple[str, float]:
        """How far two models' predictions of the same examples agree: (name, value)."""
        raise NotImplementedError

    # ---- export and model card ------------------------------------------------------------------
    def transformers_labels(self, spec: TaskSpec, labels: Sequence[Any]) -> tuple[int, list[Any]]:
        """`num_labels` of the matching transformers Auto head, and the labels as its loss reads them."""
        raise NotImplementedError

    def export_plan(self, spec: TaskSpec, architecture: str) -> ExportPlan:
        raise NotImplementedError

    def hub_task_type(self, spec: TaskSpec) -> str:
        return "text-classification"
