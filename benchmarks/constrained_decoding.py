"""Constrained decoding against each word's argmax, on a TRAINED run's dev tag probabilities.

    python benchmarks/constrained_decoding.py RUN [--against RUN2] --json OUT

For each token task of RUN (a plain run folder), the dev tag probabilities its best model wrote
(`scores/<task>-dev.tsv`) are decided twice, as the task's kind decides them: each word's most probable tag, and
with `constrained_decoding: true` (the most probable tag sequence its BIO or IOBES scheme allows). The other tasks
keep their dev predictions (`predictions/`). Written per decoding: every metric `mtbert evaluate` computes (each
task's, the overall score and each input group's frame accuracy), and per changed column (the token task's primary
metric, the frame accuracy) the paired difference with its 95% bootstrap interval over the dev examples (both
decodings scored on the same resamples, a group's tasks resampled together). No model is run: the probabilities are
the same for both; only how tags are read off them differs.

`--against RUN2`: RUN against RUN2 instead, both decoded constrained, paired over the same dev examples (e.g. two
recipes tried on dev).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from mtbert.bench.machine import machine
from mtbert.config import load_config
from mtbert.evaluation.ensemble import dev_labels, read_predictions, read_scores, score_file
from mtbert.evaluation.finished import trained_tasks
from mtbert.evaluation.metrics import Results, compute_metrics, resampled_column
from mtbert.kinds.base import values_array
from mtbert.runs.layout import RunDir

RESAMPLES = 1000


def dev_results(run_dir: Path, constrained: bool) -> Results:
    """A run's dev results with its token tasks' tags decided from its dev probabilities, constrained or not (the
    other tasks: their dev prediction files)."""
    run = RunDir(run_dir)
    cfg = load_config(run.root / "config.yaml")
    results = {}
    for spec in trained_tasks(run_dir, cfg):
        labels = dev_labels(spec, cfg.resolved_data_dir(), cfg.max_eval_samples)
        if labels is None:
            print(f"constrained_decoding.py: no dev labels for task {spec.name!r} of {run_dir} under "
                  f"{cfg.resolved_data_dir()} (set MTBERT_DATA to the run's data folder)", file=sys.stderr)
            raise SystemExit(2)
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
    if not any(spec.kind == "token-classification" for spec, _, _ in results.values()):
        raise SystemExit(f"{run_dir}: no token-classification task")
    return results


def paired(first: Results, second: Results, seed: int = 0) -> dict[str, dict]:
    """Per column (each task's primary metric, each group's frame accuracy) first's and second's value and the
    difference first - second with its paired 95% bootstrap interval (the same resampled examples for both)."""
    examples = len(next(iter(first.values()))[2])
    indices = np.random.default_rng(seed).integers(0, examples, (RESAMPLES, examples))
    metrics = compute_metrics(first), compute_metrics(second)
    columns = [s.metric_key for s, _, _ in first.values()] + [k for k in metrics[0] if k.endswith("_frame_acc")]
    out = {}
    for column in columns:
        a, b = resampled_column(first, column, indices), resampled_column(second, column, indices)
        if a is None or b is None:  # a column only one of the runs has (a task the other did not train)
            continue
        low, high = np.percentile(a - b, [2.5, 97.5])
        out[column] = {"first": metrics[0][column], "second": metrics[1][column],
                       "difference": metrics[0][column] - metrics[1][column], "ci95": [float(low), float(high)]}
    return out


def compare(run_dir: Path, against: Path | None = None) -> dict:
    """Constrained against argmax decoding of one run, or (`against`) two runs, both decoded constrained."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            check=False).stdout.strip()
    if against is None:
        first, second = dev_results(run_dir, True), dev_results(run_dir, False)
        names = {"first": "constrained", "second": "argmax"}
    else:
        first, second = dev_results(run_dir, True), dev_results(against, True)
        names = {"first": str(run_dir), "second": str(against)}
    figures = paired(first, second)
    return {"benchmark": "constrained_decoding", "run": str(run_dir), "against": str(against) if against else None,
            "commit": commit, **machine(), "examples": len(next(iter(first.values()))[2]), "resamples": RESAMPLES,
            "first": names["first"], "second": names["second"],
            "metrics": {names["first"]: compute_metrics(first), names["second"]: compute_metrics(second)},
            "paired": figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--against", type=Path, help="a second run: both decoded constrained, compared paired")
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    args = parser.parse_args()
    out = compare(args.run_dir, args.against)
    for column, figures in out["paired"].items():
        print(f"{column}: {out['first']} {figures['first']:.4f}, {out['second']} {figures['second']:.4f}, difference "
              f"{figures['difference']:+.4f} (95% {figures['ci95'][0]:+.4f} to {figures['ci95'][1]:+.4f})")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
