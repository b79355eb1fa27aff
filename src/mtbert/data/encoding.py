"""Tokenizing examples and batching them with dynamic padding, or packed (model/packing.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from mtbert.data.files import Example
from mtbert.model.packing import pack_sequences
from mtbert.tasks import TaskSpec


@dataclass
class EncodedSet:
    """Tokenized examples of one task and split, ready for batching."""

    spec: TaskSpec
    ids: list[str]
    features: list[list[list[int]]]  # per example: one token-id list per encoder input (1 or 2)
    token_types: list[list[list[int]]]
    labels: list[float | None]

    def __len__(self) -> int:
        return len(self.ids)


def encode_examples(tokenizer, spec: TaskSpec, examples: list[Example], max_length: int,
                    pair_architecture: str) -> EncodedSet:
    """Tokenize with the backbone's fast tokenizer, truncating to max_length; no padding here.

    Pairs go into one sequence for the `cross` architecture, into two for the bi-encoders.
    """
    features: list[list[list[int]]] = [[] for _ in examples]
    token_types: list[list[list[int]]] = [[] for _ in examples]
    if spec.is_pair and pair_architecture == "cross":
        groups = [([e.texts[0] for e in examples], [e.texts[1] for e in examples])]
    else:
        groups = [([e.texts[i] for e in examples], None) for i in range(len(spec.text_columns))]
    for first, second in groups:
        if not examples:
            break
        enc = tokenizer(first, second, truncation=True, max_length=max_length, return_token_type_ids=True)
        types = enc.get("token_type_ids") or [[0] * len(ids) for ids in enc["input_ids"]]
        for i, (ids, tt) in enumerate(zip(enc["input_ids"], types, strict=True)):
            features[i].append(list(ids))
            token_types[i].append(list(tt))
    return EncodedSet(
        spec=spec,
        ids=[e.id for e in examples],
        features=features,
        token_types=token_types,
        labels=[e.label for e in examples],
    )


def collate(encoded: EncodedSet, indices: list[int], pad_token_id: int) -> dict:
    """Stack the chosen examples into padded tensors, padding only to the batch's longest member.

    Returns {"inputs": [{input_ids, attention_mask, token_type_ids}, ... one per encoder input],
    "labels": tensor | None}.
    """
    n_inputs = len(encoded.features[indices[0]])
    inputs = []
    for k in range(n_inputs):
        seqs = [encoded.features[i][k] for i in indices]
        types = [encoded.token_types[i][k] for i in indices]
        width = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), width), pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(seqs), width), dtype=torch.long)
        type_ids = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, (s, t) in enumerate(zip(seqs, types, strict=True)):
            input_ids[row, : len(s)] = torch.tensor(s)
            attention[row, : len(s)] = 1
            type_ids[row, : len(t)] = torch.tensor(t)
        inputs.append({"input_ids": input_ids, "attention_mask": attention, "token_type_ids": type_ids})
    labels = None
    if encoded.labels and encoded.labels[indices[0]] is not None:
        labels = torch.tensor([encoded.labels[i] for i in indices], dtype=torch.float)
    return {"inputs": inputs, "labels": labels}


def collate_packed(encoded: EncodedSet, indices: list[int], pad_token_id: int, row_width: int = 0) -> dict:
    """The batch of `collate` (same examples, same order, same labels) with each encoder input packed.

    Each input is laid out by `mtbert.model.packing.pack_sequences`: rows of concatenated examples with
    restarting position ids (rows as wide as the longest example, or up to `row_width` tokens when that is
    more, cut to the fullest row), so almost no padding; `MultiTaskModel.embed` runs it with a block-diagonal
    attention mask (or, for an encoder that cannot, as the padded batch).
    """
    n_inputs = len(encoded.features[indices[0]])
    inputs = [pack_sequences([encoded.features[i][k] for i in indices], [encoded.token_types[i][k] for i in indices],
                             pad_token_id, row_width) for k in range(n_inputs)]
    labels = None
    if encoded.labels and encoded.labels[indices[0]] is not None:
        labels = torch.tensor([encoded.labels[i] for i in indices], dtype=torch.float)
    return {"inputs": inputs, "labels": labels}


def length_sorted_batches(encoded: EncodedSet, batch_size: int) -> Iterator[list[int]]:
    """Batches of indices sorted by length (longest first), so that padding is minimal in evaluation."""
    order = sorted(range(len(encoded)), key=lambda i: -sum(len(f) for f in encoded.features[i]))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]
