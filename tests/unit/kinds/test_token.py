"""The token-classification kind: reading words and tags (CoNLL, JSON Lines, Parquet, `datasets`), the tag on
each word's first subword, the per-token loss, predictions per word, entity F1 as seqeval computes it, and the
prediction files."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from seqeval.metrics import f1_score

from mtbert.data import read_task_file
from mtbert.data.encoding import collate, collate_packed, encode_examples
from mtbert.data.loading import resolve_labels
from mtbert.errors import DataError
from mtbert.kinds import KINDS
from mtbert.kinds.token import IGNORED
from mtbert.tasks import task_from_config

KIND = KINDS["token-classification"]
TAGS = ("B-LOC", "B-PER", "I-LOC", "I-PER", "O")


def token_task(**overrides):
    entry = {"name": "ner", "kind": "token-classification", "train_file": "train.jsonl", "dev_file": "dev.jsonl",
             "text_columns": ["tokens"], "label_column": "tags", "head_hidden_sizes": [], **overrides}
    return task_from_config(entry, "tasks[0]")


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_conll_files_sentences_docstart_columns_and_malformed_lines(tmp_path):
    path = tmp_path / "train.conll"
    path.write_text("-DOCSTART- -X- O\n\nAlice NNP B-PER\nflew VBD O\n\n\nto\tTO\tO\nNew NNP B-LOC\nYork NNP I-LOC\n"
                    "\nBob\nran O\n", encoding="utf-8")
    result = read_task_file(path, token_task(train_file="train.conll", label_names=list(TAGS)))
    assert [(e.id, e.texts[0], e.label, e.line) for e in result.examples] == [
        ("1", ("Alice", "flew"), ("B-PER", "O"), 3), ("2", ("to", "New", "York"), ("O", "B-LOC", "I-LOC"), 7)]
    assert result.skipped == [(11, "line 11 has 1 field(s), where a word and a tag are needed")]
    second = read_task_file(path, token_task(train_file="train.conll", conll_columns=[0, 1],
                                             label_names=["NNP", "VBD", "TO", "O"]))
    assert second.examples[0].label == ("NNP", "VBD")
    words = read_task_file(path, token_task(train_file="train.conll"), labeled=False)
    assert [e.texts[0] for e in words.examples][-1] == ("Bob", "ran")
    (tmp_path / "empty.conll").write_text("\n-DOCSTART-\n\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"empty.conll, line 1: the file holds no sentence$"):
        read_task_file(tmp_path / "empty.conll", token_task())


def test_jsonl_rows_with_mismatched_or_missing_words_are_skipped_with_their_line(tmp_path, caplog):
    path = write_jsonl(tmp_path / "train.jsonl", [
        {"tokens": ["a", "b"], "tags": ["O", "B-PER"]},
        {"tokens": ["a", "b", "c"], "tags": ["O", "O"]},
        {"tokens": [], "tags": []},
        {"tokens": "x y", "tags": "B-LOC I-LOC"},
        {"tokens": ["a"], "tags": [3]},
    ])
    with caplog.at_level(logging.WARNING):
        result = read_task_file(path, token_task())
    assert [e.texts[0] for e in result.examples] == [("a", "b"), ("x", "y")]
    assert result.skipped == [(2, "3 words but 2 tags"), (3, "'tokens' is an empty sentence (no words)"),
                              (5, "tag 3 is a number that names no tag (give label_names)")]
    assert "skipped 3 of 5 rows: line 2 (3 words but 2 tags)" in caplog.text


def test_tags_are_found_in_training_and_from_a_datasets_classlabel_sequence(tmp_path):
    import datasets

    write_jsonl(tmp_path / "train.jsonl", [{"tokens": ["a", "b"], "tags": ["O", "B-PER"]},
                                           {"tokens": ["c"], "tags": ["B-LOC"]}])
    assert resolve_labels(token_task(), tmp_path).label_names == ("B-LOC", "B-PER", "O")
    features = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                                  "ner_tags": datasets.Sequence(datasets.ClassLabel(names=list(TAGS)))})
    rows = {"tokens": [["Alice", "in", "Rome"]], "ner_tags": [[1, 4, 0]]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows, features=features),
                          "validation": datasets.Dataset.from_dict(rows, features=features)}).save_to_disk(
        str(tmp_path / "conll"))
    spec = resolve_labels(token_task(train_file=None, dev_file=None, dataset=str(tmp_path / "conll"),
                                     label_column="ner_tags", test_split=None), tmp_path)
    assert spec.label_names == TAGS
    from mtbert.data.loading import read_split

    assert read_split(spec, "train", tmp_path).examples[0].label == ("B-PER", "O", "B-LOC")


def test_parquet_list_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"tokens": [["a", "b"], ["c"]], "tags": [["O", "B-PER"], ["O"]]}), tmp_path / "t.parquet")
    result = read_task_file(tmp_path / "t.parquet", token_task(train_file="t.parquet"))
    assert [(e.texts[0], e.label) for e in result.examples] == [(("a", "b"), ("O", "B-PER")), (("c",), ("O",))]


def encoded_set(tokenizer, words, tags, max_length=32, **overrides):
    from mtbert.data.rows import Example

    spec = token_task(label_names=list(TAGS), **overrides)
    examples = [Example(str(i), (tuple(w),), tuple(t) if t else None, i)
                for i, (w, t) in enumerate(zip(words, tags, strict=True))]
    return encode_examples(tokenizer, spec, examples, max_length, "cross")


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


WORDS = [["alice", "visited", "kuala", "lumpur"], ["unbelievably", "bob"]]
LABELS = [["B-PER", "O", "B-LOC", "I-LOC"], ["O", "B-PER"]]


def test_each_word_tag_goes_on_its_first_subword_or_every_subword(tokenizer):
    encoded = encoded_set(tokenizer, WORDS, LABELS)
    batch = collate(encoded, [0, 1], 0)
    names = {name: k for k, name in enumerate(TAGS)}
    for row, (words, tags) in enumerate(zip(WORDS, LABELS, strict=True)):
        word_ids = encoded.extras[row].word_ids
        firsts = [p for p, w in enumerate(word_ids) if w >= 0 and (p == 0 or word_ids[p - 1] != w)]
        labels = batch["labels"][row]
        assert [int(labels[p]) for p in firsts] == [names[t] for t in tags]
        assert int((labels != IGNORED).sum()) == len(words)
    assert any(len(set(x.word_ids)) < len(x.word_ids) - 1 for x in encoded.extras)  # a word has several subwords
    every = collate(encoded_set(tokenizer, WORDS, LABELS, label_all_subwords=True), [0, 1], 0)["labels"]
    real = torch.tensor([[w >= 0 for w in x.word_ids] + [False] * (every.shape[1] - len(x.word_ids))
                         for x in encoded.extras])
    assert bool(((every != IGNORED) == real).all())


def test_packed_and_padded_batches_give_the_same_loss_and_tags(tiny_model_dir, tokenizer):
    from mtbert.model import MultiTaskModel, load_encoder, task_loss

    encoded = encoded_set(tokenizer, WORDS * 3, LABELS * 3)
    encoder, _ = load_encoder(str(tiny_model_dir), 0.0)
    model = MultiTaskModel(encoder, [encoded.spec], "cross", "cls", 0.0).eval()
    results = []
    for batch in (collate(encoded, list(range(6)), 0), collate_packed(encoded, list(range(6)), 0, 64)):
        with torch.no_grad():
            outputs = model("ner", batch["inputs"])
        tags, scores = model.decide("ner", outputs, batch)
        results.append((float(task_loss(encoded.spec, outputs, batch["labels"])), tags, scores))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    assert torch.equal(results[0][1], results[1][1])
    assert torch.allclose(results[0][2], results[1][2], atol=1e-5)
    assert results[0][1].shape == (6, 4) and int(results[0][1][1, 2]) == -1  # padded to the most words


def test_the_loss_is_the_sum_of_each_examples_mean_over_its_words():
    spec = token_task(label_names=list(TAGS))
    outputs = torch.randn(2, 5, len(TAGS))
    labels = torch.tensor([[IGNORED, 0, 4, IGNORED, IGNORED], [IGNORED, 1, 2, 3, IGNORED]])
    ce = torch.nn.functional.cross_entropy
    expected = ce(outputs[0, 1:3], labels[0, 1:3]) + ce(outputs[1, 1:4], labels[1, 1:4])
    assert float(KIND.loss(spec, outputs, labels)) == pytest.approx(float(expected), rel=1e-6)


def test_entity_f1_is_seqevals_and_its_bootstrap_form_agrees():
    spec = token_task(label_names=list(TAGS))
    truth = [("B-PER", "O", "B-LOC", "I-LOC"), ("O", "B-PER"), ("B-LOC", "B-MISC")]  # B-MISC: never trained
    guessed = [["B-PER", "O", "B-LOC", "O"], ["I-PER", "I-PER"], ["B-LOC", "O"]]  # I- after O starts an entity
    index = {t: k for k, t in enumerate(TAGS)}
    predictions = np.empty(3, dtype=object)
    for i, g in enumerate(guessed):
        predictions[i] = np.array([index[t] for t in g])
    labels = KIND.label_array(truth)
    values = KIND.metric_values(spec, predictions, labels)
    assert values["f1"] == pytest.approx(f1_score([list(t) for t in truth], guessed), abs=1e-12)
    assert values["token_acc"] == pytest.approx(4 / 8)
    rows = np.array([[0, 1, 2], [2, 2, 0]])
    resampled = KIND.resampled_metric(spec, predictions, labels, rows)
    assert resampled[0] == pytest.approx(values["f1"])
    assert resampled[1] == pytest.approx(f1_score([list(truth[i]) for i in rows[1]], [guessed[i] for i in rows[1]]))
    assert KIND.example_correct(spec, predictions, labels).tolist() == [False, False, False]


def test_cut_words_are_reported_and_predicted_outside(tokenizer, caplog):
    with caplog.at_level(logging.WARNING):
        encoded = encoded_set(tokenizer, [["w"] * 20], [["O"] * 19 + ["B-XYZ"]], max_length=8)
    assert "14 words of 1 examples are beyond max_length (8 tokens)" in caplog.text
    assert "1 words carry 1 tags the training data does not have (B-XYZ (1))" in caplog.text
    spec = encoded.spec
    assert KIND.tag_names(spec, np.array([1, 4]), 4) == ["B-PER", "O", "O", "O"]


def test_prediction_files_round_trip(tmp_path, tokenizer):
    encoded = encoded_set(tokenizer, WORDS, [None, None])
    predictions = np.empty(2, dtype=object)
    predictions[0], predictions[1] = np.array([1, 4, 0, 2]), np.array([4])  # the second lost a word to max_length
    path = tmp_path / "ner-dev-output.jsonl"
    KIND.write_predictions(path, encoded.spec, encoded.ids, predictions, encoded.extras)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows[1] == {"id": "1", "tokens": ["unbelievably", "bob"], "tags": ["O", "O"]}
    assert path.with_suffix(".conll").read_text().split("\n\n")[1] == "unbelievably\tO\nbob\tO\n"
    back = KIND.read_predictions(path, encoded.spec)
    assert back["0"].tolist() == [1, 4, 0, 2] and back["1"].tolist() == [4, 4]
    path.write_text('{"id": "0", "tokens": ["a"], "tags": ["B-NOPE"]}\n')
    with pytest.raises(DataError, match="line 1: tag 'B-NOPE' is not a tag of task ner"):
        KIND.read_predictions(path, encoded.spec)


def test_vote_is_per_word_majority():
    spec = token_task(label_names=list(TAGS))
    members = np.empty((3, 1), dtype=object)
    members[0, 0], members[1, 0], members[2, 0] = np.array([1, 4, 0]), np.array([1, 0, 4]), np.array([3, 0, 2])
    assert KIND.vote(spec, members)[0].tolist() == [1, 0, 0]


def test_words_cut_off_by_max_length_are_predicted_outside(tiny_model_dir, tokenizer):
    from mtbert.model import MultiTaskModel, load_encoder

    encoded = encoded_set(tokenizer, [["w"] * 20, ["a", "b"]], [None, None], max_length=8)
    encoder, _ = load_encoder(str(tiny_model_dir), 0.0)
    model = MultiTaskModel(encoder, [encoded.spec], "cross", "cls", 0.0).eval()
    batch = collate(encoded, [0, 1], 0)
    with torch.no_grad():
        tags, scores = model.decide("ner", model("ner", batch["inputs"]), batch)
    predictions, probabilities = KIND.gather(2, [([0, 1], tags.numpy(), scores.numpy())])
    assert len(predictions[0]) == 20 and predictions[0][6:].tolist() == [TAGS.index("O")] * 14
    assert probabilities[0].shape == (6, len(TAGS)) and len(predictions[1]) == 2 == len(probabilities[1])
