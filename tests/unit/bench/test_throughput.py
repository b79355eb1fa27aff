"""`mtbert bench throughput` on the tiny model and data: every code path runs and the JSON has the pinned shape."""

from __future__ import annotations

import json

import torch

from mtbert.bench.throughput import bench_throughput


def test_useful_flops_count_real_tokens_only(tiny_model_dir):
    from mtbert.bench.throughput import useful_flops
    from mtbert.data import collate
    from mtbert.data.encoding import EncodedSet
    from mtbert.model import MultiTaskModel, load_encoder
    from mtbert.tasks import BUILTIN_TASKS

    encoder, _ = load_encoder(str(tiny_model_dir), 0.0)
    spec = BUILTIN_TASKS["sst"]
    model = MultiTaskModel(encoder, [spec])
    short, long = [101, 7, 8, 102], [101] + list(range(10, 30)) + [102]
    encoded = EncodedSet(spec, ["a", "b", "c"], [[short], [long], [short]], [[[0] * 4], [[0] * 22], [[0] * 4]],
                         [1.0, 2.0, 3.0])
    single = EncodedSet(spec, ["a"], [[short]], [[[0] * 4]], [1.0])
    assert useful_flops(model, encoded, 0, "cpu", backward=True) == (
        2 * useful_flops(model, single, 0, "cpu", backward=True)
        + useful_flops(model, EncodedSet(spec, ["b"], [[long]], [[[0] * 22]], [2.0]), 0, "cpu", backward=True))
    forward = useful_flops(model, single, 0, "cpu", backward=False)
    assert 0 < forward < useful_flops(model, single, 0, "cpu", backward=True)
    assert all(p.grad is None for p in model.parameters())
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():  # the padded batch costs more than its real tokens
        model("sst", collate(encoded, [0, 1, 2], 0)["inputs"])
    assert counter.get_total_flops() > useful_flops(model, encoded, 0, "cpu", backward=False)


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
        assert set(figures["samples_per_second"]) == {"mtbert", "trainer", "trainer_grouped", "trainer_compiled"}
        rates = figures["samples_per_second"].values()
        assert all(f["per_second"] > 0 and len(f["all_per_second"]) == 1 for f in rates)
        assert figures["ratio"] > 0 and figures["ratio_grouped"] > 0 and figures["optimizer"]["trainer"]
        # compile_seconds is the warm-up pass less the median pass: any sign on a loaded machine, so no bound
        assert figures["ratio_compiled"] > 0 and isinstance(figures["compile_seconds"], float)
        assert figures["useful_gflop"] > 0
        assert set(figures["utilization"]) == set(figures["useful_gflops_per_second"]) == set(
            figures["samples_per_second"])
        assert all(u > 0 for u in figures["utilization"].values())
        assert set(figures["utilization_of_theoretical"]) == set(figures["utilization"])

    assert set(results["prediction"]) == {"para", "sts"}
    assert 0 <= results["prediction"]["para"]["int8_same_class"] <= 1
    assert 0 <= results["prediction"]["sts"]["int8_max_abs_difference"] < 5
    for figures in results["prediction"].values():
        assert figures["examples"] == 6
        assert set(figures["examples_per_second"]) == {"mtbert", "cross_encoder", "plain_loop", "mtbert_int8",
                                                       "cross_encoder_int8", "onnxruntime", "onnxruntime_int8",
                                                       "openvino", "mtbert_onnx", "mtbert_onnx_int8"}
        assert set(figures["utilization"]) == {"mtbert", "cross_encoder", "plain_loop", "onnxruntime", "openvino",
                                               "mtbert_onnx"}
        assert figures["onnx_max_abs_difference_to_mtbert"]["mtbert_onnx"] < 1e-4  # the same outputs
        assert figures["ratio"]["onnx_to_mtbert"] > 0 and figures["ratio"]["onnx_int8_to_mtbert_int8"] > 0
        differences = figures["max_abs_difference_to_cross_encoder"]
        assert differences["onnxruntime"] < 1e-4 and differences["openvino"] < 1e-4  # the same outputs
        assert differences["cross_encoder_int8"] < 0.1 and differences["onnxruntime_int8"] < 0.1
        assert figures["fastest_fp32_cross_encoder"] in ("cross_encoder", "onnxruntime", "openvino")
        assert all(f["per_second"] > 0 for f in figures["examples_per_second"].values())
        assert figures["ratio"]["to_cross_encoder"] > 0 and figures["ratio"]["to_plain_loop"] > 0
        assert figures["ratio"]["int8_to_cross_encoder"] > 0 and figures["ratio"]["int8_to_cross_encoder_int8"] > 0
        assert figures["useful_gflop"] > 0 and all(u > 0 for u in figures["utilization"].values())

    gemm = results["gemm"]
    assert gemm["gflops_per_second"] > 0 and len(gemm["shape_mkn"]) == 3 and len(gemm["all_gflops_per_second"]) == 10
    assert gemm["spread"]["min"] <= gemm["gflops_per_second"] <= gemm["spread"]["max"]

    memory = results["memory"]
    assert memory["peak_rss_mb"]["sum"] > 0 and memory["peak_rss_mb"]["pcgrad"] > 0 and memory["ratio"] > 0
    assert memory["diagnostics"] is False

    assert set(results["goals"]) == {"training_vs_trainer", "training_vs_trainer_grouped", "training_utilization",
                                     "prediction_vs_cross_encoder", "prediction_int8_vs_cross_encoder",
                                     "prediction_fp32_vs_fastest_cross_encoder",
                                     "prediction_int8_vs_fastest_cross_encoder", "prediction_onnx_int8_vs_mtbert_int8",
                                     "pcgrad_memory_vs_sum"}
    assert all(isinstance(goal["met"], bool) for goal in results["goals"].values())


def test_the_gemm_peak_is_the_median_of_its_measurements_with_their_spread():
    from mtbert.bench.throughput import gemm_summary

    summary = gemm_summary((512, 384, 1536), [104.0, 167.0, 150.0, 140.0, 120.0])
    assert summary["gflops_per_second"] == 140.0
    assert summary["spread"] == {"min": 104.0, "max": 167.0, "relative": 0.45}
    assert summary["all_gflops_per_second"] == [104.0, 167.0, 150.0, 140.0, 120.0]


def test_int8_rows_get_no_fp32_utilization():
    from mtbert.bench.throughput import add_utilization

    figures = {"examples": 10, "useful_gflop": 2.0, "examples_per_second": {
        "mtbert": {"per_second": 50.0}, "mtbert_int8": {"per_second": 100.0},
        "cross_encoder_int8": {"per_second": 80.0}}}
    add_utilization(figures, peak_gflops=20.0, theoretical_gflops=40.0)
    assert figures["useful_gflops_per_second"] == {"mtbert": 10.0, "mtbert_int8": 20.0, "cross_encoder_int8": 16.0}
    assert figures["utilization"] == {"mtbert": 0.5} and figures["utilization_of_theoretical"] == {"mtbert": 0.25}


def test_interleaved_takes_a_contenders_own_seconds_when_it_returns_them():
    from mtbert.bench.throughput import interleaved, paired_ratio

    order = []
    contenders = {"a": lambda: order.append("a") or 2.0, "b": lambda: order.append("b") or 4.0}
    times = interleaved(contenders, 3, {})
    assert order == ["a", "b", "b", "a", "a", "b"] and times == {"a": [2.0] * 3, "b": [4.0] * 3}
    assert paired_ratio(times, "a", "b") == 2.0  # a ran twice as fast as b


def test_goals_compare_with_the_fastest_cross_encoder_backend_at_equal_precision():
    from mtbert.bench.throughput import goals

    prediction = {"ratio": {"to_cross_encoder": 1.6, "to_onnxruntime": 1.2, "int8_to_cross_encoder": 2.1,
                            "int8_to_onnxruntime_int8": 1.4},
                  "fastest_fp32_cross_encoder": "onnxruntime", "fastest_int8_cross_encoder": "onnxruntime_int8"}
    out = goals({"prediction": {"sts": prediction}})
    assert out["prediction_fp32_vs_fastest_cross_encoder"] == {"goal": ">= 1.3", "against": {"sts": "onnxruntime"},
                                                               "worst": 1.2, "met": False}
    assert out["prediction_int8_vs_fastest_cross_encoder"]["worst"] == 1.4
    assert out["prediction_int8_vs_fastest_cross_encoder"]["met"] is True
