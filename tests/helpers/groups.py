"""A tiny data set of tasks that share one input (an input_group): two labels of the same words."""

from __future__ import annotations

import json
import random
from pathlib import Path

INTENTS = {"play": ("play", "music", "song"), "book": ("book", "table", "restaurant")}
TOPICS = {"happy": ("great", "fun"), "sad": ("awful", "dull")}
FILLER = "the a my for to please now some".split()


def write_group_data(folder: Path, rows: int = 40, seed: int = 0) -> Path:
    """`utt-{train,dev}.jsonl`: each row an `id`, a list of words `tokens`, an `intent` and a `mood` (class names
    that its words give away), in the same data folder as the CS224N files."""
    rng = random.Random(seed)
    for split in ("train", "dev"):
        lines = []
        for i in range(rows):
            intent, mood = rng.choice(sorted(INTENTS)), rng.choice(sorted(TOPICS))
            words = [rng.choice(INTENTS[intent]), *rng.sample(FILLER, 3), rng.choice(TOPICS[mood])]
            rng.shuffle(words)
            lines.append(json.dumps({"id": f"{split}-{i}", "tokens": words, "intent": intent, "mood": mood}))
        (folder / f"utt-{split}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def group_tasks(**extra) -> list[dict]:
    """The two tasks of input_group `utt` (intent and mood of the same words)."""
    common = {"kind": "single", "train_file": "utt-train.jsonl", "dev_file": "utt-dev.jsonl",
              "text_columns": ["tokens"], "input_group": "utt", "head_hidden_sizes": [16]}
    return [{"name": "intent", "label_column": "intent", **common, **extra},
            {"name": "mood", "label_column": "mood", **common}]
