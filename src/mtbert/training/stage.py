"""One stage of (multi-task) training: the Stage object and its loop, read top to bottom.

A step takes a batch from every active task (its share of per_device_train_batch_size samples), runs one
forward and one backward per task, and the stage's Method (methods/method.py) turns the per-task losses into
`.grad`: summed, weighted, or aggregated by gradient surgery. The tasks of an `input_group` share their examples:
they are one stream of the sampler, drawn as one batch with one encoder forward pass and a loss per task.

Launched on several processes (`torchrun`, `accelerate launch`), every rank takes its own share of each task's
batches and the per-task gradients are averaged over the ranks before the aggregation, so N ranks take the
step of one process with N times the batch (see distributed.py). Rank 0 alone writes files and logs.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from transformers import get_scheduler

from mtbert.config import TrainConfig, save_config
from mtbert.data import MultiTaskSampler, TaskData, collate, load_task_data, samples_per_step
from mtbert.data.encoding import collate_packed
from mtbert.data.groups import GroupBatch, collate_group
from mtbert.data.loading import resolve_labels
from mtbert.data.sampling import tasks_of_step
from mtbert.distributed import ONE_PROCESS, Ranks
from mtbert.distributed import start as start_ranks
from mtbert.errors import MtbertError
from mtbert.evaluation.evaluate import evaluate_sets, predict_set, score_outputs
from mtbert.io import atomic_dir, atomic_write_json
from mtbert.methods.method import make_method
from mtbert.model import MultiTaskModel, load_encoder, load_tokenizer, task_loss
from mtbert.model.adapters import (
    apply_lora,
    enable_gradient_checkpointing,
    freeze_embeddings,
    freeze_layers,
    has_lora,
    trainable_summary,
)
from mtbert.runs.layout import MODEL_CONFIG, RunDir
from mtbert.runs.model_card import write_model_card
from mtbert.tasks import input_groups, task_streams
from mtbert.training import checkpoint as ckpt
from mtbert.training.checkpoint import StageState
from mtbert.training.optim import make_optimizer
from mtbert.training.preemption import Preemption, resume_advice
from mtbert.training.runlog import RunLog
from mtbert.training.smart import Smoothness, smart_penalty
from mtbert.training.weight_average import WeightAverage

if TYPE_CHECKING:
    from mtbert.training.hub_push import HubPush

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelStart:
    """Where a stage's model starts: a backbone encoder with fresh heads, or a saved MultiTaskModel.

    `backbone`: an encoder folder or hub name (None: the config's `model_name_or_path`), e.g. the masked-LM
    pretrained one. `init_from`: a saved model (stage 1's best); `reset_head` gives that task a fresh head;
    `competes`: the saved model as it is (its own heads) is evaluated as step 0 and stays best unless an
    evaluation beats it (two-step's `keep_stage1`).
    """

    backbone: str | None = None
    init_from: Path | None = None
    reset_head: str | None = None
    competes: bool = False


class Stage:
    """A stage's model, data, optimizer, scheduler, sampler, method and log, built once; `run()` trains it."""

    def __init__(self, cfg: TrainConfig, output_dir: Path, start: ModelStart = ModelStart(),
                 resume_from_checkpoint: str | None = None, hub: HubPush | None = None) -> None:
        self.cfg, self.run_dir, self.start = cfg, RunDir(output_dir), start
        self.hub = hub  # push_to_hub's pushes (rank 0 only), else None
        self.ranks = start_ranks(cfg.ddp_mode)  # one process unless launched by torchrun or accelerate
        if self.ranks.is_main:
            output_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir.config)
        torch.manual_seed(cfg.seed)
        self.device = self.ranks.device
        # mixed precision: float16 with a gradient scaler (fp16, a GPU only: check_inputs), else bf16 on a GPU
        use_bf16 = not cfg.fp16 and self.device.type == "cuda" and cfg.bf16 in ("auto", "true")
        self.amp_dtype = torch.float16 if cfg.fp16 else torch.bfloat16 if use_bf16 else None
        self.scaler = torch.amp.GradScaler(self.device.type) if cfg.fp16 else None
        # with class names read from the data when labels are names (saved with the model: predictions map back)
        self.specs = [resolve_labels(s, cfg.resolved_data_dir()) for s in cfg.task_specs()]
        ratios = cfg.ratios()
        self.ratios = ratios
        self.active = [s for s in self.specs if ratios[s.name] > 0]
        # the sampler's streams: each input_group (its tasks share their examples) and each other task
        self.streams = task_streams(self.active)
        self.groups = {group: [s.name for s in members] for group, members in input_groups(self.active).items()}
        self.model, self.tokenizer = self._build_model()
        self.data = load_task_data(self.specs, cfg.resolved_data_dir(), self.tokenizer, cfg.max_length,
                                   cfg.pair_architecture, cfg.max_train_samples, cfg.max_eval_samples,
                                   cfg.max_predict_samples)
        self.pad_id = self.tokenizer.pad_token_id or 0
        self.dev_sets = {s.name: self.data[s.name].dev for s in self.active}
        self._build_optimisation()
        self.smoothness = Smoothness(cfg.smart_weight, cfg.smart_step_size, cfg.smart_noise) \
            if cfg.smart_weight else None
        self.logged_until = 0  # the last step the trackers were sent before a resume
        # optional: ema_decay, the weights' moving average that is evaluated and saved as best/
        self.average = WeightAverage(self.model, cfg.ema_decay) if cfg.ema_decay else None
        self.state = self._initial_state(resume_from_checkpoint)
        self.log = RunLog(self.run_dir, cfg.to_dict(), self.total_steps, self.state.global_step,
                          enabled=self.ranks.is_main, logged_until=self.logged_until)
        self.best_outputs = None  # the dev outputs of the model saved as best/ (unknown after a resume)

    # ---- building ----------------------------------------------------------------------------------
    def _build_model(self) -> tuple[MultiTaskModel, Any]:
        cfg, start = self.cfg, self.start
        if start.init_from is not None:
            model = MultiTaskModel.from_pretrained(start.init_from, dropout=cfg.dropout)
            model.keep_tasks(self.specs)
            tokenizer = load_tokenizer(start.init_from)
        else:
            encoder, tokenizer = load_encoder(start.backbone or cfg.model_name_or_path, cfg.dropout,
                                              cfg.trust_remote_code)
            model = MultiTaskModel(encoder, self.specs, cfg.pair_architecture, cfg.pooling, cfg.dropout)
        if start.reset_head is not None:
            torch.manual_seed(cfg.seed)
            model.reset_head(start.reset_head)
        adapt(model, cfg)  # optional: LoRA, frozen embeddings or layers, gradient checkpointing
        model.to(self.device)
        self.ranks.prepare_model(model, cfg.seed)
        return model, tokenizer

    def _build_optimisation(self) -> None:
        cfg, ranks = self.cfg, self.ranks
        self.unit = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps  # samples per optimizer step
        self.sizes = {stream: len(self.data[tasks[0]].train) for stream, tasks in self.streams.items()}
        self.steps_per_epoch = math.ceil(cfg.samples_per_task_per_epoch / (self.unit * ranks.world_size))
        self.total_steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_train_epochs *
                                                                              self.steps_per_epoch)
        self.num_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        # the engine's buffer holds a row per task a step collects: k rows with tasks_per_step k
        self.method = make_method(cfg.method, self.model, [s.name for s in self.active], ranks, cfg.seed,
                                  cfg.surgery_scope, cfg.method_options, cfg.surgery_buffer_dtype)
        self.model.to(self.device)  # a trainable loss weighting joins the model's device
        self.optimizer = make_optimizer(self.model, cfg, self.device)
        warmup = cfg.warmup_steps or int(cfg.warmup_ratio * self.total_steps)
        self.scheduler = get_scheduler(cfg.lr_scheduler_type, self.optimizer, num_warmup_steps=warmup,
                                       num_training_steps=self.total_steps)
        self.sampler = MultiTaskSampler(self.sizes, seed=cfg.seed, rank=ranks.rank, world_size=ranks.world_size)

    def _initial_state(self, resume: str | None) -> StageState:
        if not resume:
            if self.ranks.is_main:
                self.run_dir.metrics.unlink(missing_ok=True)
                self.run_dir.train_log.unlink(missing_ok=True)
            return StageState()
        path = ckpt.find_checkpoint(self.run_dir.root, resume)
        saved = ckpt.load_checkpoint(path, self.model, self.optimizer, self.scheduler, self.sampler,
                                     self.method.generator, self.ranks.rank)
        self.method.load_state_dict(saved)
        if self.average is not None:
            self.average.load(path, saved.get("ema_updates"))
        if self.scaler is not None and saved.get("grad_scaler") is not None:
            self.scaler.load_state_dict(saved["grad_scaler"])
        state = StageState.from_dict(saved)
        if self.ranks.is_main:  # the trackers skip the steps they were sent before the interruption
            self.logged_until = ckpt.truncate_logs(self.run_dir.root, state.global_step)
        logger.info("resumed from %s at step %d", path, state.global_step)
        return state

    # ---- the loop ----------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Train to the last step, evaluating and checkpointing on the way; return the best model's results."""
        cfg, state = self.cfg, self.state
        if self.start.competes and state.global_step == 0:
            self.evaluate_start()  # optional: two_step.keep_stage1
        self.model.train()
        started = time.perf_counter() - state.train_seconds
        with Preemption() as stop:  # SIGTERM / Ctrl-C: finish the step, checkpoint, exit
            for step in range(state.global_step + 1, self.total_steps + 1):
                if self.stopped_early():  # optional: early_stopping_patience
                    break
                log_now = step % cfg.logging_steps == 0 or step == self.total_steps
                batches, loss_scale = self.next_batches(step)
                losses, stats = self.method.backward(batches, loss_scale, self.objective, log_now, self.scaler,
                                                     self.group_objective)
                grad_norm = self.clip_gradients()
                if self.scaler is not None and not math.isfinite(grad_norm.item()):
                    self.skip_overflow(step)  # optional: fp16's scaled gradients overflowed
                    if not all(math.isfinite(v) for v in losses.values()):  # a lower scale cannot cure a loss
                        self.skip_bad_step(step, losses)
                elif math.isfinite(grad_norm.item()) and all(math.isfinite(v) for v in losses.values()):
                    state.bad_steps = 0
                    self.optimizer_step()
                    self.scheduler.step()
                    self.method.after_step(losses)
                else:
                    self.skip_bad_step(step, losses)
                self.optimizer.zero_grad(set_to_none=True)
                state.global_step = step
                self.log.step(losses)
                if log_now:
                    self.log.train({"step": step, "epoch": round(step / self.steps_per_epoch, 4),
                                    "lr": self.scheduler.get_last_lr()[0], "loss": losses,
                                    "total_grad_norm": grad_norm.item(), **(stats or {})})
                end_of_epoch = step % self.steps_per_epoch == 0 or step == self.total_steps
                state.train_seconds = time.perf_counter() - started
                if self.eval_due(step, end_of_epoch):
                    self.evaluate(step, losses)
                saved = (cfg.save_steps and step % cfg.save_steps == 0) or (end_of_epoch and step < self.total_steps)
                if saved:
                    saved = self.save_checkpoint(step, periodic=True)
                    if saved and self.hub is not None:  # optional: push_to_hub, in the background
                        self.hub.saved(step, self.state.best_step)
                if stop.should_stop(self.ranks):
                    self.preempted(stop, step, saved=bool(saved))
        self.log.close()
        state.train_seconds = time.perf_counter() - started
        return self.finish()

    # ---- the loop's parts --------------------------------------------------------------------------
    def preempted(self, stop: Preemption, step: int, saved: bool) -> None:
        """A signal arrived: checkpoint this step (unless just done), say where and how to resume, and exit."""
        if not saved:
            self.save_checkpoint(step)
        self.log.close()
        error = stop.exit(step, self.run_dir.checkpoint(step), resume_advice(sys.argv))
        if self.ranks.is_main:
            logger.warning("%s", error)
            print(f"mtbert: {error}", file=sys.stderr)
        raise error

    def next_batches(self, step: int) -> tuple[dict[str, dict | GroupBatch], dict[str, float]]:
        """Each active stream's batch of this step (on this rank): a task's own, or an input_group's `GroupBatch`;
        and the scale of each task's summed loss.

        Sample weighting scales a task's summed loss by 1/n_i; without it by 1/unit, so that a task with more
        samples per step weighs more (equal at ratio 1:1:1); and by the task's `loss_weight`. With several ranks the
        gradients are averaged over them, which gives the same scale over the union of their batches.
        """
        cfg = self.cfg
        ratios = {stream: self.ratios[tasks[0]] for stream, tasks in self.streams.items()}  # a group's: its tasks'
        per_step = samples_per_step(cfg.sampling, self.sizes, ratios, self.unit, cfg.sampling_temperature,
                                    epoch=(step - 1) // self.steps_per_epoch + 1, num_epochs=self.num_epochs)
        if cfg.tasks_per_step:  # optional: k of the tasks this step
            per_step = {t: per_step[t] for t in tasks_of_step(per_step, cfg.tasks_per_step, cfg.seed, step)}
        specs = self.model.specs
        loss_scale = {t: specs[t].loss_weight / (n if cfg.sample_weighting else self.unit)
                      for stream, n in per_step.items() for t in self.streams[stream]}

        def make(stream: str, indices: list[int]) -> dict | GroupBatch:
            if stream in self.groups:  # one batch of the group's examples, each task's labels
                sets = {t: self.data[t].train for t in self.streams[stream]}
                return collate_group(sets, indices, self.pad_id, packed=cfg.packing)
            return (collate_packed if cfg.packing else collate)(self.data[stream].train, indices, self.pad_id)

        batches: dict[str, Any] = {}
        for stream, n in per_step.items():
            indices = self.sampler.draw(stream, n)
            if cfg.gradient_accumulation_steps == 1:
                batches[stream] = make(stream, indices)
            else:  # micro-batches whose gradients add up to the batch's
                parts = np.array_split(np.array(indices), min(cfg.gradient_accumulation_steps, len(indices)))
                batches[stream] = [make(stream, part.tolist()) for part in parts]
        return batches, loss_scale

    def objective(self, task: str, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """A task's summed loss on its batch, and the objective to backpropagate (with SMART's penalty)."""
        inputs = [{k: v.to(self.device) for k, v in x.items()} for x in batch["inputs"]]
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            outputs = self.model(task, inputs)
        loss = task_loss(self.model.specs[task], outputs.float(), batch["labels"].to(self.device), self.cfg.sts_loss)
        if self.smoothness is None:
            return loss, loss
        # optional: SMART
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            penalty = smart_penalty(self.model, task, inputs, outputs, self.smoothness)
        return loss, loss + self.smoothness.weight * penalty

    def group_objective(self, batch: GroupBatch
                        ) -> tuple[list[torch.Tensor], dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        """The tasks of a batch that share their input: ONE encoder forward pass, each task's summed loss and its
        objective (with SMART's penalty), and the hidden states the heads read (`surgery_scope: representation`)."""
        inputs = [{k: v.to(self.device) for k, v in x.items()} for x in batch.inputs]
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            hidden, outputs = self.model.forward_group(list(batch.tasks), inputs)
        results = {}
        for task, task_batch in batch.tasks.items():
            loss = task_loss(self.model.specs[task], outputs[task].float(), task_batch["labels"].to(self.device),
                             self.cfg.sts_loss)
            if self.smoothness is None:
                results[task] = (loss, loss)
                continue
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                penalty = smart_penalty(self.model, task, inputs, outputs[task], self.smoothness)
            results[task] = (loss, loss + self.smoothness.weight * penalty)
        return hidden, results

    def clip_gradients(self) -> torch.Tensor:
        """Clip `.grad` to max_grad_norm (unscaled first under fp16) and return the total norm before clipping."""
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        return torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm or float("inf"))

    def optimizer_step(self) -> None:
        """The optimizer's step, then (`ema_decay`) the weights' moving average moves towards the new weights."""
        if self.scaler is None:
            self.optimizer.step()
        else:  # fp16: the gradients are unscaled and finite; the scaler may raise its scale
            self.scaler.step(self.optimizer)
            self.scaler.update()
        if self.average is not None:
            self.average.update(self.model)

    def skip_overflow(self, step: int) -> None:
        """fp16: the scaled gradients overflowed; as Trainer does, the step is skipped and the scale halved."""
        self.scaler.update()
        logger.info("step %d: float16 gradients overflowed; step skipped, gradient scale lowered to %g", step,
                    self.scaler.get_scale())

    def skip_bad_step(self, step: int, losses: dict[str, float]) -> None:
        """A non-finite loss or gradient: the step is skipped; training stops after max_bad_steps in a row, or at
        once when the weights themselves are no longer finite (every remaining step would be skipped)."""
        self.state.bad_steps += 1
        bad = [t for t, v in losses.items() if not math.isfinite(v)] or list(losses)
        logger.warning("step %d: non-finite loss or gradient (tasks: %s); step skipped", step, ", ".join(bad))
        if not finite_parameters(self.model):
            raise self.diverged(step, "because the model's weights are no longer finite, so every remaining "
                                      "step would be skipped")
        if self.state.bad_steps >= self.cfg.max_bad_steps:
            raise self.diverged(step, f"after {self.state.bad_steps} non-finite steps in a row "
                                      f"(tasks: {', '.join(bad)})")

    def diverged(self, step: int, why: str) -> MtbertError:
        """The one sentence that stops a diverged run: why, what to change, and the last good checkpoint."""
        saved = ckpt.list_checkpoints(self.run_dir.root)  # none is written in a run of non-finite steps
        where = (f"the last good checkpoint is {saved[-1]}" if saved else
                 f"{self.run_dir.root} holds no checkpoint from before it")
        return MtbertError(f"training stopped at step {step} {why}; lower learning_rate or check the data; {where}")

    def eval_due(self, step: int, end_of_epoch: bool) -> bool:
        strategy = self.cfg.eval_strategy
        return (strategy == "epoch" and end_of_epoch) or step == self.total_steps or (
            strategy == "steps" and step % self.cfg.eval_steps == 0)

    def evaluate(self, step: int, losses: dict[str, float]) -> None:
        """Every rank predicts a share of the dev sets and gets the same metrics; a better model becomes best/
        (with `ema_decay`, of the weights' moving average)."""
        model = self.average.model if self.average is not None else self.model
        metrics, outputs = evaluate_sets(model, self.dev_sets, self.cfg.per_device_eval_batch_size, self.pad_id,
                                         self.device, ranks=self.ranks)
        record = {"epoch": round(step / self.steps_per_epoch, 4), "step": step, "split": "dev", **metrics,
                  "train_seconds": round(self.state.train_seconds, 1)}
        self.log.evaluation(record, metrics, losses)
        if self.improves(metrics):
            self.state.best_metric, self.state.best_step = metrics[self.cfg.metric_for_best_model], step
            self.state.evals_without_improvement = 0
            self.best_outputs = outputs
            self.save_best(model)
        else:
            self.state.evals_without_improvement += 1

    def improves(self, metrics: dict[str, float]) -> bool:
        """Whether an evaluation beats the best one so far on `metric_for_best_model`."""
        value, best = metrics[self.cfg.metric_for_best_model], self.state.best_metric
        if not all(math.isfinite(v) for v in metrics.values() if isinstance(v, float)):
            return False  # a model with a non-finite output (a diverged one) is never best
        if not math.isfinite(value):
            return False
        if best is None:
            return True
        return value < best if self.cfg.greater_is_better is False else value > best

    def stopped_early(self) -> bool:
        """`early_stopping_patience` evaluations in a row without improvement: training stops (and finishes)."""
        patience = self.cfg.early_stopping_patience
        if patience is None or self.state.evals_without_improvement < patience:
            return False
        step = self.state.global_step
        self.state.stopped_early_at = step
        text = (f"early stopping at step {step}: {patience} evaluations without a better "
                f"{self.cfg.metric_for_best_model} than step {self.state.best_step}")
        logger.info(text)
        self.log.message(text)
        return True

    def evaluate_start(self) -> None:
        """The starting model with its own heads, evaluated as step 0 and saved as best/ (`keep_stage1`)."""
        with torch.random.fork_rng(devices=[]):  # loading draws random initial weights: keep training's RNG as is
            start = MultiTaskModel.from_pretrained(self.start.init_from)
        missing = [s.name for s in self.specs if s.name not in start.heads]
        if missing:
            raise MtbertError(f"two_step.keep_stage1: {self.start.init_from} has no head for {', '.join(missing)}")
        start.keep_tasks(self.specs)
        metrics, self.best_outputs = evaluate_sets(start.to(self.device), self.dev_sets,
                                                   self.cfg.per_device_eval_batch_size, self.pad_id, self.device,
                                                   ranks=self.ranks)
        self.log.evaluation({"epoch": 0.0, "step": 0, "split": "dev", **metrics, "train_seconds": 0.0}, metrics, {})
        self.state.best_metric, self.state.best_step = metrics[self.cfg.metric_for_best_model], 0
        self.save_best(start)

    def save_best(self, model: MultiTaskModel) -> None:
        if not finite_parameters(model):
            raise self.diverged(self.state.global_step, "because the model's weights are no longer finite")
        self.ranks.main_only(atomic_dir, self.run_dir.best, lambda tmp: model.save_pretrained(tmp, self.tokenizer))

    def save_checkpoint(self, step: int, periodic: bool = False) -> bool:
        """Write checkpoint-<step>; a periodic one is left out inside a run of non-finite steps, so that the
        rotation (save_total_limit) never drops the last good checkpoint for one of a diverging model."""
        if not finite_parameters(self.model):
            raise self.diverged(step, "because the model's weights are no longer finite")
        if periodic and self.state.bad_steps:
            logger.warning("step %d: no checkpoint while steps are non-finite", step)
            return False
        state = {**self.state.to_dict(), **self.method.state_dict(),
                 **({"grad_scaler": self.scaler.state_dict()} if self.scaler is not None else {}),
                 **({"ema_updates": self.average.updates} if self.average is not None else {})}
        self.ranks.main_only(ckpt.save_checkpoint, self.run_dir.root, step, self.model, self.optimizer,
                             self.scheduler, self.sampler, self.method.generator, state, self.cfg.save_total_limit,
                             rank_rng=self.ranks.rng_states(), weight_average=self.average)
        return True

    def finish(self) -> dict[str, Any]:
        """Results, prediction files and ensemble scores of the best model; automatic checkpoints removed."""
        if not (self.run_dir.best / MODEL_CONFIG).is_file():
            metric = self.cfg.metric_for_best_model
            raise self.diverged(self.state.global_step, f"because no evaluation gave finite metrics ({metric} "
                                "and every task's), so there is no best model")
        best = MultiTaskModel.from_pretrained(self.run_dir.best).to(self.device)
        results = finish_run(best, {s.name: self.data[s.name] for s in self.active}, self.cfg, self.run_dir.root,
                             self.pad_id, self.device, self.ranks, dev_outputs=self.best_outputs)
        results.update(train_seconds=round(self.state.train_seconds, 1), best_step=self.state.best_step)
        if self.state.stopped_early_at is not None:
            results["stopped_early_at"] = self.state.stopped_early_at
        if self.ranks.is_main:
            atomic_write_json(self.run_dir.results, results)
            write_model_card(self.run_dir, self.run_dir.best, self.cfg, results)
            if not self.cfg.save_steps:
                ckpt.remove_checkpoints(self.run_dir.root)  # only the automatic end-of-epoch ones; asked-for stay
        self.ranks.barrier()  # the stage's files are in place before any rank goes on
        return results


def finite_parameters(model: torch.nn.Module) -> bool:
    """Whether every parameter of `model` is finite (a diverged model's are not)."""
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def adapt(model: MultiTaskModel, cfg: TrainConfig) -> None:
    """Parameter-efficient and partial fine-tuning, and gradient checkpointing, as the config asks."""
    if cfg.lora is not None and not has_lora(model.encoder):  # stage 2 and init_from load trained adapters
        apply_lora(model, cfg.lora)
    if cfg.freeze_embeddings:
        freeze_embeddings(model)
    if cfg.freeze_layers:
        freeze_layers(model, cfg.freeze_layers)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if cfg.lora is not None or cfg.freeze_embeddings or cfg.freeze_layers:
        logger.info(trainable_summary(model))


def train_stage(cfg: TrainConfig, output_dir: Path, start: ModelStart = ModelStart(),
                resume_from_checkpoint: str | None = None, hub: HubPush | None = None) -> dict[str, Any]:
    """Train one stage into `output_dir` (a run folder) and return the best model's dev metrics; `hub` pushes its
    checkpoints' best models as they are saved (push_to_hub)."""
    return Stage(cfg, output_dir, start, resume_from_checkpoint, hub).run()


def finish_run(model: MultiTaskModel, data: dict[str, TaskData], cfg: TrainConfig, output_dir: Path, pad_id: int,
               device: torch.device, ranks: Ranks = ONE_PROCESS,
               dev_outputs: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> dict[str, Any]:
    """Dev metrics (with the bootstrap interval), CS224N prediction files and ensemble scores of a model.

    `dev_outputs`: the model's dev outputs when they were computed already (the best epoch's evaluation).
    """
    run = RunDir(output_dir)
    dev_sets = {t: d.dev for t, d in data.items()}
    if dev_outputs is not None:
        metrics, raw = score_outputs(dev_sets, dev_outputs, with_interval=True, ranks=ranks), dev_outputs
    else:
        metrics, raw = evaluate_sets(model, dev_sets, cfg.per_device_eval_batch_size, pad_id, device,
                                     with_interval=True, ranks=ranks)
    for task, task_data in data.items():
        kind = task_data.spec.task_kind
        if ranks.is_main:
            kind.write_predictions(run.prediction(task, "dev", kind.prediction_suffix), task_data.spec,
                                   task_data.dev.ids, raw[task][0], task_data.dev.extras)
            kind.write_scores(run.scores(task, "dev"), task_data.spec, task_data.dev.ids, raw[task][1])
        if task_data.test is not None and len(task_data.test):
            predictions, scores = predict_set(model, task_data.test, cfg.per_device_eval_batch_size, pad_id, device,
                                              ranks=ranks)
            if ranks.is_main:
                kind.write_predictions(run.prediction(task, "test", kind.prediction_suffix), task_data.spec,
                                       task_data.test.ids, predictions, task_data.test.extras)
                kind.write_scores(run.scores(task, "test"), task_data.spec, task_data.test.ids, scores)
    return metrics
