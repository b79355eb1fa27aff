"""The two examples run as a user runs them: 2 steps on MTBERT_DATA (the tiny data) with the bundled backbone."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.e2e
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(name: str, data_dir: Path, output_dir: Path, monkeypatch) -> None:
    """Run the script as `python examples/NAME --max_steps 2 ...` does, in this process (no second import of torch
    and transformers: seconds on this machine)."""
    monkeypatch.setenv("MTBERT_DATA", str(data_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(sys, "argv", [name, "--max_steps", "2", "--output_dir", str(output_dir), "--batch_size", "4",
                                      "--max_length", "32"])
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    finally:
        torch.set_num_threads(before)


def test_accelerate_loop_trains_two_tasks_with_gradient_surgery(tiny_data_dir, tmp_path, monkeypatch):
    run_example("accelerate_loop.py", tiny_data_dir, tmp_path / "acc", monkeypatch)
    lines = [json.loads(line) for line in (tmp_path / "acc" / "train_log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2]
    assert set(lines[0]["loss"]) == {"sst", "sts"} and "sst-sts" in lines[0]["cosine"]
    assert (tmp_path / "acc" / "model.safetensors").is_file()


def test_hf_trainer_trains_evaluates_and_saves_a_multitask_model(tiny_data_dir, tmp_path, monkeypatch):
    from mtbert import MultiTaskModel

    out = tmp_path / "hf"
    run_example("hf_trainer.py", tiny_data_dir, out, monkeypatch)
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"eval_sst_acc", "eval_sts_corr", "eval_overall"} <= metrics.keys()
    assert set(MultiTaskModel.from_pretrained(out / "model").heads) == {"sst", "sts"}
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert any("loss_sst" in entry and "cosine_sst-sts" in entry for entry in state["log_history"])

