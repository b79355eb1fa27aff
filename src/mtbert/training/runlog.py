"""The run log of a stage: `train_log.jsonl`, `metrics.jsonl`, the trackers (`report_to`) and the progress bar.

Only rank 0 writes; on the other ranks every call does nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tqdm.auto import tqdm

from mtbert.io import append_jsonl
from mtbert.runs.layout import RunDir
from mtbert.training.trackers import Trackers, open_trackers


class RunLog:
    """Everything a stage reports while it trains."""

    def __init__(self, run: RunDir, config: dict[str, Any], total_steps: int, first_step: int, enabled: bool,
                 logged_until: int = 0) -> None:
        """`first_step`: the step the stage resumes after (0: a fresh start); `logged_until`: the last step the
        trackers were sent before the interruption, not sent again (the resumed run repeats those steps)."""
        self.run = run
        self.enabled = enabled
        self.trackers = (open_trackers(config["report_to"], run.root, str(run.root), config, resume=first_step > 0)
                         if enabled else Trackers([]))
        self.trackers.logged_until = logged_until
        self.progress = tqdm(total=total_steps, initial=first_step, desc=f"train {run.root.name}",
                             dynamic_ncols=True, mininterval=2.0, disable=not enabled)
        self.since_eval: list[dict] = []  # training records since the last evaluation, for its summary line

    def step(self, losses: dict[str, float]) -> None:
        self.progress.update(1)
        self.progress.set_postfix({t: f"{v:.3f}" for t, v in losses.items()}, refresh=False)

    def train(self, record: dict[str, Any]) -> None:
        """One `train_log.jsonl` line (step, epoch, lr, losses, gradient statistics)."""
        if self.enabled:  # the trackers first: a kill between the two repeats a tracker point, never loses one
            self.trackers.log(record, record["step"])
            append_jsonl(self.run.train_log, record)
            self.since_eval.append(record)

    def evaluation(self, record: dict[str, Any], metrics: dict[str, float], losses: dict[str, float]) -> None:
        """One `metrics.jsonl` line and the summary line of the evaluation."""
        if self.enabled:
            self.trackers.log({"dev": metrics}, record["step"])
            append_jsonl(self.run.metrics, record)
            self.progress.write(epoch_summary(record["epoch"], losses, metrics, self.since_eval))
        self.since_eval = []

    def message(self, text: str) -> None:
        if self.enabled:
            self.progress.write(text)

    def close(self) -> None:
        self.progress.close()
        self.trackers.close()


def epoch_summary(epoch: float, losses: dict[str, float], metrics: dict[str, float], logs: list[dict]) -> str:
    """One line: the dev metrics, the last losses and, when logged, the conflict rate of each task pair."""
    parts = [f"epoch {epoch:.2f}", "dev " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items())]
    parts.append("loss " + " ".join(f"{t} {v:.3f}" for t, v in losses.items()))
    pairs: dict[str, list[bool]] = {}
    for record in logs:
        for pair, conflicted in record.get("conflict", {}).items():
            pairs.setdefault(pair, []).append(conflicted)
    if pairs:
        parts.append("conflicts " + " ".join(f"{p} {100 * np.mean(v):.0f}%" for p, v in pairs.items()))
    return " | ".join(parts)
