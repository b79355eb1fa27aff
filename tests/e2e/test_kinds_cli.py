"""The multi-label and multiple-choice examples (configs/examples/) as a user runs them, on the tiny random model:
train, evaluate, predict (a file and standard input), ensemble (vote and soft), export; and both kinds trained
together with PCGrad, sample weighting, SMART, LoRA and two-step fine-tuning."""

from __future__ import annotations

import io
import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.metrics import f1_score

from mtbert.cli import main

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "configs" / "examples" / "data"


def dev_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()[1:]


def train_example(name: str, tiny_model_dir: Path, run: Path, monkeypatch) -> dict:
    monkeypatch.chdir(ROOT)
    assert main(["train", f"configs/examples/{name}.yaml", "--output_dir", str(run), "--model_name_or_path",
                 str(tiny_model_dir), "--num_train_epochs", "1"]) == 0
    return json.loads((run / "results.json").read_text())


def predict_stdin(run: Path, task: str, text: str, monkeypatch, capsys) -> list[str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    capsys.readouterr()
    assert main(["predict", str(run), "--task", task, "--input", "-", "--output", "-"]) == 0
    return capsys.readouterr().out.splitlines()


def check_ensembles(run: Path, task: str, tmp_path: Path) -> None:
    """Two copies of one run: vote and soft give back its predictions."""
    shutil.copytree(run, tmp_path / "copy")
    for mode in ("vote", "soft"):
        out = tmp_path / f"ens-{mode}"
        assert main(["ensemble", str(run), str(tmp_path / "copy"), "--output_dir", str(out), "--mode", mode]) == 0
        for split in ("dev", "test"):
            name = f"{task}-{split}-output.csv"
            assert (out / name).read_text() == (run / "predictions" / name).read_text(), (mode, name)


def test_the_multi_label_example_trains_evaluates_predicts_ensembles_and_exports(tiny_model_dir, tmp_path,
                                                                                 monkeypatch, capsys, caplog):
    caplog.set_level(logging.WARNING)
    run = tmp_path / "run"
    results = train_example("multi-label", tiny_model_dir, run, monkeypatch)
    assert "examples hold labels never seen in training (art: 2 rows)" in caplog.text
    assert results["overall"] == results["topics_micro_f1"]
    assert {"topics_macro_f1", "topics_subset_acc"} <= set(results)
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all({"topics_micro_f1", "topics_macro_f1", "topics_subset_acc"} <= set(h) for h in history if "overall" in h)

    saved = json.loads((run / "best" / "mtbert_config.json").read_text())["tasks"][0]
    names, tuned = saved["label_names"], saved["tuned_thresholds"]
    assert names == ["food", "politics", "sports", "tech"] and len(tuned) == 4 and len(set(tuned)) == 1

    # the written sets are the written probabilities above the tuned thresholds
    written = [line.split(" , ")[1].strip() for line in dev_lines(run / "predictions" / "topics-dev-output.csv")]
    scores = np.array([[float(v) for v in line.split("\t")[1:]] for line in dev_lines(run / "scores" /
                                                                                      "topics-dev.tsv")])
    assert dev_lines(run / "scores" / "topics-dev.tsv") and (run / "scores" / "topics-dev.tsv").read_text().startswith(
        "id\tprob_food\tprob_politics\tprob_sports\tprob_tech\n")
    assert written == ["#".join(n for n, p in zip(names, row, strict=True) if p > t)
                       for row, t in zip(scores, [tuned[0]] * len(scores), strict=True)]

    # micro F1 recomputed from the file: the unseen label "art" is a label the model missed
    rows = [json.loads(line) for line in (DATA / "topics-dev.jsonl").read_text().splitlines()]
    columns = [*names, "art"]
    truth = np.array([[c in r["topics"].split("#") for c in columns] for r in rows])
    predicted = np.array([[c in w.split("#") for c in columns] for w in written])
    assert results["topics_micro_f1"] == pytest.approx(f1_score(truth, predicted, average="micro"), abs=1e-6)

    assert main(["evaluate", str(run), "--json", str(tmp_path / "eval.json")]) == 0
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    for key in ("topics_micro_f1", "topics_macro_f1", "topics_subset_acc"):
        assert evaluated[key] == pytest.approx(results[key], abs=1e-6)
    assert main(["predict", str(run), "--task", "topics", "--input", str(DATA / "topics-dev.jsonl"),
                 "--output", str(tmp_path / "dev.csv")]) == 0
    assert (tmp_path / "dev.csv").read_text() == (run / "predictions" / "topics-dev-output.csv").read_text()
    typed = predict_stdin(run, "topics", f"{rows[0]['text']}\n{rows[1]['text']}\n", monkeypatch, capsys)
    assert typed == [f"1\t{written[0]}", f"2\t{written[1]}"]
    check_ensembles(run, "topics", tmp_path)

    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer

    assert main(["export", str(run), "--task", "topics", "--output", str(tmp_path / "export")]) == 0
    logits = SentenceTransformer(str(tmp_path / "export"), device="cpu").encode([r["text"] for r in rows])
    exported = ["#".join(n for n, z in zip(names, row, strict=True) if 1 / (1 + np.exp(-z)) > tuned[0])
                for row in logits]
    assert exported == written


def test_the_multiple_choice_example_trains_evaluates_predicts_ensembles_and_exports(tiny_model_dir, tmp_path,
                                                                                     monkeypatch, capsys):
    run = tmp_path / "run"
    results = train_example("multiple-choice", tiny_model_dir, run, monkeypatch)
    assert results["overall"] == results["ending_acc"]
    rows = [json.loads(line) for line in (DATA / "choice-dev.jsonl").read_text().splitlines()]
    written = [int(line.split(" , ")[1]) for line in dev_lines(run / "predictions" / "ending-dev-output.csv")]
    assert all(0 <= w < len(r["choices"]) for w, r in zip(written, rows, strict=True))
    assert results["ending_acc"] == pytest.approx(np.mean([w == r["label"] for w, r in zip(written, rows,
                                                                                            strict=True)]))
    most = max(len(json.loads(line)["choices"]) for split in ("train", "dev", "test")
               for line in (DATA / f"choice-{split}.jsonl").read_text().splitlines())
    header, *lines = (run / "scores" / "ending-dev.tsv").read_text().splitlines()
    assert header.split("\t") == ["id", *(f"prob_{k}" for k in range(most))]
    probabilities = np.array([[float(v) for v in line.split("\t")[1:]] for line in lines])
    assert np.allclose(probabilities.sum(1), 1, atol=1e-4) and (probabilities.argmax(1) == written).all()

    assert main(["evaluate", str(run), "--json", str(tmp_path / "eval.json")]) == 0
    assert json.loads((tmp_path / "eval.json").read_text())["ending_acc"] == pytest.approx(results["ending_acc"])
    assert main(["predict", str(run), "--task", "ending", "--input", str(DATA / "choice-dev.jsonl"),
                 "--output", str(tmp_path / "dev.csv")]) == 0
    assert (tmp_path / "dev.csv").read_text() == (run / "predictions" / "ending-dev-output.csv").read_text()
    typed = "".join("\t".join([r["context"], *r["choices"]]) + "\n" for r in rows[:3])
    assert predict_stdin(run, "ending", typed, monkeypatch, capsys) == [f"{k + 1}\t{written[k]}" for k in range(3)]
    check_ensembles(run, "ending", tmp_path)
    assert main(["report", str(run), "--output", str(tmp_path / "report")]) == 0
    assert "ending" in (tmp_path / "report" / "report.md").read_text()
    card = (run / "best" / "README.md").read_text()
    assert "type: multiple-choice" in card and "| ending | multiple-choice | Accuracy |" in card

    pytest.importorskip("sentence_transformers")
    from sentence_transformers import CrossEncoder

    assert main(["export", str(run), "--task", "ending", "--output", str(tmp_path / "export")]) == 0
    model = CrossEncoder(str(tmp_path / "export"), device="cpu")
    exported = [int(np.argmax(model.predict([(r["context"], c) for c in r["choices"]]))) for r in rows]
    assert exported == written


def test_both_kinds_train_together_with_surgery_weighting_smart_lora_and_two_steps(tiny_model_dir, tmp_path):
    config = yaml.safe_load((ROOT / "configs" / "examples" / "multi-label.yaml").read_text())
    ending = yaml.safe_load((ROOT / "configs" / "examples" / "multiple-choice.yaml").read_text())["tasks"][0]
    config.update({
        "output_dir": str(tmp_path / "run"), "model_name_or_path": str(tiny_model_dir), "data_dir": str(DATA),
        "tasks": [{**config["tasks"][0], "threshold": "tune-per-label", "metric": "macro_f1"}, ending],
        "method": "pcgrad", "sample_weighting": True, "task_ratio": "2:1", "smart_weight": 0.5, "lora": {},
        "num_train_epochs": 1, "samples_per_task_per_epoch": 16, "metric_for_best_model": "topics_macro_f1",
        "two_step": {"num_train_epochs": 1},
    })
    path = tmp_path / "both.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path)]) == 0
    run = tmp_path / "run"
    results = json.loads((run / "results.json").read_text())
    assert {"topics_micro_f1", "topics_macro_f1", "topics_subset_acc", "ending_acc"} <= set(results)
    assert results["overall"] == pytest.approx((results["topics_macro_f1"] + results["ending_acc"]) / 2)
    for task in ("topics", "ending"):
        assert (run / "tasks" / task / "best" / "mtbert_config.json").is_file()
    saved = json.loads((run / "tasks" / "topics" / "best" / "mtbert_config.json").read_text())["tasks"]
    assert len(next(t for t in saved if t["name"] == "topics")["tuned_thresholds"]) == 4
    assert main(["evaluate", str(run), "--json", str(tmp_path / "eval.json")]) == 0
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["topics_macro_f1"] == pytest.approx(results["topics_macro_f1"], abs=1e-6)
    assert evaluated["ending_acc"] == pytest.approx(results["ending_acc"], abs=1e-6)


def test_a_run_of_both_kinds_resumed_from_a_checkpoint_ends_as_the_whole_run(tiny_model_dir, tmp_path):
    """The state a run killed after checkpoint-4 leaves (its logs up to step 4, no later checkpoint), resumed."""
    from helpers.runs import assert_same_run, train_here

    config = yaml.safe_load((ROOT / "configs" / "examples" / "multi-label.yaml").read_text())
    ending = yaml.safe_load((ROOT / "configs" / "examples" / "multiple-choice.yaml").read_text())["tasks"][0]

    def write(name: str) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({
            **config, "output_dir": str(tmp_path / name), "model_name_or_path": str(tiny_model_dir),
            "data_dir": str(DATA), "tasks": [config["tasks"][0], ending], "method": "pcgrad", "num_train_epochs": 2,
            "samples_per_task_per_epoch": 16, "per_device_train_batch_size": 4, "save_steps": 2,
            "save_total_limit": 10, "eval_strategy": "steps", "eval_steps": 2}))
        return path

    train_here([str(write("whole"))])
    broken = tmp_path / "broken"
    shutil.copytree(tmp_path / "whole", broken)
    for name in ("checkpoint-6", "checkpoint-8", "predictions", "scores"):
        shutil.rmtree(broken / name)
    (broken / "results.json").unlink()
    for log in ("metrics.jsonl", "train_log.jsonl"):
        lines = [line for line in (broken / log).read_text().splitlines() if json.loads(line).get("step", 0) <= 4]
        (broken / log).write_text("".join(line + "\n" for line in lines))
    train_here([str(write("broken")), "--resume_from_checkpoint", "last"])
    assert_same_run(tmp_path / "whole", broken)
