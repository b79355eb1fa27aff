"""`pair-classification`: two texts, one class (Quora paraphrase detection)."""

from __future__ import annotations

from mtbert.kinds.sentence import ClassificationKind


class PairClassification(ClassificationKind):
    """Two texts, one of `num_labels` classes; two classes are one logit (sigmoid, binary cross-entropy)."""

    name = "pair-classification"
    texts = 2
    binary_logit = True


KIND = PairClassification()
