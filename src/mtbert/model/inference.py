"""Running a model over encoded examples: length-sorted packed batches under `torch.inference_mode`, optionally
int8-quantized; and `MultiTaskModel.predict`'s texts in, labels and scores out.

`mtbert evaluate`, `mtbert predict`, the dev evaluations of training and `model.predict` all predict here.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from mtbert.data.encoding import EncodedSet, collate, collate_packed, encode_examples, length_sorted_batches
from mtbert.data.groups import collate_group, encoding_task
from mtbert.data.rows import Example
from mtbert.distributed import ONE_PROCESS, Ranks
from mtbert.errors import MtbertError
from mtbert.model.packing import packing_support

if TYPE_CHECKING:
    from mtbert.model.multitask import MultiTaskModel
    from mtbert.tasks import TaskSpec

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


def predict_group(model: MultiTaskModel, sets: dict[str, EncodedSet], batch_size: int, pad_token_id: int,
                  device: torch.device | str = "cpu", progress: bool = False, ranks: Ranks = ONE_PROCESS,
                  packed: bool = PACKED_PREDICTION, quantize: str | None = None
                  ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """`predict_set` for tasks that share their input (an input_group's aligned sets, `data.groups.align_sets`):
    ONE encoder pass per batch, then each task's head; each task's predictions and scores in the sets' order."""
    if quantize is not None:
        model, device = quantized(model, quantize), "cpu"
    batches = ranks.shard(list(length_sorted_batches(sets[encoding_task(sets)], batch_size)))
    done = ranks.gather(_predict_group_batches(model, sets, batches, pad_token_id, device, progress, packed))
    return {task: encoded.spec.task_kind.gather(len(encoded), [(indices, out[task][0], out[task][1])
                                                               for indices, out in done])
            for task, encoded in sets.items()}


@torch.inference_mode()
def _predict_group_batches(model: MultiTaskModel, sets: dict[str, EncodedSet], batches: list[list[int]],
                           pad_token_id: int, device: torch.device | str, progress: bool, packed: bool
                           ) -> list[tuple[list[int], dict[str, tuple[np.ndarray, np.ndarray]]]]:
    """(indices, {task: (predictions, scores)}) of each batch of a group."""
    was_training = model.training
    model.eval()
    done = []
    for indices in tqdm(batches, desc=f"predict {', '.join(sets)}", disable=not progress, leave=False):
        batch = collate_group(sets, indices, pad_token_id, packed, PREDICTION_ROW_WIDTH if packed else 0)
        inputs = [{k: v.to(device) for k, v in x.items()} for x in batch.inputs]
        _, outputs = model.forward_group(list(sets), inputs)
        results = {}
        for task, task_batch in batch.tasks.items():
            pred, score = model.decide(task, outputs[task].float(), task_batch)
            results[task] = (pred.cpu().numpy(), score.cpu().numpy())
        done.append((indices, results))
    model.train(was_training)
    return done


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
        pred, score = model.decide(encoded.spec.name, outputs, batch)
        done.append((indices, pred.cpu().numpy(), score.cpu().numpy()))
    model.train(was_training)
    return done


@dataclass
class TaskPredictions:
    """What `MultiTaskModel.predict` returns for one task, one entry per input in input order.

    `labels`: each prediction as `mtbert predict` writes it (the class name of a task with `label_names`, else the
    class index, or the value; a multiple-choice task's chosen index; a token task's tags joined by spaces).
    `predictions`: the class indices, values or chosen indices (a token task: an array of tag indices per input).
    `scores`: the class probabilities (n x classes), the positive class's probability (binary pairs, n x 1), or the
    value (regression, n x 1), as the task's kind gives them: what `mtbert ensemble --mode soft` averages. A
    multiple-choice task's are the softmax over each input's choices (n x the most choices, 0 past an input's last
    choice). `answers`: the text each prediction picks among its input (a multiple-choice task's chosen choice), or
    None for a kind whose predictions pick none.
    """

    task: str
    labels: list[str]
    predictions: np.ndarray
    scores: np.ndarray
    answers: list[str] | None = None

    def __len__(self) -> int:
        return len(self.labels)


def predict_texts(model: MultiTaskModel, tokenizer, task: str, texts: Sequence[Any], max_length: int,
                  batch_size: int = 64, device: torch.device | str | None = None,
                  quantize: str | None = None) -> TaskPredictions:
    """`model`'s predictions for `task` on `texts` (strings, tuples of as many strings as the task reads, e.g.
    pairs, or what the task's kind takes: `(context, [choice, ...])` for a multiple-choice task), through
    `predict_set`: the same batches, packing and `inference_mode` as `mtbert predict`."""
    if task not in model.specs:
        raise MtbertError(f"task: the model has no task {task!r} (tasks: {', '.join(model.specs)})")
    spec = model.specs[task]
    examples = _examples(texts, spec)
    encoded = encode_examples(tokenizer, spec, examples, max_length, model.pair_architecture)
    device = device if device is not None else next(model.parameters()).device
    predictions, scores = predict_set(model, encoded, batch_size, tokenizer.pad_token_id or 0, device,
                                      quantize=quantize)
    return task_predictions(spec, examples, predictions, scores)


def task_predictions(spec: TaskSpec, examples: list[Example], predictions: np.ndarray,
                     scores: np.ndarray) -> TaskPredictions:
    """`predict_set`'s outputs for `examples` as `TaskPredictions`: labels as `mtbert predict` writes them, and the
    text each prediction picks among its input when the task's kind picks one."""
    kind = spec.task_kind
    labels = [kind.format_value(spec, value) for value in predictions]
    answers = [kind.prediction_text(spec, e.texts, value) for e, value in zip(examples, predictions, strict=True)]
    return TaskPredictions(spec.name, labels, predictions, scores,
                           None if any(a is None for a in answers) else answers)  # type: ignore[arg-type]


def _examples(texts: Sequence[Any], spec: TaskSpec) -> list[Example]:
    """Examples of `texts`, each item read by the task's kind (`texts_from_input`); else one MtbertError."""
    kind = spec.task_kind
    if isinstance(texts, str | bytes) or not isinstance(texts, Sequence):
        raise MtbertError(f"texts: give a list of {kind.input_words(spec)}, not {type(texts).__name__}")
    examples = []
    for i, item in enumerate(texts):
        parts, want = kind.texts_from_input(spec, item)
        if parts is None:
            raise MtbertError(f"texts[{i}]: task {spec.name} takes {want} per example, not {item!r:.80}")
        examples.append(Example(id=str(i), texts=parts, label=None, line=i + 1))
    return examples
