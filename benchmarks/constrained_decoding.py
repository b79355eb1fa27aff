"""Constrained decoding against each word's argmax, on a TRAINED run's dev tag probabilities.

    python benchmarks/constrained_decoding.py RUN --json OUT

For each token task of RUN (a plain run folder), the dev tag probabilities its best model wrote
(`scores/<task>-dev.tsv`) are decided twice, as the task's kind decides them: each word's most probable tag, and
with `constrained_decoding: true` (the most probable tag sequence its BIO or IOBES scheme allows). The other tasks
keep their dev predictions (`predictions/`). Written per decoding: every metric `mtbert evaluate` computes (each
task's, the overall score and each input group's frame accuracy), and per changed column (the token task's primary
metric, the frame accuracy) the paired difference with its 95% bootstrap interval over the dev examples (both
decodings scored on the same resamples, a group's tasks resampled together). No model is run: the probabilities are
the same for both; only how tags are read off them differs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
from pathlib import Path

import numpy as np

from mtbert.bench.machine import machine
from mtbert.config import load_config
from mtbert.evaluation.ensemble import dev_labels, read_predictions, read_scores, score_file
from mtbert.evaluation.finished import trained_tasks
from mtbert.evaluation.metrics import compute_metrics, resampled_column
from mtbert.kinds.base import values_array
from mtbert.runs.layout import RunDir

RESAMPLES = 1000


def compare(run_dir: Path, seed: int = 0) -> dict:
    run = RunDir(run_dir)
    cfg = load_config(run.root / "config.yaml")
    data_dir = cfg.resolved_data_dir()
    specs = trained_tasks(run_dir, cfg)
    token = [s for s in specs if s.kind == "token-classification"]
    if not token:
        raise SystemExit(f"{run_dir}: no token-classification task")
    decodings: dict[str, dict] = {}
    for constrained in (False, True):
        results = {}
        for spec in specs:
            labels = dev_labels(spec, data_dir, cfg.max_eval_samples)
            ids = list(labels)
            if spec.kind == "token-classification":
                spec = dataclasses.replace(spec, constrained_decoding=constrained)
                scores = read_scores(run.root / "scores" / score_file(spec.name, "dev"), spec)
                stacked = np.empty(len(ids), dtype=object)
                for k, example_id in enumerate(ids):
                    stacked[k] = scores[example_id]
                predictions = spec.task_kind.decide_scores(spec, stacked)
            else:
                path = run.root / "predictions" / f"{spec.name}-dev-output{spec.task_kind.prediction_suffix}"
                values = read_predictions(path, spec)
                predictions = values_array([values[i] for i in ids])
            results[spec.name] = (spec, predictions, spec.task_kind.label_array([labels[i] for i in ids]))
        decodings["constrained" if constrained else "argmax"] = results
    examples = len(next(iter(decodings["argmax"].values()))[2])
    indices = np.random.default_rng(seed).integers(0, examples, (RESAMPLES, examples))
    metrics = {name: compute_metrics(results) for name, results in decodings.items()}
    columns = [s.metric_key for s in token] + [k for k in metrics["argmax"] if k.endswith("_frame_acc")]
    paired = {}
    for column in columns:
        first = resampled_column(decodings["constrained"], column, indices)
        second = resampled_column(decodings["argmax"], column, indices)
        low, high = np.percentile(first - second, [2.5, 97.5])
        paired[column] = {"argmax": metrics["argmax"][column], "constrained": metrics["constrained"][column],
                          "difference": metrics["constrained"][column] - metrics["argmax"][column],
                          "ci95": [float(low), float(high)]}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            check=False).stdout.strip()
    return {"benchmark": "constrained_decoding", "run": str(run_dir), "commit": commit, **machine(),
            "examples": examples, "resamples": RESAMPLES, "metrics": metrics, "paired": paired}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    args = parser.parse_args()
    out = compare(args.run_dir)
    for column, figures in out["paired"].items():
        print(f"{column}: argmax {figures['argmax']:.4f}, constrained {figures['constrained']:.4f}, difference "
              f"{figures['difference']:+.4f} (95% {figures['ci95'][0]:+.4f} to {figures['ci95'][1]:+.4f})")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
