"""`mtbert train`: check every input, hold the run folder, optionally pretrain the backbone, then train one stage
or two (two-step)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from mtbert.config import TrainConfig, save_config
from mtbert.data.loading import DATA_HELP, read_split, resolve_labels
from mtbert.distributed import start as start_ranks
from mtbert.errors import DataError, MtbertError
from mtbert.evaluation.finished import usable_examples
from mtbert.methods.method import check_method_options
from mtbert.model.multitask import check_backbone
from mtbert.runs.layout import LOCK, RunDir
from mtbert.runs.lock import RunLock
from mtbert.training.mlm import pretrain_mlm
from mtbert.training.stage import ModelStart, train_stage
from mtbert.training.two_step import resolve_best, train_two_step


def train(cfg: TrainConfig, resume_from_checkpoint: str | None = None, overwrite_output_dir: bool = False) -> dict:
    """Run a training job (one stage, or two with `two_step`) and return the final dev metrics.

    Nothing is written before the config, the data and the backbone are checked; a live run that holds the
    folder refuses a second one.
    """
    run = RunDir(cfg.output_dir)
    ranks = start_ranks(cfg.ddp_mode)
    ranks.main_only(check_inputs, cfg)
    with RunLock(run.root, ranks if ranks.distributed else None):
        ranks.main_only(prepare_output_dir, run.root, resume_from_checkpoint, overwrite_output_dir)
        if ranks.is_main:
            save_config(cfg, run.config)
        backbone = None
        settings = cfg.two_step_settings
        if cfg.mlm_steps and not (settings and settings.init_from):  # optional: a further pretrained encoder
            backbone = ranks.main_only(pretrain_mlm, cfg, run.mlm, ranks.device)
        if settings is None:
            start = ModelStart(backbone=str(backbone) if backbone is not None else None)
            return train_stage(cfg, run.root, start, resume_from_checkpoint=resume_from_checkpoint)
        return train_two_step(cfg, run.root, resume_from_checkpoint, backbone)


def check_inputs(cfg: TrainConfig) -> None:
    """Every input a run reads, checked before it writes: the method's options, each task's train and dev data,
    and the model it starts from (the backbone, or two_step.init_from's best model). Raises MtbertError in one
    sentence."""
    check_method_options(cfg.method, cfg.method_options)
    if cfg.fp16 and not torch.cuda.is_available():
        raise MtbertError("fp16: float16 mixed precision needs a CUDA GPU and none is available; remove fp16 to "
                          "train in float32")
    data_dir = cfg.resolved_data_dir()
    specs = cfg.task_specs()
    if any(s.dataset is None for s in specs) and not data_dir.is_dir():
        raise DataError(f"{data_dir}: data folder not found; {DATA_HELP}")
    for spec in specs:
        spec = resolve_labels(spec, data_dir)
        for split in ("train", "dev"):
            result = read_split(spec, split, data_dir, report=False)
            if result is not None:
                usable_examples(result)  # one sentence when no row is usable or a quote never closes
    settings = cfg.two_step_settings
    if settings is not None and settings.init_from:
        resolve_best(Path(settings.init_from))
    else:
        check_backbone(cfg.model_name_or_path, cfg.trust_remote_code)


def prepare_output_dir(output_dir: Path, resume: str | None, overwrite: bool) -> None:
    """Refuse to train into a non-empty folder unless told to overwrite it or to resume from it."""
    contents = [p for p in output_dir.iterdir() if p.name != LOCK] if output_dir.is_dir() else []
    if contents and not resume:
        if not overwrite:
            raise MtbertError(
                f"output_dir: {output_dir} is not empty; pass --overwrite_output_dir to replace it "
                "or --resume_from_checkpoint last to continue it"
            )
        for path in RunDir(output_dir).written_by_training():
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    output_dir.mkdir(parents=True, exist_ok=True)
