"""Checkpoints record the SHA-256 of their files; resuming from `last` passes over a damaged one with a warning."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from mtbert.data import MultiTaskSampler
from mtbert.errors import MtbertError
from mtbert.training import checkpoint as ckpt


class Parts:
    """A tiny model with its optimizer, scheduler, sampler and generator, as the training loop has them."""

    def __init__(self, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.model = torch.nn.Linear(4, 3)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=0.1)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: 1.0 / (1 + step))
        self.sampler = MultiTaskSampler({"sst": 10, "sts": 7}, seed=seed)
        self.generator = torch.Generator().manual_seed(seed)

    def train(self, steps: int) -> None:
        for _ in range(steps):
            self.model(torch.randn(2, 4)).sum().backward()
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad()
            self.sampler.draw("sst", 3)
            torch.rand(1, generator=self.generator)

    def save(self, folder: Path, step: int, keep: int | None = None) -> Path:
        return ckpt.save_checkpoint(folder, step, self.model, self.optimizer, self.scheduler, self.sampler,
                                    self.generator, {"global_step": step}, keep)

    def load(self, path: Path) -> dict:
        return ckpt.load_checkpoint(path, self.model, self.optimizer, self.scheduler, self.sampler, self.generator)


@pytest.fixture()
def run(tmp_path) -> tuple[Path, Parts]:
    parts = Parts()
    for step in (2, 4, 6):
        parts.train(2)
        parts.save(tmp_path, step)
    return tmp_path, parts


def test_checksums_are_recorded_and_verified(run):
    folder, _ = run
    record = json.loads((folder / "checkpoint-6" / "checksums.json").read_text())
    assert record["algorithm"] == "sha256"
    assert set(record["files"]) == set(ckpt.FILES)
    assert all(len(entry["sha256"]) == 64 for entry in record["files"].values())
    assert ckpt.verify_checkpoint(folder / "checkpoint-6") is None
    assert ckpt.find_checkpoint(folder, "last") == folder / "checkpoint-6"


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garble(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, name, words", [
    (_truncate, "model.safetensors", "is truncated"),
    (_garble, "optimizer.pt", "is garbled"),
    (lambda p: p.unlink(), "rng.safetensors", "cannot be read"),
    (_truncate, "checksums.json", "not a valid checksum record"),
    (_garble, "trainer_state.json", "is garbled"),
])
def test_last_falls_back_to_the_previous_intact_checkpoint(run, caplog, damage, name, words):
    folder, _ = run
    damage(folder / "checkpoint-6" / name)
    with caplog.at_level(logging.WARNING, logger="mtbert.training.checkpoint"):
        found = ckpt.find_checkpoint(folder, "last")
    assert found == folder / "checkpoint-4"
    (warning,) = [r.getMessage() for r in caplog.records]
    assert f"{folder / 'checkpoint-6'}/" in warning and words in warning and "checkpoint-4" in warning
    if name != "checksums.json":
        assert name in warning


def test_resume_from_the_fallback_restores_its_state(run):
    folder, parts = run
    _garble(folder / "checkpoint-6" / "model.safetensors")
    fresh = Parts(seed=1)
    state = fresh.load(ckpt.find_checkpoint(folder, "last"))
    assert state["global_step"] == 4
    assert fresh.sampler.state_dict() == {"sst": 12, "sts": 0}
    again = Parts()
    again.train(4)
    torch.testing.assert_close(fresh.model.weight, again.model.weight, atol=0, rtol=0)


def test_none_intact_is_one_sentence(run):
    folder, _ = run
    for step in (2, 4, 6):
        _truncate(folder / f"checkpoint-{step}" / "optimizer.pt")
    with pytest.raises(MtbertError) as caught:
        ckpt.find_checkpoint(folder, "last")
    message = str(caught.value)
    assert message.startswith(f"--resume_from_checkpoint last: no intact checkpoint in {folder} (")
    assert all(f"checkpoint-{s}/optimizer.pt is truncated" in message for s in (2, 4, 6)) and "\n" not in message


def test_a_damaged_checkpoint_given_by_path_is_refused(run):
    folder, _ = run
    _garble(folder / "checkpoint-4" / "scheduler.pt")
    with pytest.raises(MtbertError, match=r"cannot resume, .*checkpoint-4/scheduler.pt is garbled"):
        ckpt.find_checkpoint(folder, str(folder / "checkpoint-4"))
    assert ckpt.find_checkpoint(folder, str(folder / "checkpoint-6")) == folder / "checkpoint-6"


def test_a_checkpoint_without_checksums_still_loads(run):
    """Checkpoints written before checksums were recorded are trusted when their files are all there."""
    folder, _ = run
    (folder / "checkpoint-6" / "checksums.json").unlink()
    assert ckpt.find_checkpoint(folder, "last") == folder / "checkpoint-6"
    (folder / "checkpoint-6" / "optimizer.pt").unlink()
    assert ckpt.verify_checkpoint(folder / "checkpoint-6").endswith("checkpoint-6/optimizer.pt is missing")
    assert ckpt.find_checkpoint(folder, "last") == folder / "checkpoint-4"


def test_garbage_that_passes_no_checksum_is_a_sentence_when_loaded(tmp_path):
    """load_checkpoint itself still turns unreadable files into one sentence (no checksums to catch them)."""
    parts = Parts()
    path = parts.save(tmp_path, 1)
    (path / "checksums.json").unlink()
    (path / "optimizer.pt").write_bytes(b"not a torch file")
    with pytest.raises(MtbertError, match="cannot resume from this checkpoint"):
        parts.load(path)


def test_save_total_limit_keeps_the_newest(tmp_path):
    parts = Parts()
    for step in range(1, 5):
        parts.save(tmp_path, step, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["checkpoint-3", "checkpoint-4"]


def test_the_stage_state_is_saved_with_the_keys_of_before_and_reads_older_checkpoints(tmp_path):
    """trainer_state.json keeps the keys it always had; a checkpoint written before early stopping existed (no
    `evals_without_improvement`) or holding the method's and the scaler's state resumes with the defaults."""
    state = ckpt.StageState(global_step=6, best_metric=0.5, best_step=4, bad_steps=1, train_seconds=2.5,
                            evals_without_improvement=1)
    assert list(state.to_dict()) == ["global_step", "best_metric", "best_step", "bad_steps", "train_seconds",
                                     "evals_without_improvement"]
    parts = Parts()
    parts.train(2)
    path = ckpt.save_checkpoint(tmp_path, 6, parts.model, parts.optimizer, parts.scheduler, parts.sampler,
                                parts.generator, {**state.to_dict(), "loss_weighting": {"logits": [0.0]}}, None)
    assert ckpt.StageState.from_dict(Parts().load(path)) == state
    older = {"global_step": 6, "best_metric": None, "best_step": None, "bad_steps": 0, "train_seconds": 1.0,
             "grad_scaler": {"scale": 1024.0}}
    assert ckpt.StageState.from_dict(older) == ckpt.StageState(global_step=6, train_seconds=1.0)
    stopped = ckpt.StageState(stopped_early_at=3)
    assert stopped.to_dict()["stopped_early_at"] == 3 and ckpt.StageState.from_dict(stopped.to_dict()) == stopped
