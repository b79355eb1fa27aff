"""`mtbert train`: prepare the run folder, optionally pretrain the backbone, then one stage or two-step."""

from __future__ import annotations

import shutil
from pathlib import Path

from mtbert.config import TrainConfig, save_config
from mtbert.distributed import start as start_ranks
from mtbert.errors import MtbertError
from mtbert.runs.layout import RunDir
from mtbert.training.mlm import pretrain_mlm
from mtbert.training.stage import ModelStart, train_stage
from mtbert.training.two_step import train_two_step


def train(cfg: TrainConfig, resume_from_checkpoint: str | None = None, overwrite_output_dir: bool = False) -> dict:
    """Run a training job (one stage, or two with `two_step`) and return the final dev metrics."""
    run = RunDir(cfg.output_dir)
    ranks = start_ranks(cfg.ddp_mode)
    ranks.main_only(prepare_output_dir, run.root, resume_from_checkpoint, overwrite_output_dir)
    if ranks.is_main:
        save_config(cfg, run.config)
    backbone = None
    if cfg.mlm_steps and not (cfg.two_step or {}).get("init_from"):  # optional: a further pretrained encoder
        backbone = ranks.main_only(pretrain_mlm, cfg, run.mlm, ranks.device)
    if cfg.two_step is None:
        start = ModelStart(backbone=str(backbone) if backbone is not None else None)
        return train_stage(cfg, run.root, start, resume_from_checkpoint=resume_from_checkpoint)
    return train_two_step(cfg, run.root, resume_from_checkpoint, backbone)


def prepare_output_dir(output_dir: Path, resume: str | None, overwrite: bool) -> None:
    """Refuse to train into a non-empty folder unless told to overwrite it or to resume from it."""
    if output_dir.is_dir() and any(output_dir.iterdir()) and not resume:
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
