"""Tests of mtbert.evaluation.ensemble: the CS224N report's vote rules and the soft average."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import sklearn.metrics
from scipy.stats import pearsonr

from mtbert.config import build_config, save_config
from mtbert.errors import ConfigError, MtbertError
from mtbert.evaluation.ensemble import majority, run_ensemble, vote
from mtbert.evaluation.predict import read_cs224n, write_cs224n, write_scores
from mtbert.tasks import BUILTIN_TASKS, TaskSpec, task_from_config

SST, PARA, STS = BUILTIN_TASKS["sst"], BUILTIN_TASKS["para"], BUILTIN_TASKS["sts"]


@pytest.fixture(autouse=True)
def fast_accuracy(monkeypatch):
    """The same accuracy without scikit-learn's per-call validation (the bootstrap calls it 3000 times)."""
    monkeypatch.setattr(sklearn.metrics, "accuracy_score",
                        lambda y, p: float(np.mean(np.asarray(y) == np.asarray(p))))


@pytest.fixture()
def no_data(tmp_path, monkeypatch) -> Path:
    """An empty data folder as $MTBERT_DATA: no dev labels, so no metrics."""
    folder = tmp_path / "no-data"
    folder.mkdir()
    monkeypatch.setenv("MTBERT_DATA", str(folder))
    return folder


def write_labels(folder: Path, labels: dict[str, dict[str, float]]) -> Path:
    """Dev files in the CS224N layout with the given {task: {id: label}}."""
    folder.mkdir(parents=True, exist_ok=True)
    for task, rows in labels.items():
        spec = BUILTIN_TASKS[task]
        lines = ["\t".join(["", spec.id_column, *spec.text_columns, spec.label_column])]
        for k, (example_id, label) in enumerate(rows.items()):
            lines.append("\t".join([str(k), example_id, *(["some words"] * len(spec.text_columns)), str(label)]))
        (folder / spec.dev_file).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def write_predictions(folder: Path, predictions: dict[str, dict[str, float]], split: str = "dev") -> Path:
    """A predictions/ folder with one CS224N file per task: {task: {id: prediction}}."""
    for task, rows in predictions.items():
        spec = BUILTIN_TASKS[task]
        write_cs224n(folder / f"{task}-{split}-output.csv", spec, list(rows), np.array(list(rows.values())))
    return folder


def write_run(folder: Path, scores: dict[str, dict[str, list[float]]], data_dir: Path, **config) -> Path:
    """A run folder with config.yaml and scores/: {task: {id: row of scores}}."""
    save_config(build_config({"output_dir": str(folder), "data_dir": str(data_dir), **config}), folder / "config.yaml")
    for task, rows in scores.items():
        spec = BUILTIN_TASKS[task]
        write_scores(folder / "scores" / f"{task}-dev.tsv", spec, list(rows), np.array(list(rows.values())))
    return folder


def read_output(folder: Path, task: str, split: str = "dev") -> dict[str, float]:
    return read_cs224n(folder / f"{task}-{split}-output.csv")[1]


# ---- the rules on arrays -------------------------------------------------------------------------


def test_single_sentence_rounds_the_mean_half_up():
    predictions = np.array([[2, 1, 0, 4, 0], [3, 2, 0, 3, 1]])  # means 2.5, 1.5, 0, 3.5, 0.5
    assert vote(SST, predictions).tolist() == [3, 2, 0, 4, 1]
    three = np.array([[0, 4, 2], [1, 4, 3], [1, 3, 3]])  # means 0.67, 3.67, 2.67
    assert vote(SST, three).tolist() == [1, 4, 3]


def test_rules_go_by_task_kind_and_ordered_labels_not_name():
    mood = TaskSpec(name="mood", kind="single", num_labels=3, ordered_labels=True)
    assert vote(mood, np.array([[0, 1], [1, 2]])).tolist() == [1, 2]  # mean rounded half up
    assert vote(replace(mood, ordered_labels=False), np.array([[0, 1], [1, 2]])).tolist() == [0, 1]  # first's
    nli = TaskSpec(name="sst", kind="pair-classification", text_columns=("a", "b"), num_labels=3)
    assert vote(nli, np.array([[0], [2]])).tolist() == [0]  # a vote even under a single-sentence task's name
    similarity = TaskSpec(name="para", kind="pair-regression", text_columns=("a", "b"), num_labels=1)
    assert vote(similarity, np.array([[0.0], [1.0]])).tolist() == [0.5]


def test_majority_ties_go_to_the_earliest_member():
    assert majority(np.array([[1, 0], [0, 1]]), 2).tolist() == [1, 0]  # 1-1 ties: the first member's
    assert majority(np.array([[0, 1, 1], [1, 1, 0], [1, 0, 0]]), 2).tolist() == [1, 1, 0]  # 2-1 majorities
    # five members, five classes; each column is one example's votes
    votes = np.array([[0, 1, 1, 2, 2],  # 1 and 2 tie at two votes; member 2's 1 comes first
                      [2, 0, 0, 2, 1],  # 2 and 0 tie; the first member's 2
                      [0, 1, 2, 3, 4],  # all tie; the first member's 0
                      [0, 1, 1, 2, 3]]).T  # 1 wins outright over the first member's 0
    assert majority(votes, 5).tolist() == [1, 2, 0, 1]


def test_unordered_classes_take_the_most_voted_class_not_the_mean_index():
    intent = task_from_config({"name": "intent", "kind": "single", "train_file": "t", "dev_file": "d",
                               "text_columns": ["text"], "num_labels": 7}, "tasks[0]")
    assert intent.ordered_labels is False  # the default for a declared classification task
    votes = np.array([[2], [6], [6]])  # 7 unordered classes: the mean index 4.67 -> 5 is a class nobody voted
    assert vote(intent, votes).tolist() == [6]
    ordered = replace(intent, ordered_labels=True)
    assert vote(ordered, votes).tolist() == [5]  # the report's rule, kept where the classes are ordered
    assert vote(SST, np.array([[2], [6 - 2], [4]])).tolist() == [3]  # the built-in SST keeps it: mean 3.33 -> 3


def test_majority_ties_go_to_the_highest_summed_probability_then_the_earliest_member():
    spec = TaskSpec(name="intent", kind="single", num_labels=3, text_columns=("text",))
    votes = np.array([[0, 0, 1], [1, 1, 0]])  # two members: every example is a 1-1 tie
    probabilities = np.array([[[0.5, 0.4, 0.1], [0.5, 0.5, 0.0], [0.3, 0.6, 0.1]],
                              [[0.1, 0.6, 0.3], [0.5, 0.5, 0.0], [0.4, 0.3, 0.3]]])
    # sums: [0.6, 1.0, ...] -> 1; [1.0, 1.0] -> still tied, the first member's 0; [0.7, 0.9] -> 1
    assert vote(spec, votes, probabilities).tolist() == [1, 0, 1]
    assert vote(spec, votes).tolist() == [0, 0, 1]  # no scores: the first member's class
    three = np.array([[2], [1], [1]])  # an outright majority wins whatever the probabilities
    assert vote(spec, three, np.array([[[0, 0, 1.0]], [[0, 0.4, 0.6]], [[0, 0.4, 0.6]]])).tolist() == [1]
    # a pair task keeps the report's Quora rule: a tie goes to the earliest member, whatever the probabilities
    assert vote(PARA, np.array([[0, 1], [1, 0]]), np.array([[[0.45], [0.9]], [[0.9], [0.45]]])).tolist() == [0, 1]


def test_ordered_labels_is_a_classification_key_the_builtin_sst_sets():
    assert SST.ordered_labels and not PARA.ordered_labels
    assert task_from_config({"name": "sst", "train_file": "x.csv"}, "tasks[0]").ordered_labels  # kept by overrides
    assert not task_from_config({"name": "sst", "kind": "single-regression", "label_min": 0, "label_max": 4,
                                 "num_labels": 1}, "tasks[0]").ordered_labels  # a kind that does not read it
    with pytest.raises(ConfigError, match=r"^tasks\[0\]\.ordered_labels: a pair-regression task does not read"):
        task_from_config({"name": "x", "kind": "pair-regression", "text_columns": ["a", "b"], "num_labels": 1,
                          "ordered_labels": True}, "tasks[0]")
    with pytest.raises(ConfigError, match=r"^tasks\[0\]\.ordered_labels: must be true or false$"):
        task_from_config({"name": "x", "kind": "single", "ordered_labels": "yes"}, "tasks[0]")


# ---- vote on files -------------------------------------------------------------------------------

A = {"sst": {"s1": 2, "s2": 1, "s3": 0, "s4": 4}, "para": {"p1": 1, "p2": 0, "p3": 1, "p4": 0},
     "sts": {"t1": 1.0, "t2": 2.5, "t3": 4.0}}
B = {"sst": {"s1": 3, "s2": 2, "s3": 0, "s4": 3}, "para": {"p1": 0, "p2": 1, "p3": 1, "p4": 0},
     "sts": {"t1": 2.0, "t2": 3.0, "t3": 5.0}}
LABELS = {"sst": {"s1": 3, "s2": 2, "s3": 1, "s4": 4}, "para": {"p1": 1, "p2": 0, "p3": 0, "p4": 0},
          "sts": {"t1": 1.0, "t2": 3.0, "t3": 4.0}}


def test_vote_files_and_dev_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("MTBERT_DATA", str(write_labels(tmp_path / "data", LABELS)))
    a = write_predictions(tmp_path / "a" / "predictions", A)
    b = write_predictions(tmp_path / "b" / "predictions", B)
    results = run_ensemble([a, b], tmp_path / "ens")

    assert read_output(tmp_path / "ens", "sst") == {"s1": 3, "s2": 2, "s3": 0, "s4": 4}  # 2.5 -> 3, 1.5 -> 2
    assert read_output(tmp_path / "ens", "para") == {"p1": 1, "p2": 0, "p3": 1, "p4": 0}  # ties: a's votes
    assert read_output(tmp_path / "ens", "sts") == {"t1": 1.5, "t2": 2.75, "t3": 4.5}
    r = float(pearsonr([1.5, 2.75, 4.5], [1.0, 3.0, 4.0]).statistic)
    expected = {"sst_acc": 0.75, "para_acc": 0.75, "sts_corr": r, "overall": (0.75 + 0.75 + (1 + r) / 2) / 3}
    assert {k: v for k, v in results["ensemble"].items() if k in expected} == pytest.approx(expected, abs=1e-12)
    assert {"sst_macro_f1", "sst_mcc", "para_f1", "para_micro_f1", "sts_spearman"} <= set(results["ensemble"])
    low, high = results["ensemble"]["overall_ci95"]
    assert 0 <= low <= high <= 1
    assert results["member_metrics"][0]["sst_acc"] == 0.25 and results["member_metrics"][1]["sst_acc"] == 0.5
    assert results["member_metrics"][0]["para_acc"] == 0.75 and results["member_metrics"][1]["para_acc"] == 0.25
    on_disk = json.loads((tmp_path / "ens" / "results.json").read_text())
    assert on_disk["mode"] == "vote" and on_disk["members"] == [str(a), str(b)]
    assert on_disk["ensemble"] == results["ensemble"]
    assert on_disk["vote_rules"] == {  # the CS224N report's rules, by task
        "sst-dev-output.csv": "the members' mean class rounded half up (ordered_labels: the CS224N report's SST rule)",
        "para-dev-output.csv": "the most voted class; a tie goes to the earliest member listed",
        "sts-dev-output.csv": "the mean of the members' values"}

    run_ensemble([b, a], tmp_path / "swapped")
    assert read_output(tmp_path / "swapped", "para") == {"p1": 0, "p2": 1, "p3": 1, "p4": 0}  # ties: b's votes now
    assert read_output(tmp_path / "swapped", "sst") == read_output(tmp_path / "ens", "sst")


INTENT = {"name": "intent", "kind": "single", "train_file": "intent-train.csv", "dev_file": "intent-dev.csv",
          "text_columns": ["text"], "num_labels": 7}


def test_vote_files_break_ties_by_the_scores_files_and_say_which_rule(tmp_path, no_data, caplog):
    intent = task_from_config(INTENT, "tasks[1]")
    votes = {"a": {"x": 2, "y": 0, "z": 1}, "b": {"x": 6, "y": 3, "z": 4}, "c": {"x": 6, "y": 5, "z": 1}}
    probability = {"y": 3, "x": 6, "z": 1}  # b's class of y is the likeliest of the three-way tie
    members = []
    for name, classes in votes.items():
        run = tmp_path / name
        save_config(build_config({"output_dir": str(run), "data_dir": str(no_data), "tasks": ["sst", INTENT]}),
                    run / "config.yaml")
        write_cs224n(run / "predictions" / "intent-dev-output.csv", intent, list(classes),
                     np.array(list(classes.values())))
        write_predictions(run / "predictions", {"sst": {"x": 2, "y": 4, "z": 4}} if name == "a" else
                          {"sst": {"x": 4, "y": 4, "z": 3}})
        rows = {i: np.eye(7)[c] * 0.4 + np.eye(7)[probability[i]] * (0.3 if name == "b" else 0.0) + 0.3 / 7
                for i, c in classes.items()}
        write_scores(run / "scores" / "intent-dev.tsv", intent, list(rows), np.array(list(rows.values())))
        members.append(run)
    results = run_ensemble(members, tmp_path / "ens")
    out = read_cs224n(tmp_path / "ens" / "intent-dev-output.csv", intent)[1]
    assert out == {"x": 6, "y": 3, "z": 1}  # 2, 6, 6 -> 6 (the mean index would say 5); a tie -> the likeliest
    assert read_output(tmp_path / "ens", "sst") == {"x": 3, "y": 4, "z": 3}  # SST: the mean (x: not the 4 of two)
    assert results["vote_rules"] == {
        "intent-dev-output.csv": "the most voted class; a tie goes to the highest summed probability of the tied "
                                 "classes, then the earliest member",
        "sst-dev-output.csv": "the members' mean class rounded half up (ordered_labels: the CS224N report's SST rule)"}
    assert "`intent-dev-output.csv`: the most voted class" in (tmp_path / "ens" / "README.md").read_text()

    bare = [run / "predictions" for run in members]  # no scores/: ties go to the earliest member, and it says so
    results = run_ensemble(bare, tmp_path / "bare")
    assert read_cs224n(tmp_path / "bare" / "intent-dev-output.csv", intent)[1] == {"x": 6, "y": 0, "z": 1}
    assert results["vote_rules"]["intent-dev-output.csv"] == (
        "the most voted class; a tie goes to the earliest member listed (not every member has a usable scores file)")

    scores = members[2] / "scores" / "intent-dev.tsv"  # a scores file that lacks an id: said, and not used
    kept = [line for line in scores.read_text().splitlines(keepends=True) if not line.startswith("y")]
    scores.write_text("".join(kept))
    with caplog.at_level(logging.WARNING, logger="mtbert.evaluation.ensemble"):
        results = run_ensemble(members, tmp_path / "short")
    assert f"ensemble: {scores} has no scores for 1 predicted ids (e.g. id y); ties of the vote go to the earliest " \
           "member" in caplog.text
    assert read_cs224n(tmp_path / "short" / "intent-dev-output.csv", intent)[1] == {"x": 6, "y": 0, "z": 1}
    assert "not every member has a usable scores file" in results["vote_rules"]["intent-dev-output.csv"]


def test_vote_of_three_members_without_labels(tmp_path, no_data):
    members = [
        write_predictions(tmp_path / name, {"sst": sst, "para": para, "sts": sts}, split="test")
        for name, sst, para, sts in (
            ("a", {"x": 0, "y": 4, "z": 2}, {"x": 0, "y": 1, "z": 1}, {"x": 0.0, "y": 1.0, "z": 2.0}),
            ("b", {"x": 1, "y": 4, "z": 3}, {"x": 1, "y": 1, "z": 0}, {"x": 1.0, "y": 1.0, "z": 1.0}),
            ("c", {"x": 1, "y": 3, "z": 3}, {"x": 1, "y": 0, "z": 0}, {"x": 2.0, "y": 4.0, "z": 3.0}),
        )
    ]
    results = run_ensemble(members, tmp_path / "ens")
    out = tmp_path / "ens"
    assert read_output(out, "sst", "test") == {"x": 1, "y": 4, "z": 3}
    assert read_output(out, "para", "test") == {"x": 1, "y": 1, "z": 0}  # 2-1 majorities
    assert read_output(out, "sts", "test") == {"x": 1.0, "y": 2.0, "z": 2.0}
    assert results["ensemble"] == {} and results["member_metrics"] == [{}, {}, {}]
    assert (out / "sst-test-output.csv").read_text().splitlines()[:2] == ["id \t Predicted_Sentiment ", "x , 1 "]


def test_a_single_member_reproduces_its_own_predictions_and_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("MTBERT_DATA", str(write_labels(tmp_path / "data", LABELS)))
    a = write_predictions(tmp_path / "a", A)
    results = run_ensemble([a, a], tmp_path / "ens")
    for task in ("sst", "para", "sts"):
        assert read_output(tmp_path / "ens", task) == A[task]
    ensemble = {k: v for k, v in results["ensemble"].items() if k != "overall_ci95"}
    assert ensemble == results["member_metrics"][0] == results["member_metrics"][1]


def test_a_file_only_some_members_have_is_skipped(tmp_path, no_data, caplog):
    a = write_predictions(tmp_path / "a", A)
    b = write_predictions(tmp_path / "b", {"sst": B["sst"]})
    (a / "nli-dev-output.csv").write_text("id \t Predicted_Label \nn1 , 1 \n")
    with caplog.at_level(logging.WARNING, logger="mtbert.evaluation.ensemble"):
        results = run_ensemble([a, b], tmp_path / "ens")
    assert results["files"] == ["sst-dev-output.csv"]
    assert not (tmp_path / "ens" / "para-dev-output.csv").exists()
    assert f"para-dev-output.csv: skipped, since {b} lacks it" in caplog.text
    assert f"sts-dev-output.csv: skipped, since {b} lacks it" in caplog.text
    assert f"{a / 'nli-dev-output.csv'}: skipped, not a file of the tasks sst, para, sts" in caplog.text


# ---- soft on scores ------------------------------------------------------------------------------


def test_soft_averages_scores_and_limits_dev_metrics(tmp_path):
    data = write_labels(tmp_path / "data", {"sst": {"s1": 3, "s2": 4, "s3": 0, "s4": 0},
                                            "para": {"s1": 1, "s2": 0, "s3": 1, "s4": 1},
                                            "sts": {"s1": 1.0, "s2": 2.0, "s3": 4.0, "s4": 0.0}})
    a = write_run(tmp_path / "a", {
        "sst": {"s1": [0.1, 0.2, 0.3, 0.4, 0.0], "s2": [0.6, 0.1, 0.1, 0.1, 0.1], "s3": [0, 0, 1, 0, 0],
                "s4": [1, 0, 0, 0, 0]},
        "para": {"s1": [0.9], "s2": [0.4], "s3": [0.25], "s4": [0.0]},
        "sts": {"s1": [1.0], "s2": [2.0], "s3": [3.0], "s4": [5.0]},
    }, data, max_eval_samples=3)
    b = write_run(tmp_path / "b", {
        "sst": {"s1": [0.0, 0.5, 0.1, 0.4, 0.0], "s2": [0.0, 0.0, 0.0, 0.3, 0.7], "s3": [0, 0, 1, 0, 0],
                "s4": [1, 0, 0, 0, 0]},
        "para": {"s1": [0.2], "s2": [0.5], "s3": [0.75], "s4": [0.0]},
        "sts": {"s1": [2.0], "s2": [2.0], "s3": [4.0], "s4": [0.0]},
    }, data)
    results = run_ensemble([a, b], tmp_path / "ens", mode="soft")

    out = tmp_path / "ens"
    assert read_output(out, "sst") == {"s1": 3, "s2": 4, "s3": 2, "s4": 0}  # a vote would give 2 for s1
    assert read_output(out, "para") == {"s1": 1, "s2": 0, "s3": 0, "s4": 0}  # mean 0.5 is not > 0.5
    assert read_output(out, "sts") == {"s1": 1.5, "s2": 2.0, "s3": 3.5, "s4": 2.5}
    # the first member's config sets max_eval_samples 3: the fourth dev row is not scored
    r = float(pearsonr([1.5, 2.0, 3.5], [1.0, 2.0, 4.0]).statistic)
    assert results["ensemble"]["sst_acc"] == pytest.approx(2 / 3)
    assert results["ensemble"]["para_acc"] == pytest.approx(2 / 3)
    assert results["ensemble"]["sts_corr"] == pytest.approx(r, abs=1e-12)
    assert results["member_metrics"][0]["sst_acc"] == pytest.approx(1 / 3)  # a's own argmax: 3, 0, 2
    assert results["member_metrics"][1]["para_acc"] == pytest.approx(2 / 3)  # b's own: 0, 0, 1
    assert results["mode"] == "soft"


def test_soft_refuses_a_predictions_folder(tmp_path, no_data):
    a = write_run(tmp_path / "a", {"sst": {"s1": [0.2, 0.2, 0.2, 0.2, 0.2]}}, no_data)
    b = write_predictions(tmp_path / "b" / "predictions", {"sst": {"s1": 1}})
    message = (f"{b}: --mode soft averages the scores/ of run folders and this member has none; "
               "give its run folder or use --mode vote")
    with pytest.raises(MtbertError, match=f"^{re.escape(message)}$"):
        run_ensemble([a, b], tmp_path / "ens", mode="soft")


# ---- errors --------------------------------------------------------------------------------------


def test_members_with_different_ids_are_an_error(tmp_path, no_data):
    a = write_predictions(tmp_path / "a", {"sst": {"s1": 1, "s2": 2}})
    b = write_predictions(tmp_path / "b", {"sst": {"s1": 1, "s3": 2}})
    message = f"sst-dev-output.csv: member {b} has 1 ids missing and 1 extra ids compared with {a} (e.g. id s2)"
    with pytest.raises(MtbertError, match=f"^{re.escape(message)}"):
        run_ensemble([a, b], tmp_path / "ens")
    assert not (tmp_path / "ens" / "results.json").exists()


def test_a_prediction_that_is_not_a_class_is_an_error(tmp_path, no_data):
    a = write_predictions(tmp_path / "a", {"sst": {"s1": 1}})
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "sst-dev-output.csv").write_text("id \t Predicted_Sentiment \ns1 , 7 \n")
    with pytest.raises(MtbertError, match=r"sst-dev-output\.csv: prediction 7 for id s1 is not a class in 0\.\.4$"):
        run_ensemble([a, tmp_path / "b"], tmp_path / "ens")


def test_missing_member_and_output_into_a_member_are_errors(tmp_path, no_data):
    a = write_predictions(tmp_path / "a", {"sst": {"s1": 1}})
    with pytest.raises(MtbertError, match=r"nope: ensemble member not found"):
        run_ensemble([a, tmp_path / "nope"], tmp_path / "ens")
    with pytest.raises(MtbertError, match=r"^--output_dir: .* is a member's folder"):
        run_ensemble([a, a], a)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MtbertError, match=r"^ensemble: the members share no prediction files"):
        run_ensemble([empty], tmp_path / "ens")
