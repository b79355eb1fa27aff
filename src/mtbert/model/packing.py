"""Packed batches: several examples laid end to end in each row, each attending only to itself.

A random batch pads every example to its longest member, so about half of its tokens are padding (55% of them
real in 16 batches of 16 random SST training sentences). A packed batch puts the examples into rows as wide as
the longest one, or up to a given row width then cut to the fullest row (first-fit decreasing), gives each its
own position ids (restarting at 0) and lets a token attend only to the tokens of its own example (a 4-D
block-diagonal mask), so that the encoder's linear layers see almost only real tokens.

`pack_sequences` lays one encoder input out; `packed_hidden` runs an encoder on it and returns the last hidden
states in the padded layout `(examples, longest, hidden)`, so pooling is unchanged. An encoder that cannot run
packed inputs (no `position_ids` or 4-D mask in its forward, or outputs that differ from the padded ones) is
detected once, by a probe, and gets the examples as an ordinary padded batch instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

logger = logging.getLogger(__name__)

PACKED_KEYS = ("position_ids", "example_ids", "unpack_index", "attention_mask")
_PROBE_LENGTHS = (6, 4, 2, 3)  # rows [6], [4, 2], [3]: one row holds two examples


def pack_rows(lengths: list[int], width: int | None = None) -> list[list[int]]:
    """Example indices of each row: first-fit decreasing into rows of `width` tokens (default: the longest)."""
    width = max(lengths) if width is None else width
    if lengths and max(lengths) > width:
        raise ValueError(f"an example of {max(lengths)} tokens does not fit a row of {width}")
    rows: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda j: -lengths[j]):
        for r, room in enumerate(free):
            if lengths[i] <= room:
                rows[r].append(i)
                free[r] -= lengths[i]
                break
        else:
            rows.append([i])
            free.append(width - lengths[i])
    return rows


def pad_sequences(seqs: list[list[int]], types: list[list[int]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """One encoder input of a batch, padded to its longest member: input_ids, attention_mask, token_type_ids."""
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(seqs), width), dtype=torch.long)
    type_ids = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, (s, t) in enumerate(zip(seqs, types, strict=True)):
        input_ids[row, : len(s)] = torch.tensor(s)
        attention[row, : len(s)] = 1
        type_ids[row, : len(t)] = torch.tensor(t)
    return {"input_ids": input_ids, "attention_mask": attention, "token_type_ids": type_ids}


def pack_sequences(seqs: list[list[int]], types: list[list[int]], pad_token_id: int,
                   row_width: int = 0) -> dict[str, torch.Tensor]:
    """One encoder input of a batch, packed: a dict of tensors that `packed_hidden` (and `.to(device)`) takes.

    Rows are as wide as the longest example, or up to `row_width` tokens when that is more (then cut to the
    fullest row): wider rows let examples of similar lengths share a row. `input_ids`, `token_type_ids`,
    `position_ids` (from 0 in each example) and `example_ids` (the example of each token, -1 on padding) are
    `(rows, width)`; `unpack_index` `(examples, longest)` holds each example's token positions in the flattened
    rows and `attention_mask` `(examples, longest)` the padded batch's mask.
    """
    lengths = [len(s) for s in seqs]
    longest = max(lengths)
    rows = pack_rows(lengths, max(longest, row_width))
    width = max(sum(lengths[i] for i in members) for members in rows)  # the fullest row
    shape = (len(rows), width)
    input_ids = torch.full(shape, pad_token_id, dtype=torch.long)
    type_ids = torch.zeros(shape, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    example_ids = torch.full(shape, -1, dtype=torch.long)
    unpack_index = torch.zeros((len(seqs), longest), dtype=torch.long)
    attention = torch.zeros((len(seqs), longest), dtype=torch.long)
    for r, members in enumerate(rows):
        start = 0
        for i in members:
            n = lengths[i]
            input_ids[r, start : start + n] = torch.tensor(seqs[i])
            type_ids[r, start : start + n] = torch.tensor(types[i])
            position_ids[r, start : start + n] = torch.arange(n)
            example_ids[r, start : start + n] = i
            unpack_index[i, :n] = torch.arange(r * width + start, r * width + start + n)
            attention[i, :n] = 1
            start += n
    return {"input_ids": input_ids, "token_type_ids": type_ids, "position_ids": position_ids,
            "example_ids": example_ids, "unpack_index": unpack_index, "attention_mask": attention}


def is_packed(inputs: dict[str, torch.Tensor]) -> bool:
    """Whether an encoder input was laid out by `pack_sequences`."""
    return "example_ids" in inputs


def packed_tokens(inputs: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(real tokens, tokens the encoder processes) of an encoder input, packed or padded."""
    if is_packed(inputs):
        return int((inputs["example_ids"] >= 0).sum()), inputs["example_ids"].numel()
    return int(inputs["attention_mask"].sum()), inputs["attention_mask"].numel()


def block_mask(example_ids: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """The 4-D mask `(rows, 1, width, width)` that keeps each example to itself (padding attends to padding).

    Boolean (True: attend) when `dtype` is None, else additive: 0 where a token may attend, the dtype's minimum
    where it may not. No query row is fully masked, so neither form yields NaN.
    """
    same = example_ids[:, None, :, None] == example_ids[:, None, None, :]
    if dtype is None:
        return same
    zero = torch.zeros((), dtype=dtype, device=example_ids.device)
    return torch.where(same, zero, torch.finfo(dtype).min)


@dataclass(frozen=True)
class PackingSupport:
    """How an encoder runs packed rows: its position-id offset and the mask form its attention takes."""

    position_offset: int
    boolean_mask: bool


def packing_support(encoder: nn.Module) -> PackingSupport | None:
    """How `encoder` runs packed inputs, or None when it cannot; probed once per attention implementation.

    The probe compares a packed forward with a padded one on four short random sequences (eval mode, no grad);
    a position offset of padding_idx + 1 (RoBERTa/MPNet embeddings) is tried before 0.
    """
    config = getattr(encoder, "config", None)
    implementation = getattr(config, "_attn_implementation", None) or "eager"
    cache: dict[str, PackingSupport | None] = encoder.__dict__.setdefault("_mtbert_packing", {})
    if implementation not in cache:
        cache[implementation] = _probe(encoder, implementation)
        if cache[implementation] is None:
            logger.info("%s (%s attention) cannot run packed batches; using padded batches",
                        type(encoder).__name__, implementation)
    return cache[implementation]


def packed_hidden(encoder: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The encoder's last hidden states of a packed input, in the padded layout `(examples, longest, hidden)`.

    Positions beyond an example's length hold arbitrary values: pool with `inputs["attention_mask"]`. An
    encoder without packing support runs the same examples as a padded batch.
    """
    support = packing_support(encoder)
    if support is None:
        return encoder(**unpack_inputs(inputs, _pad_id(encoder))).last_hidden_state
    return _run_packed(encoder, inputs, support)


def unpack_inputs(inputs: dict[str, torch.Tensor], pad_token_id: int) -> dict[str, torch.Tensor]:
    """The padded batch of a packed input (what `collate` would have built), `inputs_embeds` included."""
    index, mask = inputs["unpack_index"], inputs["attention_mask"].bool()
    out: dict[str, torch.Tensor] = {"attention_mask": inputs["attention_mask"]}
    if "input_ids" in inputs:
        out["input_ids"] = inputs["input_ids"].reshape(-1)[index].masked_fill(~mask, pad_token_id)
    if "token_type_ids" in inputs:
        out["token_type_ids"] = inputs["token_type_ids"].reshape(-1)[index].masked_fill(~mask, 0)
    if "inputs_embeds" in inputs:
        embeds = inputs["inputs_embeds"]
        out["inputs_embeds"] = embeds.reshape(-1, embeds.shape[-1])[index] * mask.unsqueeze(-1).to(embeds.dtype)
    return out


def _run_packed(encoder: nn.Module, inputs: dict[str, torch.Tensor], support: PackingSupport) -> torch.Tensor:
    kwargs = {k: v for k, v in inputs.items() if k not in PACKED_KEYS}
    dtype = None if support.boolean_mask else next(encoder.parameters()).dtype
    kwargs["attention_mask"] = block_mask(inputs["example_ids"], dtype)
    kwargs["position_ids"] = inputs["position_ids"] + support.position_offset
    hidden = encoder(**kwargs).last_hidden_state
    return hidden.reshape(-1, hidden.shape[-1])[inputs["unpack_index"]]


def _pad_id(encoder: nn.Module) -> int:
    return getattr(getattr(encoder, "config", None), "pad_token_id", None) or 0


def _probe(encoder: nn.Module, implementation: str) -> PackingSupport | None:
    config = encoder.config
    vocab = int(getattr(config, "vocab_size", 0) or 0)
    pad = _pad_id(encoder)
    if vocab < 8:
        return None
    generator = torch.Generator().manual_seed(0)
    seqs = []
    for n in _PROBE_LENGTHS:  # random ids that are never the padding id
        ids = torch.randint(0, vocab - 1, (n,), generator=generator)
        seqs.append((ids + (ids >= pad).long()).tolist())
    with_types = getattr(config, "type_vocab_size", 0) >= 2
    types = [[0] * (n // 2) + [1] * (n - n // 2) for n in _PROBE_LENGTHS]
    packed = pack_sequences(seqs, types, pad)
    if not with_types:
        packed.pop("token_type_ids")
    device = next(encoder.parameters()).device
    packed = {k: v.to(device) for k, v in packed.items()}
    padded = unpack_inputs(packed, pad)
    real = packed["attention_mask"].bool()
    embeddings = getattr(encoder, "embeddings", None)
    offsets = [getattr(embeddings, "padding_idx", None)]
    offsets = [o + 1 for o in offsets if isinstance(o, int)] + [0]
    boolean = implementation in ("sdpa", "flex_attention")
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad(), torch.autocast(device.type, enabled=False):
            reference = encoder(**padded).last_hidden_state.float()
            scale = float(reference[real].abs().max()) or 1.0
            tolerance = 1e-4 if next(encoder.parameters()).dtype == torch.float32 else 1e-2
            for offset in offsets:
                support = PackingSupport(offset, boolean)
                out = _run_packed(encoder, packed, support).float()
                if float((out - reference)[real].abs().max()) <= tolerance * scale:
                    return support
    except (TypeError, ValueError, RuntimeError, IndexError) as err:
        logger.debug("packing probe of %s failed: %s", type(encoder).__name__, err)
    finally:
        encoder.train(was_training)
    return None
