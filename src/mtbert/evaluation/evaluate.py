"""Running a model over labeled or unlabeled examples, and the dev metrics of a run."""

from __future__ import annotations

import numpy as np
import torch

from mtbert.data import EncodedSet
from mtbert.distributed import ONE_PROCESS, Ranks
from mtbert.evaluation.metrics import bootstrap_overall, compute_metrics
from mtbert.model import MultiTaskModel
from mtbert.model.inference import (  # noqa: F401 - the prediction machinery, moved to model/inference.py
    PACKED_PREDICTION,
    PREDICTION_ROW_WIDTH,
    QUANTIZATIONS,
    predict_group,
    predict_set,
    quantized,
)
from mtbert.tasks import input_groups


def evaluate_sets(model: MultiTaskModel, dev_sets: dict[str, EncodedSet], batch_size: int, pad_token_id: int,
                  device: torch.device | str = "cpu", with_interval: bool = False, progress: bool = False,
                  ranks: Ranks = ONE_PROCESS) -> tuple[dict[str, float], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Dev metrics of the given tasks (plus `overall`, and `overall_ci95` when asked) and the raw outputs.

    The tasks of an input_group are predicted together, with one encoder pass per batch (`predict_group`), and
    each group's frame accuracy is among the metrics. A task whose kind fits a decision rule on dev
    (`TaskKind.tune`) gets it in the model's and the set's spec, and its predictions are decided by it. With several
    ranks the prediction is spread over them, and rank 0's metrics are given to every rank, so that all of them
    take the same decisions (the best model, early stops).
    """
    raw = {}
    for members in input_groups([encoded.spec for encoded in dev_sets.values()]).values():
        if len(members) > 1:  # tasks that share their input: one encoder pass for all of them
            raw.update(predict_group(model, {s.name: dev_sets[s.name] for s in members}, batch_size, pad_token_id,
                                     device, progress, ranks))
    for name, encoded in dev_sets.items():
        if name not in raw:
            raw[name] = predict_set(model, encoded, batch_size, pad_token_id, device, progress, ranks)
    raw = {name: raw[name] for name in dev_sets}
    for name, encoded in dev_sets.items():  # a decision rule the kind fits on dev (multi-label thresholds)
        kind, scores = encoded.spec.task_kind, raw[name][1]
        tuned = kind.tune(model.specs[name], scores, kind.label_array(encoded.labels))
        if tuned is not None:  # kept in the model's spec, so the saved model decides the same
            model.specs[name] = model.heads[name].spec = encoded.spec = tuned
            raw[name] = (kind.decide_scores(tuned, scores), scores)
    return score_outputs(dev_sets, raw, with_interval, ranks), raw


def score_outputs(dev_sets: dict[str, EncodedSet], raw: dict[str, tuple[np.ndarray, np.ndarray]],
                  with_interval: bool = False, ranks: Ranks = ONE_PROCESS) -> dict[str, float]:
    """The metrics `evaluate_sets` computes, from outputs it returned earlier (no prediction)."""
    results = {name: (encoded.spec, raw[name][0], encoded.spec.task_kind.label_array(encoded.labels))
               for name, encoded in dev_sets.items()}
    return ranks.main_only(_metrics, results, with_interval)


def _metrics(results: dict[str, tuple], with_interval: bool) -> dict[str, float]:
    metrics = compute_metrics(results)
    if with_interval:
        metrics["overall_ci95"] = list(bootstrap_overall(results))
    return metrics
