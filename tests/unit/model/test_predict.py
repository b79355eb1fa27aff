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
