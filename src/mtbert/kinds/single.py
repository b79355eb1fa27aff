"""`single` (also `single-classification`): one text, one class (SST-5 sentiment).

An ensemble vote takes the most voted class, a tie going to the tied class with the highest summed probability
when the members' scores files are there, else to the earliest member; a task whose classes are ordered
(`ordered_labels: true`, as the built-in `sst`: sentiment 0..4) takes the members' mean class rounded half up, as
the CS224N report did for SST.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from mtbert.kinds.sentence import ClassificationKind, majority, mean_class

if TYPE_CHECKING:
    from mtbert.tasks import TaskSpec


class SingleClassification(ClassificationKind):
    """One text, one of `num_labels` classes (softmax over them, even for two)."""

    name = "single"
    aliases = ("single-classification",)
    texts = 1

    def vote(self, spec: TaskSpec, predictions: np.ndarray, scores: np.ndarray | None = None) -> np.ndarray:
        """The members' classes (members x examples) combined: with `ordered_labels`, their mean class rounded half
        up; else the most voted class, a tie going to the tied class with the highest summed probability (`scores`:
        members x examples x score columns, from the members' scores files), then to the earliest member's."""
        classes = np.asarray(predictions, dtype=float)
        if spec.ordered_labels:
            return mean_class(classes)
        return majority(classes.astype(int), spec.num_labels, self.class_probabilities(spec, scores)).astype(float)

    def vote_takes_scores(self, spec: TaskSpec) -> bool:
        """Scores break the ties of a majority; a mean class (`ordered_labels`) has none."""
        return not spec.ordered_labels

    def vote_rule(self, spec: TaskSpec, scores: bool) -> str:
        """`vote`'s rule in words, with or without the members' scores to break ties."""
        if spec.ordered_labels:
            return super().vote_rule(spec, scores)
        ties = ("the highest summed probability of the tied classes, then the earliest member" if scores
                else "the earliest member listed (not every member has a usable scores file)")
        return f"the most voted class; a tie goes to {ties}"


KIND = SingleClassification()
