"""Parameter-efficient and partial fine-tuning of the shared encoder: LoRA (peft), frozen embeddings or layers,
and gradient checkpointing. Each is a function called once on a built `MultiTaskModel`, before the optimizer.

- `apply_lora(model, lora)` wraps the encoder in a peft `PeftModel` with a `LoraConfig` made from `lora` (peft's
  names: `r`, `lora_alpha`, `lora_dropout`, `target_modules`, ...): the encoder's trainable parameters are the
  adapters only (the heads stay trainable). `MultiTaskModel.save_pretrained` then writes the base encoder to
  `encoder/` and the adapters to `adapter/`; `from_pretrained` loads them back; `merge_lora` folds them in.
- `freeze_embeddings(model)`, `freeze_layers(model, n)`: `requires_grad = False` on the embeddings or on the
  lowest n encoder layers (parameters named `.layer.<i>.`, as in BERT, MiniLM, MPNet, RoBERTa, DistilBERT).
- `enable_gradient_checkpointing(model)`: the backbone's own activation (gradient) checkpointing, non-reentrant.

Gradient surgery runs over `MultiTaskModel.shared_parameters()`, the encoder parameters that require grad, so
the per-task buffer holds just what is trained.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from mtbert.errors import ConfigError

if TYPE_CHECKING:
    from mtbert.model.multitask import MultiTaskModel

ADAPTER_DIR = "adapter"  # a checkpoint's LoRA adapters (peft's adapter_config.json + adapter_model.safetensors)
LORA_KEYS = ("r", "lora_alpha", "lora_dropout", "target_modules", "bias", "use_rslora", "use_dora")
# default LoRA targets (the attention's query and value projections) for encoders peft has no default for
_TARGETS = {"mpnet": ["q", "v"], "distilbert": ["q_lin", "v_lin"]}
_LAYER = re.compile(r"(?:^|\.)layers?\.(\d+)\.")


def base_encoder(encoder: nn.Module) -> nn.Module:
    """The transformers model inside a peft wrapper (the encoder itself when it has no adapters)."""
    return encoder.get_base_model() if has_lora(encoder) else encoder


def has_lora(encoder: nn.Module) -> bool:
    """Whether the encoder is a peft model (carries adapters)."""
    from peft import PeftModel

    return isinstance(encoder, PeftModel)


def default_target_modules(encoder: nn.Module) -> list[str]:
    """The modules LoRA adapts by default: the attention's query and value projections of this architecture."""
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS

    model_type = getattr(encoder.config, "model_type", None)
    targets = _TARGETS.get(model_type) or PEFT_TARGETS.get(model_type)
    if not targets:
        raise ConfigError(f"lora.target_modules: no default for encoders of type '{model_type}'; name the modules "
                          "to adapt (e.g. the attention's query and value projections)")
    return list(targets)


def lora_config(lora: dict[str, Any], encoder: nn.Module):
    """A peft `LoraConfig` from the `lora:` settings, each checked (ConfigError naming the key)."""
    from peft import LoraConfig

    if not isinstance(lora, dict):
        raise ConfigError(f"lora: expected a mapping of LoraConfig settings ({', '.join(LORA_KEYS)}), not {lora!r}")
    unknown = sorted(set(lora) - set(LORA_KEYS))
    if unknown:
        raise ConfigError(f"lora.{unknown[0]}: unknown key (known: {', '.join(LORA_KEYS)})")
    settings = dict(lora)
    r = settings.setdefault("r", 8)
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise ConfigError(f"lora.r: must be a positive integer, not {r!r}")
    alpha = settings.setdefault("lora_alpha", r)
    if not isinstance(alpha, int | float) or isinstance(alpha, bool) or alpha <= 0:
        raise ConfigError(f"lora.lora_alpha: must be a positive number, not {alpha!r}")
    drop = settings.setdefault("lora_dropout", 0.0)
    if not isinstance(drop, int | float) or isinstance(drop, bool) or not 0 <= drop < 1:
        raise ConfigError(f"lora.lora_dropout: must be in [0, 1), not {drop!r}")
    targets = settings.get("target_modules")
    if targets is None:
        settings["target_modules"] = default_target_modules(encoder)
    elif isinstance(targets, str):
        settings["target_modules"] = targets if targets == "all-linear" else [t.strip() for t in targets.split(",")]
    elif not (isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets)):
        raise ConfigError(f"lora.target_modules: expected module names (a list or a comma-separated string), "
                          f"not {targets!r}")
    bias = settings.setdefault("bias", "none")
    if bias not in ("none", "all", "lora_only"):
        raise ConfigError(f"lora.bias: '{bias}' is not one of none | all | lora_only")
    for key in ("use_rslora", "use_dora"):
        if not isinstance(settings.setdefault(key, False), bool):
            raise ConfigError(f"lora.{key}: must be true or false, not {settings[key]!r}")
    return LoraConfig(**settings)


def apply_lora(model: MultiTaskModel, lora: dict[str, Any]) -> None:
    """Wrap `model.encoder` in LoRA adapters: afterwards only the adapters (and the heads) require grad."""
    from peft import get_peft_model

    if has_lora(model.encoder):
        raise ConfigError("lora: the model already carries LoRA adapters")
    config = lora_config(lora, model.encoder)
    try:
        model.encoder = get_peft_model(model.encoder, config)
    except ValueError as err:
        first = str(err).strip().splitlines()[0]
        raise ConfigError(f"lora.target_modules: {first}") from None


def merge_lora(model: MultiTaskModel) -> None:
    """Fold the LoRA adapters into the encoder's weights (peft's merge_and_unload); no-op without adapters."""
    if has_lora(model.encoder):
        model.encoder = model.encoder.merge_and_unload()


def freeze_embeddings(model: MultiTaskModel) -> None:
    """Stop training the encoder's embedding layer (word, position and token-type embeddings, their LayerNorm)."""
    frozen = [p for name, p in base_encoder(model.encoder).named_parameters() if _in_embeddings(name)]
    if not frozen:
        raise ConfigError("freeze_embeddings: the encoder has no parameters named embeddings.*")
    for p in frozen:
        p.requires_grad_(False)


def freeze_layers(model: MultiTaskModel, n: int) -> None:
    """Stop training the lowest `n` encoder layers (parameters named `.layer.<i>.` with i < n)."""
    total = getattr(base_encoder(model.encoder).config, "num_hidden_layers", None)
    if not isinstance(n, int) or isinstance(n, bool) or n < 0 or (total is not None and n > total):
        raise ConfigError(f"freeze_layers: must be an integer from 0 to the encoder's {total} layers, not {n!r}")
    if n == 0:
        return
    frozen = 0
    for name, p in base_encoder(model.encoder).named_parameters():
        match = _LAYER.search(name)
        if match and int(match.group(1)) < n:
            p.requires_grad_(False)
            frozen += 1
    if not frozen:
        raise ConfigError("freeze_layers: the encoder has no parameters named .layer.<i>. to freeze")


def enable_gradient_checkpointing(model: MultiTaskModel) -> None:
    """Recompute the encoder's activations in the backward pass (less memory, same gradients; non-reentrant)."""
    encoder = base_encoder(model.encoder)
    if not getattr(encoder, "supports_gradient_checkpointing", False):
        raise ConfigError(f"gradient_checkpointing: {type(encoder).__name__} does not support gradient checkpointing")
    kwargs = {"use_reentrant": False}
    if hasattr(encoder, "activation_checkpointing_enable"):  # newer transformers; the old name is deprecated
        encoder.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def trainable_summary(model: nn.Module) -> str:
    """`trainable 12,345 of 22,713,216 encoder parameters (0.05%)`: one line for the training log."""
    encoder = model.encoder
    total = sum(p.numel() for p in encoder.parameters())
    trained = sum(p.numel() for p in encoder.parameters() if p.requires_grad)
    return f"trainable {trained:,} of {total:,} encoder parameters ({100 * trained / max(total, 1):.2f}%)"


# ---- checkpoints (MultiTaskModel.save_pretrained / from_pretrained) ---------------------------------------------
def save_encoder(encoder: nn.Module, encoder_dir: Path, adapter_dir: Path) -> None:
    """Save the encoder as a plain transformers model to `encoder_dir`; a peft model's adapters to `adapter_dir`."""
    if not has_lora(encoder):
        encoder.save_pretrained(encoder_dir, safe_serialization=True)
        return
    base = encoder.get_base_model()
    state = {}
    for key, value in base.state_dict().items():
        if "lora_" in key:
            continue
        state[key.replace(".base_layer.", ".")] = value  # peft keeps an adapted Linear's weights in base_layer
    base.save_pretrained(encoder_dir, state_dict=state, safe_serialization=True)
    encoder.save_pretrained(adapter_dir)


def load_adapter(encoder: nn.Module, adapter_dir: Path) -> nn.Module:
    """The encoder with the LoRA adapters saved in `adapter_dir` (trainable), or itself when there are none."""
    if not (adapter_dir / "adapter_config.json").is_file():
        return encoder
    from peft import PeftModel

    return PeftModel.from_pretrained(encoder, str(adapter_dir), is_trainable=True)


def _in_embeddings(name: str) -> bool:
    return name.startswith("embeddings.")  # BertModel, MPNetModel, RobertaModel, DistilBertModel, ...
