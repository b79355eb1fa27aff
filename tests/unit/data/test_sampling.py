"""Tests of mtbert.data.sampling: each strategy's samples per step, and runs with each."""

from __future__ import annotations

import pytest

from mtbert.data.sampling import samples_per_step, sampling_alpha

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

