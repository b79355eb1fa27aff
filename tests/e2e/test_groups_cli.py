"""The real CLI on an input_group: `mtbert train` of a group beside a task on its own, then `mtbert predict --group`
from a file and from standard input; a group whose tasks read different columns is one sentence, exit 2, and
nothing written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from helpers.groups import group_tasks, write_group_data

from mtbert.cli import main

pytestmark = pytest.mark.e2e


def _mtbert(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mtbert", *args], input=stdin, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tiny_data_dir, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("groups-cli")
    data = folder / "data"
    shutil.copytree(tiny_data_dir, data)
    write_group_data(data, rows=64)
    cfg = {"output_dir": str(folder / "run"), "model_name_or_path": str(tiny_model_dir), "data_dir": str(data),
           "tasks": [*group_tasks(), "sst"], "method": "pcgrad", "surgery_scope": "representation",
           "per_device_train_batch_size": 8, "samples_per_task_per_epoch": 64, "num_train_epochs": 6,
           "learning_rate": 3e-3, "pooling": "mean", "dropout": 0.0, "max_length": 32, "logging_steps": 4, "seed": 0,
           "metric_for_best_model": "utt_frame_acc"}
    return {"folder": folder, "data": data, "cfg": cfg}


def test_train_then_predict_every_task_of_the_group(setup):
    folder, data = setup["folder"], setup["data"]
    config = folder / "group.yaml"
    config.write_text(yaml.safe_dump(setup["cfg"]))
    # training and the prediction from a file run the CLI in this process (with one torch thread, as the process
    # of its own had); the prediction from standard input runs it as a process of its own
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", str(config)]) == 0
    finally:
        torch.set_num_threads(threads)
    results = json.loads((folder / "run" / "results.json").read_text())
    assert {"intent_acc", "mood_acc", "sst_acc", "utt_frame_acc"} <= set(results)
    # each utterance's words give its intent and mood away: the group's tasks learn them, together
    assert results["intent_acc"] > 0.75 and results["mood_acc"] > 0.75 and results["utt_frame_acc"] > 0.5
    assert main(["predict", str(folder / "run"), "--group", "utt", "--input", str(data / "utt-dev.jsonl"),
                 "--output", str(folder / "utt.jsonl")]) == 0
    rows = [json.loads(line) for line in (folder / "utt.jsonl").read_text().splitlines()]
    dev = [json.loads(line) for line in (data / "utt-dev.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [d["id"] for d in dev]
    assert all(r["intent"] in ("book", "play") and r["mood"] in ("happy", "sad") for r in rows)
    frame = sum(r["intent"] == d["intent"] and r["mood"] == d["mood"] for r, d in zip(rows, dev, strict=True))
    assert frame / len(dev) == pytest.approx(results["utt_frame_acc"])
    done = _mtbert("predict", str(folder / "run"), "--group", "utt", "--input", "-",
                   stdin="play some music great\nbook a table awful\n")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(x["id"], x["tokens"]) for x in lines] == [("1", "play some music great"), ("2", "book a table awful")]
    assert set(lines[0]) == {"id", "tokens", "intent", "mood"}


def test_a_group_whose_tasks_read_other_columns_is_one_sentence_and_writes_nothing(setup, capsys):
    folder = setup["folder"]
    tasks = group_tasks()
    tasks[1]["text_columns"] = ["id"]
    config = folder / "bad.yaml"
    config.write_text(yaml.safe_dump({**setup["cfg"], "tasks": tasks, "output_dir": str(folder / "bad")}))
    assert main(["train", str(config)]) == 2  # in this process
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: tasks[1].input_group: task mood has text_columns [id] but task intent of input_group 'utt' has "
        "[tokens]; the tasks of a group read the same data (files, or dataset, dataset_config and splits), "
        "id_column and text_columns")
    assert not (folder / "bad").exists()
