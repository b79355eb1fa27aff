"""`mtbert bench throughput`: mtbert against the tools a user would otherwise pick, side by side in one process.

- training samples/s: mtbert's single-task step (`Method.backward` on packed batches, AdamW) vs
  `transformers.Trainer` with `AutoModelForSequenceClassification` (the run_glue recipe), and vs the same Trainer
  with `train_sampling_strategy="group_by_length"` (`ratio_grouped`), on SST and STS;
- prediction examples/s: `mtbert predict`'s path (tokenize, then `predict_set`: length-sorted batches packed
  into rows of up to 128 tokens, inference_mode) vs `sentence_transformers.CrossEncoder.predict` and vs a
  plain batched loop in file order, on the Quora and STS dev pairs; on the CPU also `mtbert predict --quantize
  int8` (`int8_to_cross_encoder`; the quantized copy is made once, outside the timing, as each model is
  loaded), with how far its predictions are from fp32's (`int8_same_class` or `int8_max_abs_difference`);
- peak resident memory of a three-task `sum` and `pcgrad` training run, each in its own subprocess;
- the machine's measured peak: an fp32 GEMM of the model's FFN shape (`gemm`), timed before and after the rest.
  Each training and prediction figure also gets its useful FLOP/s (`useful_gflops_per_second`: the FLOPs of the
  examples' real tokens alone, counted with `torch.utils.flop_counter.FlopCounterMode` on each example unpadded,
  over the measured seconds) and its ratio to that peak (`utilization`).

Every contender gets the same model (the default backbone unless told otherwise), the same real examples and
the same batch size; each is warmed up, then the contenders take turns for a number of rounds (A B, B A, ...).
A rate is the median over the rounds; a `ratio` is the median of the per-round ratios, which cancels most of
a shared machine's swings in load. The comparisons need the `bench` extra (sentence-transformers; the
Trainer needs accelerate, a core dependency).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mtbert.config import build_config
from mtbert.data import EncodedSet, Example, collate, encode_examples, read_task_file
from mtbert.data.encoding import collate_packed
from mtbert.evaluation.evaluate import predict_set, quantized
from mtbert.methods.method import make_method, plain_objective
from mtbert.model import MultiTaskModel, default_backbone, load_encoder, task_loss
from mtbert.tasks import BUILTIN_TASKS, TaskSpec
from mtbert.training.optim import make_optimizer

GOALS = {"training": 1.6, "training_grouped": 1.2, "training_utilization": 0.6, "prediction": 1.3,
         "prediction_int8": 2.0, "memory": 1.2}


def bench_throughput(examples: int = 256, model_path: str | None = None, data_dir: str | Path | None = None,
                     batch_size: int = 16, eval_batch_size: int = 64, repeats: int = 3, predict_repeats: int = 7,
                     max_length: int = 128, memory_steps: int = 5, memory_train_samples: int | None = None,
                     train_tasks: tuple[str, ...] = ("sst", "sts"),
                     predict_tasks: tuple[str, ...] = ("para", "sts")) -> dict[str, Any]:
    """Run the three comparisons and return one JSON-ready dict with each figure, its ratio and the goals.

    `examples` is per measurement; `repeats` and `predict_repeats` are the timed rounds of training and of
    prediction (prediction runs are short, so they get more); `model_path` and `data_dir` default to the
    bundled backbone and $MTBERT_DATA.
    """
    from mtbert.bench.machine import machine

    source = model_path or default_backbone()
    folder = Path(data_dir) if data_dir is not None else build_config({}).resolved_data_dir()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results: dict[str, Any] = {
        "benchmark": "throughput", "model": "all-MiniLM-L6-v2 (bundled)" if model_path is None else str(model_path),
        "examples": examples, "batch_size": batch_size, "eval_batch_size": eval_batch_size,
        "repeats": {"training": repeats, "prediction": predict_repeats},
        "max_length": max_length, **machine(),
    }
    config = load_encoder(source, 0.0)[0].config
    gemm_shape = (batch_size * 32, config.hidden_size, config.intermediate_size)  # 32 tokens an example
    gemm = [bench_gemm(*gemm_shape, device=device)]
    results["training"] = {t: bench_training(BUILTIN_TASKS[t], source, folder, examples, batch_size, repeats,
                                             max_length, device) for t in train_tasks}
    results["prediction"] = {t: bench_prediction(BUILTIN_TASKS[t], source, folder, examples, eval_batch_size,
                                                 predict_repeats, max_length, device) for t in predict_tasks}
    gemm.append(bench_gemm(*gemm_shape, device=device))
    results["gemm"] = {"shape_mkn": list(gemm_shape), "dtype": "float32",
                       "gflops_per_second": max(g["gflops_per_second"] for g in gemm),
                       "all_gflops_per_second": [g["gflops_per_second"] for g in gemm]}
    for figures in [*results["training"].values(), *results["prediction"].values()]:
        add_utilization(figures, results["gemm"]["gflops_per_second"])
    results["memory"] = bench_memory(model_path, folder, memory_steps, batch_size, memory_train_samples)
    results["goals"] = goals(results)
    return results


# ---- timing helpers ------------------------------------------------------------------------------


def interleaved(contenders: dict[str, Callable[[], Any]], repeats: int, warmup: dict[str, Callable[[], Any]]
                ) -> dict[str, list[float]]:
    """Warm each contender up once, then time them in turn `repeats` rounds; seconds per run, by round.

    Round r starts with the r-th contender (A B, B A, A B, ...), so that a machine getting busier or quieter
    during a round favours none of them.
    """
    for run in warmup.values():
        run()
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - start)
    return times


def rates(times: dict[str, list[float]], items: int) -> dict[str, dict[str, Any]]:
    """Items per second from the median time of each contender, with every round's figure."""
    return {name: {"per_second": round(items / statistics.median(t), 2),
                   "all_per_second": [round(items / s, 2) for s in t]} for name, t in times.items()}


def paired_ratio(times: dict[str, list[float]], mine: str, other: str) -> float:
    """How many times faster `mine` ran than `other`: the median over rounds of the two runs' ratio.

    Each round's two runs are minutes apart at most, so their ratio cancels most of the shared machine's
    slow swings in load, which a ratio of the two medians would not.
    """
    return round(statistics.median(b / a for a, b in zip(times[mine], times[other], strict=True)), 3)


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


# ---- the machine's peak and useful FLOPs ---------------------------------------------------------


def bench_gemm(m: int, k: int, n: int, repeats: int = 20, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The best GFLOP/s of an fp32 (m x k) @ (k x n) product over `repeats` timed runs (after 3 warm-up runs)."""
    from torch.utils.flop_counter import FlopCounterMode

    generator = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=generator).to(device)
    b = torch.randn(k, n, generator=generator).to(device)
    counter = FlopCounterMode(display=False)
    with counter:
        torch.mm(a, b)
    flops = counter.get_total_flops()
    cuda = torch.device(device).type == "cuda"
    seconds = []
    for i in range(3 + repeats):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.mm(a, b)
        if cuda:
            torch.cuda.synchronize()
        if i >= 3:
            seconds.append(time.perf_counter() - start)
    return {"flops": flops, "gflops_per_second": significant(flops / min(seconds) / 1e9)}


def useful_flops(model: MultiTaskModel, encoded: EncodedSet, pad_token_id: int, device: torch.device | str,
                 backward: bool) -> int:
    """FLOPs of the model (forward, and backward of the task loss when `backward`) on the real tokens alone.

    Each example runs by itself, unpadded, under `FlopCounterMode`; examples of the same lengths share a count.
    Gradients are cleared afterwards and the global RNG is left as it was.
    """
    from torch.utils.flop_counter import FlopCounterMode

    task = encoded.spec.name
    counts: dict[tuple[int, ...], int] = {}
    total = 0
    with torch.random.fork_rng(devices=[]):
        for i in range(len(encoded)):
            key = tuple(len(f) for f in encoded.features[i])
            if key not in counts:
                batch = collate(encoded, [i], pad_token_id)
                inputs = [{k: v.to(device) for k, v in x.items()} for x in batch["inputs"]]
                counter = FlopCounterMode(display=False)
                with counter, torch.set_grad_enabled(backward):
                    outputs = model(task, inputs)
                    if backward:
                        task_loss(model.specs[task], outputs.float(), batch["labels"].to(device)).backward()
                counts[key] = counter.get_total_flops()
            total += counts[key]
    model.zero_grad(set_to_none=True)
    return total


def add_utilization(figures: dict[str, Any], peak_gflops: float) -> None:
    """Add `useful_gflops_per_second` and `utilization` (its ratio to the GEMM peak) for each contender."""
    rates_key = "samples_per_second" if "samples_per_second" in figures else "examples_per_second"
    items = figures["samples"] if "samples" in figures else figures["examples"]
    gflop = figures["useful_gflop"]
    useful = {name: gflop * rate["per_second"] / items for name, rate in figures[rates_key].items()}
    figures["useful_gflops_per_second"] = {name: significant(v) for name, v in useful.items()}
    figures["utilization"] = {name: significant(v / peak_gflops) if peak_gflops else None
                              for name, v in useful.items()}


def significant(value: float, digits: int = 4) -> float:
    """`value` rounded to `digits` significant digits (a tiny test model's figures stay non-zero)."""
    return float(f"{value:.{digits}g}")


def sample_examples(path: Path, spec: TaskSpec, n: int, shuffle: bool) -> list[Example]:
    """The first n rows of a file (file order), or a seeded random n of them."""
    examples = read_task_file(path, spec).examples
    if shuffle:
        examples = random.Random(0).sample(examples, min(n, len(examples)))
    return examples[:n]


# ---- training ------------------------------------------------------------------------------------


def bench_training(spec: TaskSpec, source: str, data_dir: Path, n: int, batch_size: int, repeats: int,
                   max_length: int, device: torch.device) -> dict[str, Any]:
    """Training samples/s of mtbert's single-task step vs the Trainer recipe, on the same batches.

    The examples are a seeded random sample of the training file; both contenders go through them in that
    order (the Trainer with its `sequential` sampler), so every step sees exactly the same batch and padding.
    """
    examples = sample_examples(data_dir / spec.train_file, spec, n, shuffle=True)
    n = len(examples)
    steps = -(-n // batch_size)
    warm_steps = min(2, steps)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="mtbert-bench-trainer-") as tmp:
        run_mtbert = mtbert_trainer(spec, source, examples, batch_size, max_length, device)
        run_hf = hf_trainer(spec, source, examples, batch_size, max_length, device, tmp)
        run_grouped = hf_trainer(spec, source, examples, batch_size, max_length, device, tmp, "group_by_length")
        contenders = {"mtbert": run_mtbert, "trainer": run_hf, "trainer_grouped": run_grouped}
        times = interleaved({k: (lambda f=f: f(steps)) for k, f in contenders.items()}, repeats,
                            {k: (lambda f=f: f(warm_steps)) for k, f in contenders.items()})
    gflop = useful_flops(run_mtbert.model, run_mtbert.encoded, run_mtbert.pad_id, device, backward=True) / 1e9
    figures = rates(times, n)
    return {"samples": n, "steps": steps, "samples_per_second": figures,
            "optimizer": {"mtbert": run_mtbert.optimizer, "trainer": run_hf.optimizer},
            "ratio": paired_ratio(times, "mtbert", "trainer"),
            "ratio_grouped": paired_ratio(times, "mtbert", "trainer_grouped"), "useful_gflop": significant(gflop)}


def mtbert_trainer(spec: TaskSpec, source: str, examples: list[Example], batch_size: int, max_length: int,
                   device: torch.device) -> Callable[[int], None]:
    """`run(steps)`: mtbert's training loop for one task (packed batches, step, clip, AdamW, schedule), fresh
    optimizer; `run.model`, `run.encoded` and `run.pad_id` are what it trains on."""
    from transformers import get_scheduler

    cfg = build_config({"per_device_train_batch_size": batch_size, "tasks": [spec.name]})
    encoder, tokenizer = load_encoder(source, cfg.dropout)
    model = MultiTaskModel(encoder, [spec], cfg.pair_architecture, cfg.pooling, cfg.dropout).to(device)
    encoded = encode_examples(tokenizer, spec, examples, max_length, cfg.pair_architecture)
    pad_id = tokenizer.pad_token_id or 0
    batches = [list(range(i, min(i + batch_size, len(examples)))) for i in range(0, len(examples), batch_size)]
    method = make_method("sum", model, [spec.name])
    objective = plain_objective(model, device)
    scale = {spec.name: 1.0 / batch_size}

    def run(steps: int) -> None:
        model.train()
        # as train_stage builds it
        optimizer = make_optimizer(model, cfg, device)
        run.optimizer = adamw_kind(optimizer)
        scheduler = get_scheduler(cfg.lr_scheduler_type, optimizer, num_warmup_steps=0, num_training_steps=steps)
        for step in range(steps):
            batch = {spec.name: collate_packed(encoded, batches[step % len(batches)], pad_id)}
            method.backward(batch, scale, objective)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

    run.optimizer = ""
    run.model, run.encoded, run.pad_id = model, encoded, pad_id
    return run


def adamw_kind(optimizer: torch.optim.Optimizer) -> str:
    """Which implementation torch's AdamW runs: fused, foreach, or the per-tensor loop (its CPU default)."""
    group = optimizer.param_groups[0]
    if group.get("fused"):
        return "adamw_torch_fused"
    if group.get("foreach"):
        return "adamw_torch_foreach"
    on_cuda = all(p.is_cuda for g in optimizer.param_groups for p in g["params"])
    return "adamw_torch (foreach)" if on_cuda else "adamw_torch (per-tensor loop)"


def hf_trainer(spec: TaskSpec, source: str, examples: list[Example], batch_size: int, max_length: int,
               device: torch.device, output_dir: str, sampling: str = "sequential") -> Callable[[int], None]:
    """`run(steps)`: the run_glue recipe, `Trainer.train()` for a fixed number of steps (no eval, no saving).

    `sampling` is its `train_sampling_strategy`: `sequential` (the examples in order, as mtbert gets them) or
    `group_by_length` (batches of similar lengths, what an informed Trainer user switches on).
    """
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        PrinterCallback,
        Trainer,
        TrainingArguments,
    )

    cfg = build_config({})
    tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True)
    num_labels, labels = spec.task_kind.transformers_labels(spec, [e.label for e in examples])
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=num_labels)
    texts = [[e.texts[k] for e in examples] for k in range(len(spec.text_columns))]
    features = tokenizer(*texts, truncation=True, max_length=max_length)  # run_glue: padding left to the collator
    dataset = [{**{k: v[i] for k, v in features.items()}, "labels": labels[i]} for i in range(len(examples))]
    collator = DataCollatorWithPadding(tokenizer)

    def run(steps: int) -> None:
        args = TrainingArguments(
            output_dir=output_dir, max_steps=steps, per_device_train_batch_size=batch_size,
            learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
            lr_scheduler_type=cfg.lr_scheduler_type, eval_strategy="no", save_strategy="no", logging_strategy="no",
            report_to=[], use_cpu=device.type == "cpu", dataloader_num_workers=0, disable_tqdm=True,
            train_sampling_strategy=sampling, seed=0,
        )
        trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                          processing_class=tokenizer)
        trainer.remove_callback(PrinterCallback)  # it prints the final metrics to stdout, where our JSON goes
        trainer.train()
        run.optimizer = str(getattr(args.optim, "value", args.optim))

    run.optimizer = ""
    return run


# ---- prediction ----------------------------------------------------------------------------------


def bench_prediction(spec: TaskSpec, source: str, data_dir: Path, n: int, batch_size: int, repeats: int,
                     max_length: int, device: torch.device) -> dict[str, Any]:
    """Prediction examples/s from raw text (tokenization included) of the first n dev pairs, file order."""
    from sentence_transformers import CrossEncoder

    examples = sample_examples(data_dir / spec.dev_file, spec, n, shuffle=False)
    n = len(examples)
    encoder, tokenizer = load_encoder(source, 0.1)
    model = MultiTaskModel(encoder, [spec]).to(device).eval()
    pad_id = tokenizer.pad_token_id or 0
    cross = CrossEncoder(source, num_labels=1, max_length=max_length, device=str(device))
    pairs = [list(e.texts) for e in examples]

    def run_mtbert() -> None:  # what `mtbert predict` does after reading the file
        encoded = encode_examples(tokenizer, spec, examples, max_length, "cross")
        predict_set(model, encoded, batch_size, pad_id, device)

    def run_cross() -> None:
        cross.predict(pairs, batch_size=batch_size, show_progress_bar=False)

    @torch.inference_mode()
    def run_plain() -> None:  # file order, each batch padded to its longest member
        for start in range(0, n, batch_size):
            chunk = examples[start : start + batch_size]
            inputs = tokenizer([e.texts[0] for e in chunk], [e.texts[1] for e in chunk], padding=True,
                               truncation=True, max_length=max_length, return_tensors="pt")
            model(spec.name, [{k: v.to(device) for k, v in inputs.items()}]).cpu()

    int8_model = quantized(model, "int8") if device.type == "cpu" else None  # made once, as the model is loaded

    def run_int8() -> None:  # `mtbert predict --quantize int8` after quantizing
        encoded = encode_examples(tokenizer, spec, examples, max_length, "cross")
        predict_set(int8_model, encoded, batch_size, pad_id, "cpu")

    contenders = {"mtbert": run_mtbert, "cross_encoder": run_cross, "plain_loop": run_plain}
    if device.type == "cpu":  # dynamic int8 quantization runs on the CPU only
        contenders["mtbert_int8"] = run_int8
    times = interleaved(contenders, repeats, contenders)
    encoded = encode_examples(tokenizer, spec, examples, max_length, "cross")
    with torch.inference_mode():
        gflop = useful_flops(model, encoded, pad_id, device, backward=False) / 1e9
    ratios = {"to_cross_encoder": paired_ratio(times, "mtbert", "cross_encoder"),
              "to_plain_loop": paired_ratio(times, "mtbert", "plain_loop")}
    if "mtbert_int8" in times:
        ratios["int8_to_cross_encoder"] = paired_ratio(times, "mtbert_int8", "cross_encoder")
        fp32, _ = predict_set(model, encoded, batch_size, pad_id, device)
        int8, _ = predict_set(int8_model, encoded, batch_size, pad_id, "cpu")
        key, value = spec.task_kind.agreement(spec, fp32, int8)
        agreement = {f"int8_{key}": significant(value)}
    else:
        agreement = {}
    return {"examples": n, "examples_per_second": rates(times, n), "ratio": ratios,
            "useful_gflop": significant(gflop), **agreement}


# ---- memory --------------------------------------------------------------------------------------


def bench_memory(model_path: str | None, data_dir: Path, steps: int, batch_size: int,
                 max_train_samples: int | None = None, methods: tuple[str, ...] = ("sum", "pcgrad")
                 ) -> dict[str, Any]:
    """Peak resident memory (MB) of a short three-task training run per method, each in a fresh subprocess.

    The runs go side by side (a process's peak is its own, whatever else runs), which halves the wall time.
    """
    with tempfile.TemporaryDirectory(prefix="mtbert-bench-memory-") as tmp:
        processes = {}
        for method in methods:
            folder = Path(tmp) / method
            folder.mkdir()
            run_dir = json.dumps(str(folder / "run"))  # a JSON string is a YAML string
            (folder / "config.yaml").write_text(f"output_dir: {run_dir}\ntasks: [sst, para, sts]\n", encoding="utf-8")
            command = [sys.executable, "-m", "mtbert", "train", str(folder / "config.yaml"), "--method", method,
                       "--max_steps", str(steps), "--max_eval_samples", "50", "--max_predict_samples", "10",
                       "--per_device_train_batch_size", str(batch_size), "--data_dir", str(data_dir)]
            if model_path is not None:
                command += ["--model_name_or_path", str(model_path)]
            if max_train_samples is not None:
                command += ["--max_train_samples", str(max_train_samples)]
            processes[method] = start_process(command, folder / "log.txt")
        peaks = {method: peak_rss_mb(*started) for method, started in processes.items()}
    out: dict[str, Any] = {"steps": steps, "tasks": ["sst", "para", "sts"], "batch_size_per_task": batch_size,
                           "peak_rss_mb": peaks}
    if "sum" in peaks and "pcgrad" in peaks:
        out["ratio"] = ratio(peaks["pcgrad"], peaks["sum"])
    return out


def start_process(command: list[str], log: Path) -> tuple[subprocess.Popen, list[str], Path]:
    with open(log, "wb") as handle:
        # the same torch thread count as this process, so a caller's setting carries over
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(torch.get_num_threads())}
        return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env), command, log


def peak_rss_mb(process: subprocess.Popen, command: list[str], log: Path) -> float:
    """Wait for a process and return its peak resident set size in MB (ru_maxrss of that child alone)."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(command)} failed with exit status {process.returncode}:\n{tail}")
    return round(usage.ru_maxrss / 1024, 1)  # Linux reports kilobytes


# ---- goals ---------------------------------------------------------------------------------------


def goals(results: dict[str, Any]) -> dict[str, Any]:
    """Each throughput goal (`GOALS`) with the worst measured ratio and whether it is met."""
    out: dict[str, Any] = {}
    training = [r["ratio"] for r in results.get("training", {}).values()]
    if training:
        out["training_vs_trainer"] = {"goal": f">= {GOALS['training']}", "worst": min(training),
                                      "met": min(training) >= GOALS["training"]}
    grouped = [r["ratio_grouped"] for r in results.get("training", {}).values() if "ratio_grouped" in r]
    if grouped:
        out["training_vs_trainer_grouped"] = {"goal": f">= {GOALS['training_grouped']}", "worst": min(grouped),
                                              "met": min(grouped) >= GOALS["training_grouped"]}
    used = [r["utilization"]["mtbert"] for r in results.get("training", {}).values() if "utilization" in r]
    if used:
        out["training_utilization"] = {"goal": f">= {GOALS['training_utilization']}", "worst": min(used),
                                       "met": min(used) >= GOALS["training_utilization"]}
    prediction = [r["ratio"]["to_cross_encoder"] for r in results.get("prediction", {}).values()]
    if prediction:
        out["prediction_vs_cross_encoder"] = {"goal": f">= {GOALS['prediction']}", "worst": min(prediction),
                                              "met": min(prediction) >= GOALS["prediction"]}
    int8 = [r["ratio"]["int8_to_cross_encoder"] for r in results.get("prediction", {}).values()
            if "int8_to_cross_encoder" in r["ratio"]]
    if int8:
        out["prediction_int8_vs_cross_encoder"] = {"goal": f">= {GOALS['prediction_int8']}", "worst": min(int8),
                                                   "met": min(int8) >= GOALS["prediction_int8"]}
    memory = results.get("memory", {}).get("ratio")
    if memory is not None:
        out["pcgrad_memory_vs_sum"] = {"goal": f"<= {GOALS['memory']}", "ratio": memory,
                                       "met": memory <= GOALS["memory"]}
    return out
