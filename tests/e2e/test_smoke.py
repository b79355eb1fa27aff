"""The real CLI on configs/smoke.yaml (real data and backbone when MTBERT_DATA is set, tiny fixtures otherwise)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.runs import train_here

from mtbert.cli import main

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
REAL = bool(os.environ.get("MTBERT_DATA")) and Path(os.environ["MTBERT_DATA"], "ids-sst-train.csv").is_file()


def mtbert(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mtbert", *args], capture_output=True, text=True, input=stdin,
                          timeout=900, cwd=ROOT)


def _overrides(tmp_path: Path, name: str, tiny_model_dir: Path, tiny_data_dir: Path, real: bool = REAL) -> list[str]:
    args = ["--output_dir", str(tmp_path / name)]
    if not real:
        args += ["--model_name_or_path", str(tiny_model_dir), "--data_dir", str(tiny_data_dir),
                 "--learning_rate", "1e-3"]
    return args


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, tiny_model_dir, tiny_data_dir) -> Path:
    tmp = tmp_path_factory.mktemp("smoke")
    # `mtbert train` in this process (a process of its own costs seconds of imports); the predictions below run the
    # CLI as processes of their own
    train_here([str(ROOT / "configs" / "smoke.yaml"), *_overrides(tmp, "run", tiny_model_dir, tiny_data_dir)])
    return tmp / "run"


def test_smoke_run_writes_every_file_in_cs224n_format(smoke_run):
    for name in ("config.yaml", "metrics.jsonl", "train_log.jsonl", "results.json", "best/mtbert_config.json"):
        assert (smoke_run / name).is_file(), name
    headers = {"sst": "Predicted_Sentiment", "para": "Predicted_Is_Paraphrase", "sts": "Predicted_Similiary"}
    for task, header in headers.items():
        lines = _lines(smoke_run / "predictions" / f"{task}-dev-output.csv")
        assert lines[0] == f"id \t {header} "
        assert len(lines) == 1 + (200 if REAL else 40)
        ident, value = lines[1].split(" , ")
        assert len(ident) == 25 and value.endswith(" ")
        float(value)
    assert (smoke_run / "predictions" / "sst-test-output.csv").is_file()
    assert (smoke_run / "predictions" / "sts-test-output.csv").is_file()
    assert not (smoke_run / "predictions" / "para-test-output.csv").exists()  # no Quora test file here


def test_smoke_metrics_beat_chance(smoke_run):
    results = json.loads((smoke_run / "results.json").read_text())
    metrics = [json.loads(line) for line in _lines(smoke_run / "metrics.jsonl")]
    assert [m["epoch"] for m in metrics] == [1.0, 2.0]
    assert results["overall"] == pytest.approx(
        (results["sst_acc"] + results["para_acc"] + (1 + results["sts_corr"]) / 2) / 3)
    assert results["overall"] == pytest.approx(max(m["overall"] for m in metrics), abs=1e-9)
    if REAL:  # random guessing: 0.2 on 5 classes, 0.5 on Quora, r = 0 on STS (24 steps are not enough to
        # beat Quora's majority class, 0.6 of these 200 dev pairs, reliably)
        assert results["sst_acc"] > 0.25 and results["para_acc"] > 0.5 and results["sts_corr"] > 0.1


def test_evaluate_and_predict_agree_with_the_run(smoke_run, tmp_path, tiny_data_dir):
    data_dir = Path(os.environ["MTBERT_DATA"]) if REAL else tiny_data_dir
    files = {}
    for task, name in (("sst", "ids-sst-dev.csv"), ("para", "quora-dev.csv"), ("sts", "sts-dev.csv")):
        # the smoke config evaluates the first 200 dev rows: hand evaluate exactly those
        files[task] = tmp_path / name
        files[task].write_text("\n".join(_lines(data_dir / name)[:201]) + "\n", encoding="utf-8")
    args = [f"--{task}={path}" for task, path in files.items()]
    # evaluate and predict from a file in this process; the prediction from standard input runs the CLI as a
    # process of its own
    assert main(["evaluate", str(smoke_run), *args, "--json", str(tmp_path / "eval.json")]) == 0
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    results = json.loads((smoke_run / "results.json").read_text())
    for key in ("sst_acc", "para_acc", "sts_corr", "overall"):
        assert evaluated[key] == pytest.approx(results[key], abs=1e-6), key
    out = tmp_path / "sts.csv"
    assert main(["predict", str(smoke_run), "--task", "sts", "--input", str(files["sts"]), "--output", str(out)]) == 0
    assert _lines(out) == _lines(smoke_run / "predictions" / "sts-dev-output.csv")
    result = mtbert("predict", str(smoke_run), "--task", "para", "--input", "-",
                    stdin="How do I learn Python?\tWhat is the best way to learn Python?\nhello\tgoodbye\n")
    assert result.returncode == 0, result.stderr[-2000:]
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == ["1", "2"]
    assert all(line.split("\t")[1] in ("0", "1") for line in result.stdout.splitlines())


def test_smoke_two_step_with_a_ratio_zero_task(tmp_path, tiny_model_dir, tiny_data_dir):
    # the tiny model and data always: four trainings (stage 1, then each task), each reading the data again; in
    # this process, and the prediction below as a process of its own
    train_here([str(ROOT / "configs" / "smoke-two-step.yaml"), *_overrides(tmp_path, "two", tiny_model_dir,
                                                                            tiny_data_dir, real=False)])
    run = tmp_path / "two"
    stage1 = json.loads((run / "stage1" / "results.json").read_text())
    assert "sst_acc" not in stage1 and {"para_acc", "sts_corr"} <= set(stage1)
    for task in ("sst", "para", "sts"):
        assert (run / "tasks" / task / "best" / "mtbert_config.json").is_file()
        assert (run / "tasks" / task / "metrics.jsonl").is_file()
        assert (run / "predictions" / f"{task}-dev-output.csv").is_file()
    results = json.loads((run / "results.json").read_text())
    for task, key in (("sst", "sst_acc"), ("para", "para_acc"), ("sts", "sts_corr")):
        assert results[key] == json.loads((run / "tasks" / task / "results.json").read_text())[key]
    result = mtbert("predict", str(run), "--task", "sst", "--input", "-", stdin="a great and moving film\n")
    assert result.returncode == 0 and result.stdout.split("\t")[1].strip() in "01234"
