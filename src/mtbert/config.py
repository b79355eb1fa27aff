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
from mtbert.tasks import TaskSpec, task_from_config

PAIR_ARCHITECTURES = ("cross", "bi-cosine", "bi-concat")
POOLINGS = ("cls", "mean")
EVAL_STRATEGIES = ("epoch", "steps", "no")
STS_LOSSES = ("mse", "cosent")
DDP_MODES = ("exact", "local")
SURGERY_SCOPES = ("global", "per-layer")


@dataclass
class TrainConfig:
    """Every setting of a training run. See README for what each key does."""

    output_dir: str = "runs/default"
    model_name_or_path: str | None = None  # None: the bundled all-MiniLM-L6-v2
    data_dir: str | None = None  # None: $MTBERT_DATA, else ./data
    tasks: list[Any] = field(default_factory=lambda: ["sst", "para", "sts"])
    method: str = "sum"
    task_ratio: str | None = None
    sample_weighting: bool = False
    pair_architecture: str = "cross"
    pooling: str = "cls"
    dropout: float = 0.1
    max_length: int = 128
    per_device_train_batch_size: int = 16
    per_device_eval_batch_size: int = 64
    samples_per_task_per_epoch: int = 20000
    num_train_epochs: float = 10
    max_steps: int = -1
    learning_rate: float = 1e-5
    head_learning_rate: float | None = None  # None: same as learning_rate
    layerwise_lr_decay: float = 1.0
    weight_decay: float = 0.0
    warmup_steps: int = 0
    warmup_ratio: float = 0.0
    lr_scheduler_type: str = "linear"
    max_grad_norm: float = 1.0
    sts_loss: str = "mse"
    seed: int = 42
    logging_steps: int = 50
    eval_strategy: str = "epoch"
    eval_steps: int | None = None
    save_steps: int = 0
    save_total_limit: int | None = 2
    max_bad_steps: int = 5
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    max_predict_samples: int | None = None
    report_to: str = "none"
    bf16: str = "auto"
    ddp_mode: str = "exact"
    sampling: str = "fixed-ratio"
    sampling_temperature: float = 2.0
    surgery_scope: str = "global"
    smart_weight: float = 0.0
    smart_step_size: float = 1e-3
    smart_noise: float = 1e-5
    mlm_steps: int = 0
    mlm_learning_rate: float = 5e-5
    mlm_probability: float = 0.15
    trust_remote_code: bool = False
    two_step: dict[str, Any] | None = None

    # ---- derived views -------------------------------------------------------------------------
    def task_specs(self) -> list[TaskSpec]:
        return [task_from_config(entry, f"tasks[{i}]") for i, entry in enumerate(self.tasks)]

    def ratios(self) -> dict[str, int]:
        """Samples per step of each task, in units of per_device_train_batch_size."""
        names = [s.name for s in self.task_specs()]
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
    would be False)."""

    def resolve(self, kind, value, implicit):
        tag = super().resolve(kind, value, implicit)
        if kind is yaml.ScalarNode and implicit[0]:
            if ":" in value and tag.endswith((":int", ":float")):
                return "tag:yaml.org,2002:str"
            if tag.endswith(":bool") and value.lower() not in ("true", "false"):
                return "tag:yaml.org,2002:str"
        return tag


def safe_load(text: str) -> Any:
    """yaml.safe_load (no Python tags), with task ratios like `1:2:1` and words like `no` kept as strings."""
    return yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a SafeLoader subclass


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_HINTS = typing.get_type_hints(TrainConfig)
TWO_STEP_ONLY_KEYS = {"init_from", "keep_stage1"}
TWO_STEP_FORBIDDEN = {"tasks", "two_step", "output_dir", "data_dir", "model_name_or_path", "method", "task_ratio",
                      "mlm_steps", "mlm_learning_rate", "mlm_probability",
                      "pair_architecture", "pooling"}  # stage 2 keeps stage 1's model, so its architecture too


def _coerce(key: str, value: Any) -> Any:
    """Check and convert one value to its field's declared type; raise ConfigError naming the key."""
    hint = _HINTS[key.split(".")[-1]]
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
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
            return value
        try:
            number = float(value)
        except (ValueError, OverflowError):
            raise ConfigError(f"{key}: must be an integer, not {value!r}") from None
        if not math.isfinite(number) or number != int(number):
            raise ConfigError(f"{key}: must be an integer, not {value!r}")
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
                         ("report_to", ("none", "tensorboard")), ("bf16", ("auto", "true", "false"))):
        if getattr(cfg, key) not in allowed:
            raise bad(key, f"'{getattr(cfg, key)}' is not one of {' | '.join(allowed)}")
    if cfg.eval_strategy == "steps" and not cfg.eval_steps:
        raise bad("eval_steps", "must be set when eval_strategy is steps")
    from mtbert.methods.aggregators import AGGREGATORS
    from mtbert.methods.weighting import LOSS_WEIGHTINGS

    methods = ("single", *AGGREGATORS, *LOSS_WEIGHTINGS)
    if cfg.sampling_temperature <= 0:
        raise bad("sampling_temperature", f"must be positive, not {cfg.sampling_temperature}")
    if cfg.method not in methods:
        raise bad("method", f"'{cfg.method}' is not one of {' | '.join(methods)}")
    specs = cfg.task_specs()
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise bad("tasks", "task names must be unique")
    if cfg.method == "single" and len(specs) != 1:
        raise bad("method", f"single trains one task, but tasks lists {len(specs)}")
    cfg.ratios()


def build_config(raw: dict[str, Any], where: str = "config") -> TrainConfig:
    """Validate a mapping of keys and return the TrainConfig; unknown keys and bad values name the key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping of keys to values")
    values = {}
    for key, value in raw.items():
        if key not in _FIELDS:
            raise ConfigError(f"{key}: unknown config key (see `mtbert train --help` for the keys)")
        values[key] = _coerce(key, value)
    cfg = TrainConfig(**values)
    _check_values(cfg)
    if cfg.two_step is not None:
        keep = cfg.two_step.get("keep_stage1", False)
        if not isinstance(keep, bool):
            raise ConfigError(f"two_step.keep_stage1: must be true or false, not {keep!r}")
        if cfg.mlm_steps and cfg.two_step.get("init_from"):
            raise ConfigError("mlm_steps: has no effect with two_step.init_from (stage 1 is not trained); remove one")
        stage2 = stage2_config(cfg)
        _check_values(stage2, prefix="two_step.")
    return cfg


def stage2_config(cfg: TrainConfig) -> TrainConfig:
    """The settings of stage 2 of a two-step run: stage 1's, with the two_step overrides applied."""
    overrides = dict(cfg.two_step or {})
    for key in TWO_STEP_ONLY_KEYS:
        overrides.pop(key, None)
    values = cfg.to_dict()
    values["two_step"] = None
    for key, value in overrides.items():
        if key not in _FIELDS or key in TWO_STEP_FORBIDDEN:
            raise ConfigError(f"two_step.{key}: not a key that stage 2 can change")
        values[key] = _coerce(f"two_step.{key}", value)
    values["task_ratio"] = None
    return TrainConfig(**values)


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
    """Read a YAML config with safe_load, apply overrides, validate."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        mark = getattr(err, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: not valid YAML") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a mapping of keys to values")
    return build_config(merge(raw, overrides or {}), where=str(path))


def save_config(cfg: TrainConfig, path: Path) -> None:
    from mtbert.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
