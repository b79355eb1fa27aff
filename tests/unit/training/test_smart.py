"""Tests of mtbert.training.smart: SMART's divergence, its penalty, and training with it."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from mtbert.config import build_config
from mtbert.data import load_task_data
from mtbert.model import MultiTaskModel, load_encoder
from mtbert.tasks import BUILTIN_TASKS
from mtbert.training.run import train
from mtbert.training.smart import Smoothness, divergence, smart_penalty


def _model_and_inputs(tiny_config, task):
    cfg = build_config({**tiny_config, "dropout": 0.0})
    torch.manual_seed(0)
    encoder, tokenizer = load_encoder(cfg.model_name_or_path, 0.0)
    model = MultiTaskModel(encoder, cfg.task_specs(), dropout=0.0).eval()
    data = load_task_data(cfg.task_specs(), cfg.resolved_data_dir(), tokenizer, 32, "cross", splits=("train",))
    from mtbert.data import collate

    batch = collate(data[task].train, list(range(8)), 0)
    return model, batch["inputs"]


@pytest.mark.parametrize("task", ["sst", "para", "sts"])
def test_divergence_is_zero_for_equal_outputs_and_positive_otherwise(task):
    spec = BUILTIN_TASKS[task]
    outputs = torch.randn(6, spec.num_outputs).squeeze(-1)
    assert torch.allclose(divergence(spec, outputs, outputs), torch.zeros(6), atol=1e-6)
    assert (divergence(spec, outputs + torch.randn_like(outputs), outputs) > 0).all()


@pytest.mark.parametrize("task", ["sst", "para", "sts"])
def test_smart_penalty_grows_with_the_perturbation_and_reaches_the_encoder(tiny_config, task):
    model, inputs = _model_and_inputs(tiny_config, task)
    outputs = model(task, inputs)
    penalties = []
    for step in (1e-5, 1e-2, 1.0):
        torch.manual_seed(1)
        penalties.append(smart_penalty(model, task, inputs, outputs, Smoothness(1.0, step_size=step)))
    assert all(p.item() >= 0 for p in penalties)
    assert penalties[0].item() < penalties[1].item() < penalties[2].item()
    assert penalties[0].item() < 1e-3 * penalties[2].item()  # a tiny box barely moves the outputs
    model.zero_grad()
    penalties[2].backward()
    layer = model.encoder.encoder.layer[0].attention.self.query.weight
    assert layer.grad is not None and layer.grad.abs().sum() > 0


def test_smart_weight_changes_training_and_keeps_losses_finite(tiny_config, tmp_path):
    # dropout off: SMART's noise draws would otherwise change the dropout masks, and the weights, by themselves
    plain = train(build_config({**tiny_config, "output_dir": str(tmp_path / "plain"), "method": "pcgrad",
                                "dropout": 0.0}))
    smooth = train(build_config({**tiny_config, "output_dir": str(tmp_path / "smart"), "method": "pcgrad",
                                 "dropout": 0.0, "smart_weight": 3.0, "smart_step_size": 1e-2}))
    weights = [load_file(str(tmp_path / name / "best" / "encoder" / "model.safetensors")) for name in ("plain",
                                                                                                     "smart")]
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    logged = [json.loads(line) for line in (tmp_path / "smart" / "train_log.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(list(r["loss"].values()))).all() for r in logged)
    assert 0 < plain["overall"] <= 1 and 0 < smooth["overall"] <= 1

