"""Tests of mtbert.methods.weighting: uncertainty weighting and FAMO."""

from __future__ import annotations

import json

import pytest
import torch

from mtbert.methods.weighting import FAMO, UncertaintyWeighting


def test_uncertainty_weighting_value_and_gradient():
    weighting = UncertaintyWeighting(["a", "b"])
    with torch.no_grad():
        weighting.log_vars["a"].fill_(1.0)
    loss = torch.tensor(2.0, requires_grad=True)
    out = weighting.weigh("a", loss)
    assert out.item() == pytest.approx(2.0 * torch.exp(torch.tensor(-1.0)).item() + 1.0)
    out.backward()
    assert weighting.log_vars["a"].grad.item() == pytest.approx(1.0 - 2.0 * torch.exp(torch.tensor(-1.0)).item())


def test_famo_gradient_is_that_of_the_weighted_log_losses_and_favours_the_slow_task():
    famo = FAMO(["a", "b"])
    la, lb = torch.tensor(2.0, requires_grad=True), torch.tensor(0.5, requires_grad=True)
    (famo.weigh("a", la) + famo.weigh("b", lb)).backward()
    assert la.grad.item() == pytest.approx(0.5 / 2.0, rel=1e-6)  # z = 1/2, d log L / dL = 1/L
    assert lb.grad.item() == pytest.approx(0.5 / 0.5, rel=1e-6)
    famo.after_step({"a": 2.0, "b": 0.5})
    for k in range(1, 20):  # a's loss stays, b's keeps falling: FAMO moves weight to a
        famo.after_step({"a": 2.0, "b": 0.5 * 0.9**k})
    weights = famo.weights()
    assert weights["a"] > weights["b"]


def test_famo_state_survives_a_json_round_trip_exactly():
    losses = [{"a": 2.0 * 0.97**k, "b": 0.5 * 0.9**k} for k in range(8)]
    straight = FAMO(["a", "b"])
    for step in losses:
        straight.after_step(step)
    first = FAMO(["a", "b"])
    for step in losses[:4]:
        first.after_step(step)
    resumed = FAMO(["a", "b"])
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))  # as trainer_state.json holds it
    for step in losses[4:]:
        resumed.after_step(step)
    assert torch.equal(resumed.logits, straight.logits) and not torch.equal(straight.logits, torch.zeros(2))
    assert torch.equal(resumed.previous, straight.previous)
    loss = torch.tensor(1.3)
    assert resumed.weigh("a", loss).item() == straight.weigh("a", loss).item()

