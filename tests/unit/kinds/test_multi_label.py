"""The multi-label kind: reading label sets (list columns, separated strings), unseen labels scored as misses,
the loss, the decision and its tuning, the metrics against scikit-learn, files and ensembles."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score

from mtbert.data import read_task_file
from mtbert.data.encoding import encode_examples
from mtbert.data.loading import resolve_labels
from mtbert.errors import ConfigError
from mtbert.evaluation.metrics import resample_indices
from mtbert.kinds.multi_label import KIND, bits, masks_of
from mtbert.tasks import task_from_config

NAMES = ("food", "politics", "sports", "tech")


def spec_of(**extra):
    entry = {"name": "topics", "kind": "multi-label", "train_file": "train.jsonl", "dev_file": "dev.jsonl",
             "text_columns": ["text"], "label_column": "topics", "label_separator": "#", **extra}
    return task_from_config(entry, "tasks[0]")


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_label_sets_are_read_from_lists_and_separated_strings_with_names_from_training(tmp_path, caplog):
    write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "topics": ["sports", "food"]}, {"text": "b", "topics": "tech"},
                                          {"text": "c", "topics": "politics#sports"}, {"text": "d", "topics": []}])
    spec = resolve_labels(spec_of(), tmp_path)
    assert spec.label_names == NAMES and spec.num_labels == 4 and spec.metric == "micro_f1"
    (tmp_path / "dev.tsv").write_text("text\ttopics\nx\tsports#art\ny\t\nz\tart#music#food\nw\t7\n")
    caplog.set_level(logging.WARNING)
    result = read_task_file(tmp_path / "dev.tsv", spec)
    masks = [e.label for e in result.examples]
    assert not result.skipped and len(masks) == 4
    assert bits(masks, 7).astype(int).tolist() == [[0, 0, 1, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0, 0],
                                                    [1, 0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 0, 1]]
    encode_examples(_Tokenizer(), spec, result.examples, 16, "cross")  # encoding a split reports its unseen labels
    report = "task topics: 3 of 4 examples hold labels never seen in training (art: 2, music: 1, 7: 1 rows)"
    assert report in caplog.text


def test_label_names_come_from_a_datasets_classlabel_sequence_in_its_order(tmp_path):
    import datasets

    from mtbert.data.loading import read_split

    names = ["tech", "food", "sports", "politics"]  # not sorted: the feature's order is the class order
    features = datasets.Features({"text": datasets.Value("string"),
                                  "topics": datasets.Sequence(datasets.ClassLabel(names=names))})
    train = {"text": ["a", "b", "c"], "topics": [[2, 1], [0], []]}
    dev = {"text": ["x", "y"], "topics": [[3, 0], [-1]]}  # -1: the dataset's missing label
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(train, features=features),
                          "validation": datasets.Dataset.from_dict(dev, features=features)}).save_to_disk(
        str(tmp_path / "topics"))
    spec = resolve_labels(spec_of(train_file=None, dev_file=None, label_separator=None, test_split=None,
                                  dataset=str(tmp_path / "topics")), tmp_path)
    assert spec.label_names == tuple(names) and spec.num_labels == 4
    masks = [e.label for e in read_split(spec, "train", tmp_path).examples]
    assert bits(masks, 4).astype(int).tolist() == [[0, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    assert [KIND.format_value(spec, m) for m in masks] == ["food|sports", "tech", ""]
    read = read_split(spec, "dev", tmp_path)
    assert bits([e.label for e in read.examples], 4).astype(int).tolist() == [[1, 0, 0, 1]]
    assert read.skipped == [(2, "empty label")]


class _Tokenizer:
    """Tokenizes every text as [CLS] [SEP]: the report needs no real tokens."""

    def __call__(self, first, second=None, **kwargs):
        return {"input_ids": [[101, 102] for _ in first], "token_type_ids": [[0, 0] for _ in first]}


def test_bad_labels_are_skipped_with_their_line(tmp_path):
    spec = spec_of(label_names=list(NAMES))
    write_jsonl(tmp_path / "dev.jsonl", [{"text": "a", "topics": None}, {"text": "b", "topics": [1.5]},
                                         {"text": "c", "topics": {"x": 1}}, {"text": "d", "topics": ["food"]}])
    result = read_task_file(tmp_path / "dev.jsonl", spec)
    assert result.skipped == [(1, "the label is null"), (2, "a label is a number, not a name"),
                              (3, "the label is an object, not a list of label names or text")]
    assert [e.label for e in result.examples] == [1.0]


@pytest.mark.parametrize(("key", "value", "message"), [
    ("threshold", 1.5, "tasks[0].threshold: must be a probability between 0 and 1, tune or tune-per-label"),
    ("threshold", "best", "tasks[0].threshold: must be a probability between 0 and 1, tune or tune-per-label"),
    ("label_separator", "", "tasks[0].label_separator: must be a non-empty string without spaces, such as '#'"),
    ("metric", "acc", "tasks[0].metric: 'acc' is not a metric of a multi-label task (micro_f1 | macro_f1 | "
                      "subset_acc)"),
    ("text_columns", ["a", "b"], "tasks[0].text_columns: a multi-label task needs 1 text column(s)"),
])
def test_bad_multi_label_keys_name_the_key(key, value, message):
    import re

    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        spec_of(**{key: value})


def test_the_loss_is_the_mean_binary_cross_entropy_of_each_example_summed():
    spec = spec_of(label_names=list(NAMES))
    outputs, labels = torch.randn(3, 4), torch.tensor([[1.0, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1]])
    expected = F.binary_cross_entropy_with_logits(outputs, labels, reduction="mean") * 3
    torch.testing.assert_close(KIND.loss(spec, outputs, labels), expected)
    divergence = KIND.divergence(spec, outputs, outputs.clone())
    assert divergence.shape == (3,) and divergence.abs().max() < 1e-6


def test_decisions_thresholds_and_their_tuning():
    spec = spec_of(label_names=list(NAMES))
    logits = torch.tensor([[2.0, -1.0, 0.1, -3.0], [-2.0, -2.0, -2.0, -2.0]])
    predictions, probabilities = KIND.decide(spec, logits)
    assert predictions.tolist() == [1 + 4, 0] and torch.allclose(probabilities, torch.sigmoid(logits))
    assert KIND.decide_scores(spec, probabilities.numpy()).tolist() == [5.0, 0.0]
    # label 0 is on above 0.2 in truth, label 1 above 0.8: one threshold (0.5 fits neither), or one each
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 1, (400, 4))
    truth = np.stack([scores[:, 0] > 0.2, scores[:, 1] > 0.8, scores[:, 2] > 0.5, scores[:, 3] > 0.5], axis=1)
    per_label = KIND.tune(spec_of(label_names=list(NAMES), threshold="tune-per-label"), scores, masks_of(truth))
    assert per_label.tuned_thresholds == pytest.approx((0.2, 0.8, 0.5, 0.5), abs=0.026)
    shared = KIND.tune(spec_of(label_names=list(NAMES), threshold="tune"), scores, masks_of(truth))
    assert len(set(shared.tuned_thresholds)) == 1
    assert KIND.tune(spec, scores, masks_of(truth)) is None  # threshold 0.5: nothing to tune
    tuned = per_label.tuned_thresholds
    assert KIND.decide_scores(per_label, scores).tolist() == masks_of(scores > np.array(tuned)).tolist()


def test_metrics_are_sklearns_and_an_unseen_label_is_a_miss():
    spec = spec_of(label_names=list(NAMES))
    rng = np.random.default_rng(1)
    truth = rng.random((200, 5)) < 0.3  # column 4: a label training never saw (bit 4)
    predicted = np.where(rng.random((200, 5)) < 0.8, truth, ~truth)
    predicted[:, 4] = False  # never predicted
    values = KIND.metric_values(spec, masks_of(predicted), masks_of(truth))
    assert values == pytest.approx({"micro_f1": f1_score(truth, predicted, average="micro"),
                                    "macro_f1": f1_score(truth, predicted, average="macro", zero_division=0),
                                    "subset_acc": accuracy_score(truth, predicted)}, abs=1e-9)
    for metric in ("micro_f1", "macro_f1", "subset_acc"):
        chosen = spec_of(label_names=list(NAMES), metric=metric)
        p, y = masks_of(predicted[:40]), masks_of(truth[:40])
        indices = resample_indices({"t": (chosen, p, y)}, 30, seed=2)["t"]
        direct = [KIND.metric_values(chosen, p[row], y[row])[metric] for row in indices]
        assert KIND.resampled_metric(chosen, p, y, indices) == pytest.approx(direct, abs=1e-9)


def test_files_and_ensembles():
    spec = spec_of(label_names=list(NAMES))
    assert KIND.format_value(spec, 5.0) == "food#sports" and KIND.format_value(spec, 0.0) == ""
    assert KIND.parse_value(spec, " food#sports ") == 5.0 and KIND.parse_value(spec, " ") == 0.0
    with pytest.raises(ValueError):
        KIND.parse_value(spec, "food#art")
    assert KIND.score_columns(spec) == ["prob_food", "prob_politics", "prob_sports", "prob_tech"]
    assert KIND.check_prediction(spec, 16.0) is not None and KIND.check_prediction(spec, 15.0) is None
    unsplit = spec_of(label_names=list(NAMES), label_separator=None)
    assert KIND.format_value(unsplit, 3.0) == "food|politics"
    # per label: majority of three; of two, a tie keeps the first member's choice
    members = np.array([[masks_of(np.array([[1, 1, 0, 0]]))[0]], [masks_of(np.array([[1, 0, 1, 0]]))[0]],
                        [masks_of(np.array([[0, 1, 1, 0]]))[0]]])
    assert bits(KIND.vote(spec, members), 4).astype(int).tolist() == [[1, 1, 1, 0]]
    assert bits(KIND.vote(spec, members[1:]), 4).astype(int).tolist() == [[1, 0, 1, 0]]


def test_saved_thresholds_come_back_with_the_saved_spec():
    spec = spec_of(threshold="tune")
    saved = {"label_names": list(NAMES), "tuned_thresholds": [0.3, 0.3, 0.3, 0.3]}
    restored = KIND.from_saved(spec, saved)
    assert restored.label_names == NAMES and restored.tuned_thresholds == (0.3,) * 4
    assert KIND.thresholds(restored).tolist() == [0.3] * 4
