"""`mtbert bench throughput` on the tiny model and data: every code path runs and the JSON has the pinned shape."""

from __future__ import annotations

import json

import torch

from mtbert.bench.throughput import bench_throughput


def test_bench_throughput_json_shape_and_positive_figures(tiny_model_dir, tiny_data_dir):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model's ops are too small to share; a busy machine makes sharing them slow
    try:
        results = bench_throughput(examples=6, model_path=str(tiny_model_dir), data_dir=tiny_data_dir, batch_size=4,
                                   eval_batch_size=4, repeats=1, predict_repeats=1, max_length=32,
                                   memory_steps=1)
    finally:
        torch.set_num_threads(threads)
    assert json.loads(json.dumps(results)) == results  # JSON-ready as it is
    assert results["benchmark"] == "throughput" and results["cpus"] >= 1 and "torch" in results

    assert set(results["training"]) == {"sst", "sts"}
    for figures in results["training"].values():
        assert figures["samples"] == 6 and figures["steps"] == 2
        assert set(figures["samples_per_second"]) == {"mtbert", "trainer"}
        rates = figures["samples_per_second"].values()
        assert all(f["per_second"] > 0 and len(f["all_per_second"]) == 1 for f in rates)
        assert figures["ratio"] > 0 and figures["optimizer"]["trainer"]

    assert set(results["prediction"]) == {"para", "sts"}
    for figures in results["prediction"].values():
        assert figures["examples"] == 6
        assert set(figures["examples_per_second"]) == {"mtbert", "cross_encoder", "plain_loop"}
        assert all(f["per_second"] > 0 for f in figures["examples_per_second"].values())
        assert figures["ratio"]["to_cross_encoder"] > 0 and figures["ratio"]["to_plain_loop"] > 0

    memory = results["memory"]
    assert memory["peak_rss_mb"]["sum"] > 0 and memory["peak_rss_mb"]["pcgrad"] > 0 and memory["ratio"] > 0

    assert set(results["goals"]) == {"training_vs_trainer", "prediction_vs_cross_encoder", "pcgrad_memory_vs_sum"}
    assert all(isinstance(goal["met"], bool) for goal in results["goals"].values())
