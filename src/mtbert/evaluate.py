"""Running a model over labeled or unlabeled examples, and the dev metrics of a run."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from mtbert.data import EncodedSet, collate, length_sorted_batches
from mtbert.metrics import bootstrap_overall, compute_metrics
from mtbert.model import MultiTaskModel, decide


@torch.inference_mode()
def predict_set(model: MultiTaskModel, encoded: EncodedSet, batch_size: int, pad_token_id: int,
                device: torch.device | str = "cpu", progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and scores (probabilities or values) for every example, in the set's original order.

    Examples are batched longest-first so that each batch pads little.
    """
    was_training = model.training
    model.eval()
    n = len(encoded)
    predictions = np.zeros(n)
    scores: np.ndarray | None = None
    batches = list(length_sorted_batches(encoded, batch_size))
    for indices in tqdm(batches, desc=f"predict {encoded.spec.name}", disable=not progress, leave=False):
        batch = collate(encoded, indices, pad_token_id)
        inputs = [{k: v.to(device) for k, v in x.items()} for x in batch["inputs"]]
        outputs = model(encoded.spec.name, inputs).float()
        pred, score = decide(encoded.spec, outputs)
        if scores is None:
            scores = np.zeros((n, score.shape[-1]))
        predictions[indices] = pred.cpu().numpy()
        scores[indices] = score.cpu().numpy()
    model.train(was_training)
    return predictions, scores if scores is not None else np.zeros((0, 1))


def evaluate_sets(model: MultiTaskModel, dev_sets: dict[str, EncodedSet], batch_size: int, pad_token_id: int,
                  device: torch.device | str = "cpu", with_interval: bool = False,
                  progress: bool = False) -> tuple[dict[str, float], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Dev metrics of the given tasks (plus `overall`, and `overall_ci95` when asked) and the raw outputs."""
    raw = {}
    results = {}
    for name, encoded in dev_sets.items():
        predictions, scores = predict_set(model, encoded, batch_size, pad_token_id, device, progress)
        raw[name] = (predictions, scores)
        results[name] = (encoded.spec, predictions, np.asarray(encoded.labels, dtype=float))
    metrics = compute_metrics(results)
    if with_interval:
        metrics["overall_ci95"] = list(bootstrap_overall(results))
    return metrics, raw
