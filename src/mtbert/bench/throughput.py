"""`mtbert bench throughput`: mtbert against the tools a user would otherwise pick, side by side in one process.

- training samples/s: mtbert's single-task step (`Method.backward` on packed batches, AdamW) vs
  `transformers.Trainer` with `AutoModelForSequenceClassification` (the run_glue recipe), the same Trainer with
  `train_sampling_strategy="group_by_length"` (`ratio_grouped`: the headline), and with `torch_compile=True`
  (`ratio_compiled`; its compile time, the untimed warm-up pass over every batch shape less a timed pass, is
  `compile_seconds`), on SST and STS. Each Trainer is built once, outside the timing, and timed from its
  `on_train_begin` to its `on_train_end` (the steps, not the construction);
- prediction examples/s: `mtbert predict`'s path (tokenize, then `predict_set`: length-sorted batches packed
  into rows of up to 128 tokens, inference_mode) vs `sentence_transformers.CrossEncoder.predict` in fp32 and with
  its model dynamically quantized to int8 (`torch.ao.quantization.quantize_dynamic`, the kernels of mtbert's
  int8), vs the CrossEncoder's model exported to ONNX and run by ONNX Runtime (fp32, and its dynamic int8
  quantization) and by OpenVINO, each the way `CrossEncoder.predict` batches (length-sorted, padded,
  sigmoid), and vs a plain batched loop in file order, on the Quora and STS dev pairs; on the CPU also
  `mtbert predict --quantize int8` (`int8_to_cross_encoder_int8`), with how far its predictions are from fp32's,
  and mtbert's own ONNX export (`mtbert export --format onnx`, fp32 and `--quantize int8`) run by ONNX Runtime as
  `mtbert predict EXPORT` runs it (padded length-sorted batches: `mtbert_onnx`, `mtbert_onnx_int8`; paired ratios
  `onnx_to_mtbert`, `onnx_int8_to_mtbert_int8`, with each one's largest difference from mtbert's scores).
  (sentence-transformers' own `backend="onnx"`/`"openvino"` need optimum-onnx or optimum-intel, which pin
  transformers below the version installed here; `BACKENDS_NOTE`.) Equal outputs are checked: each backend's
  largest difference from `CrossEncoder.predict` is reported (`max_abs_difference_to_cross_encoder`);
- peak resident memory of `sum` and `pcgrad` on three tasks, each alone in its own process (`bench step
  --memory`: no step logs diagnostics, so `sum` holds no per-task buffer);
- the machine's peak: an fp32 GEMM of the model's FFN shape (`gemm`), timed in repeated measurements before and
  after the rest (its median, with the spread), and the CPU's theoretical fp32 peak (`theoretical_peak`:
  cores x clock x FLOPs per cycle from the vector width, see `mtbert.bench.machine.theoretical_fp32_peak`).
  Each fp32 training and prediction figure also gets its useful FLOP/s (`useful_gflops_per_second`: the FLOPs
  of the examples' real tokens alone, counted with `torch.utils.flop_counter.FlopCounterMode` on each example
  unpadded, over the measured seconds) and its ratio to both peaks (`utilization`, `utilization_of_theoretical`);
  int8 rows get none (their peak is not the fp32 one).

Every contender gets the same model (the default backbone unless told otherwise), the same real examples and
the same batch size; each is warmed up, then the contenders take turns for a number of rounds (A B, B A, ...).
A rate is the median over the rounds; a `ratio` is the median of the per-round ratios, which cancels most of
a shared machine's swings in load. The comparisons need the `bench` extra (sentence-transformers, onnxruntime,
openvino; the Trainer needs accelerate, a core dependency).
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtbert.config import build_config
from mtbert.data import EncodedSet, Example, collate, encode_examples, read_task_file
from mtbert.data.encoding import collate_packed
from mtbert.errors import MtbertError
from mtbert.evaluation.evaluate import predict_set, quantized
from mtbert.methods.method import make_method, plain_objective
from mtbert.model import MultiTaskModel, default_backbone, load_encoder, task_loss
from mtbert.tasks import TaskSpec, task_from_config
from mtbert.training.optim import make_optimizer

GOALS = {"training": 1.6, "training_grouped": 1.2, "training_utilization": 0.6, "prediction": 1.3,
         "prediction_int8": 2.0, "memory": 1.2, "prediction_onnx": 1.0}
INT8_ROWS = ("mtbert_int8", "cross_encoder_int8", "onnxruntime_int8", "mtbert_onnx_int8")  # no fp32 utilization
FP32_CROSS_ENCODER_ROWS = ("cross_encoder", "onnxruntime", "openvino")
INT8_CROSS_ENCODER_ROWS = ("cross_encoder_int8", "onnxruntime_int8")
GEMM_MEASUREMENTS = 5  # each side of the rest: the peak is the median of 2 x this
BACKENDS_NOTE = ("CrossEncoder(backend='onnx'|'openvino') needs optimum-onnx 0.1.0 (transformers < 4.58) or "
                 "optimum-intel 2.2.0 (transformers < 5.6), which would replace the installed transformers: the "
                 "same runtimes run the CrossEncoder's exported model here instead")


def bench_throughput(examples: int = 256, model_path: str | None = None, data_dir: str | Path | None = None,
                     batch_size: int = 16, eval_batch_size: int = 64, repeats: int = 3, predict_repeats: int = 7,
                     max_length: int = 128, memory_steps: int = 5, train_tasks: tuple[str, ...] | None = None,
                     predict_tasks: tuple[str, ...] | None = None, table: str = "cs224n") -> dict[str, Any]:
    """Run the three comparisons and return one JSON-ready dict with each figure, its ratio and the goals.

    `examples` is per measurement; `repeats` and `predict_repeats` are the timed rounds of training and of
    prediction (prediction runs are short, so they get more); `model_path` and `data_dir` default to the
    bundled backbone and $MTBERT_DATA; the timed tasks default to the `throughput` section of the bench
    table's table.yaml (`table`: a shipped table's name or a folder).
    """
    from mtbert.bench.machine import machine, theoretical_fp32_peak
    from mtbert.bench.quality import load_reference
    from mtbert.presets import table_dir

    listed = load_reference(table_dir(table)).throughput_tasks
    train_tasks, predict_tasks = train_tasks or listed[0], predict_tasks or listed[1]
    if not train_tasks or not predict_tasks:
        raise MtbertError(f"{table}: its table.yaml names no throughput.train_tasks or throughput.predict_tasks")

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
    gemm = [bench_gemm(*gemm_shape, device=device) for _ in range(GEMM_MEASUREMENTS)]
    specs = {t: task_from_config(t, "throughput") for t in {*train_tasks, *predict_tasks}}
    results["training"] = {t: bench_training(specs[t], source, folder, examples, batch_size, repeats,
                                             max_length, device) for t in train_tasks}
    results["prediction"] = {t: bench_prediction(specs[t], source, folder, examples, eval_batch_size,
                                                 predict_repeats, max_length, device) for t in predict_tasks}
    gemm += [bench_gemm(*gemm_shape, device=device) for _ in range(GEMM_MEASUREMENTS)]
    results["gemm"] = gemm_summary(gemm_shape, [g["gflops_per_second"] for g in gemm])
    results["theoretical_peak"] = theoretical_fp32_peak() if device.type == "cpu" else None
    theoretical = (results["theoretical_peak"] or {}).get("gflops_per_second")
    for figures in [*results["training"].values(), *results["prediction"].values()]:
        add_utilization(figures, results["gemm"]["gflops_per_second"], theoretical)
    results["memory"] = bench_memory(model_path, folder, memory_steps, batch_size)
    results["goals"] = goals(results)
    return results


# ---- timing helpers ------------------------------------------------------------------------------


def interleaved(contenders: dict[str, Callable[[], Any]], repeats: int, warmup: dict[str, Callable[[], Any]]
                ) -> dict[str, list[float]]:
    """Warm each contender up once, then time them in turn `repeats` rounds; seconds per run, by round.

    Round r starts with the r-th contender (A B, B A, A B, ...), so that a machine getting busier or quieter
    during a round favours none of them. A contender that returns a number has timed itself (the Trainer: its
    steps without its construction): that number is its seconds.
    """
    for run in warmup.values():
        run()
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            own = contenders[name]()
            elapsed = time.perf_counter() - start
            times[name].append(float(own) if isinstance(own, int | float) else elapsed)
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
    """One measurement: the best GFLOP/s of an fp32 (m x k) @ (k x n) product over `repeats` timed runs (after 3
    warm-up runs)."""
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


def gemm_summary(shape: tuple[int, int, int], measurements: list[float]) -> dict[str, Any]:
    """The measured GEMM peak: the median of the measurements (each the best of its runs), with their spread."""
    ordered = sorted(measurements)
    return {"shape_mkn": list(shape), "dtype": "float32", "gflops_per_second": significant(statistics.median(ordered)),
            "spread": {"min": ordered[0], "max": ordered[-1],
                       "relative": significant((ordered[-1] - ordered[0]) / statistics.median(ordered))},
            "all_gflops_per_second": measurements}


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


def add_utilization(figures: dict[str, Any], peak_gflops: float, theoretical_gflops: float | None = None) -> None:
    """Add `useful_gflops_per_second` for each contender, and for the fp32 ones (not `INT8_ROWS`) `utilization`
    (its ratio to the measured GEMM peak) and `utilization_of_theoretical` (to the CPU's theoretical fp32 peak)."""
    rates_key = "samples_per_second" if "samples_per_second" in figures else "examples_per_second"
    items = figures["samples"] if "samples" in figures else figures["examples"]
    gflop = figures["useful_gflop"]
    useful = {name: gflop * rate["per_second"] / items for name, rate in figures[rates_key].items()}
    figures["useful_gflops_per_second"] = {name: significant(v) for name, v in useful.items()}
    fp32 = {name: v for name, v in useful.items() if name not in INT8_ROWS}
    figures["utilization"] = {name: significant(v / peak_gflops) if peak_gflops else None for name, v in fp32.items()}
    figures["utilization_of_theoretical"] = {name: significant(v / theoretical_gflops) if theoretical_gflops
                                             else None for name, v in fp32.items()}


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
    """Training samples/s of mtbert's single-task step vs the Trainer recipe (padded, grouped by length, and
    compiled), on the same examples.

    The examples are a seeded random sample of the training file; mtbert and the padded Trainer go through them
    in that order (the Trainer with its `sequential` sampler), so every step sees exactly the same batch and
    padding. Every contender's warm-up is one full pass (every batch shape once, which the compiled Trainer
    compiles); `compile_seconds` is the compiled Trainer's warm-up pass less its median timed pass.
    """
    examples = sample_examples(data_dir / spec.train_file, spec, n, shuffle=True)
    n = len(examples)
    steps = -(-n // batch_size)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="mtbert-bench-trainer-") as tmp:
        run_mtbert = mtbert_trainer(spec, source, examples, batch_size, max_length, device)
        contenders = {"mtbert": run_mtbert,
                      "trainer": hf_trainer(spec, source, examples, batch_size, max_length, device, tmp),
                      "trainer_grouped": hf_trainer(spec, source, examples, batch_size, max_length, device, tmp,
                                                    "group_by_length"),
                      "trainer_compiled": hf_trainer(spec, source, examples, batch_size, max_length, device, tmp,
                                                     compiled=True)}
        warm: dict[str, float] = {}

        def warm_up(name: str, run: Callable[[int], Any]) -> None:
            start = time.perf_counter()
            run(steps)
            warm[name] = time.perf_counter() - start

        times = interleaved({k: (lambda f=f: f(steps)) for k, f in contenders.items()}, repeats,
                            {k: (lambda k=k, f=f: warm_up(k, f)) for k, f in contenders.items()})
    gflop = useful_flops(run_mtbert.model, run_mtbert.encoded, run_mtbert.pad_id, device, backward=True) / 1e9
    figures = rates(times, n)
    return {"samples": n, "steps": steps, "samples_per_second": figures,
            "optimizer": {"mtbert": run_mtbert.optimizer, "trainer": contenders["trainer"].optimizer},
            "ratio": paired_ratio(times, "mtbert", "trainer"),
            "ratio_grouped": paired_ratio(times, "mtbert", "trainer_grouped"),
            "ratio_compiled": paired_ratio(times, "mtbert", "trainer_compiled"),
            "compile_seconds": round(warm["trainer_compiled"] - statistics.median(times["trainer_compiled"]), 2),
            "useful_gflop": significant(gflop)}


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
               device: torch.device, output_dir: str, sampling: str = "sequential", compiled: bool = False
               ) -> Callable[[int], float]:
    """`run(steps)`: the run_glue recipe, `Trainer.train()` for a fixed number of steps (no eval, no saving);
    it returns the seconds from the Trainer's `on_train_begin` to its `on_train_end`.

    The Trainer is built once, here, outside any timing. `sampling` is its `train_sampling_strategy`:
    `sequential` (the examples in order, as mtbert gets them) or `group_by_length` (batches of similar lengths,
    what an informed Trainer user switches on); `compiled` sets `torch_compile=True`.
    """
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        PrinterCallback,
        Trainer,
        TrainerCallback,
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
    args = TrainingArguments(
        output_dir=output_dir, max_steps=1, per_device_train_batch_size=batch_size,
        learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
        lr_scheduler_type=cfg.lr_scheduler_type, eval_strategy="no", save_strategy="no", logging_strategy="no",
        report_to=[], use_cpu=device.type == "cpu", dataloader_num_workers=0, disable_tqdm=True,
        train_sampling_strategy=sampling, seed=0, torch_compile=compiled,
    )
    clock: dict[str, float] = {}

    class Stopwatch(TrainerCallback):
        def on_train_begin(self, *args: Any, **kwargs: Any) -> None:
            clock["begin"] = time.perf_counter()

        def on_train_end(self, *args: Any, **kwargs: Any) -> None:
            clock["end"] = time.perf_counter()

    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                      processing_class=tokenizer, callbacks=[Stopwatch()])
    trainer.remove_callback(PrinterCallback)  # it prints the final metrics to stdout, where our JSON goes

    def run(steps: int) -> float:
        trainer.args.max_steps = steps
        trainer.train()
        run.optimizer = str(getattr(args.optim, "value", args.optim))
        return clock["end"] - clock["begin"]

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

    contenders = {"mtbert": run_mtbert, "cross_encoder": run_cross, "plain_loop": run_plain}
    outputs: dict[str, Callable[[], Any]] = {"cross_encoder": lambda: cross.predict(
        pairs, batch_size=batch_size, show_progress_bar=False)}
    backends: dict[str, Any] = {}
    if device.type == "cpu":  # dynamic int8 quantization and the exported runtimes run on the CPU
        int8_model = quantized(model, "int8")  # made once, as the model is loaded
        cross_int8 = quantized_cross_encoder(cross)

        def run_int8() -> None:  # `mtbert predict --quantize int8` after quantizing
            encoded = encode_examples(tokenizer, spec, examples, max_length, "cross")
            predict_set(int8_model, encoded, batch_size, pad_id, "cpu")

        contenders["mtbert_int8"] = run_int8
        contenders["cross_encoder_int8"] = outputs["cross_encoder_int8"] = lambda: cross_int8.predict(
            pairs, batch_size=batch_size, show_progress_bar=False)
        with tempfile.TemporaryDirectory(prefix="mtbert-bench-onnx-") as tmp:
            runtimes, backends = exported_cross_encoders(cross, max_length, Path(tmp))
            own = mtbert_onnx_exports(model, tokenizer, max_length, batch_size, Path(tmp), backends)
        for name, predict in runtimes.items():
            contenders[name] = outputs[name] = (lambda predict=predict: predict(pairs, batch_size))
        for name, exported in own.items():  # `mtbert predict EXPORT` after reading the file
            contenders[name] = (lambda exported=exported: predict_onnx(exported, examples, max_length))
    times = interleaved(contenders, repeats, contenders)
    encoded = encode_examples(tokenizer, spec, examples, max_length, "cross")
    with torch.inference_mode():
        gflop = useful_flops(model, encoded, pad_id, device, backward=False) / 1e9
    ratios = {"to_cross_encoder": paired_ratio(times, "mtbert", "cross_encoder"),
              "to_plain_loop": paired_ratio(times, "mtbert", "plain_loop")}
    ratios.update({f"to_{name}": paired_ratio(times, "mtbert", name) for name in FP32_CROSS_ENCODER_ROWS[1:]
                   if name in times})
    figures: dict[str, Any] = {}
    if "mtbert_int8" in times:
        ratios["int8_to_cross_encoder"] = paired_ratio(times, "mtbert_int8", "cross_encoder")
        ratios.update({f"int8_to_{name}": paired_ratio(times, "mtbert_int8", name) for name in INT8_CROSS_ENCODER_ROWS
                       if name in times})
        ratios["int8_to_mtbert"] = paired_ratio(times, "mtbert_int8", "mtbert")
        fp32, _ = predict_set(model, encoded, batch_size, pad_id, device)
        int8, _ = predict_set(int8_model, encoded, batch_size, pad_id, "cpu")
        key, value = spec.task_kind.agreement(spec, fp32, int8)
        figures = {f"int8_{key}": significant(value)}
        figures["int8_note"] = "agreement of an untrained head (the bundled backbone): see RESULTS for a trained one"
        if "mtbert_onnx" in times:
            ratios.update(onnx_ratios(times))
            _, scores = predict_set(model, encoded, batch_size, pad_id, device)
            figures["onnx_max_abs_difference_to_mtbert"] = {
                name: significant(float(np.abs(predict_onnx(exported, examples, max_length)[1] - scores).max()))
                for name, exported in own.items()}
    reference = np.asarray(outputs["cross_encoder"](), dtype=np.float64)
    figures["max_abs_difference_to_cross_encoder"] = {
        name: significant(float(np.abs(np.asarray(predict(), dtype=np.float64) - reference).max()))
        for name, predict in outputs.items() if name != "cross_encoder"}
    return {"examples": n, "examples_per_second": rates(times, n), "ratio": ratios,
            "fastest_fp32_cross_encoder": fastest(times, FP32_CROSS_ENCODER_ROWS),
            **({"fastest_int8_cross_encoder": fastest(times, INT8_CROSS_ENCODER_ROWS)} if "mtbert_int8" in times
               else {}),
            "cross_encoder_backends": backends, "useful_gflop": significant(gflop), **figures}


def mtbert_onnx_exports(model: MultiTaskModel, tokenizer: Any, max_length: int, batch_size: int,
                        folder: Path, backends: dict[str, Any]) -> dict[str, Any]:
    """The model as `mtbert export --format onnx` writes it, fp32 and int8 (`--quantize int8`), each loaded in an
    ONNX Runtime session (`OnnxModel`): {"mtbert_onnx": ..., "mtbert_onnx_int8": ...}, or {} with why in
    `backends["mtbert_onnx"]` when the exporter's packages are missing."""
    from mtbert.evaluation.onnx_export import check_packages, quantize_export, write_onnx_export
    from mtbert.model.onnx_runtime import OnnxModel

    try:
        check_packages()
    except MtbertError as err:
        backends["mtbert_onnx"] = f"not installed ({err})"
        return {}
    backends["mtbert_onnx"] = "mtbert export --format onnx, run by onnxruntime"
    fp32, int8 = folder / "mtbert-onnx", folder / "mtbert-onnx-int8"
    fp32.mkdir()
    write_onnx_export(fp32, [(model, list(model.specs))], tokenizer, max_length, batch_size)
    quantize_export(fp32, int8)
    models = {"mtbert_onnx": OnnxModel(fp32), "mtbert_onnx_int8": OnnxModel(int8)}
    for exported in models.values():  # the sessions read the graph now, before `folder` goes
        for task in exported.tasks:
            exported.session(task)
    return models


def predict_onnx(exported: Any, examples: list[Example], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """What `mtbert predict EXPORT` does after reading the file: tokenize, then `predict_set` with the ONNX Runtime
    session on padded length-sorted batches."""
    spec = next(iter(exported.specs.values()))
    encoded = encode_examples(exported.tokenizer, spec, examples, max_length, exported.pair_architecture)
    return predict_set(exported, encoded, exported.batch_size, exported.tokenizer.pad_token_id or 0, "cpu",
                       packed=False)


def onnx_ratios(times: dict[str, list[float]]) -> dict[str, float]:
    """The ONNX export's paired ratios: fp32 to mtbert's fp32, int8 to mtbert's int8 (and to mtbert's fp32)."""
    return {"onnx_to_mtbert": paired_ratio(times, "mtbert_onnx", "mtbert"),
            "onnx_int8_to_mtbert_int8": paired_ratio(times, "mtbert_onnx_int8", "mtbert_int8"),
            "onnx_int8_to_mtbert": paired_ratio(times, "mtbert_onnx_int8", "mtbert")}


def fastest(times: dict[str, list[float]], names: tuple[str, ...]) -> str:
    """The contender of `names` (those timed) with the least median seconds."""
    return min((n for n in names if n in times), key=lambda n: statistics.median(times[n]))


def quantized_cross_encoder(cross: Any) -> Any:
    """A copy of a CrossEncoder with every nn.Linear dynamically quantized to int8, as mtbert's int8 copy is."""
    import warnings

    with warnings.catch_warnings():  # torch.ao's eager-mode quantization warns that it moves to torchao
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(cross, {torch.nn.Linear}, dtype=torch.qint8)  # copies


ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # the model's positional order


def exported_cross_encoders(cross: Any, max_length: int, folder: Path
                            ) -> tuple[dict[str, Callable[[list[list[str]], int], np.ndarray]], dict[str, Any]]:
    """A CrossEncoder's model exported to ONNX (`torch.onnx.export` of a copy with eager attention) and run, the
    way `CrossEncoder.predict` batches, by ONNX Runtime (fp32 with all graph optimizations, and its dynamic int8
    quantization) and by OpenVINO (the fp32 export): `predict(pairs, batch_size)` per runtime that imports,
    and for each the version or why it is missing."""
    import copy
    import warnings

    tokenizer, hf_model = cross.tokenizer, copy.deepcopy(cross.model).cpu().eval()
    hf_model.set_attn_implementation("eager")  # sdpa's mask does not export
    sample = tokenizer(["a short pair"], ["to trace"], return_tensors="pt")
    names = [k for k in ONNX_INPUTS if k in sample]
    fp32_path, int8_path = folder / "fp32.onnx", folder / "int8.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(hf_model, tuple(sample[k] for k in names), str(fp32_path), input_names=names,
                          output_names=["logits"], dynamo=False,
                          dynamic_axes={**{k: {0: "batch", 1: "sequence"} for k in names}, "logits": {0: "batch"}})

    def batched(run: Callable[[dict[str, np.ndarray]], np.ndarray]) -> Callable[[list[list[str]], int], np.ndarray]:
        def predict(pairs: list[list[str]], batch_size: int) -> np.ndarray:
            order = np.argsort([-len(a) - len(b) for a, b in pairs], kind="stable")  # as CrossEncoder sorts
            scores = np.empty(len(pairs), dtype=np.float32)
            for start in range(0, len(pairs), batch_size):
                chosen = order[start : start + batch_size]
                inputs = tokenizer([pairs[i][0] for i in chosen], [pairs[i][1] for i in chosen], padding=True,
                                   truncation=True, max_length=max_length, return_tensors="np")
                logits = run({k: inputs[k].astype(np.int64) for k in names})
                scores[chosen] = 1.0 / (1.0 + np.exp(-logits.reshape(-1)))  # CrossEncoder's sigmoid
            return scores
        return predict

    runtimes: dict[str, Callable[[list[list[str]], int], np.ndarray]] = {}
    backends: dict[str, Any] = {"sentence_transformers_backends": BACKENDS_NOTE}
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as err:
        backends["onnxruntime"] = f"not installed ({err})"
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = torch.get_num_threads()
        for name, path in (("onnxruntime", fp32_path), ("onnxruntime_int8", int8_path)):
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            runtimes[name] = batched(lambda inputs, session=session: session.run(None, inputs)[0])
        backends["onnxruntime"] = ort.__version__
    try:
        import openvino
    except ImportError as err:
        backends["openvino"] = f"not installed ({err})"
    else:
        compiled = openvino.Core().compile_model(openvino.convert_model(str(fp32_path)), "CPU",
                                                 {"INFERENCE_NUM_THREADS": torch.get_num_threads(),
                                                  "INFERENCE_PRECISION_HINT": "f32"})  # not bf16 where it could
        runtimes["openvino"] = batched(lambda inputs: compiled(inputs)[0])
        backends["openvino"] = openvino.__version__
    return runtimes, backends


# ---- memory --------------------------------------------------------------------------------------


def bench_memory(model_path: str | None, data_dir: Path, steps: int, batch_size: int,
                 methods: tuple[str, ...] = ("sum", "pcgrad")) -> dict[str, Any]:
    """Peak resident memory (MB) of three-task training steps of each method alone in a fresh process
    (`mtbert.bench.step.method_memory`: no step logs diagnostics, so `sum` holds no per-task buffer)."""
    from mtbert.bench.step import MIN_ROUNDS, method_memory

    steps = max(steps, MIN_ROUNDS)
    measured = method_memory(list(methods), batch_size, model_path, steps, data_dir)
    tasks = [spec.name for spec in build_config({}).task_specs()]  # bench step's tasks: the default config's
    out: dict[str, Any] = {"steps": steps, "tasks": tasks, "batch_size_per_task": batch_size,
                           "diagnostics": False, "peak_rss_mb": measured["peak_rss_mb"]}
    if "sum" in out["peak_rss_mb"] and "pcgrad" in out["peak_rss_mb"]:
        out["ratio"] = ratio(out["peak_rss_mb"]["pcgrad"], out["peak_rss_mb"]["sum"])
    return out


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
    # issue 35: at equal outputs against the fastest CrossEncoder backend that runs here, fp32 and int8
    for kind, prefix, key in (("fp32", "to_", "fastest_fp32_cross_encoder"),
                              ("int8", "int8_to_", "fastest_int8_cross_encoder")):
        against = {task: (r[key], r["ratio"][prefix + r[key]]) for task, r in results.get("prediction", {}).items()
                   if key in r and prefix + r[key] in r["ratio"]}
        if against:
            worst = min(v for _, v in against.values())
            out[f"prediction_{kind}_vs_fastest_cross_encoder"] = {
                "goal": f">= {GOALS['prediction']}", "against": {t: a for t, (a, _) in against.items()},
                "worst": worst, "met": worst >= GOALS["prediction"]}
    int8 = [r["ratio"]["int8_to_cross_encoder"] for r in results.get("prediction", {}).values()
            if "int8_to_cross_encoder" in r["ratio"]]
    if int8:
        out["prediction_int8_vs_cross_encoder"] = {"goal": f">= {GOALS['prediction_int8']}", "worst": min(int8),
                                                   "met": min(int8) >= GOALS["prediction_int8"],
                                                   "note": "int8 against fp32: see prediction_int8_vs_fastest_"
                                                           "cross_encoder for int8 against int8"}
    onnx = [r["ratio"]["onnx_int8_to_mtbert_int8"] for r in results.get("prediction", {}).values()
            if "onnx_int8_to_mtbert_int8" in r["ratio"]]
    if onnx:  # issue 34: the ONNX export at least as fast as mtbert's own int8 path, at equal batch and precision
        out["prediction_onnx_int8_vs_mtbert_int8"] = {"goal": f">= {GOALS['prediction_onnx']}", "worst": min(onnx),
                                                      "met": min(onnx) >= GOALS["prediction_onnx"]}
    memory = results.get("memory", {}).get("ratio")
    if memory is not None:
        out["pcgrad_memory_vs_sum"] = {"goal": f"<= {GOALS['memory']}", "ratio": memory,
                                       "met": memory <= GOALS["memory"]}
    return out
