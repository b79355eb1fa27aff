"""Runs compared on the same dev examples: their dev prediction files read against the dev labels, for the
difference of two overall scores with its paired bootstrap interval (`metrics.bootstrap_difference`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mtbert.config import TrainConfig
from mtbert.errors import MtbertError
from mtbert.evaluation.ensemble import dev_labels
from mtbert.evaluation.metrics import Results, bootstrap_difference
from mtbert.kinds.base import values_array
from mtbert.tasks import TaskSpec


def dev_triples(folders: list[Path], specs: list[TaskSpec], labels: dict[str, dict[str, float] | None]) -> Results:
    """{task: (spec, dev predictions, labels)} from the CS224N dev files in `folders` (in a run's `predictions/`
    or, for an ensemble, the folder itself); MtbertError when a task has no labels, no file or missing ids."""
    triples = {}
    for spec in specs:
        kind = spec.task_kind
        name = f"{spec.name}-dev-output{kind.prediction_suffix}"
        found = [f / sub / name for f in folders for sub in ("predictions", ".") if (f / sub / name).is_file()]
        task_labels = labels.get(spec.name)
        if task_labels is None:
            raise MtbertError(f"{folders[0]}: no dev labels for task {spec.name}")
        if not found:
            raise MtbertError(f"{folders[0]}: no {name}")
        values = kind.read_predictions(found[0], spec)
        missing = [i for i in task_labels if i not in values]
        if missing:
            raise MtbertError(f"{found[0]}: {len(missing)} dev ids of task {spec.name} have no prediction")
        triples[spec.name] = (spec, values_array([values[i] for i in task_labels]),
                              kind.label_array(list(task_labels.values())))
    return triples


def run_dev_results(run_dir: Path, cfg: TrainConfig, label_cache: dict[Any, Any] | None = None) -> Results:
    """A finished run's dev predictions (`predictions/<task>-dev-output.csv`) against the dev labels of the data
    folder its config reads (`dev_triples`); `label_cache` keeps those labels for the next run of the same
    data folder, task and max_eval_samples."""
    cache: dict[Any, Any] = {} if label_cache is None else label_cache
    specs = cfg.task_specs()
    labels = {}
    for spec in specs:
        key = (spec, cfg.resolved_data_dir(), cfg.max_eval_samples)
        if key not in cache:
            cache[key] = dev_labels(spec, cfg.resolved_data_dir(), cfg.max_eval_samples)
        labels[spec.name] = cache[key]
    return dev_triples([run_dir], specs, labels)


def paired_difference(run: Results, reference: Results) -> tuple[float, float, float]:
    """Overall(run) - overall(reference) and its paired 95% bootstrap interval; MtbertError, in one phrase, when
    the two were not scored on the same tasks and dev examples."""
    if set(run) != set(reference):
        raise MtbertError(f"its tasks ({', '.join(run)}) are not the reference run's ({', '.join(reference)})")
    try:
        return bootstrap_difference(run, reference)
    except ValueError as err:
        raise MtbertError(f"not scored on the reference run's dev examples ({err})") from None
