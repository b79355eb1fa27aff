"""A finished run's max_length is used within its encoder's positions (runs trained before it was checked)."""

from __future__ import annotations

from types import SimpleNamespace

from mtbert.config import build_config
from mtbert.evaluation.finished import usable_length


def model_with(**config) -> SimpleNamespace:
    return SimpleNamespace(encoder=SimpleNamespace(config=SimpleNamespace(**config)))


def test_usable_length_stays_within_the_encoder_s_positions():
    long = build_config({"max_length": 1000})
    assert usable_length(long, model_with(model_type="bert", max_position_embeddings=512)) == 512
    assert usable_length(long, model_with(model_type="roberta", max_position_embeddings=514, pad_token_id=1)) == 512
    assert usable_length(build_config({"max_length": 64}), model_with(model_type="bert",
                                                                      max_position_embeddings=512)) == 64
    assert usable_length(long, model_with(model_type="custom")) == 1000
