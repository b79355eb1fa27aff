"""Resumable checkpoints: model, optimizer, scheduler, sampler position and every RNG state.

`checkpoint-<step>/` holds `model.safetensors`, `optimizer.pt` and `scheduler.pt` (loaded with
`weights_only=True`, so nothing is unpickled), `rng.safetensors` and `trainer_state.json`. A checkpoint is
filled in a temporary folder and renamed into place. With several ranks rank 0 writes it (model, optimizer and
sampler are the same on every rank) and `rng.safetensors` also holds each other rank's dropout RNG state
(`torch.rank<r>`, `cuda.rank<r>`); every rank loads it.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from mtbert.errors import MtbertError
from mtbert.io import atomic_dir, atomic_write_text, read_jsonl

logger = logging.getLogger(__name__)
PREFIX = "checkpoint-"


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Finished checkpoints, oldest first."""
    found = []
    for path in output_dir.glob(f"{PREFIX}*"):
        suffix = path.name[len(PREFIX):]
        if path.is_dir() and suffix.isdigit() and (path / "trainer_state.json").is_file():
            found.append((int(suffix), path))
    return [p for _, p in sorted(found)]


def has_checkpoint(output_dir: Path, which: str) -> bool:
    if which != "last":
        return Path(which).parent.resolve() == output_dir.resolve()
    return bool(list_checkpoints(output_dir))


def find_checkpoint(output_dir: Path, which: str) -> Path:
    """`last` means the newest checkpoint in output_dir; anything else is a checkpoint folder."""
    if which == "last":
        found = list_checkpoints(output_dir)
        if not found:
            raise MtbertError(f"--resume_from_checkpoint: no checkpoint in {output_dir} to resume from")
        return found[-1]
    path = Path(which)
    if not (path / "trainer_state.json").is_file():
        raise MtbertError(f"--resume_from_checkpoint: {path} is not a checkpoint folder (no trainer_state.json)")
    return path


def save_checkpoint(output_dir: Path, step: int, model, optimizer, scheduler, sampler, generator,
                    state: dict[str, Any], keep: int | None,
                    rank_rng: list[dict[str, torch.Tensor]] | None = None) -> Path:
    """Write checkpoint-<step>/; `rank_rng` holds every rank's RNG states when there are several ranks."""
    target = output_dir / f"{PREFIX}{step}"

    def fill(tmp: Path) -> None:
        save_model(model, str(tmp / "model.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        rng = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state()
        for rank, states in enumerate(rank_rng or []):
            if rank > 0:
                rng.update({f"{kind}.rank{rank}": value for kind, value in states.items()})
        save_file(rng, str(tmp / "rng.safetensors"))
        (tmp / "trainer_state.json").write_text(
            json.dumps({**state, "sampler": sampler.state_dict()}, indent=2) + "\n", encoding="utf-8")

    atomic_dir(target, fill)
    if keep:
        for old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return target


def load_checkpoint(path: Path, model, optimizer, scheduler, sampler, generator, rank: int = 0) -> dict[str, Any]:
    """Restore everything saved by save_checkpoint (the RNG states of `rank`); return the trainer state.

    A rank the checkpoint has no RNG state for (it was written by fewer ranks) keeps its current one.
    """
    try:
        load_model(model, str(path / "model.safetensors"))
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
        scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
        rng = load_file(str(path / "rng.safetensors"))
        state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, RuntimeError, ValueError, KeyError) as err:
        raise MtbertError(f"{path}: cannot resume from this checkpoint ({str(err).splitlines()[0]})") from None
    suffix = f".rank{rank}" if rank > 0 else ""
    if f"torch{suffix}" in rng:
        torch.set_rng_state(rng[f"torch{suffix}"])
    generator.set_state(rng["generator"])
    if f"cuda{suffix}" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng[f"cuda{suffix}"])
    sampler.load_state_dict(state.pop("sampler"))
    return state


def truncate_logs(output_dir: Path, step: int) -> None:
    """Drop log lines written after the checkpoint's step (the resumed run writes them again)."""
    for name in ("metrics.jsonl", "train_log.jsonl"):
        path = output_dir / name
        if path.is_file():
            kept = [r for r in read_jsonl(path) if r.get("step", 0) <= step]
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def remove_checkpoints(output_dir: Path) -> None:
    for path in output_dir.glob(f"{PREFIX}*"):
        shutil.rmtree(path, ignore_errors=True)
