"""`mtbert bench step --config`: a shared-input step of each method on the same batches (the arithmetic of its
figures; no wall-clock bound)."""

from __future__ import annotations

import json

import pytest
import yaml

from mtbert.bench.group_step import bench_group_step, check_group_methods, group_goals
from mtbert.errors import MtbertError


def test_group_goals_read_the_paired_ratios():
    times = {"sum": [1.0, 2.0, 1.0, 2.0, 1.0], "pcgrad": [1.2, 2.4, 1.2, 2.4, 1.2],
             "pcgrad-representation": [1.0, 2.2, 1.1, 2.2, 1.1]}
    goals = group_goals(times)
    assert goals["pcgrad_vs_sum"]["paired_ratio"] == pytest.approx(1.2)
    assert goals["pcgrad_vs_sum"]["verdict"] == "met"
    assert goals["pcgrad-representation_vs_sum"]["paired_ratio"] == pytest.approx(1.1)
    assert goals["pcgrad-representation_vs_sum"]["verdict"] in ("missed", "undecided")
    assert group_goals({"pcgrad": [1.0]}) == {}
    assert set(group_goals(times, {"pcgrad": 1.05})) == {"pcgrad_vs_sum"}


def test_an_unknown_method_is_one_sentence():
    with pytest.raises(MtbertError, match="^--methods: unknown method 'pcgrad-sideways' for a config's step"):
        check_group_methods(["sum", "pcgrad-sideways"])


def test_every_method_times_the_same_shared_input_steps(group_config, tmp_path):
    config = tmp_path / "group.yaml"
    config.write_text(yaml.safe_dump(group_config))
    methods = ["sum", "pcgrad", "pcgrad-representation", "torchjd", "torchjd-autogram"]
    results = bench_group_step(config, methods, steps=5, warmup=0, batch_size=4)
    json.dumps(results)  # what --json writes
    assert results["streams"] == {"utt": ["intent", "mood"], "sst": ["sst"]}
    for method in methods:
        figures = results["methods"][method]
        assert len(figures["all_seconds"]) == 5
        for ratio, t, s in zip(figures["all_paired_ratios"], figures["all_seconds"],
                               results["methods"]["sum"]["all_seconds"], strict=True):
            # the seconds are rounded to 1e-4 and the ratios to 1e-3: the ratio of the rounded seconds is within
            slack = 5e-4 + (t / s) * (5e-5 / t + 5e-5 / s) * 1.01
            assert ratio == pytest.approx(t / s, abs=slack)
    assert set(results["goals"]) == {"pcgrad_vs_sum", "pcgrad-representation_vs_sum"}
