"""Constrained decoding of token tasks: the allowed transitions of BIO and IOBES, and the Viterbi search."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pytest
import torch

from mtbert.data.encoding import collate
from mtbert.errors import ConfigError, DataError
from mtbert.kinds import KINDS
from mtbert.kinds.tag_scheme import best_tags, scheme_problem, transitions
from mtbert.kinds.token import allows
from mtbert.tasks import task_from_config

KIND = KINDS["token-classification"]
BIO = ("B-LOC", "B-PER", "I-LOC", "I-PER", "O")
IOBES = ("B-PER", "E-PER", "I-PER", "O", "S-PER")


def valid_bio(tags):
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and not (previous[:2] in ("B-", "I-") and previous[2:] == tag[2:]):
            return False
        previous = tag
    return True


def valid_iobes(tags):
    previous = "O"
    for tag in tags:
        opened = previous[:2] in ("B-", "I-")
        if tag[:2] in ("I-", "E-") and not (opened and previous[2:] == tag[2:]):
            return False
        if tag[:2] in ("B-", "S-") or tag == "O":
            if opened:
                return False
        previous = tag
    return previous[:2] not in ("B-", "I-")


@pytest.mark.parametrize(("names", "valid"), [(BIO, valid_bio), (IOBES, valid_iobes)])
def test_viterbi_is_the_most_probable_valid_sequence_by_exhaustive_search(names, valid):
    allowed = transitions(names)
    rng = np.random.default_rng(0)
    for words in (1, 2, 3, 4):
        for _ in range(20):
            probabilities = rng.dirichlet(np.ones(len(names)) * 0.3, size=words)
            best = max((seq for seq in itertools.product(range(len(names)), repeat=words)
                        if valid([names[k] for k in seq])),
                       key=lambda seq: np.prod([probabilities[t, k] for t, k in enumerate(seq)]))
            found = best_tags(probabilities, allowed)
            assert tuple(found) == best
            assert allows(allowed, task(label_names=list(names)), [names[k] for k in found])


def test_an_argmax_that_is_already_valid_is_kept():
    allowed = transitions(BIO)
    probabilities = np.full((3, 5), 0.05)
    probabilities[[0, 1, 2], [1, 3, 4]] = 0.8  # B-PER I-PER O
    assert best_tags(probabilities, allowed).tolist() == [1, 3, 4]
    probabilities[0] = [0.05, 0.05, 0.05, 0.05, 0.8]  # O I-PER O: the argmax breaks BIO
    assert [BIO[k] for k in best_tags(probabilities, allowed)] != ["O", "I-PER", "O"]


def test_bilou_reads_as_iobes_and_bad_tag_sets_are_named():
    assert transitions(("B-X", "I-X", "L-X", "U-X", "O")).end.tolist() == [-np.inf, -np.inf, 0, 0, 0]
    assert "tag 'PER' is neither O nor" in scheme_problem(("O", "PER"))
    assert "mix the IOBES and BILOU prefixes" in scheme_problem(("O", "B-X", "E-X", "L-X"))
    with pytest.raises(ValueError, match="tag 'X-'"):
        transitions(("O", "X-"))


def task(**overrides):
    entry = {"name": "ner", "kind": "token-classification", "train_file": "train.jsonl", "dev_file": "dev.jsonl",
             "text_columns": ["tokens"], "label_column": "tags", "head_hidden_sizes": [], **overrides}
    return task_from_config(entry, "tasks[0]")


def test_the_config_key_is_checked():
    with pytest.raises(ConfigError, match=r"tasks\[0\].constrained_decoding: must be true or false"):
        task(constrained_decoding="yes")
    with pytest.raises(ConfigError, match=r"constrained_decoding: needs BIO or IOBES tags, but tag 'PER'"):
        task(constrained_decoding=True, label_names=["O", "PER"])
    with pytest.raises(ConfigError, match="constrained_decoding"):
        task_from_config({"name": "s", "kind": "single", "train_file": "t.csv", "constrained_decoding": True},
                         "tasks[1]")


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def encode(tokenizer, words, tags, names=BIO, **overrides):
    import dataclasses

    from mtbert.data.encoding import encode_examples
    from mtbert.data.rows import Example

    spec = dataclasses.replace(task(**overrides), label_names=tuple(names))  # as if found in the training data
    examples = [Example(str(i), (tuple(w),), tuple(t) if t else None, i)
                for i, (w, t) in enumerate(zip(words, tags, strict=True))]
    return encode_examples(tokenizer, spec, examples, 32, "cross")


def test_tags_found_in_the_data_are_checked_and_broken_gold_sequences_warned(tokenizer, caplog):
    with pytest.raises(DataError, match="task ner: constrained_decoding needs BIO or IOBES tags, but tag 'PER'"):
        encode(tokenizer, [["bob"]], [["PER"]], names=("O", "PER"), constrained_decoding=True)
    with caplog.at_level(logging.WARNING):
        encode(tokenizer, [["bob", "smith"], ["in", "paris"]], [["B-PER", "I-PER"], ["O", "I-LOC"]],
               constrained_decoding=True)
    assert "the tags of 1 examples (the first: id 1) break the rules of their scheme" in caplog.text


def test_decide_and_an_ensembles_scores_decode_the_same_valid_sequence(tiny_model_dir, tokenizer):
    from mtbert.model import MultiTaskModel, load_encoder

    words = [["alice", "visited", "kuala", "lumpur", "and", "bob"]] * 4
    free = encode(tokenizer, words, [None] * 4)
    constrained = encode(tokenizer, words, [None] * 4, constrained_decoding=True)
    torch.manual_seed(0)
    encoder, _ = load_encoder(str(tiny_model_dir), 0.0)
    model = MultiTaskModel(encoder, [free.spec], "cross", "cls", 0.0).eval()
    with torch.no_grad():  # a random head, made to prefer I- tags so that the argmax breaks BIO
        model.heads["ner"].mlp[-1].bias.copy_(torch.tensor([0.0, 0.0, 3.0, 3.0, 0.0]))
        batch = collate(free, [0, 1, 2, 3], 0)
        outputs = model("ner", batch["inputs"])
    argmax_tags, scores = KIND.decide(free.spec, outputs, batch)
    tags, same_scores = KIND.decide(constrained.spec, outputs, batch)
    assert torch.equal(scores, same_scores)
    assert not all(valid_bio([BIO[k] for k in row]) for row in argmax_tags.tolist())
    assert all(valid_bio([BIO[k] for k in row]) for row in tags.tolist())
    stacked = np.empty(4, dtype=object)
    for i in range(4):
        stacked[i] = scores[i].numpy()
    assert [r.tolist() for r in KIND.decide_scores(constrained.spec, stacked)] == tags.tolist()
    assert [r.tolist() for r in KIND.decide_scores(free.spec, stacked)] == argmax_tags.tolist()
