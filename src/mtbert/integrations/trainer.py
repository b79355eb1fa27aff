"""`MultiTaskTrainer`: a `transformers.Trainer` that trains one model on several tasks with gradient surgery.

```python
trainer = MultiTaskTrainer(model, TrainingArguments("out", max_steps=300, logging_steps=10),
                           train_dataset={"sst": sst_train, "sts": sts_train},
                           eval_dataset={"sst": sst_dev, "sts": sts_dev}, method="pcgrad")
trainer.train()
```

Each optimizer step draws one batch of every active task (mtbert's seeded `MultiTaskSampler`, with the task
ratio or sampling strategy of mtbert's config), runs one forward and one backward per task and lets
`GradientSurgery` (mtbert's one surgery engine, the one `mtbert train` runs) turn the per-task gradients of the
shared parameters into `.grad`; Trainer does the rest
(clipping, optimizer and scheduler step, logging, evaluation, checkpoints, `report_to`). Per-task losses and the
gradient statistics of each logging step (`loss_<task>`, `cosine_<a>-<b>`, `conflict_<a>-<b>`,
`grad_norm_<task>`, `removed_norm`) go through `Trainer.log`, so the console and every `report_to`
integration get them.

The model is either mtbert's `MultiTaskModel` (datasets: mtbert `EncodedSet`s, e.g. `load_task_data(...)[task].train`;
the loss is mtbert's task loss) or any module whose `forward(task, batch)` returns the task's loss on the batch
as a scalar MEAN over its examples (or an output with a `loss`); its datasets are map-style (a
`datasets.Dataset` or a torch dataset) and a batch is `data_collator([dataset[i] for i in indices])`.
A task's loss is scaled as in mtbert: by n_t / (per_device_train_batch_size x gradient_accumulation_steps) (its
share of the step) without `sample_weighting`, by 1 with it (the mean over its n_t samples).

Gradient accumulation (`gradient_accumulation_steps: k`): a step draws k times the batch of every task and splits
it into k micro-batches; each of Trainer's k micro-steps runs one micro-batch of every task, whose gradients are
added to the task's row of the per-task buffer, and the last one aggregates: the same step as one batch k times
as large. fp16: the per-task rows are unscaled before the aggregation (`GradientSurgery.apply`), so every method
trains under float16 loss scaling.

`ema_decay` (as in mtbert's config): after every optimizer step an exponential moving average of the weights moves
towards them; `evaluate` scores the average, and when `train` returns the model holds it (so `save_model` writes
it), from the best checkpoint with `load_best_model_at_end`. Checkpoints keep the trained weights and, beside them,
the average (`ema.safetensors`) and its count of updates, so a resumed run continues both.

Exactness: checkpoints keep the sampler's positions and the surgery's generator next to Trainer's RNG states,
so `resume_from_checkpoint` continues exactly. With several processes (torchrun, `accelerate launch`) every task's
backward runs inside DDP's `no_sync` and the per-task buffer and the heads' gradients are averaged once per step,
so N ranks equal one process on the union of their batches (each rank draws its own share of every task's
stream). DataParallel, FSDP and DeepSpeed are refused (sharded or flattened parameters).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments

from mtbert.config import ema_decay_problem
from mtbert.data import SAMPLING_STRATEGIES, EncodedSet, MultiTaskSampler, collate, samples_per_step
from mtbert.distributed import Ranks
from mtbert.errors import ConfigError, MtbertError
from mtbert.io import atomic_write_json
from mtbert.methods.surgery import BUFFER_DTYPES, SCOPES, GradientSurgery
from mtbert.model import CONFIG_FILE, MultiTaskModel, task_loss
from mtbert.training.weight_average import WeightAverage

STATE_FILE = "mtbert_trainer_state.json"


class MultiTaskTrainer(Trainer):
    """A `transformers.Trainer` over a dict of task datasets, one backward per task and gradient surgery per step.

    `train_dataset` / `eval_dataset`: task name -> dataset (see the module docstring). `method`: any of
    `mtbert.methods.aggregators.AGGREGATORS` (`method_options` go to it). `task_ratio`: `"1:2:1"` (in the order
    of `train_dataset`) or {task: ratio}; ratio 0 leaves a task out, a missing task has ratio 1. `sampling`,
    `sampling_temperature`, `sample_weighting`, `surgery_scope`, `surgery_buffer_dtype` (`"float32"` or
    `"bfloat16"`: the per-task rows' storage), `ema_decay` (the weights' moving average, see the module
    docstring): as in mtbert's config. An epoch is
    `samples_per_task_per_epoch` samples of each task per process (default: the largest training set).
    `shared_parameters`: the parameters every task reaches (default: a `MultiTaskModel`'s encoder, or the
    model's `shared_parameters()`), with `embedding` the word-embedding matrix kept by touched rows (default: the
    encoder's input embeddings). Every other keyword goes to `transformers.Trainer`.
    """

    def __init__(self, model: nn.Module, args: TrainingArguments | None = None,
                 train_dataset: Mapping[str, Any] | None = None, eval_dataset: Mapping[str, Any] | None = None, *,
                 method: str = "pcgrad", task_ratio: str | Mapping[str, int] | None = None,
                 sampling: str = "fixed-ratio", sampling_temperature: float = 2.0, sample_weighting: bool = False,
                 samples_per_task_per_epoch: int | None = None, surgery_scope: str = "global",
                 surgery_buffer_dtype: str = "float32",
                 shared_parameters: Iterable[nn.Parameter] | Iterable[tuple[str, nn.Parameter]] | None = None,
                 embedding: nn.Parameter | None = None, method_options: Mapping[str, Any] | None = None,
                 ema_decay: float | None = None, **trainer_kwargs: Any) -> None:
        datasets = _check_datasets(train_dataset, "train_dataset")
        if eval_dataset is not None:
            _check_datasets(eval_dataset, "eval_dataset")
        if sampling not in SAMPLING_STRATEGIES:
            raise ConfigError(f"sampling: {sampling!r} is not one of {', '.join(SAMPLING_STRATEGIES)}")
        if sampling_temperature <= 0:
            raise ConfigError("sampling_temperature: must be > 0")
        if surgery_scope not in SCOPES:
            raise ConfigError(f"surgery_scope: {surgery_scope!r} is not one of {', '.join(SCOPES)}")
        if surgery_buffer_dtype not in BUFFER_DTYPES:
            raise ConfigError(f"surgery_buffer_dtype: {surgery_buffer_dtype!r} is not one of "
                              f"{', '.join(BUFFER_DTYPES)}")
        if samples_per_task_per_epoch is not None and samples_per_task_per_epoch < 1:
            raise ConfigError("samples_per_task_per_epoch: must be >= 1")
        if (problem := ema_decay_problem(ema_decay)) is not None:
            raise ConfigError(f"ema_decay: {problem}")
        self.ratios = _ratios(task_ratio, list(datasets))
        super().__init__(model=model, args=args, train_dataset=dict(datasets),
                         eval_dataset=dict(eval_dataset) if eval_dataset is not None else None, **trainer_kwargs)
        self._check_args()
        self.sampling, self.sampling_temperature = sampling, sampling_temperature
        self.sample_weighting = sample_weighting
        self.sizes = {t: len(ds) for t, ds in datasets.items() if self.ratios[t] > 0}
        self.accumulation = self.args.gradient_accumulation_steps
        self.unit = self.args.per_device_train_batch_size * self.accumulation  # samples per optimizer step
        per_epoch = samples_per_task_per_epoch or max(self.sizes.values())
        self.steps_per_epoch = max(1, math.ceil(per_epoch / (self.unit * self.args.world_size)))
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        self.sampler = MultiTaskSampler(self.sizes, seed=seed, rank=self.args.process_index,
                                        world_size=self.args.world_size)
        shared, embedding = _shared(self.model, shared_parameters, embedding)
        shared_ids = {id(p) for _, p in shared} | ({id(embedding)} if embedding is not None else set())
        others = [p for p in self.model.parameters() if p.requires_grad and id(p) not in shared_ids]
        self.surgery = GradientSurgery(shared, method, seed=self.args.seed, embedding=embedding, scope=surgery_scope,
                                       other_params=others, buffer_dtype=surgery_buffer_dtype,
                                       **dict(method_options or {}))
        self._loss_sums: dict[str, torch.Tensor] = {}
        self._loss_steps = 0
        self._last_stats: dict[str, Any] | None = None
        self._micro = 0  # the micro-batch of the optimizer step that the next training_step runs
        self._step_parts: dict[str, list[Any]] = {}
        self._step_sizes: dict[str, int] = {}
        self._diagnostics = False
        self.average = WeightAverage(self.model, ema_decay) if ema_decay else None
        if self.average is not None:
            self.add_callback(_UpdateAverage(self))

    def _check_args(self) -> None:
        args = self.args
        if args.n_gpu > 1:
            raise ConfigError("MultiTaskTrainer does not run under torch.nn.DataParallel (several GPUs, one "
                              "process): start one process per GPU with torchrun or accelerate launch")
        if args.fsdp or args.deepspeed:
            raise ConfigError("MultiTaskTrainer needs whole parameters: FSDP and DeepSpeed are not supported")

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """Trainer's `train`; with `ema_decay` the model then holds the weights' moving average (what `evaluate`
        scored; the best checkpoint's with `load_best_model_at_end`)."""
        output = super().train(*args, **kwargs)
        if self.average is not None:
            self.accelerator.unwrap_model(self.model).load_state_dict(self.average.model.state_dict())
        return output

    # ---- data ------------------------------------------------------------------------------------
    def get_train_dataloader(self) -> DataLoader:
        """One placeholder item per micro-step of an epoch (gradient_accumulation_steps per optimizer step): the
        step's batches are drawn in `training_step` from the seeded per-task sampler (its positions are
        checkpointed), so Trainer's epoch and skip logic only count steps."""
        return DataLoader(_Steps(self.steps_per_epoch * self.accumulation), batch_size=1, collate_fn=_step_marker)

    def draw_indices(self, step: int) -> dict[str, list[int]]:
        """Each active task's training examples of optimizer step `step` (counting from 1) on this process."""
        epoch = (step - 1) // self.steps_per_epoch + 1
        num_epochs = max(1, math.ceil(max(self.state.max_steps, step) / self.steps_per_epoch))
        per_step = samples_per_step(self.sampling, self.sizes, self.ratios, self.unit, self.sampling_temperature,
                                    epoch=epoch, num_epochs=num_epochs)
        return {task: self.sampler.draw(task, n) for task, n in per_step.items()}

    def draw_batches(self, step: int) -> dict[str, Any]:
        """Each active task's batch of optimizer step `step` (counting from 1) on this process."""
        return {task: self.make_batch(task, indices) for task, indices in self.draw_indices(step).items()}

    def make_batch(self, task: str, indices: list[int]) -> Any:
        """The batch of these examples of `task`'s training set: mtbert's `collate` for an `EncodedSet`, else
        `data_collator` on the examples."""
        dataset = self.train_dataset[task]
        if isinstance(dataset, EncodedSet):
            return collate(dataset, indices, _pad_id(self.processing_class))
        getitems = getattr(dataset, "__getitems__", None)
        examples = getitems(indices) if getitems is not None else [dataset[i] for i in indices]
        return self.data_collator(examples)

    # ---- the step --------------------------------------------------------------------------------
    def training_step(self, model: nn.Module, inputs: dict[str, Any],
                      num_items_in_batch: torch.Tensor | int | None = None) -> torch.Tensor:
        """One micro-step: a micro-batch of every active task (the whole step's batch without gradient
        accumulation), one backward each, collected into the task's row; the step's last micro-step aggregates.
        Returns the sum of the tasks' scaled losses (what Trainer logs as `loss`, summed over the micro-steps)."""
        part = self._micro
        if part == 0:  # the step's first micro-step draws all of its samples
            step = self.state.global_step + 1
            self._step_parts = {task: [self.make_batch(task, chunk.tolist()) for chunk in
                                       np.array_split(np.array(indices), min(self.accumulation, len(indices)))]
                                for task, indices in self.draw_indices(step).items()}
            self._step_sizes = {task: sum(_batch_size(b) for b in parts) for task, parts in self._step_parts.items()}
            self._diagnostics = self._log_due(step)
            self._begin_step([b for parts in self._step_parts.values() for b in parts])
        batches = {task: parts[part] for task, parts in self._step_parts.items() if part < len(parts)}
        total = self._backward_tasks(model, batches, self._step_sizes, accumulate=part > 0)
        self._micro = (part + 1) % self.accumulation
        if self._micro == 0:
            self._apply(self._diagnostics)
        return total

    def multitask_step(self, model: nn.Module, batches: Mapping[str, Any], diagnostics: bool = False) -> torch.Tensor:
        """Backward every task's scaled loss on its batch and leave the surgery's update in `.grad` (one whole
        optimizer step's batches, no accumulation)."""
        self._begin_step(list(batches.values()))
        total = self._backward_tasks(model, batches, {task: _batch_size(b) for task, b in batches.items()})
        self._apply(diagnostics)
        return total

    def _begin_step(self, batches: list[Any]) -> None:
        """Start the engine's step with the embedding rows that all of the step's (micro-)batches touch."""
        embedded = self.surgery.embedding is not None
        self.surgery.begin_step(self.batch_token_ids(dict(enumerate(batches))) if embedded else None)

    def _backward_tasks(self, model: nn.Module, batches: Mapping[str, Any], step_sizes: Mapping[str, int],
                        accumulate: bool = False) -> torch.Tensor:
        """Backward each task's (micro-)batch, its mean loss weighted by its share of the task's step, and collect
        its gradients into the task's row (added to it with `accumulate`)."""
        model.train()
        if hasattr(self.optimizer, "train") and callable(self.optimizer.train):
            self.optimizer.train()
        total = torch.zeros((), device=self.args.device)
        for task, batch in batches.items():
            batch = self._prepare_inputs(batch)
            share = _batch_size(batch) / step_sizes[task]  # this micro-batch's part of the task's step
            scale = share * (1.0 if self.sample_weighting else step_sizes[task] / self.unit)
            with self.accelerator.no_sync(model):  # no DDP all-reduce per backward: the surgery averages once
                with self.compute_loss_context_manager():
                    loss = self.compute_task_loss(model, task, batch)
                scaled = loss * scale
                self.accelerator.backward(scaled)
            self.surgery.collect(task, accumulate=accumulate)
            self._loss_sums[task] = self._loss_sums.get(task, 0.0) + loss.detach().float() * share
            total += scaled.detach().float()
        return total

    def _apply(self, diagnostics: bool) -> None:
        """The step's aggregation (the per-task rows unscaled first under fp16's gradient scaler)."""
        self._loss_steps += 1
        stats = self.surgery.apply(diagnostics=diagnostics, scaler=self.accelerator.scaler)
        if stats is not None:
            self._last_stats = stats

    def compute_task_loss(self, model: nn.Module, task: str, batch: Any) -> torch.Tensor:
        """`task`'s loss on `batch` as a mean over its examples (override for another loss)."""
        unwrapped = self.accelerator.unwrap_model(model)
        if isinstance(unwrapped, MultiTaskModel):
            outputs = model(task, batch["inputs"])
            labels = batch["labels"]
            return task_loss(unwrapped.specs[task], outputs.float(), labels) / len(labels)
        out = model(task, batch)
        loss = out if isinstance(out, torch.Tensor) else out["loss"] if isinstance(out, Mapping) else out[0]
        if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
            raise MtbertError(f"task {task!r}: model(task, batch) must return a scalar loss (or an output with a "
                              "scalar `loss`)")
        return loss

    def batch_token_ids(self, batches: Mapping[str, Any]) -> list[torch.Tensor] | None:
        """Every `input_ids` tensor in the step's batches (the embedding rows the step touches), or None when a
        batch has none (the embedding is then kept whole)."""
        found: list[torch.Tensor] = []
        for batch in batches.values():
            ids = _find_input_ids(batch)
            if not ids:
                return None
            found.extend(ids)
        return found

    def _log_due(self, step: int) -> bool:
        args, state = self.args, self.state
        if step == 1 and args.logging_first_step:
            return True
        if args.logging_strategy == "steps" and state.logging_steps and step % state.logging_steps == 0:
            return True
        return (args.logging_strategy == "epoch" and step % self.steps_per_epoch == 0) or step == state.max_steps

    # ---- logging and evaluation ------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Trainer's log, with each task's mean loss since the last training log and the last gradient statistics."""
        if "loss" in logs and self._loss_steps:
            tasks = list(self._loss_sums)
            values = torch.stack([torch.as_tensor(self._loss_sums[t]) for t in tasks]).double() / self._loss_steps
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                dist.all_reduce(values)
                values /= dist.get_world_size()
            logs.update({f"loss_{t}": v for t, v in zip(tasks, values.tolist(), strict=True)})
            self._loss_sums, self._loss_steps = {}, 0
            if self._last_stats is not None:
                stats = self._last_stats
                logs.update({f"grad_norm_{t}": v for t, v in stats["grad_norm"].items()})
                logs.update({f"cosine_{pair}": v for pair, v in stats["cosine"].items()})
                logs.update({f"conflict_{pair}": float(v) for pair, v in stats["conflict"].items()})
                logs["removed_norm"] = stats["removed_norm"]
                self._last_stats = None
        super().log(logs, start_time)

    def evaluate(self, eval_dataset: Mapping[str, Any] | None = None, ignore_keys: list[str] | None = None,
                 metric_key_prefix: str = "eval") -> dict[str, float]:
        """Metrics of every task's evaluation set: mtbert's (`<task>_acc` / `<task>_corr` and `overall`) for a
        `MultiTaskModel` on `EncodedSet`s, else each task's mean loss (`<task>_loss`) and their mean (`loss`)."""
        sets = _check_datasets(eval_dataset if eval_dataset is not None else self.eval_dataset, "eval_dataset")
        model = self.accelerator.unwrap_model(self.model)
        if self.average is not None:
            model = self.average.follow(model)
        was_training = model.training
        model.eval()
        if isinstance(model, MultiTaskModel) and all(isinstance(ds, EncodedSet) for ds in sets.values()):
            from mtbert.evaluation.evaluate import evaluate_sets

            ranks = Ranks(rank=self.args.process_index, world_size=self.args.world_size, device=self.args.device)
            metrics, _ = evaluate_sets(model, dict(sets), self.args.per_device_eval_batch_size,
                                       _pad_id(self.processing_class), self.args.device, ranks=ranks)
        else:
            metrics = {f"{task}_loss": self._mean_loss(model, task, ds) for task, ds in sets.items()}
            metrics["loss"] = sum(metrics.values()) / len(metrics)
        model.train(was_training)
        metrics = {f"{metric_key_prefix}_{k}": float(v) for k, v in metrics.items()}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    @torch.no_grad()
    def _mean_loss(self, model: nn.Module, task: str, dataset: Any) -> float:
        total, count = 0.0, 0
        size = self.args.per_device_eval_batch_size
        for start in range(0, len(dataset), size):
            indices = list(range(start, min(start + size, len(dataset))))
            if isinstance(dataset, EncodedSet):
                batch = collate(dataset, indices, _pad_id(self.processing_class))
            else:
                batch = self.data_collator([dataset[i] for i in indices])
            batch = self._prepare_inputs(batch)
            with self.compute_loss_context_manager():
                total += self.compute_task_loss(model, task, batch).item() * len(indices)
            count += len(indices)
        return total / count

    # ---- checkpoints -----------------------------------------------------------------------------
    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        """Trainer's checkpoint plus `mtbert_trainer_state.json` (sampler positions, the surgery's generator)."""
        folder = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
        if self.args.should_save:
            os.makedirs(folder, exist_ok=True)
            atomic_write_json(os.path.join(folder, STATE_FILE), {
                "tasks": list(self.sizes), "method": self.surgery.method, "sampler": self.sampler.state_dict(),
                "generator": self.surgery.generator.get_state().tolist(),
                **({"ema_updates": self.average.updates} if self.average is not None else {})})
            if self.average is not None:
                self.average.save(Path(folder))
        super()._save_checkpoint(model, trial)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        """Trainer's loading (or a `MultiTaskModel` folder's), then the sampler positions and the generator."""
        state = _checkpoint_state(resume_from_checkpoint)
        path = os.path.join(resume_from_checkpoint, STATE_FILE)
        if state.get("tasks") != list(self.sizes):
            raise ConfigError(f"{path}: the checkpoint trained tasks {state.get('tasks')}, this run {list(self.sizes)}")
        self._load_weights(resume_from_checkpoint, model)
        self.sampler.load_state_dict(state["sampler"])
        self.surgery.load_state_dict({"method": state["method"], "generator": state["generator"]})
        if self.average is not None:
            self.average.load(Path(resume_from_checkpoint), state.get("ema_updates"))

    def _load_best_model(self) -> None:
        best = self.state.best_model_checkpoint
        if self._mtbert_folder(best):
            self._load_weights(best)
        else:
            super()._load_best_model()
        if self.average is not None and best is not None:
            self.average.load(Path(best), _checkpoint_state(best).get("ema_updates"))

    def _mtbert_folder(self, folder: str | None) -> bool:
        unwrapped = self.accelerator.unwrap_model(self.model)
        return folder is not None and isinstance(unwrapped, MultiTaskModel) and \
            os.path.isfile(os.path.join(folder, CONFIG_FILE))

    def _load_weights(self, folder: str, model: nn.Module | None = None) -> None:
        if not self._mtbert_folder(folder):
            super()._load_from_checkpoint(folder, model)
            return
        target = self.accelerator.unwrap_model(self.model)
        with torch.random.fork_rng(devices=[]):  # loading initialises fresh weights first: keep the RNG as it is
            saved = MultiTaskModel.from_pretrained(folder, dropout=target.dropout)
        target.load_state_dict(saved.state_dict())

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """A `MultiTaskModel` is saved in its own folder layout (loads with `MultiTaskModel.from_pretrained`);
        any other model as Trainer saves it."""
        unwrapped = self.accelerator.unwrap_model(self.model)
        if not isinstance(unwrapped, MultiTaskModel):
            super()._save(output_dir, state_dict)
            return
        if not self.args.should_save:
            return
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        tokenizer = self.processing_class if hasattr(self.processing_class, "save_pretrained") else None
        unwrapped.save_pretrained(output_dir, tokenizer)
        with open(os.path.join(output_dir, "training_args.json"), "w", encoding="utf-8") as f:
            f.write(self.args.to_json_string())


# ---- helpers ---------------------------------------------------------------------------------------


class _UpdateAverage(TrainerCallback):
    """`ema_decay`: after every optimizer step, the weights' moving average moves towards the new weights."""

    def __init__(self, trainer: MultiTaskTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer.average.follow(self.trainer.model)  # Trainer may place the model only now

    def on_optimizer_step(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        if not self.trainer.accelerator.optimizer_step_was_skipped:  # fp16: a step the scaler skipped
            self.trainer.average.update(self.trainer.accelerator.unwrap_model(self.trainer.model))


def _checkpoint_state(folder: str) -> dict[str, Any]:
    """A checkpoint's `mtbert_trainer_state.json`."""
    path = os.path.join(folder, STATE_FILE)
    if not os.path.isfile(path):
        raise ConfigError(f"{folder}: not a MultiTaskTrainer checkpoint ({STATE_FILE} is missing)")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class _Steps(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index


def _step_marker(items: list[int]) -> dict[str, int]:
    return {"step_in_epoch": items[0]}


def _check_datasets(datasets: Any, key: str) -> Mapping[str, Any]:
    if not isinstance(datasets, Mapping) or not datasets:
        raise ConfigError(f"{key}: give a dict of task name -> dataset, got {type(datasets).__name__}")
    for task, dataset in datasets.items():
        sized = hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")
        if not isinstance(dataset, EncodedSet) and not sized:
            raise ConfigError(f"{key}[{task!r}]: a map-style dataset (len() and [i]) is needed, "
                              f"got {type(dataset).__name__}")
        if len(dataset) == 0:
            raise ConfigError(f"{key}[{task!r}]: the dataset is empty")
    return datasets


def _ratios(task_ratio: str | Mapping[str, int] | None, tasks: list[str]) -> dict[str, int]:
    if task_ratio is None:
        ratios = dict.fromkeys(tasks, 1)
    elif isinstance(task_ratio, str):
        parts = task_ratio.split(":")
        if len(parts) != len(tasks) or not all(p.strip().isdigit() for p in parts):
            raise ConfigError(f"task_ratio: {task_ratio!r} must be {len(tasks)} whole numbers joined by ':' "
                              f"(one per task, in the order {', '.join(tasks)})")
        ratios = dict(zip(tasks, (int(p) for p in parts), strict=True))
    else:
        unknown = [t for t in task_ratio if t not in tasks]
        if unknown:
            raise ConfigError(f"task_ratio: unknown task {unknown[0]!r} (tasks: {', '.join(tasks)})")
        ratios = {t: task_ratio.get(t, 1) for t in tasks}
        if not all(isinstance(r, int) and r >= 0 for r in ratios.values()):
            raise ConfigError("task_ratio: every ratio must be a whole number >= 0")
    if not any(ratios.values()):
        raise ConfigError("task_ratio: at least one task needs a ratio > 0")
    return ratios


def _shared(model: nn.Module, params: Any, embedding: nn.Parameter | None) -> tuple[list, nn.Parameter | None]:
    """The shared parameters (named where possible) and the word-embedding matrix of `model`."""
    encoder = getattr(model, "encoder", None)
    if params is None:
        if isinstance(encoder, nn.Module):
            params = [(f"encoder.{n}", p) for n, p in encoder.named_parameters()]
        elif callable(getattr(model, "shared_parameters", None)):
            params = model.shared_parameters()
        else:
            raise ConfigError("shared_parameters: the model has no `encoder` nor `shared_parameters()`; pass "
                              "shared_parameters= (the parameters every task's loss reaches)")
    params = [item if isinstance(item, tuple) else (str(k), item) for k, item in enumerate(params)]
    has_embeddings = isinstance(encoder, nn.Module) and callable(getattr(encoder, "get_input_embeddings", None))
    if embedding is None and has_embeddings:
        candidate = encoder.get_input_embeddings().weight
        if any(p is candidate for _, p in params):
            embedding = candidate
    return params, embedding


def _find_input_ids(batch: Any) -> list[torch.Tensor]:
    if isinstance(batch, Mapping):
        if isinstance(batch.get("input_ids"), torch.Tensor):
            return [batch["input_ids"]]
        return [t for v in batch.values() for t in _find_input_ids(v)]
    if isinstance(batch, list | tuple):
        return [t for v in batch for t in _find_input_ids(v)]
    return []


def _batch_size(batch: Any) -> int:
    """The number of examples of a batch: its labels' length, else the first dimension of its first tensor."""
    if isinstance(batch, Mapping):
        labels = batch.get("labels")
        if isinstance(labels, torch.Tensor) and labels.ndim:
            return len(labels)
        for value in batch.values():
            if isinstance(value, torch.Tensor) and value.ndim:
                return value.shape[0]
        for value in batch.values():
            if isinstance(value, Mapping | list | tuple):
                return _batch_size(value)
    if isinstance(batch, list | tuple) and batch:
        return _batch_size(batch[0])
    raise MtbertError("a batch must hold its examples' tensors (or `labels`) to count them")


def _pad_id(tokenizer: Any) -> int:
    return getattr(tokenizer, "pad_token_id", None) or 0
