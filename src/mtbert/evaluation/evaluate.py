"""Running a model over labeled or unlabeled examples, and the dev metrics of a run."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from mtbert.data import EncodedSet, collate, length_sorted_batches
from mtbert.data.encoding import collate_packed
from mtbert.distributed import ONE_PROCESS, Ranks
from mtbert.errors import MtbertError
from mtbert.evaluation.metrics import bootstrap_overall, compute_metrics
from mtbert.model import MultiTaskModel, decide
from mtbert.model.packing import packing_support

QUANTIZATIONS = ("int8",)
PACKED_PREDICTION = True  # packed length-sorted batches (measured faster than padded ones on this CPU)
# Prediction rows hold up to this many tokens, so that the similar lengths of a length-sorted batch share rows
# (against rows as wide as the longest example: 1.1-1.2x the pairs/s on STS dev pairs, 1.0-1.1x on Quora;
# benchmarks/RESULTS.md). Training keeps rows as wide as the longest: its random batches already pack to 89%.
PREDICTION_ROW_WIDTH = 128


def predict_set(model: MultiTaskModel, encoded: EncodedSet, batch_size: int, pad_token_id: int,
                device: torch.device | str = "cpu", progress: bool = False,
                ranks: Ranks = ONE_PROCESS, packed: bool = PACKED_PREDICTION,
                quantize: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and scores (probabilities or values) for every example, in the set's original order.

    Examples are batched longest-first so that each batch pads little, and each batch is packed (`packed`;
    model/packing.py) so that almost none is left. With several ranks (all of them must call this) each predicts
    a strided share of the batches and every rank gets all the results. `quantize="int8"` predicts with a
    dynamically int8-quantized copy of the model's linear layers, on the CPU (`quantized`).
    """
    if quantize is not None:
        model, device = quantized(model, quantize), "cpu"
    batches = ranks.shard(list(length_sorted_batches(encoded, batch_size)))
    done = ranks.gather(_predict_batches(model, encoded, batches, pad_token_id, device, progress, packed))
    return encoded.spec.task_kind.gather(len(encoded), done)


def quantized(model: MultiTaskModel, kind: str) -> MultiTaskModel:
    """A CPU copy of the model with every nn.Linear dynamically quantized to int8 (torch.ao, fbgemm kernels).

    The copy runs packed batches whenever the model does.
    """
    if kind not in QUANTIZATIONS:
        raise MtbertError(f"--quantize: unknown quantization '{kind}' (choices: {', '.join(QUANTIZATIONS)})")
    on_cpu = all(p.device.type == "cpu" for p in model.parameters())
    source = model if on_cpu else copy.deepcopy(model).cpu()
    # Probe packing in fp32, and the copy keeps the answer: int8 activations are quantized with each batch's
    # range, so a packed int8 batch never matches a padded one to the probe's tolerance.
    packing_support(source.encoder)
    with warnings.catch_warnings():  # torch.ao's eager-mode quantization warns that it moves to torchao
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(source, {nn.Linear}, dtype=torch.qint8)  # copies


@torch.inference_mode()
def _predict_batches(model: MultiTaskModel, encoded: EncodedSet, batches: list[list[int]], pad_token_id: int,
                     device: torch.device | str, progress: bool, packed: bool = PACKED_PREDICTION
                     ) -> list[tuple[list[int], np.ndarray, np.ndarray]]:
    """(indices, predictions, scores) of each batch."""
    was_training = model.training
    model.eval()
    done = []
    for indices in tqdm(batches, desc=f"predict {encoded.spec.name}", disable=not progress, leave=False):
        if packed:
            batch = collate_packed(encoded, indices, pad_token_id, PREDICTION_ROW_WIDTH)
        else:
            batch = collate(encoded, indices, pad_token_id)
        inputs = [{k: v.to(device) for k, v in x.items()} for x in batch["inputs"]]
        outputs = model(encoded.spec.name, inputs).float()
        pred, score = decide(encoded.spec, outputs, batch)
        done.append((indices, pred.cpu().numpy(), score.cpu().numpy()))
    model.train(was_training)
    return done


def evaluate_sets(model: MultiTaskModel, dev_sets: dict[str, EncodedSet], batch_size: int, pad_token_id: int,
                  device: torch.device | str = "cpu", with_interval: bool = False, progress: bool = False,
                  ranks: Ranks = ONE_PROCESS) -> tuple[dict[str, float], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Dev metrics of the given tasks (plus `overall`, and `overall_ci95` when asked) and the raw outputs.

    With several ranks the prediction is spread over them, and rank 0's metrics are given to every rank, so
    that all of them take the same decisions (the best model, early stops).
    """
    raw = {name: predict_set(model, encoded, batch_size, pad_token_id, device, progress, ranks)
           for name, encoded in dev_sets.items()}
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
