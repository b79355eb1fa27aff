"""A kind defined outside mtbert, as a user would write one: ordinal classes read off one output.

`single-ordinal`: one text, one of `num_labels` ordered classes; the head has one output, trained as a value
(MSE on the class index), and the class is that value rounded into 0..num_labels-1. Everything else is
inherited from the classification base.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mtbert.kinds.sentence import ClassificationKind


class SingleOrdinal(ClassificationKind):
    name = "single-ordinal"
    texts = 1

    def head_outputs(self, spec) -> int:
        return 1

    def loss(self, spec, outputs, labels, regression_loss="mse"):
        return F.mse_loss(outputs, labels, reduction="sum")

    def divergence(self, spec, outputs, reference):
        return (outputs.float() - reference.float()) ** 2

    def decide(self, spec, outputs, batch=None):
        classes = outputs.round().clamp(0, spec.num_labels - 1).long()
        return classes, outputs.unsqueeze(-1)

    def score_columns(self, spec):
        return ["value"]

    def decide_scores(self, spec, scores):
        return np.clip(np.floor(np.asarray(scores, dtype=float)[:, 0] + 0.5), 0, spec.num_labels - 1)

    def vote(self, spec, predictions):
        return np.floor(np.asarray(predictions, dtype=float).mean(axis=0) + 0.5)

    def label_tensor(self, labels):
        return torch.tensor(list(labels), dtype=torch.float)


KIND = SingleOrdinal()
