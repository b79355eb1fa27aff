"""`bench throughput`'s rows of mtbert's own ONNX export (fp32 and int8), run by ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest

from mtbert.bench.throughput import (
    add_utilization,
    goals,
    mtbert_onnx_exports,
    onnx_ratios,
    predict_onnx,
    sample_examples,
)
from mtbert.data import encode_examples
from mtbert.model import MultiTaskModel, load_encoder
from mtbert.model.inference import predict_set
from mtbert.tasks import task_from_config

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def test_the_onnx_rows_predict_what_mtbert_predicts(tiny_model_dir, tiny_data_dir, tmp_path):
    spec = task_from_config("sts", "throughput")
    examples = sample_examples(tiny_data_dir / spec.dev_file, spec, 12, shuffle=False)
    encoder, tokenizer = load_encoder(str(tiny_model_dir), 0.1)
    model = MultiTaskModel(encoder, [spec], pooling="mean").eval()
    backends: dict = {}
    own = mtbert_onnx_exports(model, tokenizer, 32, 4, tmp_path, backends)
    assert set(own) == {"mtbert_onnx", "mtbert_onnx_int8"} and "onnxruntime" in backends["mtbert_onnx"]
    assert own["mtbert_onnx_int8"].quantization == "int8" and own["mtbert_onnx"].quantization is None
    encoded = encode_examples(tokenizer, spec, examples, 32, "cross")
    _, scores = predict_set(model, encoded, 4, tokenizer.pad_token_id)
    _, fp32 = predict_onnx(own["mtbert_onnx"], examples, 32)
    _, int8 = predict_onnx(own["mtbert_onnx_int8"], examples, 32)
    np.testing.assert_allclose(fp32, scores, atol=1e-4, rtol=0)
    assert np.ptp(scores) > 1e-3 and 0 < np.abs(int8 - scores).max() < 0.5


def test_onnx_ratios_and_goal_pair_each_round():
    times = {"mtbert": [2.0, 4.0, 2.0], "mtbert_int8": [1.0, 2.0, 1.0], "mtbert_onnx": [1.0, 2.0, 4.0],
             "mtbert_onnx_int8": [2.0, 1.0, 1.0]}
    ratios = onnx_ratios(times)
    assert ratios == {"onnx_to_mtbert": 2.0, "onnx_int8_to_mtbert_int8": 1.0, "onnx_int8_to_mtbert": 2.0}
    out = goals({"prediction": {"para": {"ratio": {"to_cross_encoder": 1.0, **ratios}},
                                "sts": {"ratio": {"to_cross_encoder": 1.0, "onnx_int8_to_mtbert_int8": 0.8}}}})
    assert out["prediction_onnx_int8_vs_mtbert_int8"] == {"goal": ">= 1.0", "worst": 0.8, "met": False}


def test_the_onnx_int8_row_gets_no_fp32_utilization():
    figures = {"examples": 10, "useful_gflop": 2.0, "examples_per_second": {
        "mtbert": {"per_second": 50.0}, "mtbert_onnx": {"per_second": 60.0}, "mtbert_onnx_int8": {"per_second": 90.0}}}
    add_utilization(figures, peak_gflops=20.0)
    assert set(figures["utilization"]) == {"mtbert", "mtbert_onnx"}


def test_the_exports_run_after_their_folder_is_gone(tiny_model_dir, tiny_data_dir, tmp_path):
    import shutil

    spec = task_from_config("sst", "throughput")
    encoder, tokenizer = load_encoder(str(tiny_model_dir), 0.1)
    (tmp_path / "x").mkdir()
    own = mtbert_onnx_exports(MultiTaskModel(encoder, [spec]).eval(), tokenizer, 32, 4, tmp_path / "x", {})
    shutil.rmtree(tmp_path / "x")  # bench_prediction exports into a temporary folder
    examples = sample_examples(tiny_data_dir / spec.dev_file, spec, 5, shuffle=False)
    assert predict_onnx(own["mtbert_onnx_int8"], examples, 32)[0].shape == (5,)
