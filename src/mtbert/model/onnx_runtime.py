"""An ONNX export of a run (`mtbert export RUN --format onnx`), run by ONNX Runtime in place of the torch model.

The export folder holds `model.onnx` (one graph: the encoder pass and every task's head), the tokenizer files and
`mtbert_onnx.json` (`ONNX_CONFIG`: the graph's inputs, each task's output and spec, `max_length`, the batch size).
`OnnxModel` answers what `predict_set` asks of a `MultiTaskModel` (`model(task, inputs)` -> the head's raw
outputs, `decide`, `specs`, `pair_architecture`), so `mtbert predict` and `mtbert evaluate` decide, gather and
write an export's predictions with the same code as a run's.

The graph takes one padded batch of sequences. A task whose head reads k encoder inputs (k = 2 for a bi-encoder
pair: the first texts, then the second texts) reads its k inputs as k consecutive blocks of the batch's rows.
Batches go through the graph padded and length-sorted, not packed: a packed batch needs a block-diagonal mask and
per-example position ids that the exported encoder does not take.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mtbert.errors import MtbertError
from mtbert.tasks import TaskSpec

if TYPE_CHECKING:
    from mtbert.model.inference import TaskPredictions

ONNX_CONFIG = "mtbert_onnx.json"
ONNX_MODEL = "model.onnx"
ONNX_FORMAT = "mtbert-onnx"
ONNX_FORMAT_VERSION = 1
_REQUIRED = {"format": str, "model": str, "inputs": list, "max_length": int, "batch_size": int,
             "pair_architecture": str, "tasks": list}
_TASK_REQUIRED = {"name": str, "output": str, "encoder_inputs": int, "spec": dict}


def is_onnx_export(path: str | Path) -> bool:
    """Whether `path` is an ONNX export folder (it holds `mtbert_onnx.json` or `model.onnx`) rather than a run."""
    path = Path(path)
    return (path / ONNX_CONFIG).is_file() or (path / ONNX_MODEL).is_file()


@dataclass(frozen=True)
class ExportedTask:
    """One task of an export: its spec, the graph output holding its head's raw outputs, and how many encoder
    inputs (blocks of the batch's rows) its head reads."""

    spec: TaskSpec
    output: str
    encoder_inputs: int


def read_onnx_config(folder: str | Path) -> dict[str, Any]:
    """`mtbert_onnx.json` of an export folder, checked: one MtbertError sentence naming the file and key at fault."""
    path = Path(folder) / ONNX_CONFIG
    if not path.is_file():
        raise MtbertError(f"{folder}: not an mtbert ONNX export ({ONNX_CONFIG} is missing; write the folder with "
                          "mtbert export RUN --format onnx --output DIR)")
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise MtbertError(f"{path}: not UTF-8 text; write the folder again with mtbert export --format onnx") from None
    except json.JSONDecodeError as err:
        raise MtbertError(f"{path}, line {err.lineno}: not valid JSON ({err.msg}); write the folder again with "
                          "mtbert export --format onnx") from None
    if not isinstance(settings, dict):
        raise MtbertError(f"{path}: expected a JSON object, found {type(settings).__name__}")
    for key, kind in _REQUIRED.items():
        if not isinstance(settings.get(key), kind) or isinstance(settings.get(key), bool):
            raise MtbertError(f"{path}: key '{key}' is missing or not {_WORDS[kind]}")
    if settings["format"] != ONNX_FORMAT:
        raise MtbertError(f"{path}: key 'format' is {settings['format']!r}, not {ONNX_FORMAT!r}")
    if not settings["tasks"]:
        raise MtbertError(f"{path}: key 'tasks' lists no task")
    for i, task in enumerate(settings["tasks"]):
        for key, kind in _TASK_REQUIRED.items():
            if not isinstance(task, dict) or not isinstance(task.get(key), kind) or isinstance(task.get(key), bool):
                raise MtbertError(f"{path}: key 'tasks[{i}].{key}' is missing or not {_WORDS[kind]}")
    return settings


_WORDS = {str: "a string", list: "a list", int: "an integer", dict: "an object"}


def exported_tasks(settings: dict[str, Any], where: str | Path = ONNX_CONFIG) -> dict[str, ExportedTask]:
    """The tasks of a read `mtbert_onnx.json` by name, their specs rebuilt as the checkpoint's are."""
    from mtbert.kinds import KINDS
    from mtbert.model.multitask import _spec_from_dict

    tasks = {}
    for i, task in enumerate(settings["tasks"]):
        values = task["spec"]
        if values.get("kind") not in KINDS:
            raise MtbertError(f"{where}: key 'tasks[{i}].spec.kind' is {values.get('kind')!r}, a kind this mtbert "
                              f"does not know (kinds: {', '.join(KINDS)})")
        try:
            spec = _spec_from_dict(values)
        except TypeError as err:
            raise MtbertError(f"{where}: key 'tasks[{i}].spec' is not a task spec ({err})") from None
        tasks[spec.name] = ExportedTask(spec, task["output"], task["encoder_inputs"])
    return tasks


class OnnxModel:
    """An export folder's graph run by ONNX Runtime (CPU; a session per task, `session`), called as `MultiTaskModel`
    is by `predict_set`.

    `model(task, inputs)` takes a collated batch's encoder inputs (padded, one dict per input) and returns the
    task's raw outputs (what `MultiTaskModel.forward` returns); `decide` is the task kind's. Pass `packed=False`
    to `predict_set`: the graph takes padded batches only.
    """

    training = False  # predict_set saves and restores the mode of a torch model

    def __init__(self, folder: str | Path, threads: int | None = None) -> None:
        folder = Path(folder)
        settings = read_onnx_config(folder)
        self.folder = folder
        self.settings = settings
        self.tasks = exported_tasks(settings, folder / ONNX_CONFIG)
        self.specs = {name: t.spec for name, t in self.tasks.items()}
        self.pair_architecture: str = settings["pair_architecture"]
        self.max_length: int = settings["max_length"]
        self.batch_size: int = settings["batch_size"]
        self.quantization: str | None = settings.get("quantization")
        self.input_names: list[str] = [str(n) for n in settings["inputs"]]
        self.tokenizer = _load_tokenizer(folder)
        self.threads = threads
        self.graph = _load_graph(folder / settings["model"])
        graph_inputs = [i.name for i in self.graph.graph.input]
        if sorted(graph_inputs) != sorted(self.input_names):
            raise MtbertError(f"{folder / ONNX_CONFIG}: key 'inputs' lists {self.input_names}, but the graph takes "
                              f"{graph_inputs}")
        outputs = {o.name for o in self.graph.graph.output}
        for task in self.tasks.values():
            if task.output not in outputs:
                raise MtbertError(f"{folder / ONNX_CONFIG}: task {task.spec.name}'s output '{task.output}' is not an "
                                  f"output of {settings['model']}")
        self._sessions: dict[str, Any] = {}

    def session(self, task: str) -> Any:
        """The ONNX Runtime session that computes `task`'s output: the graph cut to the nodes that output needs
        (ONNX Runtime runs every node of a graph whatever outputs are asked for, and a two-step run's graph holds
        an encoder per checkpoint), made when first asked for. A graph with external weights runs whole."""
        if task not in self._sessions:
            path = self.folder / self.settings["model"]
            if (path.parent / (path.name + ".data")).exists() or len(self.tasks) == 1:
                self._sessions[task] = _session(path, self.threads)
            else:
                from onnx.utils import Extractor

                cut = Extractor(self.graph).extract_model(self.input_names, [self.task(task).output])
                self._sessions[task] = _session(path, self.threads, cut.SerializeToString())
        return self._sessions[task]

    def data_dir(self) -> Path:
        """The folder of the tasks' dev files, as the run's config resolves it (its `data_dir`, else $MTBERT_DATA,
        else `data`)."""
        return Path(self.settings.get("data_dir") or os.environ.get("MTBERT_DATA") or "data")

    def eval(self) -> OnnxModel:
        return self

    def train(self, mode: bool = True) -> OnnxModel:
        return self

    def task(self, name: str) -> ExportedTask:
        """The exported task `name`; MtbertError naming the export's tasks when it has none by that name."""
        if name not in self.tasks:
            raise MtbertError(f"--task: the ONNX export {self.folder} has no task {name} "
                              f"(tasks: {', '.join(self.tasks)})")
        return self.tasks[name]

    def __call__(self, task: str, inputs: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        """The task's raw outputs for one padded batch: its encoder inputs stacked as blocks of rows, one run."""
        exported = self.task(task)
        if len(inputs) != exported.encoder_inputs:
            raise MtbertError(f"task {task}: the batch has {len(inputs)} encoder input(s), the export's head reads "
                              f"{exported.encoder_inputs}")
        session = self.session(task)
        names = [i.name for i in session.get_inputs()]
        feed = stacked_inputs(inputs, names, self.tokenizer.pad_token_id or 0)
        (outputs,) = session.run([exported.output], feed)
        return torch.from_numpy(np.ascontiguousarray(outputs))

    def decide(self, task: str, outputs: torch.Tensor, batch: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(predictions, scores) of a batch's raw outputs, as the task's kind decides them."""
        spec = self.specs[task]
        return spec.task_kind.decide(spec, outputs, batch)

    def predict(self, task: str, texts: list[Any], batch_size: int | None = None) -> TaskPredictions:
        """`MultiTaskModel.predict` on the export: labels and scores of `task` for `texts`, in input order."""
        from mtbert.data.encoding import encode_examples
        from mtbert.model.inference import _examples, predict_set, task_predictions

        spec = self.task(task).spec
        examples = _examples(texts, spec)
        encoded = encode_examples(self.tokenizer, spec, examples, self.max_length, self.pair_architecture)
        predictions, scores = predict_set(self, encoded, batch_size or self.batch_size,  # type: ignore[arg-type]
                                          self.tokenizer.pad_token_id or 0, "cpu", packed=False)
        return task_predictions(spec, examples, predictions, scores)


def stacked_inputs(inputs: list[dict[str, torch.Tensor]], names: list[str], pad_id: int) -> dict[str, np.ndarray]:
    """The graph's feed: each named tensor of the encoder inputs padded on the right to their longest and stacked
    along the rows (the first input's rows, then the second's, ...), as int64 arrays."""
    width = max(int(x["input_ids"].shape[1]) for x in inputs)
    feed = {}
    for name in names:
        fill = pad_id if name == "input_ids" else 0
        parts = []
        for x in inputs:
            part = x[name].detach().cpu().to(torch.int64)
            if part.shape[1] < width:
                part = torch.nn.functional.pad(part, (0, width - part.shape[1]), value=fill)
            parts.append(part)
        feed[name] = torch.cat(parts, dim=0).numpy()
    return feed


def _load_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), use_fast=True)
    except (OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MtbertError(f"{folder}: the export's tokenizer files cannot be loaded ({reason[:200]})") from None
    if not getattr(tokenizer, "is_fast", False):
        raise MtbertError(f"{folder}: the export's tokenizer is not a fast tokenizer")
    return tokenizer


def _load_graph(path: Path) -> Any:
    """The graph at `path` (its weights left on disk when they are external), or one MtbertError."""
    from mtbert.distribution import install_hint

    try:
        import onnx
    except ImportError:
        raise MtbertError(f"running an ONNX export needs onnx and onnxruntime; {install_hint('onnx')}") from None
    if not path.is_file():
        raise MtbertError(f"{path}: the export's graph is missing")
    external = (path.parent / (path.name + ".data")).exists()
    try:
        return onnx.load(str(path), load_external_data=not external)
    except Exception as err:  # protobuf's DecodeError, onnx's errors: no common type
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MtbertError(f"{path}: not an ONNX graph (damaged or incomplete: {reason[:200]})") from None


def _session(path: Path, threads: int | None, graph: bytes | None = None) -> Any:
    """An ONNX Runtime CPU session of the graph at `path` (or of its part `graph`, serialized), with every graph
    optimization and torch's thread count."""
    from mtbert.distribution import install_hint

    try:
        import onnxruntime as ort
    except ImportError:
        raise MtbertError(f"running an ONNX export needs onnxruntime; {install_hint('onnx')}") from None
    if not path.is_file():
        raise MtbertError(f"{path}: the export's graph is missing")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.log_severity_level = 3  # errors only: no "removing initializer" lines on standard error
    try:
        return ort.InferenceSession(graph if graph is not None else str(path), options,
                                    providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types (InvalidGraph, Fail, ...)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MtbertError(f"{path}: ONNX Runtime cannot load the graph (damaged or incomplete: {reason[:200]})"
                          ) from None
