"""Task kinds as objects: the registry, the kind base's contract, and a kind added from outside the package
that trains, evaluates, predicts and ensembles through the command line with nothing else changed."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from mtbert import kinds
from mtbert.errors import ConfigError
from mtbert.kinds.base import TaskKind
from mtbert.tasks import BUILTIN_TASKS, task_from_config

SRC = Path(__file__).resolve().parents[3] / "src" / "mtbert"
BRANCHES = re.compile(r"\.is_regression\b|\.is_pair\b|\.num_outputs\b|\.kind\s*(==|!=)"
                      r"|\.kind\s+(not\s+)?in\s*\(\s*[\"']|[\"'](single|pair)[-a-z]*[\"']\s*(==|!=|in\b)")


def test_every_kind_of_the_registry_is_a_kind_module_instance():
    assert set(kinds.KINDS) == {"single", "single-regression", "pair-classification", "pair-regression",
                                "token-classification", "multi-label", "multiple-choice"}
    for name, kind in kinds.KINDS.items():
        assert isinstance(kind, TaskKind) and kind.name == name
    assert kinds.aliases() == {"single-classification": "single", "token": "token-classification",
                               "ner": "token-classification"}


def test_nothing_outside_the_kinds_branches_on_a_kind():
    """Outside `mtbert.kinds`, no module asks whether a task is a regression or a pair, or compares kind names
    (`mtbert.tasks` keeps `is_pair`, `is_regression` and `num_outputs` as properties for earlier callers)."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path.parent.name == "kinds":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            code = line.split("#", 1)[0]
            if BRANCHES.search(code) and not (path.name == "tasks.py" and "def " in code):
                found.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


def test_builtin_tasks_keep_their_heads_metrics_and_files():
    sst, para, sts = (BUILTIN_TASKS[t] for t in ("sst", "para", "sts"))
    assert (sst.num_outputs, para.num_outputs, sts.num_outputs) == (5, 1, 1)
    assert (sst.metric, para.metric, sts.metric) == ("acc", "acc", "corr")
    assert sts.task_kind.score_columns(sts) == ["value"] and para.task_kind.score_columns(para) == ["prob_1"]
    assert sst.task_kind.format_value(sst, 3.0) == "3" and sts.task_kind.format_value(sts, 2.5) == "2.5"
    assert sst.task_kind.vote(sst, np.array([[2, 1], [3, 1]])).tolist() == [3.0, 1.0]  # 2.5 rounds half up
    assert para.task_kind.vote(para, np.array([[1, 0], [0, 0], [1, 1]])).tolist() == [1.0, 0.0]


def test_a_kind_needs_a_new_name():
    with pytest.raises(ValueError, match="new name"):
        kinds.register(kinds.KINDS["single"])
    with pytest.raises(ConfigError, match="kind: 'nope' is not one of single \\| single-classification"):
        task_from_config({"name": "x", "kind": "nope", "train_file": "t.csv"}, "tasks[0]")


@pytest.fixture()
def ordinal_kind(monkeypatch):
    """`single-ordinal` registered from a module of this test folder, and removed afterwards."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    from ordinal_kind import KIND

    kinds.register(KIND)
    yield KIND
    del kinds.KINDS[KIND.name]


def test_a_kind_registered_from_outside_trains_evaluates_predicts_and_ensembles(ordinal_kind, tiny_config,
                                                                                  tmp_path, capsys):
    from mtbert.cli import main

    config = {**tiny_config, "tasks": [
        {"name": "stars", "kind": "single-ordinal", "train_file": "ids-sst-train.csv", "dev_file": "ids-sst-dev.csv",
         "test_file": "ids-sst-test-student.csv", "id_column": "id", "text_columns": ["sentence"],
         "label_column": "sentiment", "num_labels": 5, "head_hidden_sizes": []},
        "sts"]}
    path = tmp_path / "ordinal.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path)]) == 0
    run = Path(config["output_dir"])
    results = json.loads((run / "results.json").read_text())
    assert {"stars_acc", "sts_corr", "overall"} <= set(results)
    assert json.loads((run / "best" / "mtbert_config.json").read_text())["tasks"][0]["kind"] == "single-ordinal"
    written = (run / "predictions" / "stars-dev-output.csv").read_text().splitlines()
    assert all(0 <= int(line.split(",")[1]) <= 4 for line in written[1:])
    assert (run / "scores" / "stars-dev.tsv").read_text().splitlines()[0] == "id\tvalue"

    capsys.readouterr()
    assert main(["evaluate", str(run), "--json", str(tmp_path / "eval.json")]) == 0
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["stars_acc"] == pytest.approx(results["stars_acc"], abs=1e-6)

    data = Path(config["data_dir"])
    assert main(["predict", str(run), "--task", "stars", "--input", str(data / "ids-sst-dev.csv"),
                 "--output", str(tmp_path / "stars.csv")]) == 0
    assert (tmp_path / "stars.csv").read_text().splitlines()[1:] == written[1:]

    shutil.copytree(run, tmp_path / "copy")
    assert main(["ensemble", str(run), str(tmp_path / "copy"), "--output_dir", str(tmp_path / "ens"),
                 "--mode", "soft"]) == 0
    assert (tmp_path / "ens" / "stars-dev-output.csv").read_text().splitlines()[1:] == written[1:]
