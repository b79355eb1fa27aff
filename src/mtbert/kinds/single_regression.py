"""`single-regression`: one text, one value in [label_min, label_max]."""

from __future__ import annotations

from mtbert.kinds.sentence import RegressionKind


class SingleRegression(RegressionKind):
    """One text, one value."""

    name = "single-regression"
    texts = 1


KIND = SingleRegression()
