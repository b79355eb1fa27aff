"""What the tries share: the bundled MiniLM, 256 examples of a task file, and side-by-side timing."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from mtbert.bench.throughput import interleaved, paired_ratio, rates, sample_examples
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
    """Time the contenders in turn as `bench throughput` does; print items/s and how many times the first."""
    times = interleaved(contenders, rounds, warmup={})  # each script has run its contenders once already
    first = next(iter(contenders))
    for name, figures in rates(times, items).items():
        print(f"{name}: {figures['per_second']:.1f}/s, {paired_ratio(times, name, first):.3f}x {first}")
