"""`mtbert bench step --config CONFIG`: seconds per training step of a config's own tasks, any kinds, with or
without tasks that share their input (an input_group).

The config's tasks, model and batch size are built as training builds them; every method then runs on the same
batches (each group's one batch, each other task's own), in the rotated order of `bench step` (bench/step.py),
and its cost against `sum` is read from the paired per-step ratios. Methods:

- `sum`: one forward per batch, one backward of the summed losses;
- a gradient method (`pcgrad`, ...): exact, each task's gradient into its row (a task of a group: through the
  group's kept graph; any other task: from its own batch, as in the separate-batch step);
- `<method>-representation`: `surgery_scope: representation` (the method on the hidden states' gradients, then
  one backward through the encoder);
- `torchjd`: torchjd's `mtl_backward` (the Jacobian of the task losses over the shared parameters, the hidden
  states as its features) and `jac_to_grad` with its PCGrad aggregator: the exact algorithm, torchjd's way;
- `torchjd-autogram`: torchjd's autogram `Engine` (the Gramian of the task losses' Jacobian, accumulated module
  by module), `PCGradWeighting`, one backward of the weighted losses.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from mtbert.bench.machine import machine
from mtbert.bench.peak import peak_mb, start_peak
from mtbert.bench.step import (
    MIN_ROUNDS,
    PCGRAD_GOAL,
    bootstrap_interval,
    paired_ratios,
    rotated_rounds,
    summarize,
    training_step,
    verdict,
)
from mtbert.config import load_config
from mtbert.data import MultiTaskSampler, collate, load_task_data
from mtbert.data.encoding import collate_packed
from mtbert.data.groups import GroupBatch, collate_group
from mtbert.data.loading import resolve_labels
from mtbert.errors import MtbertError
from mtbert.methods.aggregators import AGGREGATORS
from mtbert.methods.method import Method, plain_group_objective, plain_objective
from mtbert.model import MultiTaskModel, load_encoder, task_loss
from mtbert.tasks import input_groups, task_streams
from mtbert.training.optim import make_optimizer
from mtbert.training.stage import adapt

REPRESENTATION = "-representation"
GROUP_TORCHJD_ROWS = ("torchjd", "torchjd-autogram")
# issue 33: a step of joint PCGrad at most these many times the summed-loss step's
GROUP_GOALS = {"pcgrad": 1.3, f"pcgrad{REPRESENTATION}": 1.05}
# issue 32: without a group (each task its own batch, e.g. a token task beside a sentence task), what it costs today
SEPARATE_GOALS = {"pcgrad": PCGRAD_GOAL}


def check_group_methods(methods: list[str]) -> None:
    """Raise MtbertError naming the first method `bench step --config` cannot time."""
    known = (*AGGREGATORS, *(f"{m}{REPRESENTATION}" for m in AGGREGATORS), *GROUP_TORCHJD_ROWS)
    for method in methods:
        if method not in known:
            raise MtbertError(f"--methods: unknown method '{method}' for a config's step (known: sum, an "
                              f"aggregator such as pcgrad, <aggregator>{REPRESENTATION}, torchjd, torchjd-autogram)")


def bench_group_step(config: str | Path, methods: list[str], steps: int, warmup: int,
                     batch_size: int | None = None) -> dict[str, Any]:
    """Seconds per training step of each method on the config's tasks (each input_group one stream, every other
    task its own), on the same batches, order rotated every step; `batch_size` (default: the config's) samples
    per stream."""
    check_group_methods(methods)
    if steps < MIN_ROUNDS:
        raise MtbertError(f"--steps: {steps} timed steps is too few for a paired interval (at least {MIN_ROUNDS})")
    cfg = load_config(config)
    specs = [resolve_labels(s, cfg.resolved_data_dir()) for s in cfg.task_specs()]
    n = batch_size or cfg.per_device_train_batch_size
    torch.manual_seed(cfg.seed)
    encoder, tokenizer = load_encoder(cfg.model_name_or_path, cfg.dropout, cfg.trust_remote_code)
    model = MultiTaskModel(encoder, specs, cfg.pair_architecture, cfg.pooling, cfg.dropout)
    adapt(model, cfg)
    data = load_task_data(specs, cfg.resolved_data_dir(), tokenizer, cfg.max_length, cfg.pair_architecture,
                          cfg.max_train_samples, splits=("train",))
    streams = task_streams(specs)
    groups = input_groups(specs)
    sampler = MultiTaskSampler({s: len(data[tasks[0]].train) for s, tasks in streams.items()}, seed=cfg.seed)
    pad = tokenizer.pad_token_id or 0

    def draw(stream: str) -> dict | GroupBatch:
        indices = sampler.draw(stream, n)
        if stream in groups:
            return collate_group({t: data[t].train for t in streams[stream]}, indices, pad, packed=cfg.packing)
        return (collate_packed if cfg.packing else collate)(data[stream].train, indices, pad)

    all_batches = [{s: draw(s) for s in streams} for _ in range(steps + warmup)]
    tasks = [s.name for s in specs]
    scale = {s.name: s.loss_weight / n for s in specs}
    device = torch.device("cpu")
    objective, group_objective = plain_objective(model, device, cfg.sts_loss), plain_group_objective(model, device,
                                                                                                     cfg.sts_loss)
    autogram_model = copy.deepcopy(model) if "torchjd-autogram" in methods else None  # its hooks stay on its copy
    optimizer = make_optimizer(model, replace(cfg, learning_rate=1e-5), device)
    model.train()

    def stepper(name: str) -> Callable[[dict[str, Any]], None]:
        step_model, step_optimizer = model, optimizer
        if name == "torchjd-autogram":
            step_model = autogram_model
            step_optimizer = make_optimizer(step_model, replace(cfg, learning_rate=1e-5), device)
            step_model.train()
            gradient = torchjd_autogram_group_step(step_model, scale, cfg.sts_loss)
        elif name == "torchjd":
            def gradient(batches: dict[str, Any]) -> None:
                torchjd_group_step(model, batches, scale, cfg.sts_loss)
        else:
            method = Method(name.removesuffix(REPRESENTATION), model, tasks, seed=cfg.seed,
                            representation=name.endswith(REPRESENTATION))

            def gradient(batches: dict[str, Any], method: Method = method) -> None:
                method.backward(batches, scale, objective, group_objective=group_objective)

        return training_step(gradient, step_model, step_optimizer)

    start = start_peak()  # the peak of the steps, not of loading the data
    times = rotated_rounds({m: stepper(m) for m in methods}, all_batches, warmup)
    return {
        "benchmark": "step", "config": str(config), "streams": streams, "batch_size_per_stream": n, "steps": steps,
        **machine(), "order": "rotated by one method every step",
        "trainable_parameters": {"encoder": sum(p.numel() for p in model.shared_parameters()),
                                 "all": sum(p.numel() for p in model.parameters() if p.requires_grad)},
        "peak_rss_mb": peak_mb(), "resident_before_steps_mb": start["resident_mb"],
        "methods": summarize(times),
        "goals": group_goals(times, GROUP_GOALS if groups else SEPARATE_GOALS),
    }


def group_goals(times: dict[str, list[float]], goals: dict[str, float] = GROUP_GOALS) -> dict[str, Any]:
    """Each timed method of `goals` against its goal (paired ratio to `sum`, with its 95% interval)."""
    if "sum" not in times:
        return {}
    out = {}
    for method, at_most in goals.items():
        if method in times:
            ratios = paired_ratios(times, method)
            interval = bootstrap_interval(ratios)
            out[f"{method}_vs_sum"] = {"goal": f"paired ratio <= {at_most}",
                                       "paired_ratio": round(statistics.median(ratios), 3),
                                       "ci95": [round(v, 3) for v in interval], "verdict": verdict(interval, at_most)}
    return out


def _blocks(model: MultiTaskModel, batches: dict[str, Any], scale: dict[str, float], sts_loss: str
            ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """One forward per batch: the hidden states of every batch (the features) and every task's scaled loss."""
    features, losses = [], []
    for stream, batch in batches.items():
        group = batch if isinstance(batch, GroupBatch) else GroupBatch(batch["inputs"], {stream: batch})
        hidden, outputs = model.forward_group(list(group.tasks), group.inputs)
        features.extend(hidden)
        losses += [task_loss(model.specs[t], outputs[t], b["labels"], sts_loss) * scale[t]
                   for t, b in group.tasks.items()]
    return features, losses


def torchjd_group_step(model: MultiTaskModel, batches: dict[str, Any], scale: dict[str, float],
                       sts_loss: str = "mse") -> None:
    """One step the torchjd way: `mtl_backward` over the hidden states of every batch, then `jac_to_grad` with its
    PCGrad aggregator."""
    from torchjd.aggregation import PCGrad
    from torchjd.autojac import jac_to_grad, mtl_backward

    features, losses = _blocks(model, batches, scale, sts_loss)
    shared = model.shared_parameters()
    mtl_backward(losses, features=features, shared_params=shared)
    jac_to_grad([p for p in shared if getattr(p, "jac", None) is not None], PCGrad())


def torchjd_autogram_group_step(model: MultiTaskModel, scale: dict[str, float], sts_loss: str = "mse"
                                ) -> Callable[[dict[str, Any]], None]:
    """`step(batches)` with torchjd's autogram `Engine` on the encoder (made once): the Gramian of the task losses'
    Jacobian, `PCGradWeighting`, one backward of the weighted losses."""
    from torchjd.aggregation import PCGradWeighting
    from torchjd.autogram import Engine

    engine = Engine(model.encoder, batch_dim=None)
    weighting = PCGradWeighting()

    def step(batches: dict[str, Any]) -> None:
        losses = torch.stack(_blocks(model, batches, scale, sts_loss)[1])
        losses.backward(weighting(engine.compute_gramian(losses)))

    return step
