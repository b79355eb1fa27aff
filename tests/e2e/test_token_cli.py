"""A token-classification task from CoNLL files through the command line: train, evaluate, predict (a file and
standard input), ensemble and export, with the entity F1 of results.json recomputed by seqeval from the written
prediction file."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from seqeval.metrics import f1_score

from mtbert.cli import main
from mtbert.data import read_task_file
from mtbert.tasks import task_from_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "configs" / "examples" / "token-task.yaml"


@pytest.fixture(scope="module")
def token_run(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("token")
    config = yaml.safe_load(EXAMPLE.read_text())
    config.update(output_dir=str(folder / "run"), data_dir=str(ROOT / "configs" / "examples" / "data"),
                  model_name_or_path=str(tiny_model_dir), num_train_epochs=2, samples_per_task_per_epoch=16,
                  learning_rate=1e-3)
    path = folder / "token.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path)]) == 0
    return Path(config["output_dir"]), config


def test_results_hold_every_metric_and_the_f1_of_the_written_predictions(token_run):
    run, config = token_run
    results = json.loads((run / "results.json").read_text())
    assert {"places_f1", "places_precision", "places_recall", "places_token_acc"} <= set(results)
    assert results["overall"] == results["places_f1"]
    spec = task_from_config(config["tasks"][0], "tasks[0]")
    dev = read_task_file(Path(config["data_dir"]) / "places-dev.conll", spec).examples
    written = {r["id"]: r for r in map(json.loads, (run / "predictions" / "places-dev-output.jsonl").read_text()
                                       .splitlines())}
    assert all(written[e.id]["tokens"] == list(e.texts[0]) for e in dev)
    recomputed = f1_score([list(e.label) for e in dev], [written[e.id]["tags"] for e in dev])
    assert results["places_f1"] == pytest.approx(recomputed, abs=1e-6)
    conll = (run / "predictions" / "places-dev-output.conll").read_text().strip().split("\n\n")
    assert len(conll) == len(dev) and conll[0].splitlines()[0].split("\t")[0] == dev[0].texts[0][0]
    assert (run / "predictions" / "places-test-output.jsonl").is_file()
    assert (run / "scores" / "places-dev.tsv").read_text().splitlines()[0].startswith("id\tword\tprob_0")


def test_evaluate_predict_and_standard_input(token_run, tmp_path, capsys, monkeypatch):
    run, config = token_run
    results = json.loads((run / "results.json").read_text())
    assert main(["evaluate", str(run), "--json", str(tmp_path / "eval.json")]) == 0
    assert json.loads((tmp_path / "eval.json").read_text())["places_f1"] == pytest.approx(results["places_f1"])
    dev = Path(config["data_dir"]) / "places-dev.conll"
    assert main(["predict", str(run), "--task", "places", "--input", str(dev),
                 "--output", str(tmp_path / "out.jsonl")]) == 0
    assert (tmp_path / "out.jsonl").read_text() == (run / "predictions" / "places-dev-output.jsonl").read_text()
    assert (tmp_path / "out.conll").is_file()
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO("alice flew to oslo\n\nbob   lives in paris\n"))
    assert main(["predict", str(run), "--task", "places", "--input", "-", "--output", "-"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["1", "3"]
    assert [len(line.split("\t")[1].split()) for line in lines] == [4, 4]


def test_ensembles_vote_and_average_per_word(token_run, tmp_path):
    run, _ = token_run
    shutil.copytree(run, tmp_path / "copy")
    own = (run / "predictions" / "places-dev-output.jsonl").read_text()
    for mode in ("vote", "soft"):
        out = tmp_path / f"ens-{mode}"
        assert main(["ensemble", str(run), str(tmp_path / "copy"), "--output_dir", str(out), "--mode", mode]) == 0
        assert (out / "places-dev-output.jsonl").read_text() == own
        ensemble = json.loads((out / "results.json").read_text())["ensemble"]
        assert ensemble["places_f1"] == pytest.approx(json.loads((run / "results.json").read_text())["places_f1"])


def test_export_loads_in_a_transformers_pipeline_and_reproduces_predict(token_run, tmp_path):
    from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

    run, _ = token_run
    out = tmp_path / "export"
    assert main(["export", str(run), "--task", "places", "--output", str(out)]) == 0
    assert "transformers" in (out / "README.md").read_text()
    tagger = pipeline("token-classification", model=str(out), device="cpu")
    assert isinstance(tagger("alice flew to oslo"), list)
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    model = AutoModelForTokenClassification.from_pretrained(str(out)).eval()
    for row in map(json.loads, (run / "predictions" / "places-dev-output.jsonl").read_text().splitlines()):
        enc = tokenizer(row["tokens"], is_split_into_words=True, return_tensors="pt")
        with torch.no_grad():
            logits = model(**enc).logits[0]
        word_ids = enc.word_ids()
        tags = [model.config.id2label[int(logits[p].argmax())] for p, w in enumerate(word_ids)
                if w is not None and (p == 0 or word_ids[p - 1] != w)]
        assert tags == row["tags"]


def test_an_mlp_token_head_is_not_exported(token_run, tmp_path, capsys):
    run, _ = token_run
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["tasks"][0]["head_hidden_sizes"] = [8]
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    try:
        assert main(["export", str(run), "--task", "places", "--output", str(tmp_path / "mlp")]) == 2
    finally:
        config["tasks"][0]["head_hidden_sizes"] = []
        (run / "config.yaml").write_text(yaml.safe_dump(config))
    assert "head_hidden_sizes: [] to export this task" in capsys.readouterr().err


def test_the_onnx_export_predicts_the_tags_of_mtbert_predict(token_run, tmp_path):
    run, config = token_run
    assert main(["export", str(run), "--format", "onnx", "--output", str(tmp_path / "onnx")]) == 0
    dev = Path(config["data_dir"]) / "places-dev.conll"
    assert main(["predict", str(tmp_path / "onnx"), "--task", "places", "--input", str(dev),
                 "--output", str(tmp_path / "onnx.jsonl")]) == 0
    assert (tmp_path / "onnx.jsonl").read_text() == (run / "predictions" / "places-dev-output.jsonl").read_text()
