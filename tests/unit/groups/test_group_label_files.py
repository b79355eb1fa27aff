"""A joint task given as CoNLL tags plus an intent file (`label_files`, line-aligned or id-keyed) trains, evaluates
and predicts exactly as the same data given as one JSON Lines file; each bad label file or config is one sentence
(exit code 2) before anything is written; and the shipped example (configs/examples/joint-conll.yaml) runs."""

from __future__ import annotations

import io
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from mtbert.cli import main
from mtbert.config import build_config
from mtbert.errors import ConfigError
from mtbert.training.run import train

ROOT = Path(__file__).resolve().parents[3]
METRICS = ("intent_acc", "intent_macro_f1", "slots_f1", "slots_precision", "slots_recall", "slots_token_acc",
           "joint_frame_acc", "overall")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, joint_config) -> dict[str, Path]:
    """The same 4 steps trained from the JSON Lines files and from the CoNLL files with their intent files."""
    out = {}
    for name, two_files in (("jsonl", False), ("conll", True)):
        folder = tmp_path_factory.mktemp(f"joint-{name}") / "run"
        train(build_config(joint_config(two_files, folder)))
        out[name] = folder
    return out


def test_the_two_files_load_as_the_one_file(joint_config, tiny_model_dir, tmp_path):
    """Every split of both tasks: the same ids, encoder inputs and labels (the intents of the shuffled id-keyed
    dev file matched to their sentences)."""
    from transformers import AutoTokenizer

    from mtbert.data import load_task_data

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    one, two = (load_task_data(cfg.task_specs(), cfg.resolved_data_dir(), tokenizer, 32, cfg.pair_architecture)
                for cfg in (build_config(joint_config(f, tmp_path / "run")) for f in (False, True)))
    for task in ("intent", "slots"):
        assert one[task].spec.label_names == two[task].spec.label_names
        for split in ("train", "dev", "test"):
            a, b = getattr(one[task], split), getattr(two[task], split)
            assert len(a) == (6 if split == "test" else 40)
            assert (a.ids, a.features, a.labels) == (b.ids, b.features, b.labels), (task, split)
    assert len(set(one["intent"].dev.labels)) == 2


def test_the_two_file_group_trains_as_the_one_file_group(runs):
    one, two = (json.loads((runs[k] / "results.json").read_text()) for k in ("jsonl", "conll"))
    assert 0 <= two["joint_frame_acc"] <= min(two["intent_acc"], two["slots_token_acc"])
    for key in METRICS:
        assert two[key] == pytest.approx(one[key], abs=1e-12), key
    for name in ("intent-dev-output.csv", "intent-test-output.csv", "slots-dev-output.jsonl",
                 "slots-test-output.jsonl"):  # the same ids (sentence numbers, line numbers): the same files
        assert (runs["conll"] / "predictions" / name).read_text() == (runs["jsonl"] / "predictions" / name).read_text()


def test_evaluate_scores_dev_from_the_conll_and_intent_files(runs, tmp_path):
    for name in ("jsonl", "conll"):
        assert main(["evaluate", str(runs[name]), "--json", str(tmp_path / f"{name}.json")]) == 0
    results = json.loads((runs["conll"] / "results.json").read_text())
    one, two = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("jsonl", "conll"))
    for key in METRICS:
        assert two[key] == pytest.approx(results[key], abs=1e-9), key
        assert two[key] == pytest.approx(one[key], abs=1e-9), key


def test_an_ensemble_scores_dev_from_the_conll_and_intent_files(runs, tmp_path):
    out = tmp_path / "ensemble"
    assert main(["ensemble", str(runs["conll"]), str(runs["conll"]), "--output_dir", str(out)]) == 0
    results = json.loads((runs["conll"] / "results.json").read_text())
    ensemble = json.loads((out / "results.json").read_text())["ensemble"]
    for key in ("intent_acc", "slots_f1"):  # one member twice: its own dev metrics, labels read from both files
        assert ensemble[key] == pytest.approx(results[key], abs=1e-9), key


def test_predict_group_reads_a_conll_file_or_json_lines(runs, joint_data_dir, tmp_path):
    outputs = {}
    for suffix in ("conll", "jsonl"):
        out = tmp_path / f"{suffix}.jsonl"
        assert main(["predict", str(runs["conll"]), "--group", "joint", "--input",
                     str(joint_data_dir / f"joint-dev.{suffix}"), "--output", str(out)]) == 0
        outputs[suffix] = [json.loads(line) for line in out.read_text().splitlines()]
    assert outputs["conll"] == outputs["jsonl"]
    rows = outputs["conll"]
    source = [json.loads(line) for line in (joint_data_dir / "joint-dev.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [str(k) for k in range(1, len(source) + 1)]
    assert [r["tokens"] for r in rows] == [s["tokens"] for s in source]
    dev = (runs["conll"] / "predictions" / "intent-dev-output.csv").read_text().splitlines()[1:]
    assert [r["intent"] for r in rows] == [line.split(",")[1].strip() for line in dev]
    tags = [json.loads(line)["tags"] for line in
            (runs["conll"] / "predictions" / "slots-dev-output.jsonl").read_text().splitlines()]
    assert [r["slots"] for r in rows] == tags and all(len(r["slots"]) == len(r["tokens"]) for r in rows)


# ---- bad inputs: one sentence naming the file and line, exit code 2, nothing written ----------------------------
def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


BAD_FILES = [  # (which label file, how it is changed, the message after "<file>, line ")
    ("txt", lambda lines: lines[:-1], r"40: 39 labels for the 40 sentences of .*joint-train\.conll; a line-aligned "
                                      r"label file holds one label per sentence, line k for the k-th$"),
    ("txt", lambda lines: [*lines, "play\n"], r"41: 41 labels for the 40 sentences of .*joint-train\.conll;"),
    ("txt", lambda lines: [lines[0], "\n", *lines[1:]], r"2: an empty line; a label file gives one sentence's label "
                                                       "per line$"),
    ("txt", lambda lines: [*lines[:4], "5\tplay\n", *lines[5:]], r"5: a tab, but line 1 has none; give one label "
                                                                 r"per line, or id<TAB>label on every line$"),
    ("tsv", lambda lines: [*lines, "41\tplay\n"], r"41: id 41 names no sentence of .*joint-dev\.conll \(its sentences "
                                                  r"are 1 to 40\)$"),
    ("tsv", lambda lines: [*lines, "007\tplay\n"], r"41: id 007 names no sentence of"),
    ("tsv", lambda lines: [*lines, lines[2]], r"41: sentence \d+ again \(first on line 3\)$"),
    ("tsv", lambda lines: [*lines[:6], "3 play\n", *lines[7:]], r"7: expected id<TAB>label \(line 1 has a tab"),
]


def _train_fails(config: dict, tmp_path: Path, capsys) -> str:
    """Train `config` from the command line: exit code 2, nothing written; the one line of stderr."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    capsys.readouterr()
    assert main(["train", str(path)]) == 2
    assert not Path(config["output_dir"]).exists()
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err[len("error: "):]


@pytest.mark.parametrize(("which", "change", "message"), BAD_FILES)
def test_a_bad_label_file_is_one_sentence_before_anything_is_written(which, change, message, joint_config,
                                                                    joint_data_dir, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for path in joint_data_dir.iterdir():
        (data / path.name).write_bytes(path.read_bytes())
    name = "joint-train-intent.txt" if which == "txt" else "joint-dev-intent.tsv"
    (data / name).write_text("".join(change(_lines(data / name))))
    config = {**joint_config(True, tmp_path / "run"), "data_dir": str(data)}
    err = _train_fails(config, tmp_path, capsys)
    assert err.startswith(f"{data / name}, line "), err
    assert re.search(message, err[len(f"{data / name}, line "):]), err


def test_a_missing_id_and_a_missing_label_file_are_one_sentence(joint_config, joint_data_dir, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for path in joint_data_dir.iterdir():
        (data / path.name).write_bytes(path.read_bytes())
    keyed = _lines(data / "joint-dev-intent.tsv")
    gone = int(keyed[5].split("\t")[0])
    (data / "joint-dev-intent.tsv").write_text("".join(keyed[:5] + keyed[6:]))
    start = 1 + sum(len(block.splitlines()) + 1 for block in
                    (data / "joint-dev.conll").read_text().split("\n\n")[:gone - 1])  # the sentence's first line
    config = {**joint_config(True, tmp_path / "run"), "data_dir": str(data)}
    assert _train_fails(config, tmp_path, capsys) == (
        f"{data / 'joint-dev-intent.tsv'}: no label for sentence {gone} of {data / 'joint-dev.conll'} (its line "
        f"{start}); an id-keyed label file gives every sentence's id and label")
    (data / "joint-train-intent.txt").unlink()
    assert _train_fails(config, tmp_path, capsys) == (
        f"{data / 'joint-train-intent.txt'}: file not found (label_files are relative to data_dir)")


def test_a_label_the_task_cannot_read_skips_its_sentence(joint_tasks, joint_data_dir, tmp_path):
    from mtbert.data.loading import read_split
    from mtbert.tasks import task_from_config

    data = tmp_path / "data"
    data.mkdir()
    for path in joint_data_dir.iterdir():
        (data / path.name).write_bytes(path.read_bytes())
    lines = _lines(data / "joint-dev-intent.txt")
    (data / "joint-dev-intent.txt").write_text("".join([lines[0], "dance\n", *lines[2:]]))
    intent = task_from_config({**joint_tasks(True)[0], "label_names": ["book", "play"],
                               "label_files": {"train": "joint-train-intent.txt", "dev": "joint-dev-intent.txt"}},
                              "tasks[0]")
    result = read_split(intent, "dev", data)
    assert [e.id for e in result.examples] == [str(k) for k in range(1, 41) if k != 2]
    second = len((data / "joint-dev.conll").read_text().split("\n\n")[0].splitlines()) + 2  # sentence 2, line 1
    assert result.skipped == [(second, "joint-dev-intent.txt, line 2: label 'dance' is not one of the label_names "
                                       "(book, play)")]
    assert all(isinstance(e.texts[0], str) and e.texts[0].split() for e in result.examples)  # the words as one text


# ---- the config: label_files where a CoNLL file gives a sentence task its words --------------------------------
BAD_CONFIGS = [
    ({"label_files": None}, r"^tasks\[0\]\.label_files: task intent reads the words of the CoNLL file "
                            r"joint-train\.conll \(train_file\) and needs its labels from a second file per split, "
                            r"such as \{train: train-labels\.txt, dev: dev-labels\.txt\}$"),
    ({"label_files": ["a.txt"]}, r"^tasks\[0\]\.label_files: must be a mapping of split to file"),
    ({"label_files": {"train": "joint-train-intent.txt", "test": "t.txt"}},
     r"^tasks\[0\]\.label_files\.test: not a split with labels; give train and dev \(test is predicted\)$"),
    ({"label_files": {"train": 3}}, r"^tasks\[0\]\.label_files\.train: must be a file name$"),
    ({"train_file": "joint-train.jsonl", "label_column": "intent"},
     r"^tasks\[0\]\.label_files\.train: labels the sentences of a CoNLL train_file \(\.conll, \.bio, \.iob, "
     r"\.conllu\), but train_file is 'joint-train\.jsonl'$"),
    ({"kind": "pair-classification", "text_columns": ["a", "b"]},
     r"^tasks\[0\]\.label_files: a pair-classification task does not read labels from a second file"),
]


@pytest.mark.parametrize(("change", "message"), BAD_CONFIGS)
def test_label_files_are_checked_with_the_config(change, message, joint_tasks):
    tasks = joint_tasks(True)
    tasks[0] = {**tasks[0], **change}
    with pytest.raises(ConfigError, match=message):
        build_config({"tasks": tasks})


def test_label_files_on_a_token_task_and_a_group_reading_other_conll_files_are_refused(joint_tasks, tmp_path,
                                                                                      capsys):
    tasks = joint_tasks(True)
    tasks[1] = {**tasks[1], "label_files": {"train": "joint-train-intent.txt"}}
    with pytest.raises(ConfigError, match=r"^tasks\[1\]\.label_files: a token-classification task does not read "
                                          "labels from a second file"):
        build_config({"tasks": tasks})
    tasks = joint_tasks(True)
    tasks[1] = {**tasks[1], "dev_file": "other-dev.conll"}  # the slots of other sentences than the intents'
    config = {"output_dir": str(tmp_path / "run"), "tasks": tasks}
    assert _train_fails(config, tmp_path, capsys) == (
        "tasks[1].input_group: task slots has dev_file 'other-dev.conll' but task intent of input_group 'joint' has "
        "'joint-dev.conll'; the tasks of a group read the same data (files, or dataset, dataset_config and splits), "
        "id_column and text_columns")


def test_a_conll_file_given_for_a_label_file_task_elsewhere_is_one_sentence(runs, joint_data_dir, capsys):
    """`mtbert evaluate RUN --task_file intent FILE` takes a labeled file of another format, not a CoNLL file (it
    holds no intents)."""
    capsys.readouterr()
    assert main(["evaluate", str(runs["conll"]), "--task_file", "intent", str(joint_data_dir / "joint-dev.conll")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {joint_data_dir / 'joint-dev.conll'}: a CoNLL file holds words and their tags, not the labels of "
        "the single task intent; give them in a second file (the task's label_files)")


# ---- the shipped example ------------------------------------------------------------------------------------
def test_the_joint_conll_example_trains_and_predicts_by_config_alone(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    run = tmp_path / "run"
    assert main(["train", "configs/examples/joint-conll.yaml", "--output_dir", str(run), "--model_name_or_path",
                 str(tiny_model_dir), "--num_train_epochs", "1"]) == 0
    results = json.loads((run / "results.json").read_text())
    assert {"intent_acc", "slots_f1", "assistant_frame_acc"} <= set(results)
    data = ROOT / "configs" / "examples" / "data"
    intents = (data / "assistant-dev-intent.txt").read_text().split()
    assert len((run / "predictions" / "intent-dev-output.csv").read_text().splitlines()) == len(intents) + 1
    capsys.readouterr()
    assert main(["predict", str(run), "--group", "assistant", "--input",
                 "configs/examples/data/assistant-test.conll", "--output", "-"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    sentences = (data / "assistant-test.conll").read_text().strip().split("\n\n")
    assert [r["tokens"] for r in rows] == [block.split() for block in sentences]
    assert all(set(r) == {"id", "tokens", "intent", "slots"} and len(r["slots"]) == len(r["tokens"]) for r in rows)
    assert {r["intent"] for r in rows} <= set(intents)
    monkeypatch.setattr(sys, "stdin", io.StringIO("play some adele\n"))
    assert main(["predict", str(run), "--group", "assistant", "--input", "-", "--output", "-"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["tokens"] == ["play", "some", "adele"] and len(row["slots"]) == 3


def test_the_tasks_of_a_conll_group_read_the_same_word_column(joint_tasks):
    tasks = joint_tasks(True)
    tasks[1] = {**tasks[1], "conll_columns": [1, 2]}
    with pytest.raises(ConfigError, match=r"^tasks\[1\]\.input_group: task slots reads its words from CoNLL column 1 "
                                          r"but task intent of input_group 'joint' from column 0; the tasks of a group "
                                          r"read the same words \(a task with label_files reads the first column\)$"):
        build_config({"tasks": tasks})
    tasks[1] = {**tasks[1], "conll_columns": [0, 1]}
    assert [s.name for s in build_config({"tasks": tasks}).task_specs()] == ["intent", "slots"]


def test_evaluate_keeps_the_rows_every_task_of_the_group_read(runs, joint_data_dir, tmp_path, caplog):
    """A dev sentence whose tag is missing is skipped by the slots and so left out of the intent too, as in
    training: the frame accuracy compares the same 39 sentences."""
    data, run = tmp_path / "data", tmp_path / "run"
    shutil.copytree(joint_data_dir, data)
    shutil.copytree(runs["conll"], run)
    blocks = (data / "joint-dev.conll").read_text().split("\n\n")
    blocks[2] = blocks[2].split("\t")[0] + "\n" + blocks[2].split("\n", 1)[1]  # its first word without its tag
    (data / "joint-dev.conll").write_text("\n\n".join(blocks))
    config = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**config, "data_dir": str(data)}))
    assert main(["evaluate", str(run), "--json", str(tmp_path / "e.json")]) == 0
    metrics = json.loads((tmp_path / "e.json").read_text())
    assert "input_group joint: 1 rows of task intent are left out: another task of the group skipped" in caplog.text
    assert 0 <= metrics["joint_frame_acc"] <= metrics["intent_acc"]


def test_multi_label_and_regression_tasks_read_their_labels_from_a_label_file(tmp_path):
    from mtbert.data.loading import read_split, resolve_labels
    from mtbert.tasks import task_from_config

    (tmp_path / "s.conll").write_text("play\tO\nadele\tB-artist\n\nrain\tO\nin\tO\nparis\tB-city\n")
    (tmp_path / "topics.txt").write_text("music#fun\nweather\n")
    (tmp_path / "scores.tsv").write_text("2\t0.25\n1\t4.5\n")
    common = {"train_file": "s.conll", "dev_file": "s.conll"}
    topics = task_from_config({"name": "topics", "kind": "multi-label", "label_separator": "#", **common,
                               "label_files": {"train": "topics.txt", "dev": "topics.txt"}}, "tasks[0]")
    topics = resolve_labels(topics, tmp_path)
    assert topics.label_names == ("fun", "music", "weather")
    result = read_split(topics, "dev", tmp_path)
    assert [(e.texts, e.label) for e in result.examples] == [(("play adele",), 3.0), (("rain in paris",), 4.0)]
    score = task_from_config({"name": "score", "kind": "single-regression", **common,
                              "label_files": {"train": "scores.tsv", "dev": "scores.tsv"}}, "tasks[0]")
    assert [e.label for e in read_split(score, "train", tmp_path).examples] == [4.5, 0.25]
