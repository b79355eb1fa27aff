"""Task sampling strategies and loss-level weighting (uncertainty, FAMO)."""

from __future__ import annotations

import json

import pytest
import torch

from mtbert.data.sampling import samples_per_step, sampling_alpha
from mtbert.methods.weighting import FAMO, UncertaintyWeighting

SIZES = {"sst": 7926, "para": 14143, "sts": 5622}


def test_fixed_ratio_is_the_ratio_times_the_batch():
    assert samples_per_step("fixed-ratio", SIZES, {"sst": 0, "para": 3, "sts": 1}, 16) == {"para": 48, "sts": 16}


@pytest.mark.parametrize("strategy", ["proportional", "temperature", "annealed"])
def test_strategies_keep_the_step_total_and_every_task(strategy):
    for epoch in (1, 5, 10):
        counts = samples_per_step(strategy, SIZES, {}, 16, temperature=2.0, epoch=epoch, num_epochs=10)
        assert sum(counts.values()) == 48 and min(counts.values()) >= 1 and set(counts) == set(SIZES)


def test_proportional_pinned_and_temperature_flattens():
    assert samples_per_step("proportional", SIZES, {}, 16) == {"sst": 14, "para": 24, "sts": 10}
    hot = samples_per_step("temperature", SIZES, {}, 16, temperature=100.0)
    assert max(hot.values()) - min(hot.values()) <= 1


def test_annealed_goes_from_proportional_to_nearly_uniform():
    assert sampling_alpha("annealed", 2.0, 1, 10) == 1.0
    assert sampling_alpha("annealed", 2.0, 10, 10) == pytest.approx(0.2)
    first = samples_per_step("annealed", SIZES, {}, 16, epoch=1, num_epochs=10)
    last = samples_per_step("annealed", SIZES, {}, 16, epoch=10, num_epochs=10)
    assert first == samples_per_step("proportional", SIZES, {}, 16)
    assert max(last.values()) - min(last.values()) < max(first.values()) - min(first.values())


def test_ratio_zero_task_stays_out_of_every_strategy():
    counts = samples_per_step("proportional", SIZES, {"sst": 0, "para": 1, "sts": 1}, 16)
    assert set(counts) == {"para", "sts"} and sum(counts.values()) == 32


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


@pytest.mark.parametrize("extra", [
    {"method": "uncertainty"},
    {"method": "famo"},
    {"method": "pcgrad", "surgery_scope": "per-layer"},
    {"method": "sum", "sampling": "annealed"},
    {"method": "pcgrad", "sampling": "temperature", "sampling_temperature": 3.0, "sample_weighting": True},
])
def test_runs_with_each_strategy_complete(tiny_config, extra):
    from mtbert.config import build_config
    from mtbert.training.run import train

    results = train(build_config({**tiny_config, **extra}))
    assert 0 <= results["overall"] <= 1


def test_per_layer_pcgrad_equals_global_pcgrad_per_group():
    from mtbert.methods.aggregators import pcgrad
    from mtbert.methods.pertask import aggregate_per_layer

    grads = torch.randn(3, 10, dtype=torch.float64)
    groups = [[(0, 4), (8, 10)], [(4, 8)]]
    update = aggregate_per_layer(pcgrad, grads, groups, torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(0)
    first = pcgrad(grads[:, [0, 1, 2, 3, 8, 9]], generator)
    second = pcgrad(grads[:, 4:8], generator)
    torch.testing.assert_close(update[[0, 1, 2, 3, 8, 9]], first)
    torch.testing.assert_close(update[4:8], second)


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
