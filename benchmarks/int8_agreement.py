"""int8 against fp32 on a TRAINED run: each task's dev predictions of its best model, fp32 and int8.

    python benchmarks/int8_agreement.py RUN --json OUT

For each task of RUN (a plain or two-step run folder: each task's model from `best/` or `tasks/<task>/best/`), the
dev examples are predicted as `MultiTaskModel.predict` does, once in fp32 and once with `quantize="int8"` (the
linear layers dynamically quantized, as `mtbert predict --quantize int8`), and the two are compared with the task
kind's agreement measure (classification: the share of equal decisions; regression: the largest absolute
difference) beside each one's dev metric. Seconds are the whole predict call, tokenization included.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import numpy as np

from mtbert.bench.machine import machine
from mtbert.config import load_config
from mtbert.data.loading import read_split
from mtbert.model import MultiTaskModel
from mtbert.runs.layout import RunDir


def task_model_folder(run: RunDir, task: str) -> Path:
    """The best model that predicts `task`: a two-step run's own model of the task, else the run's."""
    own = run.task(task).best
    return own if own.is_dir() else run.best


def agreement(run_dir: Path) -> dict:
    run = RunDir(run_dir)
    cfg = load_config(run.root / "config.yaml")
    out: dict = {"run": str(run_dir), **machine(), "tasks": {}}
    for spec in cfg.task_specs():
        model = MultiTaskModel.from_pretrained(task_model_folder(run, spec.name))
        examples = read_split(spec, "dev", cfg.resolved_data_dir()).examples
        texts = [e.texts if len(e.texts) > 1 else e.texts[0] for e in examples]
        labels = [e.label for e in examples]
        figures = {"examples": len(examples)}
        predictions = {}
        for precision in ("fp32", "int8"):
            start = time.perf_counter()
            predicted = model.predict(spec.name, texts, quantize=None if precision == "fp32" else "int8")
            figures[f"{precision}_seconds"] = round(time.perf_counter() - start, 2)
            predictions[precision] = predicted
            metrics = spec.task_kind.metric_values(spec, predicted.predictions, np.asarray(labels))
            figures[f"{precision}_dev"] = {k: round(float(v), 4) for k, v in metrics.items()}
        name, value = spec.task_kind.agreement(spec, predictions["fp32"].predictions, predictions["int8"].predictions)
        figures[f"int8_{name}"] = round(float(value), 4)
        out["tasks"][spec.name] = figures
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    results = agreement(args.run_dir)
    results["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                       text=True).stdout.strip()
    args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results["tasks"], indent=2))


if __name__ == "__main__":
    main()
