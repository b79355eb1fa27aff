"""`mtbert bench step`: seconds per training step of each gradient method on the same real batches."""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from mtbert.bench.machine import machine
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

PUBLIC_API_ROWS = ("surgery-api", "multitask-trainer")
BENCH_STEP_EXTRA = ("pcgrad-per-layer", "torchjd", *PUBLIC_API_ROWS)
# what is trained, as config keys: the whole encoder, LoRA adapters (peft's defaults: r 8 on the attention's query
# and value), or everything but the embedding layer
TRAINABLE = {"full": {}, "lora": {"lora": {}}, "frozen-embeddings": {"freeze_embeddings": True}}


def bench_step(methods: list[str], steps: int, warmup: int, batch_size: int,
               trainable: list[str] | None = None) -> dict[str, Any]:
    """Median seconds per training step of each method on the same real batches, methods interleaved.

    A method is an aggregator (`AGGREGATORS`), a loss weighting (`uncertainty`, `famo`: one backward per task,
    no buffer), `pcgrad-per-layer` (PCGrad on each encoder layer's block) or `torchjd` (torchjd's
    `mtl_backward` + `jac_to_grad` with its PCGrad aggregator), or a row of the public Python API
    (`surgery-api`, `multitask-trainer`: see `public_api_steps`). `trainable` (default `full`) names what is
    trained (`TRAINABLE`); with more than one, each runs in its own subprocess so that each gets its own peak
    resident memory (`trainable_runs`).
    """
    known = (*AGGREGATORS, *LOSS_WEIGHTINGS, *BENCH_STEP_EXTRA)
    for method in methods:
        if method not in known:
            raise MtbertError(f"--methods: unknown method '{method}' (known: {', '.join(known)})")
    trainable = trainable or ["full"]
    for kind in trainable:
        if kind not in TRAINABLE:
            raise MtbertError(f"--trainable: unknown kind '{kind}' (known: {', '.join(TRAINABLE)})")
    if len(trainable) > 1:
        return trainable_runs(methods, steps, warmup, batch_size, trainable)
    (kind,) = trainable
    if kind != "full" and set(methods) & {"torchjd", *PUBLIC_API_ROWS}:
        raise MtbertError(f"--trainable {kind}: the torchjd and public API rows train the full encoder only")
    cfg = build_config({"per_device_train_batch_size": batch_size, **TRAINABLE[kind]})
    torch.manual_seed(0)
    encoder, tokenizer = load_encoder(None, 0.1)
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
    # every row built as training builds it (per-layer groups need the parameters' names); torchjd is its own step
    built = {m: Method(m.removesuffix("-per-layer"), model, tasks, seed=0, per_layer=m.endswith("-per-layer"))
             for m in methods if m not in ("torchjd", *PUBLIC_API_ROWS)}
    api_steps = public_api_steps(model, {s.name: data[s.name].train for s in specs}, batch_size, methods)
    for name, method in built.items():
        if method.loss_module is not None:
            model.add_module(f"loss_weighting_{name}", method.loss_module)
    optimizer = make_optimizer(model, replace(cfg, learning_rate=1e-5), device)
    scale = {s.name: 1.0 / batch_size for s in specs}
    objective = plain_objective(model, device)
    model.train()
    times: dict[str, list[float]] = {m: [] for m in methods}
    for i, batches in enumerate(all_batches):
        for name in methods:
            start = time.perf_counter()
            if name == "torchjd":
                torchjd_step(model, batches, scale)
            elif name in api_steps:
                api_steps[name](batches)
            else:
                losses, _ = built[name].backward(batches, scale, objective)
                built[name].after_step(losses)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    medians = {m: statistics.median(t) for m, t in times.items()}
    base = medians.get("sum")
    return {
        "benchmark": "step", "tasks": [s.name for s in specs], "batch_size_per_task": batch_size, "steps": steps,
        **machine(), "trainable": kind,
        "trainable_parameters": {"encoder": sum(p.numel() for p in model.shared_parameters()),
                                 "all": sum(p.numel() for p in model.parameters() if p.requires_grad)},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),  # Linux: kilobytes
        "methods": {m: {"median_seconds": round(v, 4), "ratio_to_sum": round(v / base, 3) if base else None,
                        "all_seconds": [round(t, 4) for t in times[m]]} for m, v in medians.items()},
    }


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
