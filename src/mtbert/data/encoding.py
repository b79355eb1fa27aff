"""Tokenizing examples and batching them with dynamic padding, or packed (model/packing.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mtbert.data.files import Example
from mtbert.tasks import TaskSpec


@dataclass
class EncodedSet:
    """Tokenized examples of one task and split, ready for batching."""

    spec: TaskSpec
    ids: list[str]
    features: list[list[list[int]]]  # per example: one token-id list per encoder input (1 or 2)
    token_types: list[list[list[int]]]
    labels: list[float | None]
    extras: list[Any] | None = None  # per example, what the kind's collate and decide need beyond the token ids

    def __len__(self) -> int:
        return len(self.ids)


def encode_examples(tokenizer, spec: TaskSpec, examples: list[Example], max_length: int,
                    pair_architecture: str) -> EncodedSet:
    """Tokenize with the backbone's fast tokenizer, truncating to max_length; no padding here.

    The task's kind says what is encoded (pairs: one sequence for the `cross` architecture, two for the
    bi-encoders).
    """
    features, token_types, extras = spec.task_kind.encode(tokenizer, spec, examples, max_length, pair_architecture)
    return EncodedSet(
        spec=spec,
        ids=[e.id for e in examples],
        features=features,
        token_types=token_types,
        labels=[e.label for e in examples],
        extras=extras,
    )


def collate(encoded: EncodedSet, indices: list[int], pad_token_id: int) -> dict:
    """Stack the chosen examples into padded tensors, padding only to the batch's longest member.

    Returns {"inputs": [{input_ids, attention_mask, token_type_ids}, ... one per encoder input],
    "labels": tensor | None}, as the task's kind collates them.
    """
    return encoded.spec.task_kind.collate(encoded, indices, pad_token_id, packed=False)


def collate_packed(encoded: EncodedSet, indices: list[int], pad_token_id: int, row_width: int = 0) -> dict:
    """The batch of `collate` (same examples, same order, same labels) with each encoder input packed.

    Each input is laid out by `mtbert.model.packing.pack_sequences`: rows of concatenated examples with
    restarting position ids (rows as wide as the longest example, or up to `row_width` tokens when that is
    more, cut to the fullest row), so almost no padding; `MultiTaskModel.embed` runs it with a block-diagonal
    attention mask (or, for an encoder that cannot, as the padded batch).
    """
    return encoded.spec.task_kind.collate(encoded, indices, pad_token_id, packed=True, row_width=row_width)


def length_sorted_batches(encoded: EncodedSet, batch_size: int) -> Iterator[list[int]]:
    """Batches of indices sorted by length (longest first), so that padding is minimal in evaluation."""
    order = sorted(range(len(encoded)), key=lambda i: -sum(len(f) for f in encoded.features[i]))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]
