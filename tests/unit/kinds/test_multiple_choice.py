"""The multiple-choice kind: rows read (a bad one skipped with its line and reason), one sequence per choice, the
loss over each example's own number of choices, the decision, standard input lines."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtbert.data import read_task_file
from mtbert.data.encoding import collate, collate_packed, encode_examples
from mtbert.data.loading import resolve_labels
from mtbert.errors import ConfigError
from mtbert.kinds.multiple_choice import KIND
from mtbert.tasks import task_from_config


def spec_of(**extra):
    entry = {"name": "ending", "kind": "multiple-choice", "train_file": "train.jsonl", "dev_file": "dev.jsonl",
             "text_columns": ["context"], "choices_column": "choices", "label_column": "label", **extra}
    return task_from_config(entry, "tasks[0]")


def test_rows_are_read_and_bad_ones_skipped_with_their_line_and_reason(tmp_path):
    rows = [{"context": "c1", "choices": ["a", "b"], "label": 1},
            {"context": "c2", "choices": ["x", "y", "z"], "label": "z"},
            {"context": "c3", "choices": ["a", "b"], "label": 2},
            {"context": "c4", "choices": [], "label": 0},
            {"context": "c5", "choices": ["a", "b"], "label": "c"},
            {"context": "c6", "choices": ["a", 3], "label": 0},
            {"context": "c7", "choices": "a b", "label": 0},
            {"context": "c8", "choices": ["a", "b", "c", "d"], "label": "3"}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = read_task_file(tmp_path / "train.jsonl", spec_of())
    assert [(e.texts, e.label) for e in result.examples] == [(("c1", "a", "b"), 1.0), (("c2", "x", "y", "z"), 2.0),
                                                             (("c8", "a", "b", "c", "d"), 3.0)]
    assert result.skipped == [(3, "choice index 2 is out of range 0..1"), (4, "the choice list 'choices' is empty"),
                              (5, "label 'c' is not one of the row's 2 choices"),
                              (6, "choice 1 of 'choices' is a number, not text"),
                              (7, "'choices' is not a JSON array of texts")]
    (tmp_path / "dev.jsonl").write_text(json.dumps({"context": "c", "choices": list("abcde"), "label": 0}) + "\n")
    assert resolve_labels(spec_of(), tmp_path).num_labels == 5  # the most choices of an example of any split


def test_a_delimited_file_holds_the_choices_as_a_json_array(tmp_path):
    (tmp_path / "dev.csv").write_text('context,choices,label\nc1,"[""a"", ""b""]",b\nc2,"[""a""]",1\n')
    result = read_task_file(tmp_path / "dev.csv", spec_of())
    assert [(e.texts, e.label) for e in result.examples] == [(("c1", "a", "b"), 1.0)]
    assert result.skipped == [(3, "choice index 1 is out of range 0..0")]


@pytest.mark.parametrize(("extra", "message"), [
    ({"choices_column": None}, "tasks[0].choices_column: a multiple-choice task needs the column of its choices"),
    ({"text_columns": ["a", "b"]}, "tasks[0].text_columns: a multiple-choice task reads one text column (the "
                                   "context); its choices are in choices_column"),
    ({"choices_column": "label"}, "tasks[0].choices_column: must differ from the context and label columns"),
    ({"metric": "f1"}, "tasks[0].metric: 'f1' is not a metric of a multiple-choice task (acc)"),
    ({"threshold": 0.3}, "tasks[0].threshold: a multiple-choice task does not read this key"),
])
def test_bad_keys_name_the_key(extra, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        spec_of(**extra)


def test_one_sequence_per_choice_and_the_loss_over_each_examples_choices(tmp_path):
    spec = spec_of()
    rows = [{"context": "the cat", "choices": ["sat", "flew", "swam"], "label": 0},
            {"context": "a dog", "choices": ["barked", "sang"], "label": 1}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples = read_task_file(tmp_path / "train.jsonl", spec).examples
    encoded = encode_examples(_Tokenizer(), spec, examples, 16, "bi-concat")  # always one (context, choice) sequence
    assert [len(f) for f in encoded.features] == [3, 2]
    batch = collate(encoded, [0, 1], 0)
    assert len(batch["inputs"]) == 1 and batch["inputs"][0]["input_ids"].shape[0] == 5
    assert batch["choice_counts"].tolist() == [3, 2] and len(batch["labels"]) == 2  # weighting counts examples
    packed = collate_packed(encoded, [0, 1], 0)
    assert packed["choice_counts"].tolist() == [3, 2] and torch.equal(packed["labels"], batch["labels"])

    scores = torch.tensor([1.0, 2.0, 0.5, -1.0, 3.0], requires_grad=True)
    loss = KIND.loss(spec, scores, batch["labels"])
    expected = F.cross_entropy(scores[:3][None], torch.tensor([0])) + F.cross_entropy(scores[3:][None],
                                                                                       torch.tensor([1]))
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert torch.isfinite(scores.grad).all()
    wide = spec_of()
    object.__setattr__(wide, "num_labels", 4)
    choice, probabilities = KIND.decide(wide, scores.detach(), batch)
    assert choice.tolist() == [1, 1] and probabilities.shape == (2, 4)
    torch.testing.assert_close(probabilities[1], torch.tensor([F.softmax(torch.tensor([-1.0, 3.0]), 0)[0],
                                                               F.softmax(torch.tensor([-1.0, 3.0]), 0)[1], 0, 0]))
    assert KIND.decide_scores(wide, probabilities.numpy()).tolist() == [1.0, 1.0]


class _Tokenizer:
    """Tokenizes a pair as [CLS] first [SEP] second [SEP], one id per word."""

    def __call__(self, first, second=None, **kwargs):
        ids = [[101, *(len(w) for w in a.split()), 102, *(len(w) for w in b.split()), 102]
               for a, b in zip(first, second, strict=True)]
        return {"input_ids": ids, "token_type_ids": [[0] * len(i) for i in ids]}


def test_standard_input_lines_and_votes():
    spec = spec_of()
    assert KIND.texts_from_line(spec, "ctx\ta\tb") == (("ctx", "a", "b"), None)
    assert KIND.texts_from_line(spec, "ctx")[0] is None
    assert KIND.vote(spec, np.array([[0, 2], [1, 2], [1, 0]])).tolist() == [1.0, 2.0]
    assert KIND.format_value(spec, 2.0) == "2" and KIND.check_prediction(spec, -1.0) is not None
