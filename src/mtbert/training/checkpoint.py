"""Resumable checkpoints: model, optimizer, scheduler, sampler position and every RNG state.

`checkpoint-<step>/` holds `model.safetensors`, `optimizer.pt` and `scheduler.pt` (loaded with
`weights_only=True`, so nothing is unpickled), `rng.safetensors`, `trainer_state.json` and `checksums.json`
(the size and SHA-256 of every other file). A checkpoint is filled in a temporary folder and renamed into
place. `find_checkpoint(..., "last")` checks the checksums and falls back to the newest intact checkpoint,
with a warning naming each damaged file. With several ranks rank 0 writes it (model, optimizer and
sampler are the same on every rank) and `rng.safetensors` also holds each other rank's dropout RNG state
(`torch.rank<r>`, `cuda.rank<r>`); every rank loads it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model

from mtbert.errors import MtbertError
from mtbert.io import atomic_dir, atomic_write_text, read_jsonl
from mtbert.runs.layout import CHECKPOINT_PREFIX, METRICS, TRAIN_LOG, RunDir

logger = logging.getLogger(__name__)
PREFIX = CHECKPOINT_PREFIX
CHECKSUMS = "checksums.json"
FILES = ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng.safetensors", "trainer_state.json")
_CHUNK = 1 << 20


@dataclass
class StageState:
    """Where a stage's training stands; `trainer_state.json` keeps it next to the sampler's positions and the
    method's state (`save_checkpoint`'s `state`)."""

    global_step: int = 0  # the last step taken
    best_metric: float | None = None  # metric_for_best_model of best/
    best_step: int | None = None  # the step best/ was saved at (0: the starting model, two-step's keep_stage1)
    bad_steps: int = 0  # non-finite steps in a row
    train_seconds: float = 0.0
    evals_without_improvement: int = 0  # evaluations in a row without a better metric (early stopping)
    stopped_early_at: int | None = None  # the step early stopping ended training at

    def to_dict(self) -> dict[str, Any]:
        """The state as trainer_state.json holds it (`stopped_early_at` only once set)."""
        values = asdict(self)
        if values["stopped_early_at"] is None:
            del values["stopped_early_at"]
        return values

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> StageState:
        """The state of a trainer_state.json; a key that an older checkpoint lacks keeps its default."""
        return cls(**{f.name: saved[f.name] for f in fields(cls) if f.name in saved})


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
    """`last` means the newest intact checkpoint in output_dir; anything else is a checkpoint folder.

    A damaged checkpoint (a file missing, truncated or garbled: see `verify_checkpoint`) is passed over for
    the previous one with a warning naming the bad file; none intact, or a damaged folder given by path,
    is one MtbertError sentence.
    """
    if which == "last":
        found = RunDir(output_dir).checkpoints()
        if not found:
            raise MtbertError(f"--resume_from_checkpoint: no checkpoint in {output_dir} to resume from")
        damaged = []
        for path in reversed(found):
            problem = verify_checkpoint(path)
            if problem is None:
                for bad in damaged:
                    logger.warning("%s; resuming from the previous intact checkpoint %s instead", bad, path.name)
                return path
            damaged.append(problem)
        raise MtbertError(f"--resume_from_checkpoint last: no intact checkpoint in {output_dir} "
                          f"({'; '.join(damaged)}); start again with --overwrite_output_dir")
    path = Path(which)
    if not (path / "trainer_state.json").is_file():
        raise MtbertError(f"--resume_from_checkpoint: {path} is not a checkpoint folder (no trainer_state.json)")
    problem = verify_checkpoint(path)
    if problem is not None:
        raise MtbertError(f"--resume_from_checkpoint: cannot resume, {problem}; give another checkpoint or `last`")
    return path


def file_digest(path: Path) -> str:
    """The SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_checksums(folder: Path) -> None:
    """Record the size and SHA-256 of every file in `folder` (but the record itself) in checksums.json."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CHECKSUMS):
        files[path.relative_to(folder).as_posix()] = {"bytes": path.stat().st_size, "sha256": file_digest(path)}
    (folder / CHECKSUMS).write_text(json.dumps({"algorithm": "sha256", "files": files}, indent=2) + "\n",
                                    encoding="utf-8")


def verify_checkpoint(path: Path) -> str | None:
    """None when the checkpoint is intact, else what is wrong with which file (`RUN/checkpoint-7/x.pt is truncated`).

    Every file of checksums.json must be there with its recorded size and SHA-256. A checkpoint written
    before checksums were recorded (no checksums.json) only needs its files to be there.
    """
    where = str(path)
    record = path / CHECKSUMS
    if not record.is_file():
        missing = [name for name in FILES if not (path / name).is_file()]
        return f"{where}/{missing[0]} is missing" if missing else None
    try:
        files = json.loads(record.read_text(encoding="utf-8"))["files"]
        entries = [(str(name), int(entry["bytes"]), str(entry["sha256"])) for name, entry in files.items()]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        return f"{where}/{CHECKSUMS} is not a valid checksum record (truncated or garbled)"
    names = {name for name, _, _ in entries}
    for name in FILES:
        if name not in names:
            return f"{where}/{CHECKSUMS} has no checksum for {name}"
    for name, size, sha256 in entries:
        file = path / name
        try:
            actual = file.stat().st_size
            if actual != size:
                shape = "truncated" if actual < size else "longer than written"
                return f"{where}/{name} is {shape} ({actual} bytes where {size} were written)"
            if file_digest(file) != sha256:
                return f"{where}/{name} is garbled (its SHA-256 differs from the one recorded when it was written)"
        except OSError as err:
            return f"{where}/{name} cannot be read ({err.strerror or err})"
    return None


def save_checkpoint(output_dir: Path, step: int, model, optimizer, scheduler, sampler, generator,
                    state: dict[str, Any], keep: int | None,
                    rank_rng: list[dict[str, torch.Tensor]] | None = None, weight_average=None) -> Path:
    """Write checkpoint-<step>/; `rank_rng` holds every rank's RNG states when there are several ranks;
    `weight_average` (`ema_decay`'s `WeightAverage`) writes its average beside the model."""
    target = output_dir / f"{PREFIX}{step}"

    def fill(tmp: Path) -> None:
        save_model(model, str(tmp / "model.safetensors"))
        if weight_average is not None:
            weight_average.save(tmp)
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
        write_checksums(tmp)

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
    except (OSError, RuntimeError, ValueError, KeyError, EOFError, pickle.UnpicklingError, SafetensorError) as err:
        raise MtbertError(f"{path}: cannot resume from this checkpoint ({str(err).splitlines()[0]})") from None
    suffix = f".rank{rank}" if rank > 0 else ""
    if f"torch{suffix}" in rng:
        torch.set_rng_state(rng[f"torch{suffix}"])
    generator.set_state(rng["generator"])
    if f"cuda{suffix}" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng[f"cuda{suffix}"])
    sampler.load_state_dict(state.pop("sampler"))
    return state


def truncate_logs(output_dir: Path, step: int) -> int:
    """Drop log lines written after the checkpoint's step (the resumed run writes them again); return the last
    step the logs held before (`step` when none was after it): the trackers were sent every line up to it."""
    last = step
    for name in (METRICS, TRAIN_LOG):
        path = output_dir / name
        if path.is_file():
            records = read_jsonl(path)
            last = max([last, *(r.get("step", 0) for r in records)])
            kept = [r for r in records if r.get("step", 0) <= step]
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    return last


def remove_checkpoints(output_dir: Path) -> None:
    for path in output_dir.glob(f"{PREFIX}*"):
        shutil.rmtree(path, ignore_errors=True)
