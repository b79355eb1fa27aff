"""Tasks that share one input (`input_group`): their examples aligned, and one batch of them for all their tasks.

The tasks of a group read the same rows (the config checks that they name the same data and text columns), each
with its own label column. Each task's split is read and encoded by its own kind; `align_sets` keeps the rows
every task of the group loaded, in the same order, so that an index means the same example for every task. A
batch of the group (`GroupBatch`) is encoded ONCE: its encoder inputs are collated by one task's kind (the first
task whose kind keeps per-example extras, such as a token kind's word ids, else the first task), and each task's
labels are collated by its own kind on the same examples (a token kind aligns its labels to those tokens).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from mtbert.data.encoding import EncodedSet
from mtbert.errors import DataError

logger = logging.getLogger(__name__)


@dataclass
class GroupBatch:
    """One batch of a group's examples: the encoder `inputs` (one dict of tensors per encoder input), and each task's
    batch as its own kind collated it, with those same `inputs` (what its loss and `decide` read)."""

    inputs: list[dict[str, Any]]
    tasks: dict[str, dict[str, Any]]


def encoding_task(sets: dict[str, EncodedSet]) -> str:
    """The task whose kind encodes the group's batches: the first with per-example extras, else the first."""
    return next((task for task, encoded in sets.items() if encoded.extras is not None), next(iter(sets)))


def collate_group(sets: dict[str, EncodedSet], indices: list[int], pad_token_id: int, packed: bool,
                  row_width: int = 0) -> GroupBatch:
    """The examples `indices` of a group's aligned sets as one `GroupBatch` (padded, or `packed` into rows)."""
    first = encoding_task(sets)
    encoded = sets[first]
    batch = encoded.spec.task_kind.collate(encoded, indices, pad_token_id, packed=packed, row_width=row_width)
    tasks = {}
    for task, task_set in sets.items():
        own = batch if task == first else task_set.spec.task_kind.collate(task_set, indices, pad_token_id,
                                                                          packed=packed, row_width=row_width)
        tasks[task] = {**own, "inputs": batch["inputs"]}
    return GroupBatch(inputs=batch["inputs"], tasks=tasks)


def align_sets(group: str, sets: dict[str, EncodedSet | None]) -> dict[str, EncodedSet | None]:
    """The group's sets of one split restricted to the rows that every task loaded, in the first task's order.

    A row one task skipped (say its label was empty) is left out of every task's set, with one warning line; a
    split only some tasks have is a DataError. A task whose kind keeps extras must encode as the encoding task does.
    """
    present = {t: s for t, s in sets.items() if s is not None}
    if not present:
        return sets
    if len(present) != len(sets):
        missing = ", ".join(t for t, s in sets.items() if s is None)
        raise DataError(f"input_group {group}: tasks {missing} have no such split while the others have one")
    ids = [set(s.ids) for s in present.values()]
    common = set.intersection(*ids)
    first = next(iter(present.values()))
    keep = [i for i, example_id in enumerate(first.ids) if example_id in common]
    out: dict[str, EncodedSet | None] = {}
    for task, encoded in present.items():
        if len(keep) != len(encoded) or encoded.ids != [first.ids[i] for i in keep]:
            dropped = len(encoded) - len(common)
            if dropped:
                logger.warning("input_group %s: %d rows of task %s are left out: another task of the group skipped "
                               "them", group, dropped, task)
            position = {example_id: i for i, example_id in enumerate(encoded.ids)}
            encoded = subset(encoded, [position[first.ids[i]] for i in keep])
        out[task] = encoded
    if not keep:
        raise DataError(f"input_group {group}: its tasks share no row (compare their ids)")
    reference = out[encoding_task(out)]
    for task, encoded in out.items():
        if encoded.extras is not None and encoded.features != reference.features:
            raise DataError(f"input_group {group}: task {task} encodes its inputs differently from task "
                            f"{reference.spec.name}, so their labels cannot share one batch")
    return out


def subset(encoded: EncodedSet, indices: list[int]) -> EncodedSet:
    """The examples `indices` of an encoded set, in that order."""
    return replace(encoded, ids=[encoded.ids[i] for i in indices], features=[encoded.features[i] for i in indices],
                   token_types=[encoded.token_types[i] for i in indices],
                   labels=[encoded.labels[i] for i in indices],
                   extras=None if encoded.extras is None else [encoded.extras[i] for i in indices])
