"""ONNX Runtime (fp32, and dynamic int8) against mtbert's prediction in torch, side by side.

Needs `pip install onnxruntime==1.32.0 onnx==1.23.2 onnxscript==0.7.2` (not mtbert dependencies). ONNX Runtime
gets length-sorted padded batches (its graph takes the usual 2-D mask); torch gets mtbert's packed rows.

    MTBERT_DATA=../shared/data/cs224n python benchmarks/tries/onnxruntime_predict.py sts
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from common import N, dev_model, side_by_side
from onnxruntime.quantization import QuantType, quantize_dynamic

from mtbert.data import collate, length_sorted_batches
from mtbert.evaluation.evaluate import predict_set, quantized

KEYS = ("input_ids", "attention_mask", "token_type_ids")


class Padded(torch.nn.Module):
    """The model's forward on a padded batch of one task, as positional tensors (what the exporter takes)."""

    def __init__(self, model, task: str) -> None:
        super().__init__()
        self.model, self.task = model, task

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(self.task, [{"input_ids": input_ids, "attention_mask": attention_mask,
                                       "token_type_ids": token_type_ids}])


def main(task: str) -> None:
    model, encoded, pad = dev_model(task)
    batches = list(length_sorted_batches(encoded, 64))
    folder = Path(tempfile.mkdtemp(prefix="mtbert-onnx-"))
    sample = collate(encoded, batches[0][:8], pad)["inputs"][0]
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    torch.onnx.export(Padded(model, task).eval(), tuple(sample[k] for k in KEYS), folder / "fp32.onnx",
                      dynamo=True, input_names=list(KEYS), output_names=["out"],
                      dynamic_shapes={k: {0: batch, 1: seq} for k in KEYS})
    quantize_dynamic(folder / "fp32.onnx", folder / "int8.onnx", weight_type=QuantType.QInt8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    sessions = {k: ort.InferenceSession(folder / f"{k}.onnx", options, providers=["CPUExecutionProvider"])
                for k in ("fp32", "int8")}

    def run_ort(session) -> np.ndarray:
        out = np.zeros(len(encoded))
        for indices in batches:
            inputs = collate(encoded, indices, pad)["inputs"][0]
            out[indices] = session.run(None, {k: inputs[k].numpy() for k in KEYS})[0].reshape(-1)
        return out

    reference = predict_set(model, encoded, 64, pad)[0]
    print(f"max |difference| to torch fp32: onnxruntime fp32 {abs(run_ort(sessions['fp32']) - reference).max():.2g}, "
          f"int8 {abs(run_ort(sessions['int8']) - reference).max():.2g}")
    int8 = quantized(model, "int8")
    side_by_side({"torch fp32": lambda: predict_set(model, encoded, 64, pad),
                  "torch int8": lambda: predict_set(int8, encoded, 64, pad),
                  "onnxruntime fp32": lambda: run_ort(sessions["fp32"]),
                  "onnxruntime int8": lambda: run_ort(sessions["int8"])}, rounds=5, items=N)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "sts")
