"""What the tries share: the bundled MiniLM, 256 examples of a task file, and side-by-side timing."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mtbert.bench.throughput import sample_examples
from mtbert.data import EncodedSet, encode_examples
from mtbert.model import MultiTaskModel, load_encoder
from mtbert.tasks import BUILTIN_TASKS

DATA = Path(os.environ.get("MTBERT_DATA", "data"))
N = 256


def dev_model(task: str) -> tuple[MultiTaskModel, EncodedSet, int]:
    """An eval-mode model on the bundled MiniLM (seed 0 heads) and the first N dev pairs of `task`, encoded."""
    import torch

    spec = BUILTIN_TASKS[task]
    encoder, tokenizer = load_encoder(None, 0.1)
    torch.manual_seed(0)
    model = MultiTaskModel(encoder, [spec]).eval()
    examples = sample_examples(DATA / spec.dev_file, spec, N, shuffle=False)
    return model, encode_examples(tokenizer, spec, examples, 128, "cross"), tokenizer.pad_token_id or 0


def side_by_side(contenders: dict[str, Callable[[], object]], rounds: int, items: int) -> None:
    """Run each contender once per round (order reversed every other round); print items/s and x the first."""
    names = list(contenders)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - start)
    first = np.array(times[names[0]])
    for name in names:
        ratio = float(np.median(first / np.array(times[name])))
        print(f"{name}: {items / np.median(times[name]):.1f}/s, {ratio:.3f}x {names[0]}")
