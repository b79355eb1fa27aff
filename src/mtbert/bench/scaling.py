"""`mtbert bench scaling`: how a step's seconds and peak memory grow with the number of tasks T.

T tasks are built from the course data: task i is SST, Quora or STS in turn (`sst-0`, `para-1`, `sts-2`,
`sst-3`, ...), each with its own head and its own disjoint share of that file's training examples, so every
task has real, different gradients. Every step draws the same number of samples in all (`samples_per_step`),
spread evenly over the tasks it trains, and the rows are timed on the same batches, their order rotated every
step (`mtbert.bench.step.rotated_rounds`):

- `sum`: the summed loss of all T tasks;
- `pcgrad`: PCGrad over all T tasks (a T x P buffer);
- `pcgrad-k2`: PCGrad over 2 tasks drawn each step as `tasks_per_step: 2` draws them (`tasks_of_step`, equal
  shares), the step's samples split between them (a 2 x P buffer, as training builds it with that key);
- `torchjd`: torchjd's `mtl_backward` + `jac_to_grad(PCGrad())` over all T tasks;
- `pcgrad-bf16` (with `--extra_rows pcgrad-bf16`, beside the pinned rows above): `pcgrad` with
  `surgery_buffer_dtype: bfloat16` (the T rows in bfloat16, the Gramian and the update accumulated in float32).

Per T and row: median seconds per step, its paired ratio to `sum` (median of the per-step ratios), and the peak
resident memory of the row alone in a fresh process (`peak_mb`); per row, the marginal seconds of one more task
(the least-squares slope over T).
"""

from __future__ import annotations

import json
import logging
import os
import random
import statistics
import subprocess
import sys
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from mtbert.bench.machine import machine
from mtbert.bench.peak import start_peak
from mtbert.bench.step import MIN_ROUNDS, bootstrap_interval, paired_ratios, rotated_rounds, torchjd_step
from mtbert.config import build_config
from mtbert.data import collate, load_task_data
from mtbert.data.encoding import collate_packed
from mtbert.data.sampling import tasks_of_step
from mtbert.errors import MtbertError
from mtbert.methods.method import Method, plain_objective
from mtbert.model import MultiTaskModel, load_encoder
from mtbert.tasks import BUILTIN_TASKS, TaskSpec
from mtbert.training.optim import make_optimizer

logger = logging.getLogger(__name__)

ROWS = ("sum", "pcgrad", "pcgrad-k2", "torchjd")  # pinned (issue 35)
EXTRA_ROWS = ("pcgrad-bf16",)  # asked for with `extra_rows`
ALL_ROWS = (*ROWS, *EXTRA_ROWS)
BASES = ("sst", "para", "sts")
SAMPLED_TASKS = 2  # pcgrad-k2's tasks per step


def scaled_tasks(count: int) -> list[TaskSpec]:
    """`count` tasks cycling over SST, Quora and STS, named `<base>-<i>` (each its own head)."""
    return [replace(BUILTIN_TASKS[BASES[i % len(BASES)]], name=f"{BASES[i % len(BASES)]}-{i}")
            for i in range(count)]


def task_shares(count: int, sizes: dict[str, int]) -> dict[str, range]:
    """The training rows of each of `count` tasks: task i takes every m-th row of its base's file from its
    place j among the m tasks sharing that base (disjoint shares of the same file)."""
    shares = {}
    for i, spec in enumerate(scaled_tasks(count)):
        base = BASES[i % len(BASES)]
        sharing = len(range(i % len(BASES), count, len(BASES)))
        shares[spec.name] = range(i // len(BASES), sizes[base], sharing)
    return shares


def bench_scaling(task_counts: list[int], steps: int = 8, warmup: int = 1, samples_per_step: int = 64,
                  model_path: str | None = None, memory_steps: int = 2,
                  extra_rows: tuple[str, ...] | list[str] = (),
                  skip_rows: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    """Seconds per step and peak memory of each row (`ROWS` but `skip_rows`, then `extra_rows` of `EXTRA_ROWS`) for
    each T in `task_counts`, at equal samples. Skipping rows (never `sum`, the reference) makes a longer run of the
    others affordable (torchjd's step is 14x `sum`'s at T = 16); the file then lacks those rows."""
    unknown = [r for r in extra_rows if r not in EXTRA_ROWS]
    if unknown:
        raise MtbertError(f"--extra_rows: {', '.join(unknown)} is not one of {', '.join(EXTRA_ROWS)}")
    unknown = [r for r in skip_rows if r not in ROWS or r == "sum"]
    if unknown:
        raise MtbertError(f"--skip_rows: {', '.join(unknown)} is not one of {', '.join(ROWS[1:])} (sum is the "
                          "reference of every ratio)")
    rows = (*(r for r in ROWS if r not in skip_rows), *dict.fromkeys(extra_rows))
    if not task_counts or any(t < SAMPLED_TASKS for t in task_counts):
        raise MtbertError(f"--tasks: each count must be at least {SAMPLED_TASKS} (got {task_counts})")
    if any(samples_per_step < t for t in task_counts):
        raise MtbertError(f"--samples_per_step: {samples_per_step} is fewer than one sample per task at "
                          f"T = {max(task_counts)}")
    if steps < MIN_ROUNDS:
        raise MtbertError(f"--steps: {steps} timed steps is too few for a paired interval (at least {MIN_ROUNDS})")
    out: dict[str, Any] = {"benchmark": "scaling", "samples_per_step": samples_per_step, "steps": steps,
                           "rows": list(rows), **machine(), "tasks": {}}
    for n, count in enumerate(task_counts, start=1):
        logger.info("bench scaling: T = %d (%d of %d): %d steps of each row, then each row's memory alone",
                    count, n, len(task_counts), steps + warmup)
        times = time_rows(count, rows, steps, warmup, samples_per_step, model_path)
        base = statistics.median(times["sum"])
        per_row = {}
        for row in rows:
            ratios = paired_ratios(times, row)
            low, high = bootstrap_interval(ratios)
            per_row[row] = {"seconds_per_step": round(statistics.median(times[row]), 4),
                            "ratio_to_sum": round(statistics.median(ratios), 3),
                            "ratio_ci95": [round(low, 3), round(high, 3)],
                            "ratio_of_medians": round(statistics.median(times[row]) / base, 3),
                            "peak_mb": row_peak_mb(count, row, memory_steps, samples_per_step, model_path)}
        for row in rows:
            per_row[row]["peak_ratio_to_sum"] = round(per_row[row]["peak_mb"] / per_row["sum"]["peak_mb"], 3)
        out["tasks"][str(count)] = per_row
    out["marginal_seconds_per_task"] = marginal_cost(out["tasks"])
    out["goals"] = scaling_goals(out["tasks"])
    return out


def marginal_cost(tasks: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Per row, the least-squares slope of seconds per step over T (None with a single T)."""
    counts = [int(t) for t in tasks]
    rows = [row for row in ALL_ROWS if all(row in tasks[str(t)] for t in counts)]
    if len(counts) < 2:
        return {row: None for row in rows}
    return {row: round(float(np.polyfit(counts, [tasks[str(t)][row]["seconds_per_step"] for t in counts], 1)[0]),
                       5) for row in rows}


def scaling_goals(tasks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Issue 35's goals where their T and rows were measured: PCGrad <= 1.05x `sum` per step and peak <= 1.3x at
    T = 16 (read for `pcgrad` and for `pcgrad-bf16`, each meeting both or not); `pcgrad-k2` at T = 32 within 1.1x
    of its T = 2 seconds."""
    out: dict[str, Any] = {}
    for row, key in (("pcgrad", "pcgrad"), ("pcgrad-bf16", "pcgrad_bf16")):
        measured = tasks.get("16", {}).get(row)
        if measured is not None:
            step, peak = measured["ratio_to_sum"], measured["peak_ratio_to_sum"]
            out[f"{key}_step_at_16"] = {"goal": "<= 1.05", "ratio": step, "met": step <= 1.05}
            out[f"{key}_peak_at_16"] = {"goal": "<= 1.3", "ratio": peak, "met": peak <= 1.3}
    if "pcgrad-k2" in tasks.get("2", {}) and "pcgrad-k2" in tasks.get("32", {}):
        growth = round(tasks["32"]["pcgrad-k2"]["seconds_per_step"] / tasks["2"]["pcgrad-k2"]["seconds_per_step"], 3)
        out["pcgrad_k2_32_vs_2"] = {"goal": "<= 1.1", "ratio": growth, "met": growth <= 1.1}
    return out


def scaled_model(count: int, model_path: str | None = None) -> tuple[Any, MultiTaskModel, list[str], Any]:
    """The default config, a model with the `count` scaled tasks' heads (seed 0), their names, and
    `batches_of(tasks, per_task)`: a batch of each named task from its share of the course data (seeded draws)."""
    cfg = build_config({})
    torch.manual_seed(0)
    encoder, tokenizer = load_encoder(model_path, 0.1)
    specs = scaled_tasks(count)
    model = MultiTaskModel(encoder, specs, cfg.pair_architecture, cfg.pooling, cfg.dropout)
    bases = [BUILTIN_TASKS[b] for b in BASES[:count]]
    data = load_task_data(bases, cfg.resolved_data_dir(), tokenizer, cfg.max_length, cfg.pair_architecture,
                          splits=("train",))
    shares = task_shares(count, {b.name: len(data[b.name].train) for b in bases})
    make = collate_packed if cfg.packing else collate
    pad = tokenizer.pad_token_id or 0
    draw = random.Random(0)

    def batches_of(tasks: list[str], per_task: int) -> dict[str, dict]:
        return {t: make(data[t.split("-")[0]].train, draw.sample(shares[t], min(per_task, len(shares[t]))), pad)
                for t in tasks}

    return cfg, model, [s.name for s in specs], batches_of


def time_rows(count: int, rows: tuple[str, ...] | list[str], steps: int, warmup: int, samples_per_step: int,
              model_path: str | None) -> dict[str, list[float]]:
    """Seconds of each row's step over `steps` steps after `warmup`, on the same batches, order rotated."""
    cfg, model, names, batches_of = scaled_model(count, model_path)
    all_batches = []
    for step in range(1, steps + warmup + 1):
        sampled = tasks_of_step(dict.fromkeys(names, 1), SAMPLED_TASKS, 0, step)  # as `tasks_per_step: 2` draws
        all_batches.append({"all": batches_of(names, samples_per_step // count),
                            "k2": batches_of(sampled, samples_per_step // SAMPLED_TASKS)})
    optimizer = make_optimizer(model, replace(cfg, learning_rate=1e-5), torch.device("cpu"))
    objective = plain_objective(model, torch.device("cpu"))
    methods = {"sum": Method("sum", model, names), "pcgrad": Method("pcgrad", model, names),
               "pcgrad-k2": Method("pcgrad", model, names[:SAMPLED_TASKS]),  # rows by place: any 2 of the tasks
               "pcgrad-bf16": Method("pcgrad", model, names, buffer_dtype="bfloat16")}
    model.train()

    def stepper(row: str):
        def step(batches: dict[str, dict]) -> None:
            chosen = batches["k2" if row == "pcgrad-k2" else "all"]
            scale = {t: 1.0 / len(b["labels"]) for t, b in chosen.items()}
            if row == "torchjd":
                torchjd_step(model, chosen, scale)
            else:
                methods[row].backward(chosen, scale, objective)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return step

    start_peak()  # the peak of the steps, not of loading the data
    return rotated_rounds({row: stepper(row) for row in rows}, all_batches, warmup)


MEMORY_SCRIPT = """
import json, sys
from mtbert.bench.scaling import time_rows
count, row, steps, samples, model_path = json.loads(sys.argv[1])
time_rows(count, [row], steps, 0, samples, model_path)
from mtbert.bench.peak import peak_mb
print(json.dumps(peak_mb()))
"""


def row_peak_mb(count: int, row: str, steps: int, samples_per_step: int, model_path: str | None) -> float:
    """Peak resident memory (MB) of `steps` steps of one row alone in a fresh process (the steps' peak, after the
    data's loading: bench/peak.py)."""
    command = [sys.executable, "-c", MEMORY_SCRIPT, json.dumps([count, row, steps, samples_per_step, model_path])]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"the memory run of {row} at T = {count} failed with exit status {done.returncode}:\n"
                           f"{done.stderr[-2000:]}")
    return round(float(done.stdout.strip().splitlines()[-1]), 1)

