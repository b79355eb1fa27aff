"""`mtbert bench step`: seconds per training step of each gradient method on the same real batches.

Every step runs each method once on the same batches, in an order rotated by one every step (A B C, B C A,
C A B, ...), so that no method always runs first or last. A method's cost against `sum` is read from the paired
per-step ratios (its step's seconds over `sum`'s in the same step, which cancels the machine's slow swings in
load) as their median with a seeded bootstrap 95% interval, over at least `MIN_ROUNDS` timed steps; the ratio of
the two medians is kept beside it. `--memory` also runs each method alone in its own process for its peak
resident memory (no step logs diagnostics, so `sum` never fills the per-task buffer).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtbert.bench.machine import machine
from mtbert.bench.peak import peak_mb, start_peak
from mtbert.config import build_config
from mtbert.data import MultiTaskSampler, collate, load_task_data
from mtbert.data.encoding import collate_packed
from mtbert.errors import MtbertError
from mtbert.methods.aggregators import AGGREGATORS
from mtbert.methods.method import Method, plain_objective
from mtbert.methods.weighting import LOSS_WEIGHTINGS
from mtbert.model import MultiTaskModel, load_encoder, task_loss
from mtbert.training.optim import make_optimizer
from mtbert.training.stage import adapt

logger = logging.getLogger(__name__)

PUBLIC_API_ROWS = ("surgery-api", "multitask-trainer")
BENCH_STEP_EXTRA = ("pcgrad-per-layer", "torchjd", "torchjd-autogram", *PUBLIC_API_ROWS)
TORCHJD_ROWS = ("torchjd", "torchjd-autogram")
MIN_ROUNDS = 5  # timed steps: fewer give no meaningful interval
PCGRAD_GOAL = 1.05  # issue 35: PCGrad's paired step cost at most this many times `sum`'s
# what is trained, as config keys: the whole encoder, LoRA adapters (peft's defaults: r 8 on the attention's query
# and value), or everything but the embedding layer
TRAINABLE = {"full": {}, "lora": {"lora": {}}, "frozen-embeddings": {"freeze_embeddings": True}}


def bench_step(methods: list[str], steps: int, warmup: int, batch_size: int,
               trainable: list[str] | None = None, memory: bool = False,
               model_path: str | None = None) -> dict[str, Any]:
    """Seconds per training step of each method on the same real batches, order rotated every step.

    A method is an aggregator (`AGGREGATORS`), a loss weighting (`uncertainty`, `famo`: one backward per task,
    no buffer), `pcgrad-per-layer` (PCGrad on each encoder layer's block), `torchjd` (torchjd's `mtl_backward`
    + `jac_to_grad` with its PCGrad aggregator), `torchjd-autogram` (torchjd's autogram `Engine`: the Gramian of
    the task losses' Jacobian, `PCGradWeighting`, one weighted backward), or a row of the public Python API
    (`surgery-api`, `multitask-trainer`: see `public_api_steps`). `trainable` (default `full`) names what is
    trained (`TRAINABLE`); with more than one, each runs in its own subprocess so that each gets its own peak
    resident memory (`trainable_runs`). `memory`: also each method's peak resident memory, alone in a process.
    """
    known = (*AGGREGATORS, *LOSS_WEIGHTINGS, *BENCH_STEP_EXTRA)
    for method in methods:
        if method not in known:
            raise MtbertError(f"--methods: unknown method '{method}' (known: {', '.join(known)})")
    if steps < MIN_ROUNDS:
        raise MtbertError(f"--steps: {steps} timed steps is too few for a paired interval (at least {MIN_ROUNDS})")
    trainable = trainable or ["full"]
    for kind in trainable:
        if kind not in TRAINABLE:
            raise MtbertError(f"--trainable: unknown kind '{kind}' (known: {', '.join(TRAINABLE)})")
    if len(trainable) > 1:
        return trainable_runs(methods, steps, warmup, batch_size, trainable)
    (kind,) = trainable
    if kind != "full" and set(methods) & {*TORCHJD_ROWS, *PUBLIC_API_ROWS}:
        raise MtbertError(f"--trainable {kind}: the torchjd and public API rows train the full encoder only")
    cfg = build_config({"per_device_train_batch_size": batch_size, **TRAINABLE[kind]})
    torch.manual_seed(0)
    encoder, tokenizer = load_encoder(model_path, 0.1)
    specs = cfg.task_specs()
    model = MultiTaskModel(encoder, specs)
    adapt(model, cfg)  # as training does: LoRA or frozen embeddings
    data = load_task_data(specs, cfg.resolved_data_dir(), tokenizer, cfg.max_length, cfg.pair_architecture,
                          splits=("train",))
    sampler = MultiTaskSampler({s.name: len(data[s.name].train) for s in specs}, seed=0)
    pad = tokenizer.pad_token_id or 0
    make = collate_packed if cfg.packing else collate  # as training batches them
    all_batches = [{s.name: make(data[s.name].train, sampler.draw(s.name, batch_size), pad) for s in specs}
                   for _ in range(steps + warmup)]
    device = torch.device("cpu")
    tasks = [s.name for s in specs]
    # the autogram engine hooks its model's modules for good: it gets its own copy (and optimizer), so that its
    # hooks cost the other rows nothing
    autogram_model = copy.deepcopy(model) if "torchjd-autogram" in methods else None
    # every row built as training builds it (per-layer groups need the parameters' names); torchjd is its own step
    built = {m: Method(m.removesuffix("-per-layer"), model, tasks, seed=0, per_layer=m.endswith("-per-layer"))
             for m in methods if m not in (*TORCHJD_ROWS, *PUBLIC_API_ROWS)}
    api_steps = public_api_steps(model, {s.name: data[s.name].train for s in specs}, batch_size, methods)
    for name, method in built.items():
        if method.loss_module is not None:
            model.add_module(f"loss_weighting_{name}", method.loss_module)
    optimizer = make_optimizer(model, replace(cfg, learning_rate=1e-5), device)
    scale = {s.name: 1.0 / batch_size for s in specs}
    objective = plain_objective(model, device)
    model.train()

    def stepper(name: str) -> Callable[[dict[str, dict]], None]:
        step_model, step_optimizer = model, optimizer
        if name == "torchjd-autogram":
            step_model = autogram_model
            step_optimizer = make_optimizer(step_model, replace(cfg, learning_rate=1e-5), device)
            step_model.train()
            gradient = torchjd_autogram_step(step_model, scale)
        elif name == "torchjd":
            def gradient(batches: dict[str, dict]) -> None:
                torchjd_step(model, batches, scale)
        elif name in api_steps:
            gradient = api_steps[name]
        else:
            def gradient(batches: dict[str, dict], method: Method = built[name]) -> None:
                losses, _ = method.backward(batches, scale, objective)
                method.after_step(losses)

        return training_step(gradient, step_model, step_optimizer)

    start = start_peak()  # the peak of the steps, not of loading the data
    times = rotated_rounds({m: stepper(m) for m in methods}, all_batches, warmup)
    return {
        "benchmark": "step", "tasks": [s.name for s in specs], "batch_size_per_task": batch_size, "steps": steps,
        **machine(), "trainable": kind, "order": "rotated by one method every step",
        "trainable_parameters": {"encoder": sum(p.numel() for p in model.shared_parameters()),
                                 "all": sum(p.numel() for p in model.parameters() if p.requires_grad)},
        "peak_rss_mb": peak_mb(), "resident_before_steps_mb": start["resident_mb"],
        "methods": summarize(times),
        **({"memory": method_memory(methods, batch_size, model_path)} if memory else {}),
        "goals": step_goals(times),
    }


def training_step(gradient: Callable[[Any], None], model: torch.nn.Module, optimizer: torch.optim.Optimizer
                  ) -> Callable[[Any], None]:
    """One timed training step as training takes it: `gradient(batches)` sets `.grad`, then gradient clipping at
    1.0, the optimizer's step and `zero_grad`."""
    def step(batches: Any) -> None:
        gradient(batches)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def rotated_order(names: list[str], step: int) -> list[str]:
    """The methods' order in step `step`: `names` rotated left by `step` (A B C, B C A, C A B, A B C, ...)."""
    shift = step % len(names)
    return names[shift:] + names[:shift]


def rotated_rounds(steps: dict[str, Callable[[Any], None]], all_batches: list[Any], warmup: int,
                   clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Run every method's step on each step's batches, in `rotated_order`; seconds of each after `warmup` steps.

    `clock` is injectable for tests (synthetic timings).
    """
    names = list(steps)
    times: dict[str, list[float]] = {m: [] for m in names}
    for i, batches in enumerate(all_batches):
        if i % 10 == 0:
            logger.info("bench: step %d of %d (%d warm-up), %d methods each", i + 1, len(all_batches), warmup,
                        len(names))
        for name in rotated_order(names, i):
            start = clock()
            steps[name](batches)
            if i >= warmup:
                times[name].append(clock() - start)
    return times


def paired_ratios(times: dict[str, list[float]], method: str, base: str = "sum") -> list[float]:
    """Each step's seconds of `method` over `base`'s in the same step (above 1: `method` is slower)."""
    return [t / b for t, b in zip(times[method], times[base], strict=True)]


def bootstrap_interval(values: list[float], level: float = 0.95, resamples: int = 2000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the median of `values` (scipy.stats.bootstrap, seeded)."""
    from scipy.stats import bootstrap

    if len(set(values)) == 1:  # no spread: the interval is the value itself
        return values[0], values[0]
    result = bootstrap((np.asarray(values),), np.median, confidence_level=level, n_resamples=resamples,
                       method="percentile", rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def summarize(times: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    """Per method: median seconds, every step's seconds, and against `sum` (when timed) the ratio of medians
    (`ratio_to_sum`) and the paired per-step ratios with their median and bootstrap 95% interval."""
    medians = {m: statistics.median(t) for m, t in times.items()}
    base = medians.get("sum")
    out: dict[str, dict[str, Any]] = {}
    for m, v in medians.items():
        out[m] = {"median_seconds": round(v, 4), "ratio_to_sum": round(v / base, 3) if base else None,
                  "all_seconds": [round(t, 4) for t in times[m]]}
        if base:
            ratios = paired_ratios(times, m)
            low, high = bootstrap_interval(ratios)
            out[m].update(paired_ratio_to_sum=round(statistics.median(ratios), 3),
                          paired_ratio_ci95=[round(low, 3), round(high, 3)],
                          all_paired_ratios=[round(r, 3) for r in ratios])
    return out


def verdict(interval: tuple[float, float] | list[float], at_most: float) -> str:
    """`met` when the whole interval is at or below the goal, `missed` when it is all above, else `undecided`."""
    low, high = interval
    if high <= at_most:
        return "met"
    if low > at_most:
        return "missed"
    return "undecided"


def step_goals(times: dict[str, list[float]]) -> dict[str, Any]:
    """PCGrad's goal (paired step cost at most `PCGRAD_GOAL` times `sum`'s), when both were timed."""
    if "sum" not in times or "pcgrad" not in times:
        return {}
    ratios = paired_ratios(times, "pcgrad")
    interval = bootstrap_interval(ratios)
    return {"pcgrad_vs_sum": {"goal": f"paired ratio <= {PCGRAD_GOAL}", "paired_ratio": round(
        statistics.median(ratios), 3), "ci95": [round(v, 3) for v in interval], "verdict": verdict(interval,
                                                                                                   PCGRAD_GOAL)}}


MEMORY_SCRIPT = """
import json, sys
from mtbert.bench.step import bench_step
method, steps, batch_size, model_path = json.loads(sys.argv[1])
bench_step([method], steps, 0, batch_size, model_path=model_path)
from mtbert.bench.peak import peak_mb
print(json.dumps(peak_mb()))
"""


def method_memory(methods: list[str], batch_size: int, model_path: str | None = None, steps: int = MIN_ROUNDS,
                  data_dir: str | Path | None = None) -> dict[str, Any]:
    """Peak resident memory (MB) of `steps` training steps of each method alone in a fresh process, one after
    the other, with its ratio to `sum`'s: the peak of the steps, after the data's loading (bench/peak.py). No
    step logs diagnostics, so `sum` holds no per-task buffer."""
    peaks: dict[str, float] = {}
    for method in methods:
        command = [sys.executable, "-c", MEMORY_SCRIPT, json.dumps([method, steps, batch_size, model_path])]
        env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "TOKENIZERS_PARALLELISM": "false",
               **({"MTBERT_DATA": str(data_dir)} if data_dir is not None else {})}
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"the memory run of {method} failed with exit status {done.returncode}:\n"
                               f"{done.stderr[-2000:]}")
        peaks[method] = round(float(done.stdout.strip().splitlines()[-1]), 1)
    out: dict[str, Any] = {"steps": steps, "diagnostics": False, "measured": "the steps' peak, after loading",
                           "peak_rss_mb": peaks}
    if "sum" in peaks:
        out["ratio_to_sum"] = {m: round(v / peaks["sum"], 3) for m, v in peaks.items()}
    return out


def trainable_runs(methods: list[str], steps: int, warmup: int, batch_size: int, kinds: list[str]
                   ) -> dict[str, Any]:
    """`bench_step` once per trainable kind, each in a fresh subprocess (one after the other, so their seconds are
    not interleaved), with each one's peak resident memory and its seconds relative to the first kind's."""
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mtbert-bench-step-") as tmp:
        for kind in kinds:
            out = Path(tmp) / f"{kind}.json"
            command = [sys.executable, "-m", "mtbert", "bench", "step", "--methods", ",".join(methods),
                       "--steps", str(steps), "--warmup", str(warmup), "--batch_size", str(batch_size),
                       "--trainable", kind, "--json", str(out)]
            env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
            done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(command)} failed with exit status {done.returncode}:\n"
                                   f"{done.stderr[-2000:]}")
            runs[kind] = json.loads(out.read_text(encoding="utf-8"))
    first = runs[kinds[0]]
    for run in runs.values():
        for method, figures in run["methods"].items():
            figures[f"ratio_to_{kinds[0]}"] = round(figures["median_seconds"]
                                                   / first["methods"][method]["median_seconds"], 3)
        run["peak_rss_ratio_to_" + kinds[0]] = round(run["peak_rss_mb"] / first["peak_rss_mb"], 3)
    return {"benchmark": "step", "tasks": first["tasks"], "batch_size_per_task": batch_size, "steps": steps,
            **machine(), "trainable": runs}


def torchjd_step(model: MultiTaskModel, batches: dict[str, dict], scale: dict[str, float]) -> None:
    """One step the torchjd way: all tasks' graphs kept, `mtl_backward`, then `jac_to_grad` with its PCGrad."""
    from torchjd.aggregation import PCGrad
    from torchjd.autojac import jac_to_grad, mtl_backward

    losses, features = [], []
    for task, batch in batches.items():
        embeddings = [model.embed(x) for x in batch["inputs"]]
        features.extend(embeddings)
        outputs = model.heads[task](embeddings)
        losses.append(task_loss(model.specs[task], outputs, batch["labels"]) * scale[task])
    shared = model.shared_parameters()
    mtl_backward(losses, features=features, shared_params=shared)
    jac_to_grad([p for p in shared if getattr(p, "jac", None) is not None], PCGrad())


def torchjd_autogram_step(model: MultiTaskModel, scale: dict[str, float]) -> Callable[[dict[str, dict]], None]:
    """`step(batches)` the torchjd autogram way: an `Engine` on the encoder (made once) computes the
    Gramian of the task losses' Jacobian, `PCGradWeighting` turns it into one weight per task, and one backward
    of the weighted losses sets every gradient (the heads' too, scaled by their task's weight)."""
    from torchjd.aggregation import PCGradWeighting
    from torchjd.autogram import Engine

    engine = Engine(model.encoder, batch_dim=None)  # one loss per task: no batch dimension in the losses
    weighting = PCGradWeighting()

    def step(batches: dict[str, dict]) -> None:
        losses = torch.stack([task_loss(model.specs[task], model(task, batch["inputs"]), batch["labels"])
                              * scale[task] for task, batch in batches.items()])
        weights = weighting(engine.compute_gramian(losses))
        losses.backward(weights)

    return step


def public_api_steps(model: MultiTaskModel, train_sets: dict[str, Any], batch_size: int,
                     methods: list[str]) -> dict[str, Callable[[dict[str, dict]], None]]:
    """The asked-for rows of the public Python API, as functions of one step's batches that leave `.grad` set.

    Both run PCGrad with the loss scale of the `sum` row (each task's summed loss over batch_size):
    `surgery-api` is `mtbert.GradientSurgery` in a plain loop (one backward per task, `collect`, `apply`), and
    `multitask-trainer` is `MultiTaskTrainer.multitask_step`, its `training_step` on given batches.
    """
    steps: dict[str, Callable[[dict[str, dict]], None]] = {}
    if "surgery-api" in methods:
        from mtbert.methods.surgery import GradientSurgery

        surgery = GradientSurgery(model.encoder.named_parameters(), "pcgrad", seed=0,
                                  embedding=model.encoder.get_input_embeddings().weight)

        def surgery_step(batches: dict[str, dict]) -> None:
            surgery.begin_step([x["input_ids"] for b in batches.values() for x in b["inputs"]])
            for task, batch in batches.items():
                outputs = model(task, batch["inputs"])
                (task_loss(model.specs[task], outputs, batch["labels"]) / batch_size).backward()
                surgery.collect(task)
            surgery.apply(diagnostics=False)

        steps["surgery-api"] = surgery_step
    if "multitask-trainer" in methods:
        import tempfile

        from transformers import TrainingArguments

        from mtbert.integrations.trainer import MultiTaskTrainer

        folder = tempfile.TemporaryDirectory(prefix="mtbert-bench-")
        with torch.random.fork_rng(devices=[]):  # Trainer seeds the global RNG: keep the other rows' dropout as is
            args = TrainingArguments(output_dir=folder.name, per_device_train_batch_size=batch_size, use_cpu=True,
                                     report_to="none", save_strategy="no", disable_tqdm=True)
            trainer = MultiTaskTrainer(model, args, train_dataset=train_sets, method="pcgrad")

        def trainer_step(batches: dict[str, dict], _keep: Any = folder) -> None:
            trainer.multitask_step(model, batches)

        steps["multitask-trainer"] = trainer_step
    return steps
