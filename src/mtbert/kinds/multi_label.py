"""`multi-label`: one text, a set of labels (a sigmoid per label, binary cross-entropy).

Data: `label_column` holds a list of label names (JSON, JSON Lines, Parquet, `datasets`), or one string split by
`label_separator` (e.g. "#"; without it the string is one label); an empty list or string is the empty set. The
names are resolved as classification's are (`label_names` given, else the names of a `datasets` label column's
`Sequence(ClassLabel(names=...))` feature in their order, else the sorted names of the training labels).

A prediction (and a label) is the set held as an integer bit mask in a float (bit k: `label_names[k]`), so that it
travels through the files, the ensemble and the bootstrap as one number per example; that allows at most
`MAX_LABELS` labels. A label of dev or test that training never saw takes a bit above the training labels: the
model never predicts it, so it counts as a miss (a false negative; a class of F1 0 in macro F1), and reading the
split reports which and how many rows hold one.

The unit is an example: its loss is the mean binary cross-entropy over its labels, so sample weighting (`1/n_i`,
examples) gives transformers' `multi_label_classification` loss. Decision: a label is on when its probability
exceeds `threshold` (0.5 by default); `threshold: tune` picks one threshold for every label and `tune-per-label`
one per label, each maximising dev F1 (micro F1 for the shared one, the label's own F1 per label) on a grid of
0.05..0.95, at every evaluation; the chosen ones (`tuned_thresholds`) are saved in the model's task spec, so that
`mtbert evaluate`, `predict` and the model reproduce them. The dev metrics of a tuned task are then those of
thresholds chosen on dev (optimistic).

Metrics: micro F1 (primary), macro F1 (over the labels found in the labels or the predictions of the split) and
subset (exact-match) accuracy. Files: the predicted names joined by `label_separator` (or "|"; the empty set is an
empty field), scores `prob_<name>`. Ensembles: vote keeps a label that more than half of the members predict (a
tie: the first member's choice); soft averages the probabilities and decides at the first member's thresholds.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from mtbert.errors import ConfigError, DataError
from mtbert.kinds.base import LabelParser, type_name
from mtbert.kinds.sentence import SentenceKind

if TYPE_CHECKING:
    from mtbert.tasks import TaskSpec

logger = logging.getLogger(__name__)

MAX_LABELS = 52  # bits 0..51 are the labels; bit 52 (the last a float holds exactly) the overflow of unseen ones
TUNING = ("tune", "tune-per-label")
GRID = np.round(np.linspace(0.05, 0.95, 19), 2)  # the thresholds tuning tries


def bits(masks: np.ndarray | Sequence[float], width: int) -> np.ndarray:
    """Bit masks (n,) as a 0/1 matrix (n x width): column k is bit k."""
    values = np.asarray(masks, dtype=float).astype(np.uint64)
    return ((values[:, None] >> np.arange(width, dtype=np.uint64)) & np.uint64(1)).astype(bool)


def masks_of(matrix: np.ndarray) -> np.ndarray:
    """The inverse of `bits`: each row of a 0/1 matrix as a bit mask (a float)."""
    matrix = np.asarray(matrix, dtype=bool)
    weights = np.left_shift(np.uint64(1), np.arange(matrix.shape[1], dtype=np.uint64))
    return (matrix.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64).astype(float)


def width_of(spec: TaskSpec, *masks: np.ndarray) -> int:
    """Columns that hold every bit of `masks` and every label of the task."""
    top = max((int(np.asarray(m, dtype=float).max(initial=0)) for m in masks), default=0)
    return max(spec.num_labels, top.bit_length())


class MultiLabel(SentenceKind):
    """One text, any subset of `num_labels` labels."""

    name = "multi-label"
    texts = 1
    has_classes = True  # label names are resolved from the data, as classification's
    index_labels = False  # a numeric label is a name too
    task_keys = ("label_separator", "threshold", "tuned_thresholds")

    def __init__(self) -> None:
        # (task, its label names) -> bit -> a label name training never saw
        self.unseen: dict[tuple[str, tuple[str, ...]], dict[int, str]] = {}

    # ---- config ---------------------------------------------------------------------------------
    def validate(self, spec: TaskSpec, where: str) -> None:
        super().validate(spec, where)
        if not isinstance(spec.num_labels, int) or isinstance(spec.num_labels, bool) or spec.num_labels < 1:
            raise ConfigError(f"{where}.num_labels: must be a positive integer for a multi-label task")
        if spec.label_names is not None and len(spec.label_names) > MAX_LABELS:
            raise ConfigError(f"{where}.label_names: a multi-label task has at most {MAX_LABELS} labels")
        sep = spec.label_separator
        if sep is not None and (not isinstance(sep, str) or not sep or sep.strip() != sep or "\n" in sep):
            raise ConfigError(f"{where}.label_separator: must be a non-empty string without spaces, such as '#'")
        t = spec.threshold
        number = isinstance(t, int | float) and not isinstance(t, bool)
        if not (t in TUNING if isinstance(t, str) else number and 0 < t < 1):
            raise ConfigError(f"{where}.threshold: must be a probability between 0 and 1, tune or tune-per-label")
        tuned = spec.tuned_thresholds
        if tuned is not None and (not isinstance(tuned, Sequence) or any(
                isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1 for v in tuned)):
            raise ConfigError(f"{where}.tuned_thresholds: must list probabilities, one per label")

    def metric(self, spec: TaskSpec) -> str:
        return "micro_f1"

    def metric_keys(self, spec: TaskSpec) -> tuple[str, ...]:
        return ("micro_f1", "macro_f1", "subset_acc")

    # ---- data -----------------------------------------------------------------------------------
    def label_names_of(self, spec: TaskSpec, raw: Any) -> tuple[list[str], str | None]:
        """The names a raw label holds: a list's items, or a string split by `label_separator`."""
        if raw is None:
            return [], "the label is null"
        if isinstance(raw, str):
            parts = raw.split(spec.label_separator) if spec.label_separator else [raw]
        elif isinstance(raw, list | tuple):
            parts = list(raw)
        elif isinstance(raw, int) and not isinstance(raw, bool):
            parts = [raw]
        else:
            return [], f"the label is {type_name(raw)}, not a list of label names or text"
        names = []
        for part in parts:
            if isinstance(part, int) and not isinstance(part, bool):
                part = str(part)
            if not isinstance(part, str):
                return [], f"a label is {type_name(part)}, not a name"
            if part.strip() and part.strip() not in names:
                names.append(part.strip())
        return names, None

    def label_parser(self, spec: TaskSpec) -> LabelParser:
        """A row's label names as a bit mask; a name training never saw takes a bit above the training labels."""
        names = spec.label_names
        if names is None:
            raise DataError(f"task {spec.name}: no training row names a label; a multi-label task needs label names")
        if len(names) > MAX_LABELS:
            raise DataError(f"task {spec.name}: the training labels name {len(names)} labels; a multi-label task "
                            f"has at most {MAX_LABELS}")
        index = {name: k for k, name in enumerate(names)}
        unseen = self.unseen.setdefault((spec.name, tuple(names)), {})
        by_name = {name: bit for bit, name in unseen.items()}

        def parse(raw: Any) -> tuple[float | None, str | None]:
            found, reason = self.label_names_of(spec, raw)
            if reason is not None:
                return None, reason
            mask = 0
            for name in found:
                if name in index:
                    mask |= 1 << index[name]
                    continue
                if name not in by_name:
                    by_name[name] = min(len(names) + len(by_name), MAX_LABELS)
                    unseen.setdefault(by_name[name], name)
                mask |= 1 << by_name[name]
            return float(mask), None

        return parse

    def encode(self, tokenizer: Any, spec: TaskSpec, examples: Sequence[Any], max_length: int,
               architecture: str) -> tuple[list[list[list[int]]], list[list[list[int]]], list[Any] | None]:
        """As any one-text task; rows holding labels training never saw are reported (which, how many)."""
        masks = [e.label for e in examples if e.label is not None]
        if masks:
            extra = bits(masks, width_of(spec, np.asarray(masks)))[:, spec.num_labels:]
            if extra.any():
                names = self.unseen.get((spec.name, tuple(spec.label_names or ())), {})
                counts = ", ".join(f"{names.get(spec.num_labels + k, '?')}: {n}"
                                   for k, n in enumerate(extra.sum(0)) if n)
                logger.warning("task %s: %d of %d examples hold labels never seen in training (%s rows); they are "
                               "scored as misses", spec.name, int(extra.any(1).sum()), len(masks), counts)
        return super().encode(tokenizer, spec, examples, max_length, architecture)

    def collate(self, encoded: Any, indices: list[int], pad_token_id: int, packed: bool,
                row_width: int = 0) -> dict[str, Any]:
        """The batch of one-text tasks, with the labels as a 0/1 matrix over the training labels."""
        batch = super().collate(encoded, indices, pad_token_id, packed, row_width)
        if batch["labels"] is not None:
            masks = [encoded.labels[i] for i in indices]
            batch["labels"] = torch.from_numpy(bits(masks, encoded.spec.num_labels).astype(np.float32))
        return batch

    # ---- model and training ---------------------------------------------------------------------
    def head_outputs(self, spec: TaskSpec) -> int:
        return spec.num_labels

    def shape_outputs(self, spec: TaskSpec, outputs: torch.Tensor) -> torch.Tensor:
        return outputs  # examples x labels, even for one label

    def loss(self, spec: TaskSpec, outputs: torch.Tensor, labels: torch.Tensor,
             regression_loss: str = "mse") -> torch.Tensor:
        """The sum over the examples of each one's mean binary cross-entropy over the labels."""
        return F.binary_cross_entropy_with_logits(outputs, labels, reduction="sum") / spec.num_labels

    def divergence(self, spec: TaskSpec, outputs: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Per example, the mean over the labels of KL(reference || outputs) of the two-outcome distributions."""
        outputs, reference = outputs.float(), reference.float()
        p = torch.sigmoid(reference)
        log_p, log_1p = F.logsigmoid(reference), F.logsigmoid(-reference)
        log_q, log_1q = F.logsigmoid(outputs), F.logsigmoid(-outputs)
        return (p * (log_p - log_q) + (1 - p) * (log_1p - log_1q)).mean(-1)

    # ---- decisions ------------------------------------------------------------------------------
    def thresholds(self, spec: TaskSpec) -> np.ndarray:
        """Each label's decision threshold: the tuned ones when the task tunes them, else `threshold`."""
        if spec.threshold in TUNING:
            tuned = spec.tuned_thresholds
            if tuned is not None and len(tuned) == spec.num_labels:
                return np.asarray(tuned, dtype=float)
            return np.full(spec.num_labels, 0.5)
        return np.full(spec.num_labels, float(spec.threshold))

    def decide(self, spec: TaskSpec, outputs: torch.Tensor,
               batch: dict[str, Any] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(bit masks, probabilities): a label is on where its probability exceeds its threshold."""
        probabilities = torch.sigmoid(outputs.float())
        thresholds = torch.as_tensor(self.thresholds(spec), dtype=probabilities.dtype, device=outputs.device)
        on = (probabilities > thresholds).long()
        weights = torch.ones(spec.num_labels, dtype=torch.long, device=outputs.device) << torch.arange(
            spec.num_labels, device=outputs.device)
        return (on * weights).sum(-1).double(), probabilities

    def decide_scores(self, spec: TaskSpec, scores: np.ndarray) -> np.ndarray:
        return masks_of(np.asarray(scores, dtype=float) > self.thresholds(spec))

    def tune(self, spec: TaskSpec, scores: np.ndarray, labels: np.ndarray) -> TaskSpec | None:
        """The thresholds maximising dev F1 (`threshold: tune`: micro F1 of one shared threshold; `tune-per-label`:
        each label's F1), ties going to the threshold nearest 0.5; None when the task does not tune."""
        if spec.threshold not in TUNING or not len(labels):
            return None
        n_labels = spec.num_labels
        truth = bits(labels, width_of(spec, labels))
        missed = truth[:, n_labels:].sum()  # labels training never saw: false negatives whatever the threshold
        truth = truth[:, :n_labels]
        on = np.asarray(scores, dtype=float)[None, :, :] > GRID[:, None, None]  # grid x examples x labels
        tp, fp = (on & truth).sum(1), (on & ~truth).sum(1)  # grid x labels
        fn = truth.sum(0)[None, :] - tp
        order = np.argsort(np.abs(GRID - 0.5), kind="stable")  # nearest 0.5 first: argmax keeps the first tie
        if spec.threshold == "tune":
            f1 = _f1(tp.sum(1), fp.sum(1), fn.sum(1) + missed)
            chosen = np.full(n_labels, GRID[order[np.argmax(f1[order])]])
        else:
            f1 = _f1(tp, fp, fn)[order]
            chosen = GRID[order[np.argmax(f1, axis=0)]]
        return dataclasses.replace(spec, tuned_thresholds=tuple(float(t) for t in chosen))

    # ---- metrics --------------------------------------------------------------------------------
    def label_array(self, labels: Sequence[Any]) -> np.ndarray:
        return np.asarray(labels, dtype=float)  # the bit masks

    def metric_values(self, spec: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """scikit-learn's micro and macro F1 and subset accuracy of the label sets."""
        width = width_of(spec, predictions, labels)
        truth, predicted = bits(labels, width), bits(predictions, width)
        present = np.flatnonzero(truth.any(0) | predicted.any(0))
        from sklearn.metrics import accuracy_score, f1_score  # here: scikit-learn takes seconds to import

        macro = f1_score(truth, predicted, labels=present, average="macro", zero_division=0.0) if len(present) else 0.0
        return {"micro_f1": float(f1_score(truth, predicted, average="micro", zero_division=0.0)),
                "macro_f1": float(macro),
                "subset_acc": float(accuracy_score(truth, predicted)) if len(truth) else 0.0}

    def resampled_metric(self, spec: TaskSpec, predictions: np.ndarray, labels: np.ndarray,
                         indices: np.ndarray) -> np.ndarray:
        """`spec.metric` of every resample, from how often each example is drawn (a resamples x examples matrix)."""
        width = width_of(spec, predictions, labels)
        truth, predicted = bits(labels, width), bits(predictions, width)
        resamples, n = indices.shape
        drawn = np.bincount((np.arange(resamples)[:, None] * n + indices).ravel(),
                            minlength=resamples * n).reshape(resamples, n).astype(float)
        if spec.metric == "subset_acc":
            return drawn @ (truth == predicted).all(1).astype(float) / n
        tp = drawn @ (truth & predicted).astype(float)
        fp = drawn @ (~truth & predicted).astype(float)
        fn = drawn @ (truth & ~predicted).astype(float)
        if spec.metric == "micro_f1":
            return _f1(tp.sum(1), fp.sum(1), fn.sum(1))
        present = (tp + fp + fn) > 0
        return np.divide(_f1(tp, fp, fn).sum(1), present.sum(1), out=np.zeros(resamples), where=present.any(1))

    # ---- files and ensembles --------------------------------------------------------------------
    def separator(self, spec: TaskSpec) -> str:
        return spec.label_separator or "|"

    def format_value(self, spec: TaskSpec, value: float) -> str:
        on = bits([value], spec.num_labels)[0]
        return self.separator(spec).join(name for name, set_ in zip(spec.label_names or (), on, strict=False)
                                         if set_)

    def parse_value(self, spec: TaskSpec, text: str) -> float:
        names = [n.strip() for n in text.split(self.separator(spec)) if n.strip()]
        known = spec.label_names or ()
        for name in names:
            if name not in known:
                raise ValueError(f"'{name}' is not a label of task {spec.name}")
        return float(sum(1 << known.index(name) for name in set(names)))

    def score_columns(self, spec: TaskSpec) -> list[str]:
        return [f"prob_{name}" for name in spec.label_names or range(spec.num_labels)]

    def check_prediction(self, spec: TaskSpec, value: float) -> str | None:
        if value != int(value) or not 0 <= value < 2**spec.num_labels:
            return f"is not a set of the task's {spec.num_labels} labels"
        return None

    def vote(self, spec: TaskSpec, predictions: np.ndarray) -> np.ndarray:
        """Per label, the members' majority; a tie keeps the first member's choice."""
        predictions = np.asarray(predictions, dtype=float)
        members = len(predictions)
        stack = np.stack([bits(p, spec.num_labels) for p in predictions])  # members x examples x labels
        votes = stack.sum(0) * 2
        on = np.where(votes == members, stack[0], votes > members)
        return masks_of(on)

    def agreement(self, spec: TaskSpec, first: np.ndarray, second: np.ndarray) -> tuple[str, float]:
        return "same_set", float((np.asarray(first) == np.asarray(second)).mean())

    def from_saved(self, spec: TaskSpec, saved: dict[str, Any]) -> TaskSpec:
        """The resolved label names, and the thresholds training tuned."""
        spec = super().from_saved(spec, saved)
        tuned = saved.get("tuned_thresholds")
        if (spec.tuned_thresholds is None and isinstance(tuned, list) and len(tuned) == spec.num_labels
                and all(isinstance(v, int | float) and not isinstance(v, bool) for v in tuned)):
            spec = dataclasses.replace(spec, tuned_thresholds=tuple(float(v) for v in tuned))
        return spec

    # ---- export and model card ------------------------------------------------------------------
    def transformers_labels(self, spec: TaskSpec, labels: Sequence[Any]) -> tuple[int, list[Any]]:
        return spec.num_labels, [row.astype(float).tolist() for row in bits(labels, spec.num_labels)]

    def sentence_returns(self, spec: TaskSpec) -> str:
        return (f"model.encode(texts) returns the {spec.num_labels} logits, one per label: a label applies where "
                "its sigmoid exceeds its threshold (the run's mtbert_config.json: `threshold`, `tuned_thresholds`)")

    def fit_linear(self, train: np.ndarray, labels: np.ndarray, dev: np.ndarray) -> np.ndarray:
        raise NotImplementedError("a multi-label task has no frozen-embedding floor")


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """2 tp / (2 tp + fp + fn), 0 where that is 0 / 0."""
    tp, fp, fn = (np.asarray(a, dtype=float) for a in (tp, fp, fn))
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros(np.broadcast(tp, denominator).shape), where=denominator > 0)


KIND = MultiLabel()
