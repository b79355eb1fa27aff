"""`mtbert train`: check every input, hold the run folder, optionally pretrain the backbone, then train one stage
or two (two-step)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch

from mtbert.config import TrainConfig, check_model_limits, encoder_positions, save_config, stage2_config
from mtbert.data.loading import DATA_HELP, read_split, resolve_labels
from mtbert.distributed import start as start_ranks
from mtbert.errors import DataError, MtbertError
from mtbert.evaluation.finished import usable_examples
from mtbert.methods.method import check_method_options
from mtbert.model.multitask import ENCODER_DIR, check_backbone, default_backbone
from mtbert.runs.layout import LOCK, RunDir
from mtbert.runs.lock import RunLock
from mtbert.training.hub_push import HubPush, check_can_push
from mtbert.training.stage import ModelStart, train_stage
from mtbert.training.two_step import resolve_best, train_two_step

logger = logging.getLogger(__name__)


def train(cfg: TrainConfig, resume_from_checkpoint: str | None = None, overwrite_output_dir: bool = False) -> dict:
    """Run a training job (one stage, or two with `two_step`) and return the final dev metrics.

    Nothing is written before the config, the data and the backbone are checked; a live run that holds the
    folder refuses a second one.
    """
    run = RunDir(cfg.output_dir)
    ranks = start_ranks(cfg.ddp_mode)
    ranks.main_only(check_inputs, cfg)
    with RunLock(run.root, ranks if ranks.distributed else None):
        resume = resume_point(run, resume_from_checkpoint) if cfg.two_step is None else resume_from_checkpoint
        ranks.main_only(prepare_output_dir, run.root, resume_from_checkpoint, overwrite_output_dir)
        if ranks.is_main:
            save_config(cfg, run.config)
        backbone = None
        settings = cfg.two_step_settings
        if cfg.mlm_steps and not (settings and settings.init_from):  # optional: a further pretrained encoder
            from mtbert.training.mlm import pretrain_mlm  # here: its transformers imports take seconds

            backbone = ranks.main_only(pretrain_mlm, cfg, run.mlm, ranks.device)
        if settings is None:
            start = ModelStart(backbone=str(backbone) if backbone is not None else None)
            hub = HubPush(cfg, run.root) if cfg.push_to_hub and ranks.is_main else None  # optional: push_to_hub
            results = train_stage(cfg, run.root, start, resume_from_checkpoint=resume, hub=hub)
            return hub.finish(results) if hub is not None else results
        return train_two_step(cfg, run.root, resume_from_checkpoint, backbone)


def check_inputs(cfg: TrainConfig) -> None:
    """Every input a run reads, checked before it writes: the method's options, each task's train and dev data,
    and the model it starts from (the backbone, or two_step.init_from's best model). Raises MtbertError in one
    sentence."""
    check_method_options(cfg.method, cfg.method_options)
    check_can_push(cfg)  # push_to_hub: not offline, a token
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
        encoder = str(resolve_best(Path(settings.init_from)) / ENCODER_DIR)
    else:
        check_backbone(cfg.model_name_or_path, cfg.trust_remote_code)
        encoder = cfg.model_name_or_path or default_backbone()
    positions = encoder_positions(encoder, cfg.trust_remote_code)  # max_length within the encoder's positions
    check_model_limits(cfg, positions, encoder)
    if settings is not None:
        check_model_limits(stage2_config(cfg), positions, encoder, prefix="two_step.")


def resume_point(run: RunDir, resume: str | None) -> str | None:
    """`--resume_from_checkpoint last` of a run stopped before its first checkpoint starts it again from step 0
    (a kill at any moment can be resumed); a finished run without checkpoints is refused in one sentence. (Two-step
    runs decide this per stage.)"""
    if resume != "last" or run.checkpoints() or not run.config.is_file():
        return resume  # no run started here: find_checkpoint says there is nothing to resume
    if run.results.is_file():
        raise MtbertError(f"--resume_from_checkpoint last: {run.root} is a finished run and holds no checkpoint; "
                          "pass --overwrite_output_dir to train it again")
    logger.warning("%s: no checkpoint yet (the run stopped before its first one); training starts again from step 0",
                   run.root)
    return None


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
