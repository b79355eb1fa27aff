"""The run configuration: a typed dataclass loaded from YAML, with `--key value` overrides and validation.

Key names follow transformers' `TrainingArguments` wherever one exists.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mtbert.data.sampling import SAMPLING_STRATEGIES
from mtbert.errors import ConfigError
from mtbert.tasks import TaskSpec, check_input_groups, input_groups, task_from_config, task_streams

PAIR_ARCHITECTURES = ("cross", "bi-cosine", "bi-concat")
POOLINGS = ("cls", "mean")
EVAL_STRATEGIES = ("epoch", "steps", "no")
STS_LOSSES = ("mse", "cosent")
DDP_MODES = ("exact", "local")
SURGERY_SCOPES = ("global", "per-layer", "representation")
SURGERY_BUFFER_DTYPES = ("float32", "bfloat16")
# the names `mtbert.methods` implements (tests/unit/methods check the two agree) and the trackers of report_to
METHODS = ("single", "sum", "pcgrad", "cagrad", "gradvac", "imtl-g", "mgda", "upgrad", "aligned-mtl", "nash-mtl",
           "uncertainty", "famo")
SURGERY_METHODS = METHODS[1:-2]  # sum and the gradient-surgery methods: those that aggregate a per-task buffer
KNOWN_TRACKERS = ("tensorboard", "mlflow", "wandb")
HUB_STRATEGIES = ("end", "every_save", "checkpoint", "all_checkpoints")  # TrainingArguments' hub_strategy values


def key(default: Any, help: str) -> Any:
    """A config field with its `mtbert train --help` text (one source for the help and the validation)."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TwoStepSettings:
    """The `two_step` mapping, read once: stage 2's overrides of stage 1's keys, and the keys only two-step has."""

    overrides: dict[str, Any]
    init_from: str | None = None  # a finished run whose best model is stage 1 (stage 1 is not trained)
    keep_stage1: bool = False  # stage 1's model competes as step 0 of each task's stage 2

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> TwoStepSettings:
        keep = raw.get("keep_stage1", False)
        if not isinstance(keep, bool):
            raise ConfigError(f"two_step.keep_stage1: must be true or false, not {keep!r}")
        init_from = raw.get("init_from")
        if init_from is not None and not isinstance(init_from, str):
            raise ConfigError(f"two_step.init_from: must be a run folder, not {init_from!r}")
        overrides = {k: v for k, v in raw.items() if k not in TWO_STEP_ONLY_KEYS}
        return cls(overrides=overrides, init_from=init_from or None, keep_stage1=keep)


@dataclass
class TrainConfig:
    """Every setting of a training run; the documentation site's config reference (reference/config.md) lists
    each key with its help text."""

    output_dir: str = key("runs/default",
        'folder of the run (config.yaml, metrics.jsonl, best/, results.json, predictions/)')
    model_name_or_path: str | None = key(None,
        'any Hugging Face encoder, by hub name or local folder (default: bundled all-MiniLM-L6-v2)')
    data_dir: str | None = key(None, 'folder of the task files (default: $MTBERT_DATA, else ./data)')
    tasks: list[Any] = field(default_factory=lambda: ["sst", "para", "sts"], metadata={"help":
        'built-in task names (sst, para, sts) or mappings declaring your own task; a task\'s `input_group: NAME` '
        'makes the tasks of that group (same data and text_columns) one batch with one encoder pass per step, '
        'and its `loss_weight: W` (default 1.0) multiplies its loss'})
    method: str = key("sum",
        'single | sum | pcgrad | cagrad | gradvac | imtl-g | mgda | upgrad | aligned-mtl | nash-mtl (gradient'
        ' aggregation) | uncertainty | famo (loss weighting)')
    method_options: dict[str, Any] | None = key(None,
        "keyword options of the method, checked against it (cagrad: c; gradvac: beta, eps; nash-mtl: max_norm,"
        " update_weights_every, optim_niter; famo: lr, weight_decay, eps), e.g. `--method_options.c 0.4`")
    task_ratio: str | None = key(None,
        "samples per step of each task in units of the batch size, e.g. '0:3:1' (0 leaves a task out)")
    sample_weighting: bool = key(False,
        "scale each task's summed loss by 1/n_i (the CS224N report's sample-weighted PCGrad)")
    pair_architecture: str = key("cross", 'cross (one sequence with [SEP]) | bi-cosine | bi-concat')
    pooling: str = key("cls", 'cls | mean')
    dropout: float = key(0.1, 'dropout of the encoder and heads; 0 turns every dropout off')
    max_length: int = key(128, 'tokens per sequence; longer inputs are truncated')
    per_device_train_batch_size: int = key(16, 'samples of each task per step (times its ratio)')
    per_device_eval_batch_size: int = key(64, 'batch size of evaluation and prediction')
    samples_per_task_per_epoch: int = key(20000, 'samples of each task in an epoch (a smaller task cycles)')
    num_train_epochs: float = key(10, 'epochs to train')
    max_steps: int = key(-1, 'when > 0, the number of steps to train (overrides num_train_epochs)')
    learning_rate: float = key(1e-5, "AdamW learning rate of the encoder's top layer")
    head_learning_rate: float | None = key(None, 'learning rate of the heads (default: learning_rate)')
    layerwise_lr_decay: float = key(1.0,
        "each lower encoder layer's learning rate is this times the one above (1: off)")
    weight_decay: float = key(0.0, 'AdamW weight decay (not on biases and LayerNorm)')
    warmup_steps: int = key(0, 'linear warmup steps')
    warmup_ratio: float = key(0.0, 'warmup as a share of all steps')
    lr_scheduler_type: str = key("linear", 'transformers scheduler name (linear, cosine, constant, ...)')
    max_grad_norm: float = key(1.0, 'gradient clipping norm (0: off)')
    sts_loss: str = key("mse", 'mse | cosent (ranking loss plus mse) for regression tasks')
    seed: int = key(42, "seed of sampling, dropout, head initialisation and PCGrad's order")
    logging_steps: int = key(50, 'write train_log.jsonl (losses, gradient conflicts) every this many steps')
    eval_strategy: str = key("epoch", 'epoch | steps | no (the end of training is always evaluated)')
    eval_steps: int | None = key(None, 'evaluate every this many steps when eval_strategy is steps')
    save_steps: int = key(0, 'save a resumable checkpoint-<step>/ every this many steps (0: only at epoch ends)')
    save_total_limit: int | None = key(2, 'checkpoints to keep')
    max_bad_steps: int = key(5, 'stop after this many non-finite steps in a row')
    max_train_samples: int | None = key(None, 'use only the first N training rows of each task')
    max_eval_samples: int | None = key(None, 'use only the first N dev rows of each task')
    max_predict_samples: int | None = key(None, 'predict only the first N test rows of each task (for quick checks)')
    report_to: str | list[str] = key("none",
        'trackers: none | tensorboard | mlflow | wandb, or a list of them (`--report_to tensorboard,mlflow`)')
    bf16: str = key("auto", 'auto (GPU only) | true | false')
    ddp_mode: str = key("exact", 'exact (all-reduce per-task gradients, then aggregate) | local (aggregate per rank)')
    sampling: str = key("fixed-ratio",
        'fixed-ratio (task_ratio) | proportional | temperature | annealed: samples of each task per step')
    sampling_temperature: float = key(2.0, 'T of temperature sampling (shares proportional to size^(1/T))')
    surgery_scope: str = key("global",
        'global | per-layer: aggregate the tasks\' gradients of the whole shared encoder or of each encoder layer '
        'separately (exact: tasks of an input_group backpropagate one by one through their shared forward) | '
        'representation: aggregate the tasks\' gradients of the encoder\'s output hidden states, then one backward '
        'through the encoder (MGDA-UB; keeps every batch\'s graph until the aggregation)')
    tasks_per_step: int | None = key(None,
        "k: each step trains k of the active tasks, drawn by the sampling's shares (seeded, the same on every "
        "rank), surgery over those k (a k-row buffer); empty: every task every step")
    surgery_buffer_dtype: str = key("float32",
        "float32 | bfloat16: storage of the surgery's per-task gradient rows (bfloat16 halves the T x P buffer; "
        "the Gramian and the update still accumulate in float32)")
    smart_weight: float = key(0.0, "weight of SMART's smoothness penalty on each task's loss (0: off)")
    smart_step_size: float = key(1e-3, "SMART's ascent step and perturbation bound (max-norm, on the word embeddings)")
    smart_noise: float = key(1e-5, "std of SMART's initial Gaussian noise")
    mlm_steps: int = key(0, "masked-LM pretraining steps on the tasks' training sentences before fine-tuning (0: none)")
    mlm_learning_rate: float = key(5e-5, 'AdamW learning rate of the masked-LM pretraining')
    mlm_probability: float = key(0.15, 'share of tokens masked in masked-LM pretraining')
    trust_remote_code: bool = key(False, 'allow model code from the hub (off unless you set it)')
    gradient_accumulation_steps: int = key(1,
        "micro-batches per optimizer step: each task's gradient is accumulated over them, then aggregated once")
    metric_for_best_model: str = key("overall", "dev metric that picks best/ (overall, or e.g. sts_corr, sst_acc)")
    greater_is_better: bool | None = key(None, "whether a larger metric_for_best_model is better (default: true)")
    early_stopping_patience: int | None = key(None,
        "stop after this many evaluations without improvement of metric_for_best_model (default: never)")
    ema_decay: float | None = key(None,
        "keep an exponential moving average of the weights with this decay (e.g. 0.999), updated after every "
        "optimizer step; the average is what is evaluated and saved as best/ (default: none)")
    fp16: bool = key(False, "float16 mixed precision with a gradient scaler, on a CUDA GPU (steps whose gradients "
                     "overflow are skipped); bf16: auto trains in bfloat16 on a GPU")
    packing: bool = key(True,
        "lay each task batch out as packed rows with a block-diagonal attention mask (no padding); an encoder "
        "that cannot run them gets padded batches; false: padded batches")
    gradient_checkpointing: bool = key(False, "recompute activations in the backward pass (less memory, more time)")
    lora: dict[str, Any] | None = key(None,
        "LoRA adapters through peft (r, lora_alpha, lora_dropout, target_modules; {} for the defaults); surgery "
        "then runs over the adapters only")
    freeze_embeddings: bool = key(False, "keep the encoder's embeddings fixed")
    freeze_layers: int = key(0, "keep the lowest N encoder layers fixed")
    two_step: dict[str, Any] | None = key(None,
        'stage-2 settings (num_train_epochs, learning_rate, ..., init_from: RUN_DIR, keep_stage1: true)')
    push_to_hub: bool = key(False,
        "push the run's best model (best/ with its model card) to the Hub model repo hub_model_id, during training "
        "as hub_strategy says and at its end (a two-step run: its card, stage1/best/ and tasks/<task>/best/, as in "
        "the run folder); a failed push is retried, then reported with the command that pushes later, and never "
        "stops the training (the token: HF_TOKEN or `hf auth login`)")
    hub_model_id: str | None = key(None, "the Hub model repo to push to, owner/name (created if missing)")
    hub_strategy: str = key("every_save",
        "end (push once, when training ends) | every_save (also at each checkpoint save, in the background) | "
        "checkpoint (every_save plus the checkpoint in last-checkpoint/) | all_checkpoints (every_save plus each "
        "checkpoint in its own checkpoint-<step>/)")
    hub_private_repo: bool | None = key(None,
        "create the repo private (default: the Hub's default, public); an existing repo keeps its visibility")


    def __post_init__(self) -> None:
        """Check and convert every value as a YAML file's are: a bad one is a ConfigError naming its key."""
        for name in _FIELDS:
            setattr(self, name, _coerce(name, getattr(self, name)))
        _check_config(self)

    # ---- derived views -------------------------------------------------------------------------
    def task_specs(self) -> list[TaskSpec]:
        return [task_from_config(entry, f"tasks[{i}]") for i, entry in enumerate(self.tasks)]

    @property
    def two_step_settings(self) -> TwoStepSettings | None:
        """`two_step` read as typed settings (None for a one-stage run)."""
        return None if self.two_step is None else TwoStepSettings.parse(self.two_step)

    def ratios(self) -> dict[str, int]:
        """Samples per step of each task, in units of per_device_train_batch_size (task_ratio parsed once)."""
        names = [s.name for s in self.task_specs()]
        cache_key = (self.task_ratio, tuple(names))
        cached = self.__dict__.get("_ratios")
        if cached is not None and cached[0] == cache_key:
            return dict(cached[1])
        ratios = self._parse_ratios(names)
        self.__dict__["_ratios"] = (cache_key, ratios)
        return dict(ratios)

    def _parse_ratios(self, names: list[str]) -> dict[str, int]:
        if self.task_ratio is None:
            return {n: 1 for n in names}
        parts = str(self.task_ratio).split(":")
        if len(parts) != len(names):
            raise ConfigError(
                f"task_ratio: '{self.task_ratio}' has {len(parts)} parts but there are {len(names)} tasks "
                f"({', '.join(names)})"
            )
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise ConfigError(f"task_ratio: '{self.task_ratio}' must be non-negative integers joined by ':'") from None
        if any(v < 0 for v in values) or sum(values) == 0:
            raise ConfigError(f"task_ratio: '{self.task_ratio}' must be non-negative integers, not all 0")
        return dict(zip(names, values, strict=True))

    def resolved_data_dir(self) -> Path:
        return Path(self.data_dir or os.environ.get("MTBERT_DATA") or "data")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _SafeLoader(yaml.SafeLoader):
    """yaml.safe_load's loader with YAML 1.2 scalars where 1.1 surprises: `1:2:1` stays a string (1.1 reads the
    base-60 number 3721) and only true/false are booleans (1.1 also reads no/yes/on/off, so `eval_strategy: no`
    would be False).

    It also refuses, as `_SafeLoader.Refused` (a YAML error with the line), what no config needs and what
    would cost unbounded time or memory: more than MAX_BYTES of text, nesting deeper than MAX_DEPTH, more
    than MAX_VALUES values, aliases that expand to more than MAX_VALUES values ("billion laughs") or refer to
    themselves, integers beyond 64 bits and floats that overflow to infinity (an explicit `.inf` stays
    allowed)."""

    MAX_BYTES = 256 * 1024
    MAX_DEPTH = 64
    MAX_VALUES = 2_000
    MAX_INT = 2**63 - 1

    class Refused(yaml.MarkedYAMLError):
        """A document refused by one of the loader's limits."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def resolve(self, kind, value, implicit):
        tag = super().resolve(kind, value, implicit)
        if kind is yaml.ScalarNode and implicit[0]:
            if ":" in value and tag.endswith((":int", ":float")):
                return "tag:yaml.org,2002:str"
            if tag.endswith(":bool") and value.lower() not in ("true", "false"):
                return "tag:yaml.org,2002:str"
        return tag

    def fetch_flow_collection_start(self, TokenClass):  # noqa: N803 - PyYAML's name
        if self.flow_level >= self.MAX_DEPTH:  # the scanner would look ahead to the matching bracket, slowly
            raise self.Refused(problem=f"nested more than {self.MAX_DEPTH} levels deep", problem_mark=self.get_mark())
        super().fetch_flow_collection_start(TokenClass)

    def compose_node(self, parent, index):
        self._depth += 1
        self._nodes += 1
        try:
            if self._nodes > self.MAX_VALUES:
                raise self.Refused(problem=f"more than {self.MAX_VALUES:,} values (a config has a few dozen)",
                                   problem_mark=self.peek_event().start_mark)
            if self._depth > self.MAX_DEPTH:
                raise self.Refused(problem=f"nested more than {self.MAX_DEPTH} levels deep",
                                   problem_mark=self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self):
        node = super().compose_document()
        self._count_values(node, {}, set())
        return node

    def _count_values(self, node, sizes: dict[int, int], open_nodes: set[int]) -> int:
        """The values `node` stands for with every alias expanded (each node counted once, in document order)."""
        key = id(node)
        if key in sizes:
            size = sizes[key]
        elif key in open_nodes:
            raise self.Refused(problem="an alias refers to the value that contains it", problem_mark=node.start_mark)
        else:
            open_nodes.add(key)
            size = 1
            if isinstance(node, yaml.SequenceNode):
                size += sum(self._count_values(item, sizes, open_nodes) for item in node.value)
            elif isinstance(node, yaml.MappingNode):
                size += sum(self._count_values(k, sizes, open_nodes) + self._count_values(v, sizes, open_nodes)
                            for k, v in node.value)
            open_nodes.discard(key)
            sizes[key] = size
        if size > self.MAX_VALUES:
            raise self.Refused(problem=f"its aliases expand to more than {self.MAX_VALUES:,} values (an alias bomb?)",
                               problem_mark=node.start_mark)
        return size

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):  # a key given twice: YAML's last-one-wins would hide the first
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    name = key_node.value
                    if name in first_line:
                        raise self.Refused(problem=f"the key {name[:40]!r} is given twice (first on line "
                                           f"{first_line[name]}); keep one", problem_mark=key_node.start_mark)
                    first_line[name] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node):
        digits = str(node.value).replace("_", "").lstrip("+-")
        value = super().construct_yaml_int(node) if len(digits) <= 40 else None
        if value is None or abs(value) > self.MAX_INT:
            raise self.Refused(problem=f"the integer {str(node.value)[:24]}{'...' if len(node.value) > 24 else ''} "
                               "is too large (more than 64 bits)", problem_mark=node.start_mark)
        return value

    def construct_yaml_float(self, node):
        value = super().construct_yaml_float(node)
        if math.isinf(value) and str(node.value).lower().lstrip("+-") != ".inf":
            raise self.Refused(problem=f"the number {str(node.value)[:24]} overflows to infinity (write .inf for "
                               "infinity)", problem_mark=node.start_mark)
        return value

    yaml_constructors = {**yaml.SafeLoader.yaml_constructors, "tag:yaml.org,2002:int": construct_yaml_int,
                         "tag:yaml.org,2002:float": construct_yaml_float}


def safe_load(text: str) -> Any:
    """yaml.safe_load (no Python tags), with task ratios like `1:2:1` and words like `no` kept as strings.

    Raises `_SafeLoader.Refused` (a yaml.YAMLError) for what the loader's limits refuse.
    """
    if len(text) > _SafeLoader.MAX_BYTES:
        raise _SafeLoader.Refused(problem=f"longer than {_SafeLoader.MAX_BYTES // 1024} KiB (a config is a short "
                                  "YAML file)")
    return yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a SafeLoader subclass


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_HINTS = typing.get_type_hints(TrainConfig)
TWO_STEP_ONLY_KEYS = {"init_from", "keep_stage1"}
TWO_STEP_FORBIDDEN = {"tasks", "two_step", "output_dir", "data_dir", "model_name_or_path", "method", "task_ratio",
                      "method_options",
                      "mlm_steps", "mlm_learning_rate", "mlm_probability",
                      "pair_architecture", "pooling",  # stage 2 keeps stage 1's model, so its architecture too
                      "push_to_hub", "hub_model_id", "hub_strategy", "hub_private_repo"}  # a run's, not a stage's


def _coerce(key: str, value: Any) -> Any:
    """Check and convert one value to its field's declared type; raise ConfigError naming the key."""
    hint = _HINTS[key.split(".")[-1]]
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        hint = next((a for a in options if isinstance(value, list) and typing.get_origin(a) is list), options[0])
        origin = typing.get_origin(hint)
    if value is None:
        raise ConfigError(f"{key}: must not be empty")
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"{key}: must be true or false, not {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int | str | float):
            raise ConfigError(f"{key}: must be an integer, not {value!r}")
        if isinstance(value, int):
            if abs(value) > _SafeLoader.MAX_INT:
                raise ConfigError(f"{key}: {str(value)[:24]} is too large (more than 64 bits)")
            return value
        try:
            number = float(value)
        except (ValueError, OverflowError):
            raise ConfigError(f"{key}: must be an integer, not {value!r}") from None
        if not math.isfinite(number) or number != int(number):
            raise ConfigError(f"{key}: must be an integer, not {value!r}")
        if abs(number) > _SafeLoader.MAX_INT:  # the YAML loader's limit, for --key value too
            raise ConfigError(f"{key}: {str(value)[:24]} is too large (more than 64 bits)")
        return int(number)
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: must be a number, not {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{key}: must be a number, not {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{key}: must be a finite number, not {value!r}")
        return number
    if hint is str:
        if isinstance(value, bool) and key.split(".")[-1] == "bf16":  # `bf16: true` in YAML is a boolean
            return str(value).lower()
        if isinstance(value, bool | dict | list):
            raise ConfigError(f"{key}: must be a string, not {value!r}")
        return str(value)
    if origin is list:
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{key}: must be a non-empty list")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: must be a mapping of keys to values")
        return value
    return value


# Upper bounds of the size keys: far above any real run, low enough that a typo fails here in one sentence
# instead of filling the memory or starting a run of 10^19 steps.
MAX_BATCH = 65_536  # samples of one task in one forward pass (per_device_*_batch_size times the task's ratio)
MAX_STEP_SAMPLES = 1 << 24  # samples of one task in one optimizer step (with gradient accumulation)
MAX_STEPS = 1_000_000_000  # optimizer steps of a stage (max_steps, or the epochs' steps), masked-LM steps
MAX_LENGTH = 1 << 16  # tokens per sequence, whatever the encoder (its own limit: check_model_limits)
MAX_SEED = 2**32 - 1  # the seeds every RNG here accepts (numpy's range)
MAX_LORA_RANK = 4096  # a LoRA rank beyond the hidden size adds nothing


def check_sizes(cfg: TrainConfig, prefix: str = "") -> None:
    """Refuse a size key beyond what any run can use (one ConfigError naming the key and the bound)."""
    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"{prefix}{key}: {why}")

    for key in ("per_device_train_batch_size", "per_device_eval_batch_size"):
        if getattr(cfg, key) > MAX_BATCH:
            raise bad(key, f"{getattr(cfg, key)} is more than {MAX_BATCH:,} samples per batch")
    if cfg.max_length > MAX_LENGTH:
        raise bad("max_length", f"{cfg.max_length} is more than {MAX_LENGTH:,} tokens (and than any encoder's "
                  "positions)")
    if not 0 <= cfg.seed <= MAX_SEED:
        raise bad("seed", f"must be in 0..{MAX_SEED}, not {cfg.seed}")
    if cfg.gradient_accumulation_steps > MAX_BATCH:
        raise bad("gradient_accumulation_steps", f"{cfg.gradient_accumulation_steps} is more than {MAX_BATCH:,}")
    for key in ("max_steps", "mlm_steps"):
        if getattr(cfg, key) > MAX_STEPS:
            raise bad(key, f"{getattr(cfg, key)} is more than {MAX_STEPS:,} steps")
    rank = cfg.lora.get("r") if isinstance(cfg.lora, dict) else None
    if isinstance(rank, int) and not isinstance(rank, bool) and rank > MAX_LORA_RANK:
        raise bad("lora.r", f"{rank} is more than {MAX_LORA_RANK:,} (a rank beyond the hidden size adds nothing)")
    top = max(cfg.ratios().values())
    if cfg.per_device_train_batch_size * top > MAX_BATCH:
        raise bad("task_ratio", f"'{cfg.task_ratio}' times per_device_train_batch_size "
                  f"{cfg.per_device_train_batch_size} is {cfg.per_device_train_batch_size * top:,} samples of one task "
                  f"per batch, more than {MAX_BATCH:,}")
    unit = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    if unit * top > MAX_STEP_SAMPLES:
        raise bad("gradient_accumulation_steps", f"{cfg.gradient_accumulation_steps} micro-batches of "
                  f"{cfg.per_device_train_batch_size * top:,} samples are more than {MAX_STEP_SAMPLES:,} samples of "
                  "one task per step")
    if cfg.max_steps <= 0:
        per_epoch = math.ceil(cfg.samples_per_task_per_epoch / unit)
        steps = per_epoch * cfg.num_train_epochs
        if steps > MAX_STEPS:
            raise bad("samples_per_task_per_epoch" if per_epoch > MAX_STEPS else "num_train_epochs",
                      f"{cfg.num_train_epochs:g} epochs of {cfg.samples_per_task_per_epoch:,} samples per task make "
                      f"about {steps:.3g} steps, more than {MAX_STEPS:,}; set max_steps or lower them")


def check_model_limits(cfg: TrainConfig, positions: int | None, model: str, prefix: str = "") -> None:
    """Refuse a max_length beyond the encoder's positions (`positions`: `encoder_positions`; None: unknown)."""
    if positions is not None and cfg.max_length > positions:
        raise ConfigError(f"{prefix}max_length: {cfg.max_length} is more than the {positions} token positions of "
                          f"the encoder {model}; give at most {positions}")


def config_positions(config: Any) -> int | None:
    """The positions of a transformers model config: max_position_embeddings, less the padding offset of
    RoBERTa-style models (their position ids start after the padding index); None when it has none."""
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int) or positions <= 0:
        return None
    if getattr(config, "model_type", None) in ("roberta", "xlm-roberta", "camembert", "mpnet", "longformer",
                                                "data2vec-text"):
        positions -= (getattr(config, "pad_token_id", None) or 0) + 1
    return positions if positions > 0 else None


def encoder_positions(name_or_path: str, trust_remote_code: bool = False) -> int | None:
    """The longest sequence the encoder at `name_or_path` takes: its position embeddings (less the padding offset
    of RoBERTa-style models), or its tokenizer's model_max_length when smaller; None when neither is known."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        return None  # the backbone check says why it cannot be loaded
    positions = config_positions(config)
    if positions is None:
        return None
    tokenizer_config = Path(name_or_path) / "tokenizer_config.json"
    if tokenizer_config.is_file():
        import json

        try:
            limit = json.loads(tokenizer_config.read_text(encoding="utf-8")).get("model_max_length")
        except (OSError, ValueError, AttributeError):
            limit = None
        if isinstance(limit, int | float) and 0 < limit < positions:
            positions = int(limit)
    return positions


def ema_decay_problem(decay: float | None) -> str | None:
    """Why `decay` is no `ema_decay` (None: no average, else strictly between 0 and 1), or None when it is one."""
    if decay is None or 0.0 < decay < 1.0:
        return None
    return f"must be between 0 and 1 (e.g. 0.999), not {decay}"


def _check_values(cfg: TrainConfig, prefix: str = "") -> None:
    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"{prefix}{key}: {why}")

    for key in ("per_device_train_batch_size", "per_device_eval_batch_size", "samples_per_task_per_epoch",
                "max_length", "logging_steps", "max_bad_steps"):
        if getattr(cfg, key) <= 0:
            raise bad(key, f"must be a positive integer, not {getattr(cfg, key)}")
    for key in ("max_train_samples", "max_eval_samples", "max_predict_samples", "eval_steps", "save_total_limit"):
        value = getattr(cfg, key)
        if value is not None and value <= 0:
            raise bad(key, f"must be a positive integer or empty, not {value}")
    if cfg.max_length < 8:
        raise bad("max_length", "must be at least 8 tokens")
    if cfg.num_train_epochs <= 0 and cfg.max_steps <= 0:
        raise bad("num_train_epochs", "must be positive (or set max_steps)")
    if cfg.learning_rate <= 0:
        raise bad("learning_rate", f"must be positive, not {cfg.learning_rate}")
    if cfg.head_learning_rate is not None and cfg.head_learning_rate <= 0:
        raise bad("head_learning_rate", f"must be positive, not {cfg.head_learning_rate}")
    if not 0 < cfg.layerwise_lr_decay <= 1:
        raise bad("layerwise_lr_decay", f"must be in (0, 1], not {cfg.layerwise_lr_decay}")
    if cfg.weight_decay < 0:
        raise bad("weight_decay", f"must be >= 0, not {cfg.weight_decay}")
    if cfg.warmup_steps < 0:
        raise bad("warmup_steps", f"must be >= 0, not {cfg.warmup_steps}")
    if not 0 <= cfg.warmup_ratio < 1:
        raise bad("warmup_ratio", f"must be in [0, 1), not {cfg.warmup_ratio}")
    if cfg.max_grad_norm < 0:
        raise bad("max_grad_norm", "must be >= 0 (0 turns clipping off)")
    if not 0 <= cfg.dropout < 1:
        raise bad("dropout", f"must be in [0, 1), not {cfg.dropout}")
    for key in ("smart_weight", "smart_noise"):
        if getattr(cfg, key) < 0:
            raise bad(key, f"must be >= 0, not {getattr(cfg, key)}")
    if cfg.smart_step_size <= 0:
        raise bad("smart_step_size", f"must be positive, not {cfg.smart_step_size}")
    if cfg.mlm_steps < 0:
        raise bad("mlm_steps", f"must be >= 0 (0: no masked-LM pretraining), not {cfg.mlm_steps}")
    if cfg.mlm_learning_rate <= 0:
        raise bad("mlm_learning_rate", f"must be positive, not {cfg.mlm_learning_rate}")
    if not 0 < cfg.mlm_probability < 1:
        raise bad("mlm_probability", f"must be in (0, 1), not {cfg.mlm_probability}")
    if cfg.save_steps < 0:
        raise bad("save_steps", "must be >= 0 (0 saves no periodic checkpoint)")
    for key, allowed in (("pair_architecture", PAIR_ARCHITECTURES), ("pooling", POOLINGS),
                         ("eval_strategy", EVAL_STRATEGIES), ("sts_loss", STS_LOSSES), ("ddp_mode", DDP_MODES),
                         ("sampling", SAMPLING_STRATEGIES), ("surgery_scope", SURGERY_SCOPES),
                         ("surgery_buffer_dtype", SURGERY_BUFFER_DTYPES),
                         ("bf16", ("auto", "true", "false"))):
        if getattr(cfg, key) not in allowed:
            raise bad(key, f"'{getattr(cfg, key)}' is not one of {' | '.join(allowed)}")
    parse_report_to(cfg.report_to)
    if cfg.freeze_layers < 0:
        raise bad("freeze_layers", f"must be >= 0, not {cfg.freeze_layers}")
    if cfg.gradient_accumulation_steps <= 0:
        raise bad("gradient_accumulation_steps", f"must be a positive integer, not {cfg.gradient_accumulation_steps}")
    if cfg.early_stopping_patience is not None and cfg.early_stopping_patience <= 0:
        raise bad("early_stopping_patience", f"must be a positive integer or empty, not {cfg.early_stopping_patience}")
    if (problem := ema_decay_problem(cfg.ema_decay)) is not None:
        raise bad("ema_decay", problem)
    if cfg.fp16 and cfg.bf16 == "true":
        raise bad("fp16", "cannot be combined with bf16: true; choose one")
    check_input_groups(cfg.task_specs())
    metrics = ("overall", *(s.metric_key for s in cfg.task_specs()), *group_metric_keys(cfg.task_specs()))
    if cfg.metric_for_best_model not in metrics:
        raise bad("metric_for_best_model", f"'{cfg.metric_for_best_model}' is not one of {' | '.join(metrics)}")
    if cfg.eval_strategy == "steps" and not cfg.eval_steps:
        raise bad("eval_steps", "must be set when eval_strategy is steps")
    if cfg.sampling_temperature <= 0:
        raise bad("sampling_temperature", f"must be positive, not {cfg.sampling_temperature}")
    if cfg.method not in METHODS:
        raise bad("method", f"'{cfg.method}' is not one of {' | '.join(METHODS)}")
    for name, value in (cfg.method_options or {}).items():  # which options the method takes: check_method_options
        if not isinstance(name, str):
            raise bad("method_options", f"option names must be words, not {name!r}")
        if isinstance(value, dict | list) or value is None:
            raise bad(f"method_options.{name}", f"must be a single value, not {value!r}")
    specs = cfg.task_specs()
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise bad("tasks", "task names must be unique")
    if cfg.method == "single" and len(specs) != 1:
        raise bad("method", f"single trains one task, but tasks lists {len(specs)}")
    ratios = cfg.ratios()
    for group, members in input_groups(specs).items():
        if len({ratios[s.name] for s in members}) > 1:
            raise bad("task_ratio", f"'{cfg.task_ratio}' gives the tasks of input_group '{group}' different ratios; "
                      "they share their examples, so give them the same")
    if cfg.surgery_scope == "representation" and cfg.smart_weight:
        raise bad("smart_weight", "SMART's penalty reaches the encoder through a second forward pass, not through "
                  "the hidden states that surgery_scope representation aggregates; use surgery_scope global")
    check_sizes(cfg, prefix)
    check_hub_keys(cfg, prefix)
    if cfg.tasks_per_step is not None:
        if cfg.method not in SURGERY_METHODS:
            raise bad("tasks_per_step", f"works with the gradient-surgery methods and sum, not {cfg.method}")
        streams = task_streams(specs)
        active = sum(1 for tasks in streams.values() if ratios[tasks[0]] > 0)
        if not 1 <= cfg.tasks_per_step <= active:
            raise bad("tasks_per_step", f"must be between 1 and the {active} active tasks, not {cfg.tasks_per_step} "
                      "(the tasks of an input_group count as one)")


def group_metric_keys(specs: list[TaskSpec]) -> list[str]:
    """The metrics of the input groups whose tasks all judge each example right or wrong: `<group>_frame_acc`."""
    import numpy as np

    empty = np.zeros(0)
    return [f"{group}_frame_acc" for group, members in input_groups(specs).items()
            if all(s.task_kind.example_correct(s, empty, empty) is not None for s in members)]


def check_hub_keys(cfg: TrainConfig, prefix: str = "") -> None:
    """push_to_hub's keys: a known hub_strategy, and a valid hub_model_id when pushing (one ConfigError)."""
    if cfg.hub_strategy not in HUB_STRATEGIES:
        raise ConfigError(f"{prefix}hub_strategy: '{cfg.hub_strategy}' is not one of {' | '.join(HUB_STRATEGIES)}")
    if cfg.hub_model_id is not None and not is_repo_id(cfg.hub_model_id):
        raise ConfigError(f"{prefix}hub_model_id: {cfg.hub_model_id!r} is not a Hub repo id; give owner/name "
                          "(letters, digits, '-', '_' and '.', at most 96 characters, no '--' or '..')")
    if not cfg.push_to_hub:
        return
    if cfg.hub_model_id is None:
        raise ConfigError(f"{prefix}hub_model_id: must be set when push_to_hub is true (the Hub model repo to push "
                          "to, owner/name)")


def is_repo_id(text: str) -> bool:
    """Whether `text` is a Hub repo id of the form owner/name (huggingface_hub's rules)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return text.count("/") == 1


def build_config(raw: dict[str, Any], where: str = "config") -> TrainConfig:
    """Validate a mapping of keys and return the TrainConfig; unknown keys and bad values name the key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping of keys to values")
    for key in raw:
        if key == "hub_token":  # TrainingArguments has it; a token in the config would be saved with the run
            raise ConfigError("hub_token: not a config key, because the config is saved in the run folder and the "
                              "model card; set HF_TOKEN or log in with `hf auth login`")
        if key not in _FIELDS:
            raise ConfigError(f"{key}: unknown config key (see `mtbert train --help` for the keys)")
    return TrainConfig(**raw)  # checked on construction (`_check_config`)


def _check_config(cfg: TrainConfig) -> None:
    """Every check of a whole config: its values, then stage 2's settings of a two-step run."""
    _check_values(cfg)
    settings = cfg.two_step_settings
    if settings is not None:
        if cfg.mlm_steps and settings.init_from:
            raise ConfigError("mlm_steps: has no effect with two_step.init_from (stage 1 is not trained); remove one")
        stage2_config(cfg)  # checked on construction, its errors prefixed with `two_step.`


def stage2_config(cfg: TrainConfig) -> TrainConfig:
    """The settings of stage 2 of a two-step run: stage 1's, with the two_step overrides applied."""
    settings = cfg.two_step_settings
    overrides = settings.overrides if settings is not None else {}
    values = cfg.to_dict()
    values["two_step"] = None
    for key, value in overrides.items():
        if key not in _FIELDS or key in TWO_STEP_FORBIDDEN:
            raise ConfigError(f"two_step.{key}: not a key that stage 2 can change")
        values[key] = _coerce(f"two_step.{key}", value)
    values["task_ratio"] = None
    try:
        return TrainConfig(**values)
    except ConfigError as err:
        raise ConfigError(f"two_step.{err}") from None


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn `--key value` command-line pairs into a nested mapping (dots nest: --two_step.learning_rate 3e-6)."""
    out: dict[str, Any] = {}
    pairs = [part for item in pairs for part in (item.split("=", 1) if item.startswith("--") and "=" in item
                                                 else [item])]  # --key=value is --key value
    if len(pairs) % 2:
        raise ConfigError(f"{pairs[-1]}: an override needs a value (--key value)")
    for flag, text in zip(pairs[0::2], pairs[1::2], strict=True):
        if not flag.startswith("--") or len(flag) < 3:
            raise ConfigError(f"{flag}: expected an option of the form --key value")
        key = flag[2:].replace("-", "_") if flag[2:] not in _FIELDS else flag[2:]
        try:
            value = safe_load(text)
        except yaml.YAMLError:
            value = text
        target = out
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"{'.'.join(parts[: i + 1])}: cannot be both a value and a mapping of nested keys")
        if isinstance(target.get(parts[-1]), dict):
            raise ConfigError(f"{key}: cannot be both a value and a mapping of nested keys")
        target[parts[-1]] = value
    return out


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML config with safe_load, apply overrides, validate.

    Any file that cannot be a config (a folder, unreadable, over 256 KiB, not UTF-8, not YAML, refused by the
    loader's limits) is one ConfigError naming the path and, where there is one, the line.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not a config file (give the YAML file)")
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    limit = _SafeLoader.MAX_BYTES
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as err:
        raise ConfigError(f"{path}: cannot be read ({err.strerror or err})") from None
    if len(data) > limit:
        raise ConfigError(f"{path}: larger than {limit // 1024} KiB, so not a config (a config is a short YAML file)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid YAML") from None  # YAML files are UTF-8
    try:
        raw = safe_load(text) or {}
    except _SafeLoader.Refused as err:
        mark = err.problem_mark
        line = f", line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: refused: {err.problem}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        position = getattr(err, "position", None)  # a ReaderError: a character YAML does not allow
        line = f", line {mark.line + 1}" if mark else (f", line {text.count(chr(10), 0, position) + 1}"
                                                       if isinstance(position, int) else "")
        raise ConfigError(f"{path}{line}: not valid YAML") from None
    except RecursionError:
        raise ConfigError(f"{path}: refused: nested too deeply") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a mapping of keys to values")
    return build_config(merge(raw, overrides or {}), where=str(path))


def parse_report_to(value: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """The trackers named by `report_to`: a name, a list of names (or a comma-separated string, as on the command
    line: `--report_to tensorboard,mlflow`), `none` or an empty list (no tracker).

    Raises ConfigError naming an unknown tracker; duplicates are dropped, the order kept.
    """
    if value is None:
        return []
    names = value.split(",") if isinstance(value, str) else list(value)
    if not all(isinstance(n, str) for n in names):
        raise ConfigError(f"report_to: expected a tracker name or a list of names, not {value!r}")
    names = [n.strip().lower() for n in names if n.strip()]
    if names in (["none"], []):
        return []
    for name in names:
        if name not in KNOWN_TRACKERS:
            raise ConfigError(f"report_to: '{name}' is not one of none | {' | '.join(KNOWN_TRACKERS)}")
    return list(dict.fromkeys(names))


def save_config(cfg: TrainConfig, path: Path) -> None:
    from mtbert.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
