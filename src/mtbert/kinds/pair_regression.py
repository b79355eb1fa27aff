"""`pair-regression`: two texts, one value in [label_min, label_max] (STS similarity)."""

from __future__ import annotations

from mtbert.kinds.sentence import RegressionKind


class PairRegression(RegressionKind):
    """Two texts, one value."""

    name = "pair-regression"
    texts = 2


KIND = PairRegression()
