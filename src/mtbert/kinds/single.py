"""`single` (also `single-classification`): one text, one class (SST-5 sentiment)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from mtbert.kinds.sentence import ClassificationKind

if TYPE_CHECKING:
    from mtbert.tasks import TaskSpec


class SingleClassification(ClassificationKind):
    """One text, one of `num_labels` classes (softmax over them, even for two)."""

    name = "single"
    aliases = ("single-classification",)
    texts = 1

    def vote(self, spec: TaskSpec, predictions: np.ndarray) -> np.ndarray:
        """The CS224N report's rule for sentiment: the members' mean class, rounded half up (2.5 -> 3)."""
        return np.floor(np.asarray(predictions, dtype=float).mean(axis=0) + 0.5)


KIND = SingleClassification()
