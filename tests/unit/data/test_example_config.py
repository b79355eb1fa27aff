"""configs/examples/jsonl-task.yaml trains a task from JSON Lines files with string labels and no ids."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_the_jsonl_example_trains_and_predicts_class_names(tiny_model_dir, tmp_path, monkeypatch):
    from mtbert.cli import main
    from mtbert.evaluation.predict import read_cs224n
    from mtbert.model.multitask import _spec_from_dict

    monkeypatch.chdir(ROOT)
    run = tmp_path / "run"
    assert main(["train", "configs/examples/jsonl-task.yaml", "--output_dir", str(run), "--model_name_or_path",
                 str(tiny_model_dir), "--num_train_epochs", "1"]) == 0
    assert "mood_acc" in json.loads((run / "results.json").read_text())
    dev = (run / "predictions" / "mood-dev-output.csv").read_text().splitlines()
    assert len(dev) == 9 and {line.split(",")[1].strip() for line in dev[1:]} <= {"negative", "positive"}
    test = (run / "predictions" / "mood-test-output.csv").read_text().splitlines()
    assert [line.split(",")[0].strip() for line in test[1:]] == ["t1", "t2", "t3", "t4"]
    saved = json.loads((run / "best" / "mtbert_config.json").read_text())["tasks"][0]
    assert saved["label_names"] == ["negative", "positive"]  # so that `mtbert predict` maps back to names
    values = read_cs224n(run / "predictions" / "mood-dev-output.csv", _spec_from_dict(saved))[1]
    assert set(values) == {str(n) for n in range(1, 9)} and set(values.values()) <= {0.0, 1.0}
