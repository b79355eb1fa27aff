"""A tiny `mtbert bench scaling` run (its rows each in their own process for peak memory); in a file of its own
so that, under `pytest --dist loadfile`, it runs beside the `bench step` tests rather than after them."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.e2e


def test_a_tiny_scaling_run_has_the_pinned_json(tiny_model_dir, tiny_data_dir, monkeypatch):
    pytest.importorskip("torchjd")
    monkeypatch.setenv("MTBERT_DATA", str(tiny_data_dir))
    from mtbert.bench.scaling import ROWS, bench_scaling

    results = bench_scaling([2, 3], steps=5, warmup=0, samples_per_step=4, model_path=str(tiny_model_dir),
                            memory_steps=1)
    assert json.loads(json.dumps(results)) == results
    assert list(results["tasks"]) == ["2", "3"]
    for per_row in results["tasks"].values():
        assert list(per_row) == ["sum", "pcgrad", "pcgrad-k2", "torchjd"]
        assert per_row["sum"]["ratio_to_sum"] == 1.0
        for row in per_row.values():
            assert row["seconds_per_step"] > 0 and row["peak_mb"] > 50 and row["ratio_to_sum"] > 0
            low, high = row["ratio_ci95"]
            assert low <= row["ratio_to_sum"] <= high
    assert set(results["marginal_seconds_per_task"]) == set(ROWS)
