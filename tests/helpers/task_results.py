"""Synthetic predictions and labels of the three CS224N tasks, for tests of the scores."""

from __future__ import annotations

import numpy as np

from mtbert.tasks import BUILTIN_TASKS

SST, PARA, STS = BUILTIN_TASKS["sst"], BUILTIN_TASKS["para"], BUILTIN_TASKS["sts"]


def results(rng: np.random.Generator, n: int = 200, noise: float = 1.0) -> dict:
    """n examples of each task: SST right 55% of the time, Quora 80%, STS values plus Gaussian noise."""
    sst_y = rng.integers(0, 5, n)
    sst_p = np.where(rng.random(n) < 0.55, sst_y, rng.integers(0, 5, n))
    para_y = rng.integers(0, 2, n)
    para_p = np.where(rng.random(n) < 0.8, para_y, 1 - para_y)
    sts_y = rng.uniform(0, 5, n)
    sts_p = sts_y + rng.normal(0, noise, n)
    return {"sst": (SST, sst_p, sst_y), "para": (PARA, para_p, para_y), "sts": (STS, sts_p, sts_y)}
