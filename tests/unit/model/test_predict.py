"""`MultiTaskModel.predict(task, texts)`: the outputs of `mtbert predict` for the same examples, in input order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtbert.data import encode_examples
from mtbert.data.rows import Example
from mtbert.errors import MtbertError
from mtbert.evaluation.predict import format_value
from mtbert.model import MultiTaskModel, load_encoder
from mtbert.model.inference import predict_set
from mtbert.tasks import BUILTIN_TASKS, task_from_config

SENTENCES = ["great fun love the film", "awful", "a dull plot and a very bad actor, what a waste", "good movie"]
PAIRS = [("a man plays", "a man plays"), ("the cat eats", "a woman runs fast"), ("love", "hate the dull story")]


@pytest.fixture(scope="module")
def saved(tiny_model_dir, tmp_path_factory):
    """A model of sst, para, sts and a named-label task, saved and loaded as a run's best/ (max_length 24)."""
    encoder, tokenizer = load_encoder(str(tiny_model_dir), 0.1)
    mood = task_from_config({"name": "mood", "kind": "single", "train_file": "x", "dev_file": "y",
                             "text_columns": ["text"], "label_names": ["negative", "positive"]}, "tasks[3]")
    specs = [BUILTIN_TASKS[t] for t in ("sst", "para", "sts")] + [mood]
    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("run")
    MultiTaskModel(encoder, specs).save_pretrained(run / "best", tokenizer)
    (run / "config.yaml").write_text("max_length: 24\n")
    return MultiTaskModel.from_pretrained(run / "best"), tokenizer


@pytest.mark.parametrize(("task", "texts"), [("sst", SENTENCES), ("para", PAIRS), ("sts", PAIRS),
                                             ("mood", SENTENCES)])
def test_predict_equals_the_prediction_path_of_mtbert_predict(saved, task, texts):
    model, tokenizer = saved
    assert model.max_length == 24
    was_training = model.training
    got = model.predict(task, texts, batch_size=2)  # dropout off inside, the mode restored after
    assert model.training == was_training
    spec = model.specs[task]
    examples = [Example(str(i), (t,) if isinstance(t, str) else tuple(t), None, i) for i, t in enumerate(texts)]
    encoded = encode_examples(tokenizer, spec, examples, 24, model.pair_architecture)
    predictions, scores = predict_set(model, encoded, 2, tokenizer.pad_token_id)
    np.testing.assert_allclose(got.scores, scores, atol=1e-6, rtol=0)
    assert len(got) == len(texts) and got.task == task
    np.testing.assert_allclose(got.predictions, predictions, atol=1e-6, rtol=0)
    assert got.labels == [format_value(spec, p) for p in predictions]  # as `mtbert predict` writes them
    if task == "mood":
        assert set(got.labels) <= {"negative", "positive"}
    one_by_one = [model.predict(task, [t]).scores[0] for t in texts]  # batching changes nothing
    np.testing.assert_allclose(np.stack(one_by_one), got.scores, atol=1e-5, rtol=0)


def test_predict_refuses_what_it_cannot_predict(saved):
    model, _ = saved
    with pytest.raises(MtbertError, match=r"^task: the model has no task 'nli' \(tasks: sst, para, sts, mood\)$"):
        model.predict("nli", SENTENCES)
    with pytest.raises(MtbertError, match=r"^texts\[0\]: task para takes a pair of texts \(a, b\) per example"):
        model.predict("para", SENTENCES)
    with pytest.raises(MtbertError, match=r"^texts\[1\]: task sst takes one text \(a string\) per example"):
        model.predict("sst", ["fine", ("a", "b")])
    with pytest.raises(MtbertError, match=r"^texts: give a list of texts, not str$"):
        model.predict("sst", "one string")
    bare = MultiTaskModel(model.encoder, list(model.specs.values()))
    with pytest.raises(MtbertError, match=r"^predict: the model has no tokenizer"):
        bare.predict("sst", SENTENCES)


# ---- a multiple-choice task: (context, [choices]) in, the chosen index and choice out --------------------------

CHOICE = {"name": "ending", "kind": "multiple-choice", "train_file": "choice-train.jsonl",
          "dev_file": "choice-dev.jsonl", "text_columns": ["context"], "choices_column": "choices",
          "label_column": "label", "head_hidden_sizes": []}
QUESTIONS = [("It started to rain, so they opened an", ["umbrella", "oven", "envelope"]),
             ("The farmer milked the", ["fence", "cow"]),
             ("We keep milk cold in the", ["fridge", "drawer", "oven", "sky above the hills"])]


@pytest.fixture(scope="module")
def choice_run(tiny_model_dir, tmp_path_factory):
    """A run folder (config.yaml, best/) of one multiple-choice task on the tiny model, its head random."""
    import dataclasses

    from mtbert.config import build_config, save_config

    run = tmp_path_factory.mktemp("choice-run")
    save_config(build_config({"output_dir": str(run), "model_name_or_path": str(tiny_model_dir),
                              "data_dir": str(run), "tasks": [CHOICE], "method": "single", "max_length": 24,
                              "per_device_eval_batch_size": 2}), run / "config.yaml")
    encoder, tokenizer = load_encoder(str(tiny_model_dir), 0.1)
    spec = dataclasses.replace(task_from_config(CHOICE, "tasks[0]"), num_labels=3)  # the most choices in training
    torch.manual_seed(1)
    MultiTaskModel(encoder, [spec]).save_pretrained(run / "best", tokenizer)
    return run


def test_multiple_choice_predict_returns_the_chosen_index_choice_and_scores_as_mtbert_predict(choice_run, tmp_path,
                                                                                             monkeypatch, capsys):
    import io
    import json

    from mtbert.cli import main
    from mtbert.evaluation.predict import read_cs224n

    model = MultiTaskModel.from_pretrained(choice_run / "best")
    got = model.predict("ending", QUESTIONS, batch_size=2)
    assert got.task == "ending" and len(got) == 3
    chosen = got.predictions.astype(int)
    assert got.labels == [str(k) for k in chosen]  # as `mtbert predict` writes them: the chosen index
    assert got.answers == [choices[k] for (_, choices), k in zip(QUESTIONS, chosen, strict=True)]
    assert got.scores.shape == (3, 4)  # the softmax over each input's choices, 0 past its last choice
    for (_, choices), row, k in zip(QUESTIONS, got.scores, chosen, strict=True):
        assert row[:len(choices)].sum() == pytest.approx(1.0, abs=1e-6) and not row[len(choices):].any()
        assert row.argmax() == k and len(set(np.round(row[:len(choices)], 6))) == len(choices)  # no tie decides
    one_by_one = [model.predict("ending", [q]) for q in QUESTIONS]  # batching changes nothing
    for single, row in zip(one_by_one, got.scores, strict=True):
        np.testing.assert_allclose(single.scores[0], row[:single.scores.shape[1]], atol=1e-5, rtol=0)

    # `mtbert predict` on a file of the same inputs, and on standard input, writes the same choices
    source = tmp_path / "questions.jsonl"
    source.write_text("".join(json.dumps({"id": f"q{i}", "context": c, "choices": ch}) + "\n"
                              for i, (c, ch) in enumerate(QUESTIONS)))
    out = tmp_path / "out.csv"
    assert main(["predict", str(choice_run), "--task", "ending", "--input", str(source), "--output", str(out)]) == 0
    assert read_cs224n(out)[1] == {f"q{i}": float(k) for i, k in enumerate(chosen)}
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO("".join("\t".join([c, *ch]) + "\n" for c, ch in QUESTIONS)))
    assert main(["predict", str(choice_run), "--task", "ending", "--input", "-", "--output", "-"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{i + 1}\t{label}" for i, label in enumerate(got.labels)]


def test_multiple_choice_predict_refuses_what_is_not_a_context_and_its_choices(choice_run):
    model = MultiTaskModel.from_pretrained(choice_run / "best")
    want = r"takes a context and the list of its choices \(context, \[choice, \.\.\.\]\) per example"
    for bad in ("just a context", ("a context", "one choice as text"), ("a context", []), ("c", ["a", 3]),
                ("c", ["a"], "extra")):
        with pytest.raises(MtbertError, match=rf"^texts\[0\]: task ending {want}"):
            model.predict("ending", [bad])
    with pytest.raises(MtbertError, match=rf"^texts\[0\]: task ending {want}, not 'It started to rain"):
        model.predict("ending", QUESTIONS[0])  # one input, not a list of them
    with pytest.raises(MtbertError, match=r"^texts: give a list of \(context, \[choice, \.\.\.\]\) pairs, not str$"):
        model.predict("ending", "a context")


def test_token_task_predict_takes_words_or_a_sentence_split_on_whitespace(tiny_model_dir, tmp_path):
    """A string is split into words as `mtbert predict --input -` splits a line (not read as characters)."""
    encoder, tokenizer = load_encoder(str(tiny_model_dir), 0.1)
    slots = task_from_config({"name": "slots", "kind": "token-classification", "train_file": "t.jsonl",
                              "dev_file": "d.jsonl", "text_columns": ["tokens"], "label_column": "tags",
                              "label_names": ["B-LOC", "I-LOC", "O"], "head_hidden_sizes": []}, "tasks[0]")
    torch.manual_seed(0)
    MultiTaskModel(encoder, [slots]).save_pretrained(tmp_path / "best", tokenizer)
    model = MultiTaskModel.from_pretrained(tmp_path / "best")
    got = model.predict("slots", ["play some  jazz in Paris", ["play", "jazz"]])
    assert [len(tags) for tags in got.predictions] == [5, 2] and got.answers is None
    assert [len(label.split()) for label in got.labels] == [5, 2]
    words = [Example("0", (("play", "some", "jazz", "in", "Paris"),), None, 1),
             Example("1", (("play", "jazz"),), None, 2)]
    predictions, _ = predict_set(model, encode_examples(tokenizer, slots, words, 128, "cross"), 64, 0)
    assert [p.tolist() for p in got.predictions] == [p.tolist() for p in predictions]
    with pytest.raises(MtbertError, match=r"^texts\[0\]: task slots takes a sentence \(a list of words, or a string"):
        model.predict("slots", ["   "])
