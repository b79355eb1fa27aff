"""torch.compile (inductor) of the encoder against eager, side by side: prediction, or training.

    MTBERT_DATA=../shared/data/cs224n python benchmarks/tries/compile.py predict sts [freezing]
    MTBERT_DATA=../shared/data/cs224n python benchmarks/tries/compile.py train sst
"""

from __future__ import annotations

import sys
import time

import torch
from common import DATA, N, dev_model, side_by_side

from mtbert.bench.throughput import mtbert_trainer, sample_examples
from mtbert.evaluation.evaluate import predict_set
from mtbert.model import MultiTaskModel, default_backbone
from mtbert.tasks import BUILTIN_TASKS


def predict(task: str, freezing: bool) -> None:
    model, encoded, pad = dev_model(task)
    compiled = MultiTaskModel(model.encoder, list(model.specs.values())).eval()  # the same encoder and heads
    compiled.heads = model.heads
    compiled.encoder = torch.compile(model.encoder, dynamic=True, options={"freezing": freezing})
    reference = predict_set(model, encoded, 64, pad)[0]
    start = time.perf_counter()
    out = predict_set(compiled, encoded, 64, pad)[0]
    seconds, difference = time.perf_counter() - start, abs(out - reference).max()
    print(f"compile and first pass: {seconds:.0f} s, max |difference| {difference:.2g}")
    side_by_side({"eager": lambda: predict_set(model, encoded, 64, pad),
                  "compiled": lambda: predict_set(compiled, encoded, 64, pad)}, rounds=5, items=N)


def train(task: str) -> None:
    spec = BUILTIN_TASKS[task]
    examples = sample_examples(DATA / spec.train_file, spec, N, shuffle=True)
    torch.manual_seed(0)
    eager = mtbert_trainer(spec, default_backbone(), examples, 16, 128, torch.device("cpu"))
    compiled = mtbert_trainer(spec, default_backbone(), examples, 16, 128, torch.device("cpu"))
    compiled.model.encoder.compile(dynamic=True)
    eager(2)
    start = time.perf_counter()
    compiled(4)
    print(f"compile and 4 steps: {time.perf_counter() - start:.0f} s")
    compiled(16)  # shapes it has not met yet
    side_by_side({"eager": lambda: eager(16), "compiled": lambda: compiled(16)}, rounds=2, items=N)


if __name__ == "__main__":
    if sys.argv[1] == "train":
        train(sys.argv[2])
    else:
        predict(sys.argv[2], freezing="freezing" in sys.argv[3:])
