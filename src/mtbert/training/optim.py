"""The optimizer of a stage: AdamW with parameter groups for weight decay and per-layer learning-rate decay."""

from __future__ import annotations

import torch
from torch import nn

from mtbert.config import TrainConfig


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over `param_groups`, with torch's fused kernel on CPU and CUDA (what Trainer's adamw_torch_fused runs)."""
    fused = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(param_groups(model, cfg), lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                             fused=fused or None)


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """AdamW groups: no weight decay on biases and LayerNorm; per-layer learning-rate decay in the encoder.

    Depth counts from the top layer (0) down to the embeddings (num_hidden_layers); the pooler and parameters
    shared by every layer (MPNet's relative attention bias) are at depth 0.
    """
    layers = getattr(model.encoder.config, "num_hidden_layers", 0)
    groups: dict[tuple[float, float], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = 0.0 if (p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name) else cfg.weight_decay
        if name.startswith(("heads.", "loss_weighting.")):
            lr = cfg.head_learning_rate or cfg.learning_rate
        else:
            depth = layers  # embeddings sit below layer 0
            for i in range(layers):
                if f".layer.{i}." in name or f".layers.{i}." in name:
                    depth = layers - 1 - i
            if "pooler" in name or "relative_attention_bias" in name:
                depth = 0
            lr = cfg.learning_rate * cfg.layerwise_lr_decay**depth
        groups.setdefault((lr, decay), []).append(p)
    return [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]
