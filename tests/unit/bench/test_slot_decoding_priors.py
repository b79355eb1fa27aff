"""benchmarks/slot_decoding_priors.py: the slot types of each intent and the tag-bigram prior, from training tags."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))

from slot_decoding_priors import SMOOTHING, bigram_prior, intent_types  # noqa: E402


def test_each_intent_keeps_the_slot_types_its_training_utterances_hold():
    tags = [("B-artist", "I-artist", "O"), ("O", "B-city"), ("B-album", "O")]
    assert intent_types(["play", "weather", "play"], tags) == {"play": {"artist", "album"}, "weather": {"city"}}


def test_the_bigram_prior_is_log_p_of_a_tag_after_another_over_p_of_the_tag():
    names = ["O", "B-a", "I-a"]
    prior = bigram_prior(names, [("O", "B-a", "I-a"), ("B-a", "O")])
    pairs = np.full((3, 3), SMOOTHING)
    for before, after in ((0, 1), (1, 2), (1, 0)):
        pairs[before, after] += 1
    unigram = pairs.sum(0) / pairs.sum()
    assert np.isclose(prior.step[1, 2], np.log(pairs[1, 2] / pairs[1].sum() / unigram[2]))
    assert np.isclose(prior.start[1], np.log((1 + SMOOTHING) / (2 + 3 * SMOOTHING) / unigram[1]))
    assert prior.step[1, 2] > 0 > prior.step[0, 2]  # I-a follows B-a, seen; after O, never
    assert not prior.end.any()
