"""Two-step fine-tuning: stage 1 as configured (or a finished run), then one specialised model per task.

Stage 2 starts each task from a copy of stage 1's best model with a fresh head for that task (or, with
`keep_stage1`, lets stage 1's own model compete as step 0) and trains on that task alone. The run folder's
top-level files then come from the specialised models.

With `push_to_hub`, each stage pushes into the Hub repo as a one-stage run does, into its own folder
(`stage1/`, `tasks/<task>/`), and the end push, after stage 2, holds the run's card and every model
(training/hub_push.py says which files go where).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from mtbert.config import TrainConfig, stage2_config
from mtbert.distributed import start as start_ranks
from mtbert.errors import MtbertError
from mtbert.io import atomic_write_json, atomic_write_text, read_jsonl
from mtbert.runs.layout import MODEL_CONFIG, PREDICTIONS, SCORES, RunDir
from mtbert.runs.model_card import write_model_card
from mtbert.tasks import TaskSpec
from mtbert.training import checkpoint as ckpt
from mtbert.training.hub_push import HubPush
from mtbert.training.stage import ModelStart, train_stage


def train_two_step(cfg: TrainConfig, output_dir: Path, resume: str | None = None,
                   backbone: Path | None = None) -> dict:
    """Stage 1 as configured (or `two_step.init_from`), then one specialised model per task from its best model."""
    run = RunDir(output_dir)
    settings = cfg.two_step_settings
    ranks = start_ranks(cfg.ddp_mode)
    hub = HubPush(cfg, run.root) if cfg.push_to_hub and ranks.is_main else None  # optional: push_to_hub
    init_from = settings.init_from
    if init_from:
        stage1_best = resolve_best(Path(init_from))
    else:
        stage1 = run.stage1
        stage1_cfg = replace(cfg, two_step=None, output_dir=str(stage1.root))
        if not stage1.results.is_file():
            stage_resume = resume if resume and ckpt.has_checkpoint(stage1.root, resume) else None
            if hub is not None:
                hub.begin_stage(stage1_cfg, stage1.root)
            train_stage(stage1_cfg, stage1.root, ModelStart(backbone=str(backbone) if backbone else None),
                        resume_from_checkpoint=stage_resume, hub=hub)
        stage1_best = stage1.best
    stage2 = stage2_config(cfg)
    ratios = cfg.ratios()

    per_task_results = {}
    for spec in cfg.task_specs():
        task_run = run.task(spec.name)
        if task_run.results.is_file() and resume:
            per_task_results[spec.name] = read_results(task_run.root)
            continue
        # one task: its `overall` is its own score, so any metric_for_best_model of the run picks the same model
        task_cfg = replace(stage2, tasks=[_task_entry(cfg, spec)], method="single", task_ratio=None,
                           output_dir=str(task_run.root), metric_for_best_model="overall")
        stage_resume = resume if resume and ckpt.has_checkpoint(task_run.root, resume) else None
        # stage 1's model competes for a task it trained (ratio > 0), or for any of init_from's heads
        competes = settings.keep_stage1 and (bool(init_from) or ratios[spec.name] > 0)
        start = ModelStart(init_from=stage1_best, reset_head=spec.name, competes=competes)
        if hub is not None:
            hub.begin_stage(task_cfg, task_run.root)
        per_task_results[spec.name] = train_stage(task_cfg, task_run.root, start, resume_from_checkpoint=stage_resume,
                                                  hub=hub)
    results = ranks.main_only(combine_task_runs, cfg, output_dir, per_task_results)
    return hub.finish(results) if hub is not None else results


def _task_entry(cfg: TrainConfig, spec: TaskSpec) -> Any:
    for entry in cfg.tasks:
        if entry == spec.name or (isinstance(entry, dict) and entry.get("name") == spec.name):
            return entry
    return spec.name


def resolve_best(run_dir: Path) -> Path:
    """The best model of a run dir (or the folder itself when it is a checkpoint)."""
    run = RunDir(run_dir)
    for candidate in (run.root, run.best, run.stage1.best):
        if (candidate / MODEL_CONFIG).is_file():
            return candidate
    raise MtbertError(f"two_step.init_from: {run_dir} holds no trained model (no best/ folder)")


def read_results(run_dir: Path) -> dict:
    return json.loads(RunDir(run_dir).results.read_text(encoding="utf-8"))


def task_metrics_of(spec: TaskSpec, values: dict[str, Any]) -> dict[str, Any]:
    """The `<task>_<metric>` entries of `values` for every metric the task's kind computes."""
    keys = (f"{spec.name}_{metric}" for metric in spec.task_kind.metric_keys(spec))
    return {key: values[key] for key in keys if key in values}


def combine_task_runs(cfg: TrainConfig, output_dir: Path, per_task: dict[str, dict]) -> dict:
    """Top-level metrics.jsonl, results.json and predictions/ of a two-step run, from the specialised models."""
    from mtbert.evaluation.metrics import bootstrap_overall, frame_accuracies
    from mtbert.tasks import overall_score

    run = RunDir(output_dir)
    specs = cfg.task_specs()
    results: dict[str, Any] = {}
    for spec in specs:  # every metric of the task's kind, from its specialised model
        results.update(task_metrics_of(spec, per_task[spec.name]))
        results[spec.metric_key] = per_task[spec.name][spec.metric_key]
    results["overall"] = overall_score(specs, results)
    # bootstrap over the specialised models' own dev predictions
    triples = {spec.name: dev_predictions_with_labels(cfg, spec, run.task(spec.name).root) for spec in specs}
    results["overall_ci95"] = list(bootstrap_overall(triples))
    results.update(frame_accuracies(triples))  # each input_group's, from the specialised models' predictions
    stage1_seconds = read_results(run.stage1.root).get("train_seconds", 0.0) if run.stage1.results.is_file() else 0.0
    results["train_seconds"] = round(sum(r.get("train_seconds", 0.0) for r in per_task.values()) + stage1_seconds, 1)
    results["best_step"] = {spec.name: per_task[spec.name].get("best_step") for spec in specs}
    # one metrics line per stage-2 epoch: each task's metric at that evaluation
    # (a task whose stage-1 model competed has a step-0 line that the others lack: rows go by step)
    histories = {s.name: {r["step"]: r for r in read_jsonl(run.task(s.name).metrics)} for s in specs}
    lines = []
    for step in sorted(set.intersection(*(set(h) for h in histories.values()))):
        first = histories[specs[0].name][step]
        row: dict[str, Any] = {"epoch": first["epoch"], "step": step, "split": "dev", "stage": 2}
        for spec in specs:
            row.update(task_metrics_of(spec, histories[spec.name][step]))
            row[spec.metric_key] = histories[spec.name][step][spec.metric_key]
        row["overall"] = overall_score(specs, row)
        lines.append(row)
    atomic_write_text(run.metrics, "".join(json.dumps(r) + "\n" for r in lines))
    for folder in (PREDICTIONS, SCORES):
        (run.root / folder).mkdir(exist_ok=True)
        for spec in specs:
            for path in (run.task(spec.name).root / folder).glob(f"{spec.name}-*"):
                shutil.copyfile(path, run.root / folder / path.name)
    atomic_write_json(run.results, results)
    write_model_card(run, run.root, cfg, results)
    return results


def dev_predictions_with_labels(cfg: TrainConfig, spec: TaskSpec, run_dir: Path):
    """(spec, dev predictions, dev labels) of a finished run, read back from its files."""
    from mtbert.data.loading import read_split, resolve_labels
    from mtbert.kinds.base import values_array

    spec = resolve_labels(spec, cfg.resolved_data_dir())
    kind = spec.task_kind
    values = kind.read_predictions(RunDir(run_dir).prediction(spec.name, "dev", kind.prediction_suffix), spec)
    examples = read_split(spec, "dev", cfg.resolved_data_dir(), report=False).examples
    if cfg.max_eval_samples:
        examples = examples[: cfg.max_eval_samples]
    predictions = values_array([values[e.id] for e in examples])
    labels = kind.label_array([e.label for e in examples])
    return spec, predictions, labels
