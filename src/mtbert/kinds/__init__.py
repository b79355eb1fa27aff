"""Task kinds as objects: `KINDS` maps each kind's name to the object that answers every kind-dependent question.

A new kind is one module of this package (see `mtbert.kinds.base` for what it implements) and one line below,
or `register(kind)` from outside the package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mtbert.kinds import (
    multi_label,
    multiple_choice,
    pair_classification,
    pair_regression,
    single,
    single_regression,
    token,
)
from mtbert.kinds.base import METRICS, ExportPlan, Metric, TaskKind

if TYPE_CHECKING:
    from mtbert.tasks import TaskSpec

KINDS: dict[str, TaskKind] = {
    single.KIND.name: single.KIND,
    single_regression.KIND.name: single_regression.KIND,
    pair_classification.KIND.name: pair_classification.KIND,
    pair_regression.KIND.name: pair_regression.KIND,
    token.KIND.name: token.KIND,
    multi_label.KIND.name: multi_label.KIND,
    multiple_choice.KIND.name: multiple_choice.KIND,
}


def register(kind: TaskKind) -> TaskKind:
    """Add a kind to `KINDS` (a kind defined outside this package); its name must be new."""
    if not kind.name or kind.name in KINDS or kind.name in aliases():
        raise ValueError(f"a task kind needs a new name, not {kind.name!r}")
    KINDS[kind.name] = kind
    return kind


def aliases() -> dict[str, str]:
    """Other names accepted in configs, to the kind's name."""
    return {alias: kind.name for kind in KINDS.values() for alias in kind.aliases}


def kind_of(spec: TaskSpec) -> TaskKind:
    """The kind object of a task."""
    return KINDS[spec.kind]


__all__ = ["KINDS", "METRICS", "ExportPlan", "Metric", "TaskKind", "aliases", "kind_of", "register"]
