"""benchmarks/snips_errors.py: each gold span the prediction lacks is a wrong type, a wrong boundary or missed."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))

from snips_errors import slot_errors, spans  # noqa: E402


def test_spans_follow_the_conlleval_rules():
    assert spans(["B-a", "I-a", "O", "I-b", "B-c"]) == {("a", 0, 1), ("b", 3, 3), ("c", 4, 4)}


def test_each_kind_of_slot_error_is_counted_once():
    gold = {("a", 0, 1), ("b", 3, 3), ("c", 5, 6), ("e", 9, 9)}
    pred = {("a", 0, 0), ("x", 3, 3), ("d", 8, 8), ("e", 9, 9)}
    kinds, confusions = slot_errors(gold, pred)
    assert kinds == {"boundary": 1, "type": 1, "missed": 1, "spurious": 1}
    assert confusions == {"b read as x": 1}
    assert slot_errors(gold, gold) == ({"spurious": 0}, {})
