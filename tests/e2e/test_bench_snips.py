"""`mtbert bench quality --configs configs/snips` on the tiny model and a tiny SNIPS-shaped file: every row of the
shipped SNIPS table trains, and each row's intent accuracy, slot F1 and frame accuracy are compared with the
previous row's on the same resampled utterances."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from mtbert.bench.quality import bench_quality, load_reference
from mtbert.evaluation.metrics import bootstrap_column_difference, column_value
from mtbert.kinds import KINDS
from mtbert.tasks import task_from_config

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
SNIPS = ROOT / "configs" / "snips"


def utterances(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        artist = rng.choice([["daft", "punk"], ["adele"], ["the", "beatles"]])
        if rng.random() < 0.5:
            tokens = ["play", *artist, "on", "spotify"]
            slots = ["O", "B-artist", *["I-artist"] * (len(artist) - 1), "O", "B-service"]
            intent = "PlayMusic"
        else:
            tokens = ["add", *artist, "to", "my", "playlist"]
            slots = ["O", "B-artist", *["I-artist"] * (len(artist) - 1), "O", "O", "O"]
            intent = "AddToPlaylist"
        rows.append({"id": f"u{seed}-{i}", "tokens": tokens, "slots": slots, "intent": intent})
    return rows


@pytest.fixture()
def snips_data(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "snips"
    folder.mkdir()
    for name, n, seed in (("train.jsonl", 48, 0), ("dev.jsonl", 24, 1)):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in utterances(n, seed)), encoding="utf-8")
    monkeypatch.setenv("MTBERT_DATA", str(folder))
    return folder


def test_the_snips_table_compares_each_metric_over_utterances(snips_data, tiny_model_dir, tmp_path):
    ref = load_reference(SNIPS)
    assert ref.paired_columns == ("intent_acc", "slots_f1", "snips_frame_acc") and ref.scored_on == "joint"
    table = bench_quality(tmp_path / "out", ["single-task", "joint-sum", "joint-pcgrad"], 0.005, SNIPS,
                          backbone=str(tiny_model_dir))
    rows = {r["row"]: r for r in table["rows"]}
    assert list(rows) == ["single-task", "joint-sum", "joint-pcgrad", "joint-pcgrad-representation"]
    assert [r["status"] for r in rows.values()] == ["done", "done", "done", "not run"]
    assert rows["single-task"]["snips_frame_acc"] is not None  # from the two one-task runs' predictions
    joint = json.loads((Path(rows["joint-sum"]["run_dir"]) / "results.json").read_text())
    assert rows["joint-sum"]["snips_frame_acc"] == joint["snips_frame_acc"]
    versus = rows["joint-pcgrad"]["versus_columns"]
    assert set(versus) == {"intent_acc", "slots_f1", "snips_frame_acc"}
    for column, found in versus.items():
        assert found["row"] == "joint-sum"
        assert found["difference"] == pytest.approx(rows["joint-pcgrad"][column] - rows["joint-sum"][column])
        low, high = found["ci95"]
        assert low <= found["difference"] + 1e-12 and found["difference"] <= high + 1e-12
    markdown = (tmp_path / "out" / "table.md").read_text()
    assert "Δ Frame acc (paired 95% CI)" in markdown


def test_a_groups_frame_accuracy_resamples_utterances_for_both_tasks():
    intent = task_from_config({"name": "intent", "kind": "single", "train_file": "t.jsonl", "text_columns": ["w"],
                               "label_column": "intent", "input_group": "g", "label_names": ["a", "b"]}, "t[0]")
    slots = task_from_config({"name": "slots", "kind": "token-classification", "train_file": "t.jsonl",
                              "text_columns": ["w"], "label_column": "slots", "input_group": "g",
                              "label_names": ["B-x", "O"]}, "t[1]")
    token = KINDS["token-classification"]
    labels = token.label_array([("B-x", "O"), ("O",), ("O", "O")])

    def tags(*rows):
        out = np.empty(len(rows), dtype=object)
        for i, r in enumerate(rows):
            out[i] = np.array(r)
        return out

    first = {"intent": (intent, np.array([0.0, 1.0, 1.0]), np.array([0.0, 1.0, 0.0])),
             "slots": (slots, tags([0, 1], [1], [1, 1]), labels)}
    second = {"intent": (intent, np.array([0.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])),
              "slots": (slots, tags([0, 1], [1], [0, 1]), labels)}
    assert column_value(first, "g_frame_acc") == pytest.approx(2 / 3)  # utterance 3: the intent is wrong
    assert column_value(second, "g_frame_acc") == pytest.approx(1 / 3)
    gap, low, high = bootstrap_column_difference(first, second, "g_frame_acc", resamples=200)
    assert gap == pytest.approx(1 / 3) and low <= gap <= high
    assert bootstrap_column_difference(first, {"intent": first["intent"]}, "g_frame_acc") is None


def test_bench_step_times_the_shipped_token_beside_sentence_config(snips_data, tiny_model_dir, tmp_path):
    import yaml

    from mtbert.bench.group_step import bench_group_step

    config = yaml.safe_load((SNIPS / "separate-pcgrad.yaml").read_text())
    kinds = {t["name"]: t["kind"] for t in config["tasks"]}
    assert kinds == {"intent": "single", "slots": "token-classification"}
    assert not any("input_group" in t for t in config["tasks"])
    path = tmp_path / "separate.yaml"
    path.write_text(yaml.safe_dump({**config, "model_name_or_path": str(tiny_model_dir)}))
    results = bench_group_step(path, ["sum", "pcgrad"], steps=5, warmup=0, batch_size=4)
    assert results["streams"] == {"intent": ["intent"], "slots": ["slots"]}  # each task its own batches
    assert results["goals"]["pcgrad_vs_sum"]["goal"] == "paired ratio <= 1.05"
    assert len(results["methods"]["pcgrad"]["all_paired_ratios"]) == 5
