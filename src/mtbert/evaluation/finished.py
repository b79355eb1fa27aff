"""Using a finished run: find its models, evaluate them on labeled files, predict for one task."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError

from mtbert.config import TrainConfig, config_positions, load_config
from mtbert.data import Example, ReadResult, encode_examples, read_task_file
from mtbert.data.conll import CONLL_SUFFIXES
from mtbert.data.groups import align_sets, encoding_task
from mtbert.data.loading import read_split
from mtbert.data.quotes import runaway_quote_line
from mtbert.errors import DataError, MtbertError
from mtbert.evaluation.evaluate import predict_group, predict_set
from mtbert.evaluation.metrics import bootstrap_overall, compute_metrics
from mtbert.evaluation.predict import format_value, write_csv
from mtbert.io import atomic_write_text, read_json
from mtbert.model import MultiTaskModel, load_tokenizer
from mtbert.model.onnx_runtime import OnnxModel, is_onnx_export
from mtbert.runs.layout import MODEL_CONFIG, RunDir
from mtbert.tasks import TaskSpec, input_groups

logger = logging.getLogger(__name__)


def load_run_config(run_dir: Path) -> TrainConfig:
    run = RunDir(run_dir)
    if not run.config.is_file():
        raise MtbertError(f"{run_dir}: not a run folder (config.yaml is missing)")
    return load_config(run.config)


def model_dirs(run_dir: Path, cfg: TrainConfig) -> dict[str, Path]:
    """The checkpoint that predicts each task: tasks/<task>/best for two-step runs, else best/."""
    out = {spec.name: RunDir(run_dir).model_for(spec.name) for spec in cfg.task_specs()}
    for task, path in out.items():
        if not (path / MODEL_CONFIG).is_file():
            raise MtbertError(f"{path}: the model for task {task} is missing (is the run finished?)")
    return out


def load_model(path: Path, device: torch.device) -> tuple[MultiTaskModel, Any]:
    """A run's saved model and tokenizer; a damaged folder (truncated or garbled files) is one MtbertError."""
    try:
        return MultiTaskModel.from_pretrained(path).to(device), load_tokenizer(path)
    except MtbertError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MtbertError(f"{path}: the saved model cannot be loaded (damaged or incomplete: {reason[:200]})") from None


def usable_length(cfg: TrainConfig, model: MultiTaskModel) -> int:
    """The run's max_length, within the encoder's position embeddings (a run trained before max_length was
    checked against them would fail on a long input)."""
    positions = config_positions(model.encoder.config)
    return cfg.max_length if positions is None else min(cfg.max_length, positions)


def trained_tasks(run_dir: Path, cfg: TrainConfig) -> list[TaskSpec]:
    """Tasks the run's models can predict (a ratio-0 task of a one-stage run has no trained head), with the class
    names the model was trained with (labels that are names in the data: saved in its mtbert_config.json)."""
    specs = cfg.task_specs()
    if not (RunDir(run_dir).tasks_dir.is_dir() or cfg.task_ratio is None):
        ratios = cfg.ratios()
        specs = [s for s in specs if ratios[s.name] > 0]
    return [with_saved_labels(s, RunDir(run_dir).model_for(s.name)) for s in specs]


def with_saved_labels(spec: TaskSpec, model_dir: Path) -> TaskSpec:
    """`spec` with what the model in `model_dir` saved for it beyond the config, as its kind takes it: the
    `label_names` resolved from the data when the config gave none (and a multi-label task's tuned thresholds)."""
    settings = read_json(model_dir / MODEL_CONFIG) or {}
    tasks = settings.get("tasks")
    for saved in tasks if isinstance(tasks, list) else []:
        if isinstance(saved, dict) and saved.get("name") == spec.name:
            return spec.task_kind.from_saved(spec, saved)
    return spec


def evaluate_run(run_dir: Path, files: dict[str, str] | None = None, quantize: str | None = None) -> dict[str, float]:
    """Metrics (and the overall score's bootstrap interval) of a run's models on labeled files.

    `quantize="int8"` predicts with dynamically int8-quantized linear layers, on the CPU (`predict_set`).
    `run_dir` may be an ONNX export folder (`mtbert export --format onnx`): ONNX Runtime then predicts."""
    if is_onnx_export(run_dir):
        exported = load_onnx_export(run_dir, quantize)
        specs, data_dir = exported.specs, exported.data_dir()
    else:
        cfg = load_run_config(run_dir)
        specs, data_dir = {s.name: s for s in trained_tasks(run_dir, cfg)}, cfg.resolved_data_dir()
        model_dirs(run_dir, cfg)  # every model is there before any file is read
    files = files or {}
    for task in files:
        if task not in specs:
            raise MtbertError(f"--{task}: the run has no task {task} (tasks: {', '.join(specs)})")
    read = {}
    for name, spec in specs.items():
        if name not in files and (spec.label_files or {}).get("dev"):  # CoNLL words, labels from a second file
            read[name] = usable_examples(read_split(spec, "dev", data_dir))
        else:
            path = Path(files[name]) if name in files else data_dir / spec.dev_file
            read[name] = usable_examples(read_task_file(path, spec, labeled=True))
    given = {specs[t].input_group for t in files}  # a group with a task on another file: each scored on its own
    read = same_group_rows([s for s in specs.values() if s.input_group not in given], read)
    results = {}
    for name, spec in specs.items():
        examples = read[name]
        if is_onnx_export(run_dir):
            predictions, _ = predict_onnx(exported, spec, examples, progress=True)
        else:
            predictions, _ = predict_examples(run_dir, cfg, spec, examples, quantize, progress=True)
        results[name] = (spec, predictions, spec.task_kind.label_array([e.label for e in examples]))
    metrics = compute_metrics(results)
    metrics["overall_ci95"] = list(bootstrap_overall(results))
    return metrics


def same_group_rows(specs: list[TaskSpec], examples: dict[str, list[Example]]) -> dict[str, list[Example]]:
    """Each input_group's examples restricted to the ids every task of the group read, in its first task's order
    (as training aligns them), so that its frame accuracy compares the same rows; a left-out row is logged. A group
    whose tasks share no id is left as read."""
    out = dict(examples)
    for group, members in input_groups(specs).items():
        common = set.intersection(*({e.id for e in examples[s.name]} for s in members))
        if not common:
            continue
        order = {e.id: k for k, e in enumerate(examples[members[0].name])}
        for spec in members:
            kept = sorted((e for e in examples[spec.name] if e.id in common), key=lambda e: order[e.id])
            if len(kept) != len(examples[spec.name]):
                logger.warning("input_group %s: %d rows of task %s are left out: another task of the group skipped "
                               "them", group, len(examples[spec.name]) - len(kept), spec.name)
            out[spec.name] = kept
    return out


def predict_examples(run_dir: Path, cfg: TrainConfig, spec: TaskSpec, examples: list[Example], quantize: str | None,
                     progress: bool) -> tuple[np.ndarray, list[Any] | None]:
    """The predictions of the run's model for `spec` on `examples` (`predict_set`: packed length-sorted batches),
    and the encoded examples' extras (a token task's words, for its prediction file)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_model(model_dirs(run_dir, cfg)[spec.name], device)
    encoded = encode_examples(tokenizer, spec, examples, usable_length(cfg, model), model.pair_architecture)
    predictions, _ = predict_set(model, encoded, cfg.per_device_eval_batch_size, tokenizer.pad_token_id or 0, device,
                                 progress=progress, quantize=quantize)
    return predictions, encoded.extras


def load_onnx_export(folder: Path, quantize: str | None) -> OnnxModel:
    """An ONNX export folder in an ONNX Runtime session; `quantize` is refused (the export was quantized or not)."""
    if quantize is not None:
        raise MtbertError(f"--quantize: {folder} is an ONNX export, quantized or not when it was written; export it "
                          "with mtbert export RUN --format onnx --quantize int8 instead")
    return OnnxModel(folder)


def predict_onnx(exported: OnnxModel, spec: TaskSpec, examples: list[Example],
                 progress: bool) -> tuple[np.ndarray, list[Any] | None]:
    """The export's predictions for `spec` on `examples`: `predict_set` with the ONNX Runtime session in place of
    the model, on padded length-sorted batches (the graph takes no packed batch); and the examples' extras."""
    tokenizer = exported.tokenizer
    encoded = encode_examples(tokenizer, spec, examples, exported.max_length, exported.pair_architecture)
    predictions, _ = predict_set(exported, encoded, exported.batch_size, tokenizer.pad_token_id or 0,  # type: ignore
                                 "cpu", progress=progress, packed=False)
    return predictions, encoded.extras


def predict_run(run_dir: Path, task: str, input_path: str, output: str, fmt: str, quantize: str | None = None) -> None:
    """Predict one task for a file (or standard input) and write CS224N or CSV lines (`quantize`: see evaluate_run;
    `run_dir` may be an ONNX export folder)."""
    if is_onnx_export(run_dir):
        exported = load_onnx_export(run_dir, quantize)
        spec = exported.task(task).spec
    else:
        cfg = load_run_config(run_dir)
        specs = {s.name: s for s in trained_tasks(run_dir, cfg)}
        if task not in specs:
            raise MtbertError(f"--task: the run has no trained task {task} (tasks: {', '.join(specs)})")
        spec = specs[task]
    if input_path == "-":
        examples = examples_from_lines(stdin_lines(), spec)
    else:
        examples = usable_examples(read_task_file(input_path, spec, labeled=False))
    if is_onnx_export(run_dir):
        predictions, extras = predict_onnx(exported, spec, examples, progress=output != "-")
    else:
        predictions, extras = predict_examples(run_dir, cfg, spec, examples, quantize, progress=output != "-")
    ids = [e.id for e in examples]
    if output == "-":
        for example_id, value in zip(ids, predictions, strict=True):
            print(f"{example_id}\t{format_value(spec, value)}")
        return
    if fmt == "cs224n":  # the run's own prediction file format (a token task's JSON Lines and CoNLL copy)
        spec.task_kind.write_predictions(Path(output), spec, ids, predictions, extras)
    else:
        write_csv(output, spec, ids, predictions)


def predict_group_run(run_dir: Path, group: str, input_path: str, output: str, quantize: str | None = None) -> None:
    """Every task of an input_group for each input of a file (or standard input), with one encoder pass per batch
    (per model: a two-step run has one per task), written as JSON Lines: `{"id", each text column as read, each
    task's prediction as its kind's JSON value}`."""
    cfg = load_run_config(run_dir)
    specs = trained_tasks(run_dir, cfg)
    members = [s for s in specs if s.input_group == group]
    if not members:
        groups = sorted({s.input_group for s in specs if s.input_group is not None})
        raise MtbertError(f"--group: the run has no input_group {group} (groups: {', '.join(groups) or 'none'})")
    if input_path == "-":
        lines = stdin_lines()
        examples = {s.name: examples_from_lines(lines, s) for s in members}
    else:
        examples = {s.name: usable_examples(read_task_file(input_path, s, labeled=False)) for s in members}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    by_model: dict[Path, list[TaskSpec]] = {}
    for spec in members:
        by_model.setdefault(model_dirs(run_dir, cfg)[spec.name], []).append(spec)
    predictions: dict[str, dict[str, Any]] = {}
    ids: list[str] | None = None
    texts: dict[str, tuple[Any, ...]] = {}
    for path, tasks in by_model.items():
        model, tokenizer = load_model(path, device)
        sets = align_sets(group, {s.name: encode_examples(tokenizer, s, examples[s.name], usable_length(cfg, model),
                                                          model.pair_architecture) for s in tasks})
        first = encoding_task(sets)
        if ids is None:
            ids = sets[first].ids
            read = {e.id: e.texts for e in examples[first]}
            texts = {i: read[i] for i in ids}
        outputs = predict_group(model, sets, cfg.per_device_eval_batch_size, tokenizer.pad_token_id or 0, device,
                                progress=output != "-", quantize=quantize)
        for spec in tasks:
            values = dict(zip(sets[spec.name].ids, outputs[spec.name][0], strict=True))
            predictions[spec.name] = {i: spec.task_kind.json_value(spec, v) for i, v in values.items()}
    ids = [i for i in ids if all(i in p for p in predictions.values())]  # rows every task could read
    columns = members[0].text_columns
    lines = [json.dumps({"id": i, **dict(zip(columns, texts[i], strict=True)),
                         **{s.name: predictions[s.name][i] for s in members}}, ensure_ascii=False) for i in ids]
    text = "".join(line + "\n" for line in lines)
    if output == "-":
        sys.stdout.write(text)
    else:
        atomic_write_text(output, text)


def stdin_lines() -> list[str]:
    """Standard input's lines, decoded as UTF-8 (a byte-order mark dropped); DataError naming the line of a byte
    that is not UTF-8, as for a file."""
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:  # a text stream put in its place (tests, notebooks)
        return sys.stdin.read().splitlines()
    data = stream.read()
    data = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(f"<stdin>, line {line}: not valid UTF-8 text") from None


def examples_from_lines(lines: list[str], spec: TaskSpec) -> list[Example]:
    """Examples typed on standard input: one per line, the two texts of a pair separated by a tab."""
    examples = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        texts, reason = spec.task_kind.texts_from_line(spec, line)
        if reason is not None:
            raise MtbertError(f"<stdin>, line {number}: {reason}")
        examples.append(Example(id=str(number), texts=texts, label=None, line=number))
    if not examples:
        raise DataError(f"<stdin>: no examples to predict ({len(lines)} lines read, none with text); give one "
                        "example per line, the two texts of a pair separated by a tab")
    return examples


def usable_examples(result: ReadResult) -> list[Example]:
    """The examples a file gave; DataError (rows read and skipped, the first reasons) when it gave none.

    A quote that opens a field and is never closed takes in the rest of the file as one field: that is a
    DataError naming the line where the quote opened, even when the rows above it were usable.
    """
    path = result.path
    delimited = result.unit == "line" and not result.source and path.suffix.lower() not in (
        ".json", ".jsonl", ".ndjson", *CONLL_SUFFIXES)
    opened = runaway_quote_line(path) if delimited else None
    if opened is not None:
        usable = f"{len(result.examples)} usable" if result.examples else "no usable rows"
        raise DataError(f"{path}, line {opened}: a quote opens a field on this line and is never closed, so it takes "
                        f"in the rest of the file ({result.rows} rows read, {len(result.skipped)} skipped, {usable}); "
                        "remove the stray quote or close it")
    if result.examples:
        return result.examples
    if not result.rows:
        raise DataError(f"{result.where}: no usable rows (0 rows read after the header line)")
    reasons = "; ".join(f"line {line}: {why}" for line, why in result.skipped[:3])
    more = f"; and {len(result.skipped) - 3} more" if len(result.skipped) > 3 else ""
    raise DataError(f"{result.where}: no usable rows ({result.rows} rows read, {len(result.skipped)} skipped: "
                    f"{reasons}{more})")
