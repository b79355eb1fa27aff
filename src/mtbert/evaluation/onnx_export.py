"""`mtbert export RUN --format onnx`: every task of a run as one ONNX graph, its tokenizer and `mtbert_onnx.json`.

The graph (`model.onnx`) takes one padded batch of sequences (`input_ids`, `attention_mask`, and `token_type_ids`
when the encoder reads them; batch and sequence axes dynamic) and returns every task's raw outputs, what
`MultiTaskModel.forward` returns: the encoder runs once and each head reads what its kind's `features` takes of it
(a pooled vector per sequence, or every token's). A head that reads k encoder inputs (a bi-encoder pair head: k = 2)
reads the batch's rows as k consecutive blocks (the first texts, then the second texts). A two-step run's tasks
are predicted by their own checkpoints: the graph then holds one encoder per checkpoint.

`mtbert_onnx.json` names the graph's inputs, each task's output, its spec (kind, label names, ...: enough to
rebuild its `TaskSpec`), its head's architecture and encoder inputs, the pooling, `max_length` and the batch
size; `mtbert.model.onnx_runtime.OnnxModel` runs the folder with ONNX Runtime, so that `mtbert predict` and
`mtbert evaluate` take it in place of the run. Batches go through the graph padded and length-sorted, never packed
(a packed batch needs a block-diagonal mask and per-example positions the exported encoder does not take).

The graph is traced by torch's `torch.export`-based exporter (`dynamo=True`): with torch 2.13 and transformers 5
the TorchScript exporter (`dynamo=False`) bakes the attention mask of the traced batch into the graph and gives
wrong outputs on batches of another length. `--quantize int8` applies ONNX Runtime's dynamic quantization
(`onnxruntime.quantization.quantize_dynamic`: int8 weights, activations quantized per batch) to the graph.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mtbert.distribution import install_hint, version
from mtbert.errors import MtbertError
from mtbert.model import MultiTaskModel
from mtbert.model.onnx_runtime import ONNX_CONFIG, ONNX_FORMAT, ONNX_FORMAT_VERSION, ONNX_MODEL
from mtbert.runs.layout import RunDir
from mtbert.tasks import TaskSpec

QUANTIZATIONS = ("int8",)
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
_SAMPLE_TEXTS = ("a longer sample sentence to trace", "short", "a sentence of some length", "two words")
_EXTERNAL_DATA_BYTES = 1_500_000_000  # a graph with more weights keeps them in model.onnx.data (protobuf's 2 GB)


def head_inputs(head: nn.Module) -> int:
    """How many encoder inputs a task's head reads: two for a bi-encoder head (`bi-*`), else one."""
    return 2 if head.architecture.startswith("bi-") else 1


def output_name(task: str) -> str:
    """The graph output holding `task`'s raw outputs."""
    return f"outputs.{task}"


class ExportGraph(nn.Module):
    """Every task's head on one encoder pass per model: `forward(input_ids, attention_mask, token_type_ids)` returns
    each task's raw outputs in `tasks` order (see the module docstring for the rows of a k-input head)."""

    def __init__(self, groups: Sequence[tuple[MultiTaskModel, Sequence[str]]]) -> None:
        super().__init__()
        self.models = nn.ModuleList([model for model, _ in groups])
        self.groups = [list(tasks) for _, tasks in groups]

    @property
    def tasks(self) -> list[str]:
        return [task for tasks in self.groups for task in tasks]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = []
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        for model, tasks in zip(self.models, self.groups, strict=True):
            hidden = model.hidden_states(batch)
            for task in tasks:
                head = model.heads[task]
                features = model.specs[task].task_kind.features(hidden, attention_mask, model.pooling)
                k = head_inputs(head)
                n = features.shape[0] // k
                outputs.append(head([features[i * n : (i + 1) * n] for i in range(k)]))
        return tuple(outputs)


def export_onnx(run_dir: str | Path, output: str | Path, quantize: str | None = None) -> tuple[Path, dict[str, Any]]:
    """Write every trained task of the run at `run_dir` into `output` as one ONNX graph (`quantize="int8"`: ONNX
    Runtime's dynamic int8 quantization of it), the tokenizer files and `mtbert_onnx.json`; returns the folder and
    the json's contents.

    Everything is checked before anything is written: the run, `quantize`, the exporter's packages and `output`
    (a new or empty folder). The folder is filled in a temporary sibling and renamed into place.
    """
    from mtbert.evaluation.export import check_output
    from mtbert.evaluation.finished import load_model, load_run_config, model_dirs, trained_tasks, usable_length

    check_quantize(quantize)
    check_packages()
    run = RunDir(run_dir)
    output = Path(output)
    cfg = load_run_config(run.root)
    specs = trained_tasks(run.root, cfg)
    if not specs:
        raise MtbertError(f"{run.root}: the run has no trained task to export")
    dirs = model_dirs(run.root, cfg)
    check_output(output, run)
    by_dir: dict[Path, list[str]] = {}
    for spec in specs:
        by_dir.setdefault(dirs[spec.name], []).append(spec.name)
    groups, tokenizer, length = [], None, cfg.max_length
    for path, tasks in by_dir.items():
        model, tokenizer = load_model(path, torch.device("cpu"))
        groups.append((model, tasks))
        length = min(length, usable_length(cfg, model))
    about = {"run_dir": str(run.root), "data_dir": cfg.data_dir,
             "checkpoints": {task: str(path.relative_to(run.root)) for path, tasks in by_dir.items()
                             for task in tasks}}
    from mtbert.io import atomic_dir

    settings: dict[str, Any] = {}
    atomic_dir(output, lambda tmp: settings.update(write_onnx_export(
        tmp, groups, tokenizer, length, cfg.per_device_eval_batch_size, quantize, about,
        specs={s.name: s for s in specs})))  # the specs `mtbert predict` reads and writes with
    return output, settings


def check_quantize(quantize: str | None) -> None:
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise MtbertError(f"--quantize: unknown quantization '{quantize}' (choices: {', '.join(QUANTIZATIONS)})")


def check_packages() -> None:
    """The exporter's packages (onnx, onnxscript for torch's exporter, onnxruntime), or one MtbertError."""
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            raise MtbertError(f"mtbert export --format onnx: needs {name}; {install_hint('onnx')}") from None


def write_onnx_export(folder: Path, groups: Sequence[tuple[MultiTaskModel, Sequence[str]]], tokenizer: Any,
                      max_length: int, batch_size: int, quantize: str | None = None,
                      about: dict[str, Any] | None = None, specs: dict[str, TaskSpec] | None = None
                      ) -> dict[str, Any]:
    """Write the graph of `groups` (each model with the tasks it predicts), the tokenizer and `mtbert_onnx.json`
    into the existing folder `folder`; returns the json's contents. `about` adds keys for people (the run);
    `specs` are the task specs the json records (default: the models' own)."""
    graph = ExportGraph([(_exportable(model), tasks) for model, tasks in groups]).eval()
    tasks = graph.tasks
    with tempfile.TemporaryDirectory(prefix="mtbert-onnx-") as staging:
        fp32 = Path(staging) / ONNX_MODEL if quantize else folder / ONNX_MODEL
        inputs, shapes = trace(graph, tokenizer, fp32)
        if quantize:
            quantize_graph(fp32, folder / ONNX_MODEL)
    tokenizer.save_pretrained(str(folder))
    by_task = {task: (model, head_inputs(model.heads[task])) for model, names in groups for task in names}
    specs = {task: (specs or {}).get(task) or model.specs[task] for task, (model, _) in by_task.items()}
    from mtbert.model.multitask import _spec_to_dict

    first = groups[0][0]
    settings: dict[str, Any] = {
        "format": ONNX_FORMAT, "format_version": ONNX_FORMAT_VERSION, "mtbert_version": version(),
        "model": ONNX_MODEL, "quantization": quantize, "inputs": inputs,
        "padding": "right, to each batch's longest sequence; batches are length-sorted and never packed",
        "max_length": int(max_length), "batch_size": int(batch_size),
        "pair_architecture": first.pair_architecture, "pooling": first.pooling,
        "tasks": [{
            "name": task, "output": output_name(task), "output_shape": shapes[output_name(task)],
            "kind": specs[task].kind,
            "label_names": _list_or_none(specs[task].label_names),
            "head_architecture": by_task[task][0].heads[task].architecture,
            "encoder_inputs": by_task[task][1], "pooling": by_task[task][0].pooling,
            "spec": _spec_to_dict(specs[task]),
        } for task in tasks],
        **(about or {}),
    }
    (folder / ONNX_CONFIG).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    return settings


def _list_or_none(values: Sequence[str] | None) -> list[str] | None:
    return None if values is None else list(values)


def _exportable(model: MultiTaskModel) -> MultiTaskModel:
    """The model in eval mode on the CPU, its encoder a plain transformers model (LoRA adapters merged in)."""
    from mtbert.evaluation.export import plain_encoder

    model.encoder = plain_encoder(model.encoder)
    return model.cpu().eval()


def trace(graph: ExportGraph, tokenizer: Any, path: Path) -> tuple[list[str], dict[str, list[str | int]]]:
    """Export `graph` to `path` with torch's exporter (batch and sequence axes dynamic); the graph's input names and
    each output's shape (a size, or the name of a size that varies with the inputs)."""
    import onnx

    sample = tokenizer(list(_SAMPLE_TEXTS), padding=True, return_tensors="pt")
    args = tuple(sample[name] if name in sample else torch.zeros_like(sample["input_ids"]) for name in INPUT_NAMES)
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    size = sum(p.numel() * p.element_size() for p in graph.parameters())
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "torchvision is not installed" lines
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, args, str(path), input_names=list(INPUT_NAMES),
                              output_names=[output_name(t) for t in graph.tasks], dynamo=True,
                              dynamic_shapes=tuple({0: batch, 1: sequence} for _ in INPUT_NAMES),
                              external_data=size > _EXTERNAL_DATA_BYTES, verbose=False)
    except Exception as err:  # torch.export's and onnxscript's errors have no common type
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MtbertError(f"mtbert export --format onnx: torch's exporter cannot trace the model ({reason[:300]})"
                          ) from None
    finally:
        quiet.setLevel(level)
    written = onnx.load(str(path), load_external_data=False).graph
    shapes = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in written.output}
    return [i.name for i in written.input], shapes


def quantize_export(source: Path, target: Path) -> None:
    """Copy the fp32 export folder `source` to the new folder `target` with its graph dynamically int8-quantized
    (what `--quantize int8` writes, without tracing the model again)."""
    import shutil

    shutil.copytree(source, target, ignore=shutil.ignore_patterns(ONNX_MODEL, ONNX_MODEL + ".data"))
    quantize_graph(source / ONNX_MODEL, target / ONNX_MODEL)
    settings = json.loads((source / ONNX_CONFIG).read_text(encoding="utf-8"))
    settings["quantization"] = "int8"
    (target / ONNX_CONFIG).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")


def quantize_graph(source: Path, target: Path) -> None:
    """ONNX Runtime's dynamic quantization of the graph at `source` (int8 weights) written to `target`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.disable(logging.WARNING)  # its root-logger advice to pre-process the graph first
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)
