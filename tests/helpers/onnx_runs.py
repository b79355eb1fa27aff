"""Finished-looking runs with random (not trivial) heads, for the ONNX export's tests."""

from __future__ import annotations

from pathlib import Path

import torch

from mtbert.config import build_config, save_config
from mtbert.io import atomic_write_json
from mtbert.model import MultiTaskModel, load_encoder

# a single-sentence regression task on the SST files (the sentiment class read as a value)
STARS = {"name": "stars", "kind": "single-regression", "train_file": "ids-sst-train.csv",
         "dev_file": "ids-sst-dev.csv", "text_columns": ["sentence"], "label_column": "sentiment",
         "label_min": 0.0, "label_max": 4.0}


def random_model(cfg, model_dir: Path, seed: int = 1) -> tuple[MultiTaskModel, object]:
    """The run's model with large random head weights, so that the tiny random encoder's small differences between
    inputs show in the outputs."""
    encoder, tokenizer = load_encoder(str(model_dir), 0.1)
    model = MultiTaskModel(encoder, cfg.task_specs(), cfg.pair_architecture, cfg.pooling, dropout=0.1)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.heads.named_parameters():
            if name.endswith(("scale", "shift")):
                continue
            if name.endswith("bias"):
                param.zero_()
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * 4 / param.shape[1] ** 0.5)
        if seed != 1:  # another checkpoint's encoder differs too
            for param in model.encoder.parameters():
                param.add_(torch.randn(param.shape, generator=generator) * 0.02)
    return model, tokenizer


def make_run(root: Path, model_dir: Path, data_dir: Path, architecture: str = "cross", pooling: str = "cls",
             tasks: tuple = ("sst", "para", "sts", STARS), two_step: bool = False) -> Path:
    """A run folder: config.yaml, results.json and best/ (and with `two_step`, tasks/<task>/best/ of each task but
    the first, each with an encoder of its own)."""
    cfg = build_config({"output_dir": str(root), "model_name_or_path": str(model_dir), "data_dir": str(data_dir),
                        "tasks": list(tasks), "pair_architecture": architecture, "pooling": pooling,
                        "max_length": 16, "per_device_eval_batch_size": 8})
    root.mkdir(parents=True)
    save_config(cfg, root / "config.yaml")
    model, tokenizer = random_model(cfg, model_dir)
    model.save_pretrained(root / "best", tokenizer)
    if two_step:
        for i, spec in enumerate(cfg.task_specs()[1:], start=2):
            other, _ = random_model(cfg, model_dir, seed=i)
            other.save_pretrained(root / "tasks" / spec.name / "best", tokenizer)
    atomic_write_json(root / "results.json", {"overall": 0.5})
    return root
