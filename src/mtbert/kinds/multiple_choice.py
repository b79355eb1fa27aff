"""`multiple-choice`: a context and N candidate texts, one of them right (N may differ between examples).

Data: `text_columns: [context]`, `choices_column` (a list of texts; in a delimited file a JSON array such as
`["a cat", "a dog"]`) and `label_column` (the right choice's 0-based index, or its text). A row whose choice list
is empty or holds something other than text, whose index is out of range or whose label text is none of its
choices is skipped with its line and reason. On standard input a line is `context<TAB>choice 1<TAB>choice 2...`.

Each (context, choice) pair is one sequence through the encoder (the `cross` architecture whatever
`pair_architecture` says), the head gives it one score, and the loss is the softmax cross-entropy over each
example's scores. A batch carries each example's choice count (`choice_counts`) and its labels as (right index,
count) rows, so that a batch's length is its examples: the unit of the loss and of sample weighting is an example.
SMART's divergence is the squared difference of each choice's score.

The prediction is the index of the best-scored choice; accuracy is the metric. `num_labels` is set from the data
to the most choices an example of the task's train, dev and test splits has: the scores file has that many columns
`prob_k` (the softmax over the example's choices, 0 past its last choice), which a soft ensemble averages.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtbert.errors import ConfigError
from mtbert.kinds.base import ExportPlan, LabelParser, TaskKind, type_name
from mtbert.kinds.sentence import majority

if TYPE_CHECKING:
    from mtbert.tasks import TaskSpec

USAGE = ("from sentence_transformers import CrossEncoder\n\n"
         "model = CrossEncoder(\"{location}\")\n"
         "context, choices = \"The cat sat on the\", [\"mat.\", \"moon.\"]\n"
         "scores = model.predict([(context, choice) for choice in choices])\n"
         "answer = choices[scores.argmax()]")


class MultipleChoice(TaskKind):
    """A context and its choices; one score per (context, choice) sequence, softmax over the choices."""

    name = "multiple-choice"
    task_keys = ("choices_column",)

    # ---- config ---------------------------------------------------------------------------------
    def validate(self, spec: TaskSpec, where: str) -> None:
        if len(spec.text_columns) != 1:
            raise ConfigError(f"{where}.text_columns: a multiple-choice task reads one text column (the context); "
                              "its choices are in choices_column")
        if not isinstance(spec.choices_column, str) or not spec.choices_column:
            raise ConfigError(f"{where}.choices_column: a multiple-choice task needs the column of its choices")
        if spec.choices_column in (spec.text_columns[0], spec.label_column):
            raise ConfigError(f"{where}.choices_column: must differ from the context and label columns")

    def metric(self, spec: TaskSpec) -> str:
        return "acc"

    # ---- data -----------------------------------------------------------------------------------
    def input_columns(self, spec: TaskSpec) -> tuple[str, ...]:
        return (*spec.text_columns, str(spec.choices_column))

    def read_inputs(self, spec: TaskSpec, row: Any) -> tuple[tuple[Any, ...] | None, str | None]:
        """(context, choice 1, ..., choice N), or why the row is skipped."""
        context, reason = self.read_text(row[spec.text_columns[0]], spec.text_columns[0])
        if reason is not None:
            return None, reason
        column, raw = spec.choices_column, row[spec.choices_column]
        if isinstance(raw, str):
            try:
                raw = json.loads(raw) if raw.strip() else []
            except json.JSONDecodeError:
                return None, f"'{column}' is not a JSON array of texts"
        if not isinstance(raw, list | tuple):
            return None, f"'{column}' is {type_name(raw)}, not a list of choices"
        if not raw:
            return None, f"the choice list '{column}' is empty"
        choices = []
        for k, choice in enumerate(raw):
            if not isinstance(choice, str) or not choice.strip():
                what = "empty" if isinstance(choice, str) else type_name(choice)
                return None, f"choice {k} of '{column}' is {what}, not text"
            choices.append(choice.strip())
        return (context, *choices), None

    def label_parser(self, spec: TaskSpec) -> LabelParser:
        """An index (a number) or a choice's text; `check_label` resolves it against the row's choices."""
        def parse(raw: Any) -> tuple[Any, str | None]:
            if isinstance(raw, bool) or raw is None:
                return None, f"the label is {type_name(raw) if raw is not None else 'null'}, not a choice"
            if isinstance(raw, float) and raw.is_integer():
                raw = int(raw)
            if isinstance(raw, int):
                return raw, None
            if isinstance(raw, str) and raw.strip():
                return raw.strip(), None
            return None, "empty label" if isinstance(raw, str) else f"the label is {type_name(raw)}, not a choice"

        return parse

    def check_label(self, spec: TaskSpec, texts: tuple[Any, ...], label: Any) -> tuple[Any, str | None]:
        """The right choice's index: the label's text among the choices, else the label as an index."""
        choices = texts[1:]
        if isinstance(label, str):
            if label in choices:
                return float(choices.index(label)), None
            try:
                label = int(label)
            except ValueError:
                return None, f"label '{label[:30]}' is not one of the row's {len(choices)} choices"
        if not 0 <= label < len(choices):
            return None, f"choice index {label} is out of range 0..{len(choices) - 1}"
        return float(label), None

    def texts_from_line(self, spec: TaskSpec, line: str) -> tuple[tuple[Any, ...] | None, str | None]:
        """`context<TAB>choice 1<TAB>choice 2...`."""
        parts = [p.strip() for p in line.split("\t")]
        if len(parts) < 2 or not all(parts):
            return None, "expected the context and at least one choice, tab-separated, none of them empty"
        return tuple(parts), None

    def texts_from_input(self, spec: TaskSpec, item: Any) -> tuple[tuple[Any, ...] | None, str | None]:
        """`(context, [choice, ...])` given to `MultiTaskModel.predict`: (context, choice 1, ..., choice N)."""
        want = "a context and the list of its choices (context, [choice, ...])"
        if not isinstance(item, Sequence) or isinstance(item, str) or len(item) != 2:
            return None, want
        context, choices = item
        if (not isinstance(context, str) or isinstance(choices, str) or not isinstance(choices, Sequence)
                or not choices or not all(isinstance(c, str) for c in choices)):
            return None, want
        return (context, *choices), None

    def input_words(self, spec: TaskSpec) -> str:
        return "(context, [choice, ...]) pairs"

    def prediction_text(self, spec: TaskSpec, texts: tuple[Any, ...], value: Any) -> str | None:
        """The chosen choice's text."""
        return texts[1 + int(value)]

    def fit_data(self, spec: TaskSpec, examples: Callable[[], Sequence[Any]]) -> TaskSpec:
        """`num_labels`: the most choices of an example of the task's splits (the scores files' width)."""
        most = max((len(e.texts) - 1 for e in examples()), default=0)
        return dataclasses.replace(spec, num_labels=max(most, 1))

    def from_saved(self, spec: TaskSpec, saved: dict[str, Any]) -> TaskSpec:
        most = saved.get("num_labels")
        if isinstance(most, int) and not isinstance(most, bool) and most > 0:
            return dataclasses.replace(spec, num_labels=most)
        return spec

    def encode(self, tokenizer: Any, spec: TaskSpec, examples: Sequence[Any], max_length: int,
               architecture: str) -> tuple[list[list[list[int]]], list[list[list[int]]], list[Any] | None]:
        """Per example, one sequence per choice: the context and the choice (the longer cut first)."""
        contexts = [e.texts[0] for e in examples for _ in e.texts[1:]]
        choices = [c for e in examples for c in e.texts[1:]]
        features: list[list[list[int]]] = [[] for _ in examples]
        token_types: list[list[list[int]]] = [[] for _ in examples]
        if not examples:
            return features, token_types, None
        enc = tokenizer(contexts, choices, truncation=True, max_length=max_length, return_token_type_ids=True)
        types = enc.get("token_type_ids") or [[0] * len(ids) for ids in enc["input_ids"]]
        owners = [i for i, e in enumerate(examples) for _ in e.texts[1:]]
        for owner, ids, tt in zip(owners, enc["input_ids"], types, strict=True):
            features[owner].append(list(ids))
            token_types[owner].append(list(tt))
        return features, token_types, None

    def collate(self, encoded: Any, indices: list[int], pad_token_id: int, packed: bool,
                row_width: int = 0) -> dict[str, Any]:
        """Every choice of the chosen examples as one encoder input, example after example; `choice_counts` and
        labels (right index, count) per example."""
        from mtbert.model.packing import pack_sequences, pad_sequences

        seqs = [seq for i in indices for seq in encoded.features[i]]
        types = [tt for i in indices for tt in encoded.token_types[i]]
        counts = torch.tensor([len(encoded.features[i]) for i in indices], dtype=torch.long)
        inputs = (pack_sequences(seqs, types, pad_token_id, row_width) if packed
                  else pad_sequences(seqs, types, pad_token_id))
        labels = None
        if encoded.labels and encoded.labels[indices[0]] is not None:
            right = torch.tensor([encoded.labels[i] for i in indices], dtype=torch.float)
            labels = torch.stack([right, counts.float()], dim=1)
        return {"inputs": [inputs], "labels": labels, "choice_counts": counts}

    # ---- model and training ---------------------------------------------------------------------
    def head_outputs(self, spec: TaskSpec) -> int:
        return 1

    def init_output(self, spec: TaskSpec, linear: nn.Linear) -> None:
        """No bias: a shift of every choice's score changes no softmax, so its gradient would be rounding noise
        (which Adam scales up to full steps)."""
        linear.register_parameter("bias", None)

    def shape_outputs(self, spec: TaskSpec, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.squeeze(-1)  # one score per (context, choice) sequence

    @staticmethod
    def grouped(outputs: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """The flat choice scores as examples x most choices, -inf past each example's last choice."""
        counts = counts.to(outputs.device).long()
        most = int(counts.max()) if len(counts) else 0
        keep = torch.arange(most, device=outputs.device)[None, :] < counts[:, None]
        flat = outputs.new_full((len(counts) * most,), float("-inf"))
        return flat.index_put((keep.flatten().nonzero().squeeze(-1),), outputs).view(len(counts), most)

    def loss(self, spec: TaskSpec, outputs: torch.Tensor, labels: torch.Tensor,
             regression_loss: str = "mse") -> torch.Tensor:
        """The sum over the examples of the cross-entropy of the right choice among the example's choices."""
        scores = self.grouped(outputs, labels[:, 1])
        return F.cross_entropy(scores, labels[:, 0].long().to(outputs.device), reduction="sum")

    def divergence(self, spec: TaskSpec, outputs: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return (outputs.float() - reference.float()) ** 2

    # ---- evaluation -----------------------------------------------------------------------------
    def decide(self, spec: TaskSpec, outputs: torch.Tensor,
               batch: dict[str, Any] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(the best choice's index, the softmax over the choices padded with 0 to `num_labels` columns)."""
        if batch is None or "choice_counts" not in batch:
            raise ValueError("a multiple-choice batch needs its choice_counts")
        probabilities = torch.softmax(self.grouped(outputs.float(), batch["choice_counts"]), dim=-1)
        width = max(spec.num_labels, probabilities.shape[1])
        return probabilities.argmax(-1), F.pad(probabilities, (0, width - probabilities.shape[1]))

    def gather(self, n: int, done: list[tuple[list[int], Any, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """As every kind's, the scores padded with 0 to the widest batch's."""
        width = max((score.shape[-1] for _, _, score in done), default=1)
        padded = [(i, p, np.pad(s, ((0, 0), (0, width - s.shape[-1])))) for i, p, s in done]
        return super().gather(n, padded)

    def metric_values(self, spec: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        p, y = np.asarray(predictions, dtype=float), np.asarray(labels, dtype=float)
        return {"acc": float((p == y).mean()) if len(y) else 0.0}

    def resampled_metric(self, spec: TaskSpec, predictions: np.ndarray, labels: np.ndarray,
                         indices: np.ndarray) -> np.ndarray:
        p, y = np.asarray(predictions, dtype=float)[indices], np.asarray(labels, dtype=float)[indices]
        return (p == y).mean(1)

    # ---- files and ensembles --------------------------------------------------------------------
    def format_value(self, spec: TaskSpec, value: float) -> str:
        return str(int(value))

    def score_columns(self, spec: TaskSpec) -> list[str]:
        return [f"prob_{k}" for k in range(spec.num_labels)]

    def check_prediction(self, spec: TaskSpec, value: float) -> str | None:
        if value != int(value) or value < 0:
            return "is not a choice index"
        return None

    def vote(self, spec: TaskSpec, predictions: np.ndarray) -> np.ndarray:
        """The majority vote of the members' choices, a tie going to the earliest member listed."""
        choices = np.asarray(predictions, dtype=float).astype(int)
        return majority(choices, int(choices.max(initial=0)) + 1).astype(float)

    def decide_scores(self, spec: TaskSpec, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores, dtype=float).argmax(axis=1).astype(float)

    def agreement(self, spec: TaskSpec, first: np.ndarray, second: np.ndarray) -> tuple[str, float]:
        return "same_choice", float((np.asarray(first) == np.asarray(second)).mean())

    # ---- export and model card ------------------------------------------------------------------
    def export_plan(self, spec: TaskSpec, architecture: str) -> ExportPlan:
        """A CrossEncoder scoring each (context, choice) pair: the answer is the best-scored choice."""
        return ExportPlan("CrossEncoder", "cross", "model.predict([(context, choice) for choice in choices]) returns "
                          "one score per choice: the answer is the choice with the highest score", usage=USAGE)

    def hub_task_type(self, spec: TaskSpec) -> str:
        return "multiple-choice"


KIND = MultipleChoice()
