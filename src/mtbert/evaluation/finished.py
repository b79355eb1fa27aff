"""Using a finished run: find its models, evaluate them on labeled files, predict for one task."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from mtbert.config import TrainConfig, load_config
from mtbert.data import Example, encode_examples, read_task_file
from mtbert.errors import MtbertError
from mtbert.evaluation.evaluate import predict_set
from mtbert.evaluation.metrics import bootstrap_overall, compute_metrics
from mtbert.evaluation.predict import format_value, write_cs224n, write_csv
from mtbert.model import MultiTaskModel, load_tokenizer
from mtbert.tasks import TaskSpec


def load_run_config(run_dir: Path) -> TrainConfig:
    if not (run_dir / "config.yaml").is_file():
        raise MtbertError(f"{run_dir}: not a run folder (config.yaml is missing)")
    return load_config(run_dir / "config.yaml")


def model_dirs(run_dir: Path, cfg: TrainConfig) -> dict[str, Path]:
    """The checkpoint that predicts each task: tasks/<task>/best for two-step runs, else best/."""
    out = {}
    for spec in cfg.task_specs():
        specialised = run_dir / "tasks" / spec.name / "best"
        out[spec.name] = specialised if specialised.is_dir() else run_dir / "best"
    for task, path in out.items():
        if not (path / "mtbert_config.json").is_file():
            raise MtbertError(f"{path}: the model for task {task} is missing (is the run finished?)")
    return out


def trained_tasks(run_dir: Path, cfg: TrainConfig) -> list[TaskSpec]:
    """Tasks the run's models can predict (a ratio-0 task of a one-stage run has no trained head)."""
    if (run_dir / "tasks").is_dir() or cfg.task_ratio is None:
        return cfg.task_specs()
    ratios = cfg.ratios()
    return [s for s in cfg.task_specs() if ratios[s.name] > 0]


def evaluate_run(run_dir: Path, files: dict[str, str] | None = None) -> dict[str, float]:
    """Metrics (and the overall score's bootstrap interval) of a run's models on labeled files."""
    cfg = load_run_config(run_dir)
    specs = {s.name: s for s in trained_tasks(run_dir, cfg)}
    files = files or {}
    for task in files:
        if task not in specs:
            raise MtbertError(f"--{task}: the run has no task {task} (tasks: {', '.join(specs)})")
    dirs = model_dirs(run_dir, cfg)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = {}
    for name, spec in specs.items():
        path = Path(files[name]) if name in files else cfg.resolved_data_dir() / spec.dev_file
        examples = read_task_file(path, spec, labeled=True).examples
        model = MultiTaskModel.from_pretrained(dirs[name]).to(device)
        tokenizer = load_tokenizer(dirs[name])
        encoded = encode_examples(tokenizer, spec, examples, cfg.max_length, model.pair_architecture)
        predictions, _ = predict_set(model, encoded, cfg.per_device_eval_batch_size, tokenizer.pad_token_id or 0,
                                     device, progress=True)
        results[name] = (spec, predictions, np.array([e.label for e in examples]))
    metrics = compute_metrics(results)
    metrics["overall_ci95"] = list(bootstrap_overall(results))
    return metrics


def predict_run(run_dir: Path, task: str, input_path: str, output: str, fmt: str) -> None:
    """Predict one task for a file (or standard input) and write CS224N or CSV lines."""
    cfg = load_run_config(run_dir)
    specs = {s.name: s for s in trained_tasks(run_dir, cfg)}
    if task not in specs:
        raise MtbertError(f"--task: the run has no trained task {task} (tasks: {', '.join(specs)})")
    spec = specs[task]
    if input_path == "-":
        examples = examples_from_lines(sys.stdin.read().splitlines(), spec)
    else:
        examples = read_task_file(input_path, spec, labeled=False).examples
    path = model_dirs(run_dir, cfg)[task]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = MultiTaskModel.from_pretrained(path).to(device)
    tokenizer = load_tokenizer(path)
    encoded = encode_examples(tokenizer, spec, examples, cfg.max_length, model.pair_architecture)
    predictions, _ = predict_set(model, encoded, cfg.per_device_eval_batch_size, tokenizer.pad_token_id or 0, device,
                                 progress=output != "-")
    ids = [e.id for e in examples]
    if output == "-":
        for example_id, value in zip(ids, predictions, strict=True):
            print(f"{example_id}\t{format_value(spec, value)}")
        return
    (write_cs224n if fmt == "cs224n" else write_csv)(output, spec, ids, predictions)


def examples_from_lines(lines: list[str], spec: TaskSpec) -> list[Example]:
    """Examples typed on standard input: one per line, the two texts of a pair separated by a tab."""
    examples = []
    want = len(spec.text_columns)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        texts = line.split("\t")
        if len(texts) != want:
            raise MtbertError(f"<stdin>, line {number}: expected {want} tab-separated text(s), found {len(texts)}")
        examples.append(Example(id=str(number), texts=tuple(t.strip() for t in texts), label=None, line=number))
    return examples
