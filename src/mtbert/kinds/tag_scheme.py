"""Constrained decoding of a token task's tags: the most probable sequence of tags that is valid in its scheme.

A tagger that takes each word's most probable tag on its own can output sequences no annotator would write:
`I-artist` after `O`, or `B-album I-artist`. seqeval (the conlleval rules) then scores spans that were never
predicted as one. With `constrained_decoding: true` a token task instead takes, per sentence, the sequence of
tags with the highest product of the words' tag probabilities among the sequences the scheme allows (the Viterbi
algorithm over fixed 0 / -inf transition scores, as a CRF decoder with allowed transitions does; AllenNLP's
`allowed_transitions` are the same rules):

- BIO (IOB2): `I-X` only after `B-X` or `I-X`; never first.
- IOBES (BIOES; BILOU with `L-`/`U-`): `I-X`/`E-X` only after `B-X` or `I-X`; after `B-X`/`I-X` only
  `I-X`/`E-X`; a sentence does not end inside an entity.

The scheme is read off the tag names: `O` and `P-TYPE` with P in B, I (BIO) or also E, S / L, U (IOBES).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

OUTSIDE = "O"
BIO_PREFIXES = frozenset("BI")
IOBES_PREFIXES = frozenset("BIES")
BILOU_PREFIXES = frozenset("BILU")


@dataclass(frozen=True)
class Transitions:
    """Log-scores (0 or -inf) of a tag set's allowed sequences: `start[j]` (tag j first), `step[i, j]` (tag j
    after tag i) and `end[i]` (tag i last)."""

    start: np.ndarray
    step: np.ndarray
    end: np.ndarray


def scheme_problem(label_names: Sequence[str]) -> str | None:
    """Why the tags are not one BIO or IOBES tag set (the first tag that fits neither), or None when they are."""
    prefixes = set()
    for name in label_names:
        if name == OUTSIDE:
            continue
        prefix, dash, entity = name.partition("-")
        if not dash or len(prefix) != 1 or not entity or prefix not in BIO_PREFIXES | IOBES_PREFIXES | BILOU_PREFIXES:
            return f"tag '{name}' is neither O nor B-, I-, E-, S-, L- or U- followed by a type"
        prefixes.add(prefix)
    if not prefixes <= IOBES_PREFIXES and not prefixes <= BILOU_PREFIXES:
        return f"the tags mix the IOBES and BILOU prefixes ({', '.join(sorted(prefixes))})"
    return None


def transitions(label_names: Sequence[str]) -> Transitions:
    """The allowed transitions of a BIO or IOBES/BILOU tag set (ValueError when it is neither: `scheme_problem`)."""
    problem = scheme_problem(label_names)
    if problem is not None:
        raise ValueError(problem)
    parsed = [(OUTSIDE, "") if n == OUTSIDE else tuple(n.split("-", 1)) for n in label_names]
    parsed = [({"L": "E", "U": "S"}.get(p, p), entity) for p, entity in parsed]  # BILOU read as IOBES
    closing = any(p in ("E", "S") for p, _ in parsed)  # IOBES: an entity opened by B- ends with E-
    continuing = ("I", "E") if closing else ("I",)  # tags that go on with the entity before them
    n = len(parsed)
    start, step, end = np.zeros(n), np.zeros((n, n)), np.zeros(n)
    for j, (prefix, entity) in enumerate(parsed):
        if prefix in continuing:
            start[j] = -np.inf
        for i, (before, before_entity) in enumerate(parsed):
            open_before = before in ("B", "I")
            if prefix in continuing:
                allowed = open_before and before_entity == entity
            else:
                allowed = not (closing and open_before)
            if not allowed:
                step[i, j] = -np.inf
        if closing and prefix in ("B", "I"):
            end[j] = -np.inf
    return Transitions(start, step, end)


def best_tags(probabilities: np.ndarray, allowed: Transitions) -> np.ndarray:
    """The most probable allowed tag sequence (Viterbi) for one sentence's words x tags probabilities."""
    if len(probabilities) == 0:
        return np.zeros(0, dtype=int)
    with np.errstate(divide="ignore"):
        emissions = np.log(np.asarray(probabilities, dtype=float))
    score = emissions[0] + allowed.start
    back = np.empty((len(emissions) - 1, len(allowed.start)), dtype=int)
    for t in range(1, len(emissions)):
        candidates = score[:, None] + allowed.step
        back[t - 1] = candidates.argmax(0)
        score = candidates.max(0) + emissions[t]
    tags = [int((score + allowed.end).argmax())]
    for pointers in back[::-1]:
        tags.append(int(pointers[tags[-1]]))
    return np.array(tags[::-1], dtype=int)
