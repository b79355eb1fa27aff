"""The real CLI: train a tiny run, `mtbert export --format onnx` (fp32 and int8), then `mtbert predict` and
`mtbert evaluate` on the export folder give the run's own predictions and metrics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.runs import train_here

from mtbert.cli import main
from mtbert.evaluation.finished import evaluate_run

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
pytestmark = pytest.mark.e2e


def mtbert(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mtbert", *args], capture_output=True, text=True, timeout=900)


def _values(path: Path) -> tuple[list[str], np.ndarray]:
    rows = [line.split(",") for line in path.read_text(encoding="utf-8").splitlines()[1:]]
    return [r[0] for r in rows], np.array([float(r[1]) for r in rows])


def test_export_predict_and_evaluate_through_the_cli(tiny_config, tiny_data_dir, tmp_path, capsys):
    run = Path(tiny_config["output_dir"])
    train_here([str(_write(tiny_config, tmp_path)), "--pair_architecture", "bi-cosine", "--pooling", "mean"])
    fp32, int8 = tmp_path / "onnx", tmp_path / "onnx-int8"
    done = mtbert("export", str(run), "--format", "onnx", "--output", str(fp32))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {fp32}: one ONNX graph (fp32) with the tasks sst, para, sts")
    assert "Traceback" not in done.stderr and "DEBUG" not in done.stderr
    settings = json.loads((fp32 / "mtbert_onnx.json").read_text())
    assert [t["encoder_inputs"] for t in settings["tasks"]] == [1, 2, 2]
    # the int8 export and the predictions below run the CLI in this process (a process of its own costs seconds
    # of imports each); the fp32 export above and `evaluate` below each run as `python -m mtbert`
    assert main(["export", str(run), "--format", "onnx", "--quantize", "int8", "--output", str(int8)]) == 0

    for task, file in (("sst", "ids-sst-dev.csv"), ("para", "quora-dev.csv"), ("sts", "sts-dev.csv")):
        outs = {name: tmp_path / f"{task}-{name}.csv" for name in ("run", "fp32", "int8")}
        args = ["--task", task, "--input", str(tiny_data_dir / file), "--format", "csv", "--output"]
        assert main(["predict", str(run), *args, str(outs["run"])]) == 0  # the run's own, in this process
        for name, source in (("fp32", fp32), ("int8", int8)) if task == "sts" else (("fp32", fp32),):
            assert main(["predict", str(source), *args, str(outs[name])]) == 0
        ids, want = _values(outs["run"])
        got_ids, got = _values(outs["fp32"])
        assert got_ids == ids
        np.testing.assert_allclose(got, want, atol=1e-4)
        if task == "sts":
            _, int8_values = _values(outs["int8"])
            assert np.mean(np.abs(int8_values - want) < 0.5) > 0.8  # loosely: int8 activations are rounded

    done = mtbert("evaluate", str(fp32), "--json", str(tmp_path / "fp32.json"))
    assert done.returncode == 0, done.stderr
    got, want = json.loads((tmp_path / "fp32.json").read_text()), evaluate_run(run)
    for key in ("sst_acc", "para_acc", "sts_corr", "overall"):
        assert got[key] == pytest.approx(want[key], abs=1e-4), key

    (tmp_path / "nothing").mkdir()  # neither a run nor an export
    assert main(["predict", str(tmp_path / "nothing"), "--task", "sst", "--input", "-"]) == 2
    assert "config.yaml is missing" in capsys.readouterr().err


def _write(config: dict, tmp_path: Path) -> Path:
    import yaml

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path
