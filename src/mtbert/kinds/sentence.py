"""The bases of the sentence-level kinds: one label or one value per sentence or sentence pair.

The unit of these kinds is an example: a loss sums over a batch's examples, and sample weighting divides it by
the number of examples the step drew. `SentenceKind` encodes one text, or a pair (one sequence for the `cross`
architecture, two for the bi-encoders); `ClassificationKind` and `RegressionKind` add the labels, loss, metric,
files and ensemble rules of classes and of values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtbert.errors import ConfigError, MtbertError
from mtbert.kinds.base import ExportPlan, LabelParser, TaskKind, as_text

if TYPE_CHECKING:
    from mtbert.tasks import TaskSpec

USAGE_SENTENCE = ("from sentence_transformers import SentenceTransformer\n\n"
                  "model = SentenceTransformer(\"{location}\")\n"
                  "logits = model.encode([\"A gripping, funny film.\"])\n"
                  "classes = logits.argmax(axis=1)")
USAGE_SENTENCE_VALUE = ("from sentence_transformers import SentenceTransformer\n\n"
                        "model = SentenceTransformer(\"{location}\")\n"
                        "values = model.encode([\"A gripping, funny film.\"])[:, 0]")
USAGE_CROSS = ("from sentence_transformers import CrossEncoder\n\n"
               "model = CrossEncoder(\"{location}\")\n"
               "scores = model.predict([(\"A man plays a guitar.\", \"Someone plays music.\")])")
USAGE_BI = ("from sentence_transformers import SentenceTransformer\n\n"
            "model = SentenceTransformer(\"{location}\")\n"
            "a = model.encode([\"A man plays a guitar.\"])\n"
            "b = model.encode([\"Someone plays music.\"])\n"
            "scores = model.similarity_pairwise(a, b)  # dot product: scale * cos(u, v) + shift")


def parse_number(raw: Any) -> tuple[float | None, str | None]:
    """A raw label as a finite number: (value, None) or (None, reason to skip the row)."""
    text = (raw if isinstance(raw, str) else as_text(raw)).strip()
    if not text:
        return None, "empty label"
    try:
        value = float(text)
    except ValueError:
        return None, f"label '{text[:20]}' is not a number"
    if not math.isfinite(value):
        return None, f"label '{text[:20]}' is not finite"
    return value, None


class SentenceKind(TaskKind):
    """One or two texts per example, encoded as one sequence (single, or a `cross` pair) or as two."""

    texts: int = 1

    def validate(self, spec: TaskSpec, where: str) -> None:
        if len(spec.text_columns) != self.texts:
            raise ConfigError(f"{where}.text_columns: a {spec.kind} task needs {self.texts} text column(s)")

    def text_groups(self, spec: TaskSpec, examples: Sequence[Any],
                    architecture: str) -> list[tuple[list[str], list[str] | None]]:
        """Pairs go into one sequence for the `cross` architecture, into two for the bi-encoders."""
        if self.texts == 2 and architecture == "cross":
            return [([e.texts[0] for e in examples], [e.texts[1] for e in examples])]
        return [([e.texts[i] for e in examples], None) for i in range(self.texts)]

    def head_architecture(self, architecture: str) -> str:
        return architecture if self.texts == 2 else "cross"

    def check_architecture(self, spec: TaskSpec, architecture: str) -> None:
        if architecture == "bi-cosine" and self.head_outputs(spec) != 1:
            raise ConfigError(f"pair_architecture: bi-cosine cannot predict {spec.num_labels} classes for {spec.name}")

    def shape_outputs(self, spec: TaskSpec, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.squeeze(-1) if self.head_outputs(spec) == 1 else outputs

    def export_plan(self, spec: TaskSpec, architecture: str) -> ExportPlan:
        """A sentence task: a SentenceTransformer returning the head's outputs; a pair: see `pair_export_plan`."""
        if self.texts == 1:
            return ExportPlan("SentenceTransformer", "cross", self.sentence_returns(spec),
                              usage=self.sentence_usage)
        if architecture == "cross":
            return ExportPlan("CrossEncoder", "cross", f"model.predict(pairs) returns {self.cross_returns(spec)}",
                              activation="sigmoid" if self.export_sigmoid(spec) else "identity", usage=USAGE_CROSS)
        if architecture == "bi-cosine":
            return ExportPlan("SentenceTransformer", "bi-cosine",
                              f"model.similarity_pairwise(model.encode(a), model.encode(b)) returns "
                              f"{self.cosine_returns}", pipeline_tag="sentence-similarity", usage=USAGE_BI)
        raise MtbertError(
            f"--task {spec.name}: a {architecture} head (an MLP over the concatenated embeddings [u, v] of the two "
            "sentences) cannot be exported, because a SentenceTransformer scores a pair only by a fixed similarity "
            "of u and v; train with pair_architecture cross or bi-cosine to export this task"
        )

    def frozen_floor(self, spec: TaskSpec, train: np.ndarray, labels: np.ndarray, dev: np.ndarray) -> np.ndarray:
        """Dev predictions with no fine-tuning, from frozen unit-length embeddings (examples x texts x dim): a
        sentence task fits a linear model on train; a pair task reads the cosine of its two texts."""
        if self.texts == 1:
            return self.fit_linear(train[:, 0], labels, dev[:, 0])
        return self.from_cosine(spec, (train[:, 0] * train[:, 1]).sum(-1), labels, (dev[:, 0] * dev[:, 1]).sum(-1))

    def fit_linear(self, train: np.ndarray, labels: np.ndarray, dev: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def from_cosine(self, spec: TaskSpec, train: np.ndarray, labels: np.ndarray, dev: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # what the exported model's call returns, in words (see export_plan)
    sentence_usage: str = USAGE_SENTENCE
    cosine_returns: str = ""

    def sentence_returns(self, spec: TaskSpec) -> str:
        raise NotImplementedError

    def cross_returns(self, spec: TaskSpec) -> str:
        raise NotImplementedError

    def export_sigmoid(self, spec: TaskSpec) -> bool:
        return False


class ClassificationKind(SentenceKind):
    """A class per example: cross-entropy over the classes (or BCE on one logit when `binary_logit` and two
    classes), accuracy, predictions written as class names or indices."""

    has_classes = True
    task_keys = ("ordered_labels",)
    binary_logit: bool = False  # two classes as one logit (sigmoid) rather than two (softmax)
    cosine_returns = "the logit: the class is logit > 0"

    def validate(self, spec: TaskSpec, where: str) -> None:
        super().validate(spec, where)
        if not isinstance(spec.ordered_labels, bool):
            raise ConfigError(f"{where}.ordered_labels: must be true or false")
        if not isinstance(spec.num_labels, int) or isinstance(spec.num_labels, bool) or spec.num_labels < 2:
            raise ConfigError(f"{where}.num_labels: must be an integer of at least 2 for a classification task")

    def label_parser(self, spec: TaskSpec) -> LabelParser:
        """Through `label_names` when the task has them, else a class index 0..num_labels-1."""
        if spec.metric not in self.metric_keys(spec):  # label_names resolved from the data: 3 classes, metric f1
            raise ConfigError(f"task {spec.name}: metric '{spec.metric}' needs two classes and the data has "
                              f"{spec.num_labels}; choose one of {' | '.join(self.metric_keys(spec))}")
        if spec.label_names is not None:
            return lambda raw: self._parse_name(raw, spec)
        return lambda raw: self._parse_index(raw, spec)

    @staticmethod
    def _parse_index(raw: Any, spec: TaskSpec) -> tuple[float | None, str | None]:
        value, reason = parse_number(raw)
        if value is None:
            return None, reason
        if value != int(value) or not 0 <= value < spec.num_labels:
            text = (raw if isinstance(raw, str) else as_text(raw)).strip()
            return None, f"label {text[:20]} is not a class in 0..{spec.num_labels - 1}"
        return float(int(value)), None

    @staticmethod
    def _parse_name(raw: Any, spec: TaskSpec) -> tuple[float | None, str | None]:
        text = ("true" if raw else "false") if isinstance(raw, bool) else "" if raw is None else str(raw).strip()
        if not text:
            return None, "empty label"
        names = spec.label_names or ()
        if text not in names:
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            return None, f"label '{text[:20]}' is not one of the label_names ({shown})"
        return float(names.index(text)), None

    def is_binary(self, spec: TaskSpec) -> bool:
        return self.binary_logit and spec.num_labels == 2

    def head_outputs(self, spec: TaskSpec) -> int:
        return 1 if self.is_binary(spec) else spec.num_labels

    def loss(self, spec: TaskSpec, outputs: torch.Tensor, labels: torch.Tensor,
             regression_loss: str = "mse") -> torch.Tensor:
        if self.is_binary(spec):
            return F.binary_cross_entropy_with_logits(outputs, labels, reduction="sum")
        return F.cross_entropy(outputs, labels.long(), reduction="sum")

    def divergence(self, spec: TaskSpec, outputs: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Per-example KL(reference || outputs) of the predicted class distributions."""
        outputs, reference = outputs.float(), reference.float()
        if self.is_binary(spec):  # logit z is the two-class distribution softmax([0, z])
            outputs = torch.stack([torch.zeros_like(outputs), outputs], dim=-1)
            reference = torch.stack([torch.zeros_like(reference), reference], dim=-1)
        log_p, log_q = F.log_softmax(reference, dim=-1), F.log_softmax(outputs, dim=-1)
        return (log_p.exp() * (log_p - log_q)).sum(-1)

    def decide(self, spec: TaskSpec, outputs: torch.Tensor,
               batch: dict[str, Any] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.is_binary(spec):
            return (outputs > 0).long(), torch.sigmoid(outputs).unsqueeze(-1)
        return outputs.argmax(-1), torch.softmax(outputs, dim=-1)

    def metric(self, spec: TaskSpec) -> str:
        return "acc"

    def metric_keys(self, spec: TaskSpec) -> tuple[str, ...]:
        """Accuracy, macro and micro F1, the F1 of class 1 (two classes only) and Matthews correlation."""
        return ("acc", "macro_f1", "micro_f1", *(("f1",) if spec.num_labels == 2 else ()), "mcc")

    def metric_values(self, spec: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """scikit-learn's metrics; macro F1 averages the classes found in the labels or the predictions."""
        y, p = np.asarray(labels, dtype=float).astype(int), np.asarray(predictions, dtype=float).astype(int)
        from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef  # here: seconds to import

        values = {"acc": float(accuracy_score(y, p)),
                  "macro_f1": float(f1_score(y, p, average="macro", zero_division=0.0)),
                  "micro_f1": float(f1_score(y, p, average="micro", zero_division=0.0))}
        if spec.num_labels == 2:
            values["f1"] = float(f1_score(y, p, labels=[1], average="macro", zero_division=0.0))
        values["mcc"] = float(matthews_corrcoef(y, p)) if len(y) else 0.0
        return values

    def resampled_metric(self, spec: TaskSpec, predictions: np.ndarray, labels: np.ndarray,
                         indices: np.ndarray) -> np.ndarray:
        """`spec.metric` of every resample, from each resample's confusion matrix (one bincount)."""
        p, y = np.asarray(predictions, dtype=float)[indices], np.asarray(labels, dtype=float)[indices]
        if (spec.metric or "acc") == "acc":
            return (p.astype(int) == y.astype(int)).mean(1)
        return confusion_metric(spec.metric, confusion_matrices(y.astype(int), p.astype(int), spec.num_labels))

    def format_value(self, spec: TaskSpec, value: float) -> str:
        if spec.label_names is not None:
            return spec.label_names[int(value)]
        return str(int(value))

    def example_correct(self, spec: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Whether each example's class is its label's."""
        return np.asarray(predictions, dtype=float).astype(int) == np.asarray(labels, dtype=float).astype(int)

    def json_value(self, spec: TaskSpec, value: float) -> Any:
        """The class name (`label_names`), else the class index as a number."""
        return spec.label_names[int(value)] if spec.label_names is not None else int(value)

    def score_columns(self, spec: TaskSpec) -> list[str]:
        return ["prob_1"] if self.is_binary(spec) else [f"prob_{k}" for k in range(self.head_outputs(spec))]

    def check_prediction(self, spec: TaskSpec, value: float) -> str | None:
        if value != int(value) or not 0 <= value < spec.num_labels:
            return f"is not a class in 0..{spec.num_labels - 1}"
        return None

    def vote(self, spec: TaskSpec, predictions: np.ndarray) -> np.ndarray:
        """The members' classes (members x examples) combined: with `ordered_labels`, their mean class rounded half
        up (the CS224N report's SST rule); else the most voted class, a tie going to the earliest member listed (the
        report's Quora rule)."""
        classes = np.asarray(predictions, dtype=float)
        if spec.ordered_labels:
            return mean_class(classes)
        return majority(classes.astype(int), spec.num_labels).astype(float)

    def vote_rule(self, spec: TaskSpec, scores: bool) -> str:
        """`vote`'s rule in words."""
        if spec.ordered_labels:
            return MEAN_CLASS_RULE
        return "the most voted class; a tie goes to the earliest member listed"

    def class_probabilities(self, spec: TaskSpec, scores: np.ndarray | None) -> np.ndarray | None:
        """Scores (... x score columns) as the probability of each class (... x num_labels), or None when there are
        none or they are not class probabilities (a kind with other score columns)."""
        if scores is None:
            return None
        scores, columns = np.asarray(scores, dtype=float), self.score_columns(spec)
        if columns == [f"prob_{k}" for k in range(spec.num_labels)] and scores.shape[-1] == spec.num_labels:
            return scores
        return None

    def decide_scores(self, spec: TaskSpec, scores: np.ndarray) -> np.ndarray:
        scores = np.asarray(scores, dtype=float)
        if self.is_binary(spec):
            return (scores[:, 0] > 0.5).astype(float)
        return scores.argmax(axis=1).astype(float)

    def agreement(self, spec: TaskSpec, first: np.ndarray, second: np.ndarray) -> tuple[str, float]:
        return "same_class", float((np.asarray(first) == np.asarray(second)).mean())

    def transformers_labels(self, spec: TaskSpec, labels: Sequence[Any]) -> tuple[int, list[Any]]:
        return spec.num_labels, [int(v) for v in labels]

    def fit_linear(self, train: np.ndarray, labels: np.ndarray, dev: np.ndarray) -> np.ndarray:
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(max_iter=2000).fit(train, labels.astype(int)).predict(dev).astype(float)

    def from_cosine(self, spec: TaskSpec, train: np.ndarray, labels: np.ndarray, dev: np.ndarray) -> np.ndarray:
        """Class 1 above the cosine threshold with the best training accuracy."""
        return (dev > best_threshold(train, labels)).astype(float)

    def sentence_returns(self, spec: TaskSpec) -> str:
        return f"model.encode(texts) returns the {self.head_outputs(spec)} logits: the class is their argmax"

    def cross_returns(self, spec: TaskSpec) -> str:
        if self.is_binary(spec):
            return "the probability of class 1 (a sigmoid of the logit): the class is probability > 0.5"
        return f"the {self.head_outputs(spec)} logits: the class is their argmax"

    def export_sigmoid(self, spec: TaskSpec) -> bool:
        return self.is_binary(spec)


class RegressionKind(SentenceKind):
    """A value per example in [label_min, label_max]: MSE (or CoSENT + MSE), Pearson r, values written as is."""

    cosine_returns = "the value"
    sentence_usage = USAGE_SENTENCE_VALUE

    def validate(self, spec: TaskSpec, where: str) -> None:
        super().validate(spec, where)
        if spec.label_names is not None:
            raise ConfigError(f"{where}.label_names: a {spec.kind} task has no classes")
        if not isinstance(spec.num_labels, int) or isinstance(spec.num_labels, bool) or spec.num_labels < 1:
            raise ConfigError(f"{where}.num_labels: must be an integer of at least 2 for a classification task")
        if not spec.label_min < spec.label_max:
            raise ConfigError(f"{where}.label_min: must be below label_max")

    def label_parser(self, spec: TaskSpec) -> LabelParser:
        def parse(raw: Any) -> tuple[float | None, str | None]:
            value, reason = parse_number(raw)
            if value is None:
                return None, reason
            if not spec.label_min <= value <= spec.label_max:
                return None, f"label {value:g} is outside {spec.label_min:g}..{spec.label_max:g}"
            return value, None

        return parse

    def head_outputs(self, spec: TaskSpec) -> int:
        return 1

    def init_output(self, spec: TaskSpec, linear: nn.Linear) -> None:
        nn.init.constant_(linear.bias, (spec.label_min + spec.label_max) / 2)  # start mid-scale

    def cosine_start(self, spec: TaskSpec) -> tuple[float, float]:
        """score = scale * cos + shift, starting on the label scale."""
        return ((spec.label_max - spec.label_min) / 2, (spec.label_max + spec.label_min) / 2)

    def loss(self, spec: TaskSpec, outputs: torch.Tensor, labels: torch.Tensor,
             regression_loss: str = "mse") -> torch.Tensor:
        if regression_loss == "cosent":
            span = spec.label_max - spec.label_min
            return cosent_loss(outputs / span, labels) * len(labels) + F.mse_loss(outputs, labels, reduction="sum")
        return F.mse_loss(outputs, labels, reduction="sum")

    def divergence(self, spec: TaskSpec, outputs: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return (outputs.float() - reference.float()) ** 2

    def decide(self, spec: TaskSpec, outputs: torch.Tensor,
               batch: dict[str, Any] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return outputs, outputs.unsqueeze(-1)

    def metric(self, spec: TaskSpec) -> str:
        return "corr"

    def metric_keys(self, spec: TaskSpec) -> tuple[str, ...]:
        """Pearson r (`corr`) and Spearman rho."""
        return ("corr", "spearman")

    def metric_values(self, spec: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """scipy's Pearson r and Spearman rho (0 when either side is constant)."""
        predictions, labels = np.asarray(predictions, dtype=float), np.asarray(labels, dtype=float)
        if len(labels) < 2 or np.std(predictions) == 0 or np.std(labels) == 0:
            return {"corr": 0.0, "spearman": 0.0}
        from scipy.stats import pearsonr, spearmanr

        return {"corr": float(pearsonr(predictions, labels).statistic),
                "spearman": float(spearmanr(predictions, labels).statistic)}

    def resampled_metric(self, spec: TaskSpec, predictions: np.ndarray, labels: np.ndarray,
                         indices: np.ndarray) -> np.ndarray:
        """Pearson r of every resample, or Spearman rho (Pearson r of the resample's average ranks)."""
        p, y = np.asarray(predictions, dtype=float)[indices], np.asarray(labels, dtype=float)[indices]
        if spec.metric == "spearman":
            from scipy.stats import rankdata

            p, y = rankdata(p, axis=1), rankdata(y, axis=1)
        pc, yc = p - p.mean(1, keepdims=True), y - y.mean(1, keepdims=True)
        denom = np.sqrt((pc**2).sum(1) * (yc**2).sum(1))
        return np.divide((pc * yc).sum(1), denom, out=np.zeros(len(p)), where=denom > 0)

    def format_value(self, spec: TaskSpec, value: float) -> str:
        return f"{float(value):.6g}"

    def json_value(self, spec: TaskSpec, value: float) -> Any:
        """The value, as a number."""
        return float(value)

    def score_columns(self, spec: TaskSpec) -> list[str]:
        return ["value"]

    def vote(self, spec: TaskSpec, predictions: np.ndarray) -> np.ndarray:
        """The mean of the members' values."""
        return np.asarray(predictions, dtype=float).mean(axis=0)

    def decide_scores(self, spec: TaskSpec, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores, dtype=float)[:, 0]

    def agreement(self, spec: TaskSpec, first: np.ndarray, second: np.ndarray) -> tuple[str, float]:
        return "max_abs_difference", float(np.abs(np.asarray(first) - np.asarray(second)).max())

    def transformers_labels(self, spec: TaskSpec, labels: Sequence[Any]) -> tuple[int, list[Any]]:
        return 1, [float(v) for v in labels]

    def fit_linear(self, train: np.ndarray, labels: np.ndarray, dev: np.ndarray) -> np.ndarray:
        from sklearn.linear_model import Ridge

        return Ridge().fit(train, labels).predict(dev).astype(float)

    def from_cosine(self, spec: TaskSpec, train: np.ndarray, labels: np.ndarray, dev: np.ndarray) -> np.ndarray:
        """The cosine mapped linearly from [-1, 1] onto the label scale."""
        return spec.label_min + (spec.label_max - spec.label_min) * (1 + dev) / 2

    def sentence_returns(self, spec: TaskSpec) -> str:
        return "model.encode(texts) returns the value (one column)"

    def cross_returns(self, spec: TaskSpec) -> str:
        return "the value"

    def hub_task_type(self, spec: TaskSpec) -> str:
        return "sentence-similarity"


def confusion_matrices(labels: np.ndarray, predictions: np.ndarray, num_labels: int) -> np.ndarray:
    """One confusion matrix (true class x predicted class) per row of `labels` and `predictions` (rows x n)."""
    rows = len(labels)
    flat = (np.arange(rows)[:, None] * num_labels + labels) * num_labels + predictions
    return np.bincount(flat.ravel(), minlength=rows * num_labels * num_labels).reshape(rows, num_labels, num_labels)


def confusion_metric(metric: str, confusion: np.ndarray) -> np.ndarray:
    """`acc`, `micro_f1`, `macro_f1`, `f1` (class 1) or `mcc` of each confusion matrix, as scikit-learn computes
    them (macro F1 over the classes found in the labels or the predictions; 0 where a ratio is 0 / 0)."""
    confusion = confusion.astype(float)
    hits, true, predicted = np.einsum("rkk->rk", confusion), confusion.sum(2), confusion.sum(1)
    n, correct = confusion.sum((1, 2)), hits.sum(1)
    if metric in ("acc", "micro_f1"):
        return np.divide(correct, n, out=np.zeros(len(n)), where=n > 0)
    per_class = np.divide(2 * hits, true + predicted, out=np.zeros_like(hits), where=true + predicted > 0)
    if metric == "f1":
        return per_class[:, 1]
    if metric == "macro_f1":
        present = (true + predicted) > 0
        return np.divide(per_class.sum(1), present.sum(1), out=np.zeros(len(n)), where=present.any(1))
    if metric == "mcc":
        numerator = correct * n - (true * predicted).sum(1)
        denominator = np.sqrt((n**2 - (predicted**2).sum(1)) * (n**2 - (true**2).sum(1)))
        return np.divide(numerator, denominator, out=np.zeros(len(n)), where=denominator > 0)
    raise ValueError(f"no confusion-matrix metric {metric!r}")


MEAN_CLASS_RULE = "the members' mean class rounded half up (ordered_labels: the CS224N report's SST rule)"


def mean_class(classes: np.ndarray) -> np.ndarray:
    """The members' mean class of each column (members x examples), rounded half up (2.5 -> 3)."""
    return np.floor(np.asarray(classes, dtype=float).mean(axis=0) + 0.5)


def majority(classes: np.ndarray, num_labels: int, probabilities: np.ndarray | None = None) -> np.ndarray:
    """The most voted class of each column (members x examples). A tie goes to the tied class with the highest
    sum of the members' `probabilities` (members x examples x classes) when given, and then to the earliest
    member's class."""
    members, n = classes.shape
    columns = np.arange(n)
    counts = np.zeros((n, num_labels), dtype=int)
    for row in classes:
        np.add.at(counts, (columns, row), 1)
    tied = counts == counts.max(axis=1, keepdims=True)  # examples x classes: the most voted classes
    if probabilities is not None:
        summed = np.asarray(probabilities, dtype=float).sum(axis=0)
        best = np.where(tied, summed, -np.inf).max(axis=1, keepdims=True)
        tied &= summed == best
    is_top = tied[columns, classes]  # members x examples: did this member vote a class still in the running?
    first = is_top.argmax(axis=0)
    return classes[first, columns]


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The cosine threshold (predict 1 above it) with the best training accuracy, midway between two scores."""
    order = np.argsort(scores)
    s, y = scores[order], labels[order].astype(int)
    # predicting 1 for everything above position k: correct = zeros at or below k + ones above k
    correct = np.concatenate([[y.sum()], np.cumsum(1 - y) + (y.sum() - np.cumsum(y))])
    k = int(np.argmax(correct))
    if k == 0:
        return float(s[0]) - 1.0
    if k == len(s):
        return float(s[-1])
    return float((s[k - 1] + s[k]) / 2)


def cosent_loss(scores: torch.Tensor, labels: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
    """CoSENT ranking loss (Su 2022, https://kexue.fm/archives/8847): every pair ordered wrongly is penalised.

    log(1 + sum over (i, j) with label_i > label_j of exp(scale * (s_j - s_i))), on scores of unit range.
    """
    diff = scale * (scores[None, :] - scores[:, None])  # diff[i, j] = scale * (s_j - s_i)
    mask = labels[:, None] > labels[None, :]
    diff = diff[mask]
    zero = torch.zeros(1, dtype=diff.dtype, device=diff.device)
    return torch.logsumexp(torch.cat([zero, diff]), dim=0)
