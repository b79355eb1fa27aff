"""`mtbert bench step` on the tiny data: every method of issue 9 is timed (on a small random BERT); memory, and
full, LoRA and frozen-embedding training on the bundled backbone (`bench scaling`: test_bench_scaling.py)."""

from __future__ import annotations

import json

import pytest

from mtbert.cli import main
from mtbert.methods.aggregators import AGGREGATORS

pytestmark = pytest.mark.e2e
METHODS = [*AGGREGATORS, "uncertainty", "famo", "pcgrad-per-layer", "torchjd", "torchjd-autogram"]


def test_bench_step_times_every_method_against_sum(small_model_dir, tiny_data_dir, tmp_path, monkeypatch, capsys):
    pytest.importorskip("torchjd")
    monkeypatch.setenv("MTBERT_DATA", str(tiny_data_dir))
    # the same CLI run with a small random model in place of the bundled backbone: what is checked is every
    # method's row and its arithmetic, not MiniLM's seconds (the bundled backbone runs in the tests below)
    monkeypatch.setattr("mtbert.model.multitask.default_backbone", lambda: str(small_model_dir))
    out = tmp_path / "step.json"
    code = main(["bench", "step", "--methods", ",".join(METHODS), "--steps", "5", "--warmup", "0",
                 "--batch_size", "2", "--json", str(out)])
    assert code == 0
    results = json.loads(out.read_text())
    methods = results["methods"]
    assert list(methods) == METHODS
    assert methods["sum"]["ratio_to_sum"] == 1.0 and methods["sum"]["paired_ratio_to_sum"] == 1.0
    for name, result in methods.items():
        assert len(result["all_seconds"]) == 5 and result["median_seconds"] > 0, name
        assert result["ratio_to_sum"] == pytest.approx(result["median_seconds"] / methods["sum"]["median_seconds"],
                                                       rel=1e-2, abs=1e-3), name
        ratios = [a / b for a, b in zip(result["all_seconds"], methods["sum"]["all_seconds"], strict=True)]
        assert result["all_paired_ratios"] == pytest.approx(ratios, rel=2e-2, abs=2e-3), name  # from the JSON
        low, high = result["paired_ratio_ci95"]
        assert low <= result["paired_ratio_to_sum"] <= high, name
    assert results["goals"]["pcgrad_vs_sum"]["verdict"] in ("met", "missed", "undecided")


def test_bench_step_memory_runs_each_method_alone(tiny_data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MTBERT_DATA", str(tiny_data_dir))
    out = tmp_path / "step.json"
    assert main(["bench", "step", "--methods", "sum,pcgrad", "--steps", "5", "--warmup", "0", "--batch_size", "2",
                 "--memory", "--json", str(out)]) == 0
    memory = json.loads(out.read_text())["memory"]
    assert memory["diagnostics"] is False and set(memory["peak_rss_mb"]) == {"sum", "pcgrad"}
    assert all(v > 100 for v in memory["peak_rss_mb"].values())
    assert memory["ratio_to_sum"]["pcgrad"] == pytest.approx(
        memory["peak_rss_mb"]["pcgrad"] / memory["peak_rss_mb"]["sum"], abs=1e-3)


def test_bench_step_needs_five_rounds(tiny_data_dir, monkeypatch, capsys):
    monkeypatch.setenv("MTBERT_DATA", str(tiny_data_dir))
    assert main(["bench", "step", "--methods", "sum,pcgrad", "--steps", "4"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --steps: 4 timed steps is too few for a paired interval (at least 5)")


def test_bench_step_names_an_unknown_method(tiny_data_dir, monkeypatch, capsys):
    monkeypatch.setenv("MTBERT_DATA", str(tiny_data_dir))
    assert main(["bench", "step", "--methods", "sum,adam"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: --methods: unknown method 'adam' (known: sum, pcgrad")


def test_bench_step_measures_full_lora_and_frozen_embedding_training_each_in_its_own_process(
        tiny_data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MTBERT_DATA", str(tiny_data_dir))
    out = tmp_path / "step.json"
    code = main(["bench", "step", "--methods", "sum,pcgrad", "--steps", "5", "--warmup", "0", "--batch_size", "2",
                 "--trainable", "full,lora,frozen-embeddings", "--json", str(out)])
    assert code == 0
    runs = json.loads(out.read_text())["trainable"]
    assert list(runs) == ["full", "lora", "frozen-embeddings"]
    encoder = {kind: run["trainable_parameters"]["encoder"] for kind, run in runs.items()}
    # MiniLM-L6: 22.7M parameters, 11.9M of them in the embeddings; LoRA r 8 on query and value: 6 x 2 x 2 x 384 x 8
    assert encoder["full"] == 22_713_216
    assert encoder["frozen-embeddings"] == encoder["full"] - 11_918_592
    assert encoder["lora"] == 6 * 2 * 2 * 384 * 8
    for kind, run in runs.items():
        assert run["trainable"] == kind and run["peak_rss_mb"] > 100
        assert run["peak_rss_ratio_to_full"] == pytest.approx(run["peak_rss_mb"] / runs["full"]["peak_rss_mb"],
                                                              abs=1e-3)
        for method in ("sum", "pcgrad"):
            seconds = run["methods"][method]["median_seconds"]
            assert seconds > 0
            assert run["methods"][method]["ratio_to_full"] == pytest.approx(
                seconds / runs["full"]["methods"][method]["median_seconds"], rel=1e-2, abs=1e-3)


def test_bench_step_names_an_unknown_trainable_kind(tiny_data_dir, monkeypatch, capsys):
    monkeypatch.setenv("MTBERT_DATA", str(tiny_data_dir))
    assert main(["bench", "step", "--methods", "sum", "--trainable", "full,adapters"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --trainable: unknown kind 'adapters' (known: full, lora, frozen-embeddings)")
