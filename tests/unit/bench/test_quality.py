"""Tests of mtbert.bench.quality: the two-step variant rows and their budgets."""

from __future__ import annotations


def test_two_step_variants_are_compared_with_two_step_pcgrad_and_mlm_steps_scale_with_the_budget():
    from pathlib import Path

    from mtbert.bench.quality import load_reference, reference_row, scaled

    ref = load_reference(Path(__file__).resolve().parents[3] / "configs" / "bench")
    assert reference_row("two-step-pcgrad-smart", ref) == "two-step-pcgrad"
    assert reference_row("two-step-pcgrad", ref) == "pcgrad"  # the quality table's chain
    assert reference_row("pcgrad-lld", ref) == "pcgrad"
    assert reference_row("famo", ref) == "multitask"
    assert scaled({"samples_per_task_per_epoch": 1792, "mlm_steps": 672}, 16, 2.5) == {
        "samples_per_task_per_epoch": 4480, "mlm_steps": 1680}

