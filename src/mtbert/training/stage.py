"""The training loop, read top to bottom: one stage of (multi-task) training, and two-step fine-tuning.

A step takes a batch from every active task (ratio x per_device_train_batch_size samples each), runs one
forward and one backward per task, and then either keeps the summed gradient (`sum`, `single`) or
aggregates the per-task gradients of the shared encoder (`pcgrad`, ...; see gradients.py).

Launched on several processes (`torchrun`, `accelerate launch`), every rank takes its own share of each task's
batches and the per-task gradients are averaged over the ranks before the aggregation, so N ranks take the
step of one process with N times the batch (see distributed.py). Rank 0 alone writes files and logs.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import get_scheduler

from mtbert.config import TrainConfig, save_config, stage2_config
from mtbert.data import MultiTaskSampler, TaskData, collate, load_task_data
from mtbert.data.sampling import samples_per_step
from mtbert.distributed import ONE_PROCESS, Ranks
from mtbert.distributed import start as start_ranks
from mtbert.errors import MtbertError
from mtbert.evaluation.evaluate import evaluate_sets, predict_set, score_outputs
from mtbert.evaluation.predict import write_cs224n, write_scores
from mtbert.io import append_jsonl, atomic_dir, atomic_write_json, atomic_write_text, read_jsonl
from mtbert.methods.aggregators import AGGREGATORS, diagnose, make_aggregator
from mtbert.methods.pertask import PerTaskGradients, aggregate_per_layer
from mtbert.methods.weighting import FAMO, make_weighting
from mtbert.model import MultiTaskModel, load_encoder, load_tokenizer, task_loss
from mtbert.tasks import TaskSpec
from mtbert.training import checkpoint as ckpt
from mtbert.training.mlm import pretrain_mlm
from mtbert.training.smart import Smoothness, smart_penalty
from mtbert.training.tensorboard import log_scalars, open_writer

logger = logging.getLogger(__name__)

RUN_FILES = ("metrics.jsonl", "train_log.jsonl", "results.json", "config.yaml")


def train(cfg: TrainConfig, resume_from_checkpoint: str | None = None, overwrite_output_dir: bool = False) -> dict:
    """Run a training job (one stage, or two with `two_step`) and return the final dev metrics."""
    output_dir = Path(cfg.output_dir)
    ranks = start_ranks(cfg.ddp_mode)
    ranks.main_only(prepare_output_dir, output_dir, resume_from_checkpoint, overwrite_output_dir)
    if ranks.is_main:
        save_config(cfg, output_dir / "config.yaml")
    backbone = None
    if cfg.mlm_steps and not (cfg.two_step or {}).get("init_from"):  # fine-tune from a further pretrained encoder
        backbone = ranks.main_only(pretrain_mlm, cfg, output_dir / "mlm", ranks.device)
    if cfg.two_step is None:
        return train_stage(cfg, output_dir, resume_from_checkpoint=resume_from_checkpoint, backbone=backbone)
    return train_two_step(cfg, output_dir, resume_from_checkpoint, backbone)


def prepare_output_dir(output_dir: Path, resume: str | None, overwrite: bool) -> None:
    """Refuse to train into a non-empty folder unless told to overwrite it or to resume from it."""
    if output_dir.is_dir() and any(output_dir.iterdir()) and not resume:
        if not overwrite:
            raise MtbertError(
                f"output_dir: {output_dir} is not empty; pass --overwrite_output_dir to replace it "
                "or --resume_from_checkpoint last to continue it"
            )
        for name in ("best", "predictions", "scores", "stage1", "tasks", "mlm", "mlm_log.jsonl", *RUN_FILES):
            path = output_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        for path in output_dir.glob("checkpoint-*"):
            shutil.rmtree(path)
    output_dir.mkdir(parents=True, exist_ok=True)


def train_stage(cfg: TrainConfig, output_dir: Path, init_from: Path | None = None, reset_head: str | None = None,
                resume_from_checkpoint: str | None = None, init_competes: bool = False,
                backbone: Path | None = None) -> dict:
    """Train one stage into `output_dir` (a normal run dir) and return the best model's dev metrics.

    `backbone`: an encoder folder to start from instead of `cfg.model_name_or_path` (the masked-LM pretrained one).
    `init_competes`: the `init_from` model as it is (its own heads) is evaluated first, as step 0, and stays the
    best model unless an epoch beats it (two-step's `keep_stage1`).
    """
    ranks = start_ranks(cfg.ddp_mode)  # one process unless launched by torchrun or accelerate
    if ranks.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, output_dir / "config.yaml")
    torch.manual_seed(cfg.seed)
    device = ranks.device
    use_bf16 = device.type == "cuda" and cfg.bf16 in ("auto", "true")
    specs = cfg.task_specs()
    ratios = cfg.ratios()
    active = [s for s in specs if ratios[s.name] > 0]

    # ---- model and data -------------------------------------------------------------------------
    if init_from is not None:
        model = MultiTaskModel.from_pretrained(init_from, dropout=cfg.dropout)
        model.keep_tasks(specs)
        tokenizer = load_tokenizer(init_from)
    else:
        source = str(backbone) if backbone is not None else cfg.model_name_or_path
        encoder, tokenizer = load_encoder(source, cfg.dropout, cfg.trust_remote_code)
        model = MultiTaskModel(encoder, specs, cfg.pair_architecture, cfg.pooling, cfg.dropout)
    if reset_head is not None:
        torch.manual_seed(cfg.seed)
        model.reset_head(reset_head)
    model.to(device)
    ranks.prepare_model(model, cfg.seed)
    data = load_task_data(specs, cfg.resolved_data_dir(), tokenizer, cfg.max_length, cfg.pair_architecture,
                          cfg.max_train_samples, cfg.max_eval_samples, cfg.max_predict_samples)
    pad_id = tokenizer.pad_token_id or 0
    dev_sets = {s.name: data[s.name].dev for s in active}

    # ---- optimisation ---------------------------------------------------------------------------
    unit = cfg.per_device_train_batch_size
    sizes = {s.name: len(data[s.name].train) for s in active}
    steps_per_epoch = math.ceil(cfg.samples_per_task_per_epoch / (unit * ranks.world_size))
    total_steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_train_epochs * steps_per_epoch)
    num_epochs = math.ceil(total_steps / steps_per_epoch)
    weighting = make_weighting(cfg.method, list(sizes))
    if isinstance(weighting, torch.nn.Module):
        model.loss_weighting = weighting.to(device)  # trained, and checkpointed, with the model
    optimizer = make_optimizer(model, cfg, device)
    warmup = cfg.warmup_steps or int(cfg.warmup_ratio * total_steps)
    scheduler = get_scheduler(cfg.lr_scheduler_type, optimizer, num_warmup_steps=warmup,
                              num_training_steps=total_steps)
    sampler = MultiTaskSampler({s.name: len(data[s.name].train) for s in active}, seed=cfg.seed, rank=ranks.rank,
                               world_size=ranks.world_size)
    aggregate = make_aggregator(cfg.method if cfg.method in AGGREGATORS else "sum")
    smoothness = Smoothness(cfg.smart_weight, cfg.smart_step_size, cfg.smart_noise) if cfg.smart_weight else None
    generator = torch.Generator().manual_seed(cfg.seed)
    shared_names = [n for n, p in model.encoder.named_parameters() if p.requires_grad]
    buffer = PerTaskGradients(model.shared_parameters(), len(active), model.encoder.get_input_embeddings().weight,
                              names=shared_names)

    state = {"global_step": 0, "best_metric": None, "best_step": None, "bad_steps": 0, "train_seconds": 0.0}
    if not resume_from_checkpoint:
        if ranks.is_main:
            for name in ("metrics.jsonl", "train_log.jsonl"):
                (output_dir / name).unlink(missing_ok=True)
    else:
        path = ckpt.find_checkpoint(output_dir, resume_from_checkpoint)
        state = ckpt.load_checkpoint(path, model, optimizer, scheduler, sampler, generator, ranks.rank)
        if "loss_weighting" in state:  # FAMO's own state
            weighting.load_state_dict(state.pop("loss_weighting"))
        if ranks.is_main:
            ckpt.truncate_logs(output_dir, state["global_step"])
        logger.info("resumed from %s at step %d", path, state["global_step"])
    tensorboard = open_writer(cfg.report_to, output_dir) if ranks.is_main else None
    best_outputs = None  # set when this process evaluates the best model (not before a resume)
    if init_competes and init_from is not None and not resume_from_checkpoint:
        with torch.random.fork_rng(devices=[]):  # loading draws random initial weights: keep training's RNG as is
            start = MultiTaskModel.from_pretrained(init_from)
        missing = [s.name for s in specs if s.name not in start.heads]
        if missing:
            raise MtbertError(f"two_step.keep_stage1: {init_from} has no head for {', '.join(missing)}")
        start.keep_tasks(specs)
        metrics, best_outputs = evaluate_sets(start.to(device), dev_sets, cfg.per_device_eval_batch_size, pad_id,
                                              device, ranks=ranks)
        if ranks.is_main:
            append_jsonl(output_dir / "metrics.jsonl", {"epoch": 0.0, "step": 0, "split": "dev", **metrics,
                                                        "train_seconds": 0.0})
            logger.info("%s before training: dev %s", output_dir.name, " ".join(f"{k} {v:.4f}" for k, v in
                                                                                 metrics.items()))
        state["best_metric"], state["best_step"] = metrics["overall"], 0
        ranks.main_only(atomic_dir, output_dir / "best", lambda tmp: start.save_pretrained(tmp, tokenizer))
        del start

    # ---- the loop -------------------------------------------------------------------------------
    model.train()
    epoch_log: list[dict] = []
    started = time.perf_counter() - state["train_seconds"]
    progress = tqdm(total=total_steps, initial=state["global_step"], desc=f"train {output_dir.name}",
                    dynamic_ncols=True, mininterval=2.0, disable=not ranks.is_main)
    for step in range(state["global_step"] + 1, total_steps + 1):
        log_now = step % cfg.logging_steps == 0 or step == total_steps
        per_task = cfg.method in AGGREGATORS and cfg.method != "sum" or (log_now and len(active) > 1) or (
            ranks.distributed)
        # Samples of each task this step (on each rank): task_ratio x batch, or the sampling strategy's shares.
        per_step = samples_per_step(cfg.sampling, sizes, ratios, unit, cfg.sampling_temperature,
                                    epoch=(step - 1) // steps_per_epoch + 1, num_epochs=num_epochs)
        # Sample weighting: a task's summed loss is scaled by 1/n_i; without it by 1/unit, so that a task
        # with more samples per step weighs more (the contrast the seed draws). Equal at ratio 1:1:1. With several
        # ranks the gradients are averaged over them, which gives the same scale over the union of their batches.
        loss_scale = {t: 1.0 / (n if cfg.sample_weighting else unit) for t, n in per_step.items()}
        batches = {t: collate(data[t].train, sampler.draw(t, n), pad_id) for t, n in per_step.items()}
        losses, stats = training_step(model, batches, loss_scale, buffer if per_task else None, aggregate, generator,
                                      device, use_bf16, cfg.sts_loss, diagnostics=log_now, ranks=ranks,
                                      weighting=weighting, per_layer=cfg.surgery_scope == "per-layer",
                                      smoothness=smoothness)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm or float("inf"))

        if not (math.isfinite(grad_norm.item()) and all(math.isfinite(v) for v in losses.values())):
            state["bad_steps"] += 1
            bad = [t for t, v in losses.items() if not math.isfinite(v)] or list(losses)
            logger.warning("step %d: non-finite loss or gradient (tasks: %s); step skipped", step, ", ".join(bad))
            optimizer.zero_grad(set_to_none=True)
            if state["bad_steps"] >= cfg.max_bad_steps:
                raise MtbertError(
                    f"training stopped at step {step} after {state['bad_steps']} non-finite steps in a row "
                    f"(tasks: {', '.join(bad)}); lower learning_rate or check the data; the last good checkpoint "
                    f"is in {output_dir}"
                )
        else:
            state["bad_steps"] = 0
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if weighting is not None:
                weighting.after_step(losses)
        state["global_step"] = step
        progress.update(1)
        progress.set_postfix({t: f"{v:.3f}" for t, v in losses.items()}, refresh=False)

        epoch = step / steps_per_epoch
        if log_now and ranks.is_main:
            record = {"step": step, "epoch": round(epoch, 4), "lr": scheduler.get_last_lr()[0],
                      "loss": losses, "total_grad_norm": grad_norm.item()}
            if stats is not None:
                record.update(stats)
            append_jsonl(output_dir / "train_log.jsonl", record)
            log_scalars(tensorboard, record, step)
            epoch_log.append(record)

        end_of_epoch = step % steps_per_epoch == 0 or step == total_steps
        eval_now = (cfg.eval_strategy == "epoch" and end_of_epoch) or step == total_steps or (
            cfg.eval_strategy == "steps" and step % cfg.eval_steps == 0)
        if eval_now:  # every rank predicts a share of the dev sets and gets the same metrics
            metrics, dev_outputs = evaluate_sets(model, dev_sets, cfg.per_device_eval_batch_size, pad_id, device,
                                                 ranks=ranks)
            state["train_seconds"] = time.perf_counter() - started
            if ranks.is_main:
                record = {"epoch": round(epoch, 4), "step": step, "split": "dev", **metrics,
                          "train_seconds": round(state["train_seconds"], 1)}
                append_jsonl(output_dir / "metrics.jsonl", record)
                log_scalars(tensorboard, {"dev": metrics}, step)
                progress.write(epoch_summary(epoch, losses, metrics, epoch_log))
            if state["best_metric"] is None or metrics["overall"] > state["best_metric"]:
                state["best_metric"], state["best_step"] = metrics["overall"], step
                best_outputs = dev_outputs  # the dev outputs of the model saved as best/
                ranks.main_only(atomic_dir, output_dir / "best", lambda tmp: model.save_pretrained(tmp, tokenizer))
            epoch_log = []
        save_now = (cfg.save_steps and step % cfg.save_steps == 0) or (end_of_epoch and step < total_steps)
        if save_now:
            state["train_seconds"] = time.perf_counter() - started
            if isinstance(weighting, FAMO):  # its state lives outside the model (uncertainty's is in it)
                state["loss_weighting"] = weighting.state_dict()
            ranks.main_only(ckpt.save_checkpoint, output_dir, step, model, optimizer, scheduler, sampler, generator,
                            state, cfg.save_total_limit, rank_rng=ranks.rng_states())
    progress.close()
    if tensorboard is not None:
        tensorboard.close()

    # ---- final results from the best model ------------------------------------------------------
    state["train_seconds"] = time.perf_counter() - started
    best = MultiTaskModel.from_pretrained(output_dir / "best").to(device)
    results = finish_run(best, {s.name: data[s.name] for s in active}, cfg, output_dir, pad_id, device, ranks,
                         dev_outputs=best_outputs)
    results.update(train_seconds=round(state["train_seconds"], 1), best_step=state["best_step"])
    if ranks.is_main:
        atomic_write_json(output_dir / "results.json", results)
        if not cfg.save_steps:
            ckpt.remove_checkpoints(output_dir)  # only the automatic end-of-epoch ones; asked-for ones stay
    ranks.barrier()  # the stage's files are in place before any rank goes on
    return results


def training_step(model: MultiTaskModel, batches: dict[str, dict], loss_scale: dict[str, float],
                  buffer: PerTaskGradients | None, aggregate, generator: torch.Generator, device: torch.device,
                  use_bf16: bool = False, sts_loss: str = "mse", diagnostics: bool = False,
                  ranks: Ranks = ONE_PROCESS, weighting=None, per_layer: bool = False,
                  smoothness: Smoothness | None = None) -> tuple[dict[str, float], dict | None]:
    """Forward and backward each task's batch; with a buffer, aggregate the per-task gradients into `.grad`.

    With `smoothness`, each task's loss also carries SMART's penalty (smart.py), which the reported losses leave out.

    Returns the mean per-sample loss of each task and, when asked, the gradient diagnostics. With several
    ranks, the gradients and losses are averaged over them (`ranks.share`) before the aggregation.
    """
    if buffer is not None:
        touched = torch.cat([x["input_ids"].view(-1) for b in batches.values() for x in b["inputs"]])
        buffer.begin_step(ranks.union_rows(touched, model.encoder.get_input_embeddings().num_embeddings))
    losses = {}
    for index, (task, batch) in enumerate(batches.items()):
        inputs = [{k: v.to(device) for k, v in x.items()} for x in batch["inputs"]]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            outputs = model(task, inputs)
        loss = task_loss(model.specs[task], outputs.float(), batch["labels"].to(device), sts_loss)
        objective = loss
        if smoothness is not None:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                objective = loss + smoothness.weight * smart_penalty(model, task, inputs, outputs, smoothness)
        scaled = objective * loss_scale[task]
        if weighting is not None:  # uncertainty / famo: a weight per task on its loss (of all ranks' batches)
            scaled = weighting.weigh(task, ranks.with_mean_value(scaled))
        scaled.backward()  # frees this task's graph: peak memory is one task batch
        losses[task] = loss.item() / len(batch["labels"])
        if buffer is not None:
            buffer.collect(index)
    losses = ranks.share(losses, buffer, model)  # ddp_mode exact: one all-reduce of the T x P buffer
    stats = None
    if buffer is not None:
        if per_layer:
            update = aggregate_per_layer(aggregate, buffer.grads, buffer.layer_groups(), generator)
        else:
            update = aggregate(buffer.grads, generator=generator)
        if diagnostics:
            stats = diagnose(buffer.grads, update, list(batches))
        buffer.write(ranks.mean_update(update))  # ddp_mode local: the mean of the ranks' updates
    return losses, stats


def finish_run(model: MultiTaskModel, data: dict[str, TaskData], cfg: TrainConfig, output_dir: Path, pad_id: int,
               device: torch.device, ranks: Ranks = ONE_PROCESS,
               dev_outputs: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> dict[str, Any]:
    """Dev metrics (with the bootstrap interval), CS224N prediction files and ensemble scores of a model.

    `dev_outputs`: the model's dev outputs when they were computed already (the best epoch's evaluation).
    """
    dev_sets = {t: d.dev for t, d in data.items()}
    if dev_outputs is not None:
        metrics, raw = score_outputs(dev_sets, dev_outputs, with_interval=True, ranks=ranks), dev_outputs
    else:
        metrics, raw = evaluate_sets(model, dev_sets, cfg.per_device_eval_batch_size, pad_id, device,
                                     with_interval=True, ranks=ranks)
    for task, task_data in data.items():
        if ranks.is_main:
            write_cs224n(output_dir / "predictions" / f"{task}-dev-output.csv", task_data.spec, task_data.dev.ids,
                         raw[task][0])
            write_scores(output_dir / "scores" / f"{task}-dev.tsv", task_data.spec, task_data.dev.ids, raw[task][1])
        if task_data.test is not None and len(task_data.test):
            predictions, scores = predict_set(model, task_data.test, cfg.per_device_eval_batch_size, pad_id, device,
                                              ranks=ranks)
            if ranks.is_main:
                write_cs224n(output_dir / "predictions" / f"{task}-test-output.csv", task_data.spec,
                             task_data.test.ids, predictions)
                write_scores(output_dir / "scores" / f"{task}-test.tsv", task_data.spec, task_data.test.ids, scores)
    return metrics


def make_optimizer(model: MultiTaskModel, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over `param_groups`, with torch's fused kernel on CPU and CUDA (what Trainer's adamw_torch_fused runs)."""
    fused = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(param_groups(model, cfg), lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                             fused=fused or None)


def param_groups(model: MultiTaskModel, cfg: TrainConfig) -> list[dict]:
    """AdamW groups: no weight decay on biases and LayerNorm; per-layer learning-rate decay in the encoder."""
    layers = getattr(model.encoder.config, "num_hidden_layers", 0)
    groups: dict[tuple[float, float], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = 0.0 if (p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name) else cfg.weight_decay
        if name.startswith(("heads.", "loss_weighting.")):
            lr = cfg.head_learning_rate or cfg.learning_rate
        else:
            depth = layers  # embeddings sit below layer 0
            for i in range(layers):
                if f".layer.{i}." in name or f".layers.{i}." in name:
                    depth = layers - 1 - i
            if "pooler" in name:
                depth = 0
            lr = cfg.learning_rate * cfg.layerwise_lr_decay**depth
        groups.setdefault((lr, decay), []).append(p)
    return [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]


def epoch_summary(epoch: float, losses: dict[str, float], metrics: dict[str, float], logs: list[dict]) -> str:
    """One line: the dev metrics, the last losses and, when logged, the conflict rate of each task pair."""
    parts = [f"epoch {epoch:.2f}", "dev " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items())]
    parts.append("loss " + " ".join(f"{t} {v:.3f}" for t, v in losses.items()))
    pairs: dict[str, list[bool]] = {}
    for record in logs:
        for pair, conflicted in record.get("conflict", {}).items():
            pairs.setdefault(pair, []).append(conflicted)
    if pairs:
        parts.append("conflicts " + " ".join(f"{p} {100 * np.mean(v):.0f}%" for p, v in pairs.items()))
    return " | ".join(parts)


# ---- two-step fine-tuning ----------------------------------------------------------------------


def train_two_step(cfg: TrainConfig, output_dir: Path, resume: str | None = None,
                   backbone: Path | None = None) -> dict:
    """Stage 1 as configured (or `two_step.init_from`), then one specialised model per task from its best model."""
    init_from = (cfg.two_step or {}).get("init_from")
    if init_from:
        stage1_best = resolve_best(Path(init_from))
    else:
        stage1_dir = output_dir / "stage1"
        stage1_cfg = replace(cfg, two_step=None, output_dir=str(stage1_dir))
        if not (stage1_dir / "results.json").is_file():
            stage_resume = resume if resume and ckpt.has_checkpoint(stage1_dir, resume) else None
            train_stage(stage1_cfg, stage1_dir, resume_from_checkpoint=stage_resume, backbone=backbone)
        stage1_best = stage1_dir / "best"
    stage2 = stage2_config(cfg)
    keep_stage1 = bool((cfg.two_step or {}).get("keep_stage1"))

    def competes(task: str) -> bool:  # a task that stage 1 trained (ratio > 0), or one of init_from's heads
        return bool(init_from) or cfg.ratios()[task] > 0

    per_task_results = {}
    for spec in cfg.task_specs():
        task_dir = output_dir / "tasks" / spec.name
        if (task_dir / "results.json").is_file() and resume:
            per_task_results[spec.name] = read_results(task_dir)
            continue
        task_cfg = replace(stage2, tasks=[_task_entry(cfg, spec)], method="single", task_ratio=None,
                           output_dir=str(task_dir))
        stage_resume = resume if resume and ckpt.has_checkpoint(task_dir, resume) else None
        per_task_results[spec.name] = train_stage(task_cfg, task_dir, init_from=stage1_best, reset_head=spec.name,
                                                  resume_from_checkpoint=stage_resume,
                                                  init_competes=keep_stage1 and competes(spec.name))
    ranks = start_ranks(cfg.ddp_mode)
    return ranks.main_only(combine_task_runs, cfg, output_dir, per_task_results)


def _task_entry(cfg: TrainConfig, spec: TaskSpec) -> Any:
    for entry in cfg.tasks:
        if entry == spec.name or (isinstance(entry, dict) and entry.get("name") == spec.name):
            return entry
    return spec.name


def resolve_best(run_dir: Path) -> Path:
    """The best model of a run dir (or the folder itself when it is a checkpoint)."""
    for candidate in (run_dir, run_dir / "best", run_dir / "stage1" / "best"):
        if (candidate / "mtbert_config.json").is_file():
            return candidate
    raise MtbertError(f"two_step.init_from: {run_dir} holds no trained model (no best/ folder)")


def read_results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text(encoding="utf-8"))


def combine_task_runs(cfg: TrainConfig, output_dir: Path, per_task: dict[str, dict]) -> dict:
    """Top-level metrics.jsonl, results.json and predictions/ of a two-step run, from the specialised models."""
    from mtbert.evaluation.metrics import bootstrap_overall
    from mtbert.tasks import overall_score

    specs = cfg.task_specs()
    results: dict[str, Any] = {}
    for spec in specs:
        results[spec.metric_key] = per_task[spec.name][spec.metric_key]
    results["overall"] = overall_score(specs, results)
    # bootstrap over the specialised models' own dev predictions
    triples = {}
    for spec in specs:
        task_dir = output_dir / "tasks" / spec.name
        triples[spec.name] = dev_predictions_with_labels(cfg, spec, task_dir)
    results["overall_ci95"] = list(bootstrap_overall(triples))
    stage1_results = output_dir / "stage1" / "results.json"
    stage1_seconds = read_results(output_dir / "stage1").get("train_seconds", 0.0) if stage1_results.is_file() else 0.0
    results["train_seconds"] = round(sum(r.get("train_seconds", 0.0) for r in per_task.values()) + stage1_seconds, 1)
    results["best_step"] = {spec.name: per_task[spec.name].get("best_step") for spec in specs}
    # one metrics line per stage-2 epoch: each task's metric at that evaluation
    # (a task whose stage-1 model competed has a step-0 line that the others lack: rows go by step)
    histories = {s.name: {r["step"]: r for r in read_jsonl(output_dir / "tasks" / s.name / "metrics.jsonl")}
                 for s in specs}
    lines = []
    for step in sorted(set.intersection(*(set(h) for h in histories.values()))):
        first = histories[specs[0].name][step]
        row: dict[str, Any] = {"epoch": first["epoch"], "step": step, "split": "dev", "stage": 2}
        for spec in specs:
            row[spec.metric_key] = histories[spec.name][step][spec.metric_key]
        row["overall"] = overall_score(specs, row)
        lines.append(row)
    atomic_write_text(output_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in lines))
    for folder in ("predictions", "scores"):
        (output_dir / folder).mkdir(exist_ok=True)
        for spec in specs:
            for path in (output_dir / "tasks" / spec.name / folder).glob(f"{spec.name}-*"):
                shutil.copyfile(path, output_dir / folder / path.name)
    atomic_write_json(output_dir / "results.json", results)
    return results


def dev_predictions_with_labels(cfg: TrainConfig, spec: TaskSpec, run_dir: Path):
    """(spec, dev predictions, dev labels) of a finished run, read back from its files."""
    from mtbert.data import read_task_file
    from mtbert.evaluation.predict import read_cs224n

    _, values = read_cs224n(run_dir / "predictions" / f"{spec.name}-dev-output.csv")
    examples = read_task_file(cfg.resolved_data_dir() / spec.dev_file, spec).examples
    if cfg.max_eval_samples:
        examples = examples[: cfg.max_eval_samples]
    predictions = np.array([values[e.id] for e in examples])
    labels = np.array([e.label for e in examples])
    return spec, predictions, labels
