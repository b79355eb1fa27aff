"""Every feature on MPNet, which is not BERT (no token type ids, position ids offset by the padding index, a
relative attention bias shared by all layers): a tiny random MPNet trains with each kind of method, per-layer
surgery, per-layer learning-rate decay, SMART and two-step, saves and loads, packs, and exports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mtbert.config import build_config
from mtbert.methods.method import make_method
from mtbert.model import MultiTaskModel, load_encoder
from mtbert.training.optim import param_groups
from mtbert.training.run import train


@pytest.fixture(scope="module")
def tiny_mpnet_dir(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer MPNet (hidden 32) with the bundled backbone's WordPiece tokenizer."""
    from transformers import AutoTokenizer, MPNetConfig, MPNetModel

    from mtbert.model import default_backbone

    folder = tmp_path_factory.mktemp("tiny-mpnet")
    tokenizer = AutoTokenizer.from_pretrained(default_backbone(), use_fast=True)
    torch.manual_seed(0)
    config = MPNetConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=37, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id)
    MPNetModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture()
def mpnet_config(tiny_config, tiny_mpnet_dir) -> dict:
    return {**tiny_config, "model_name_or_path": str(tiny_mpnet_dir)}


@pytest.mark.parametrize("extra", [
    {"method": "pcgrad", "surgery_scope": "per-layer", "layerwise_lr_decay": 0.8, "smart_weight": 1.0},
    {"method": "famo"},
    {"method": "uncertainty", "task_ratio": "0:3:1", "sample_weighting": True},
    {"method": "cagrad", "pair_architecture": "bi-cosine", "pooling": "mean"},
    {"method": "pcgrad", "packing": True, "gradient_accumulation_steps": 2},
])
def test_mpnet_trains_with_every_kind_of_method(mpnet_config, extra):
    if extra["method"] == "cagrad":
        pytest.importorskip("torchjd")
    results = train(build_config({**mpnet_config, **extra}))
    assert np.isfinite(results["overall"])
    best = Path(mpnet_config["output_dir"]) / "best"
    model = MultiTaskModel.from_pretrained(best)
    assert type(model.encoder).__name__ == "MPNetModel"
    assert (best / "README.md").is_file()


def test_mpnet_two_step_with_keep_stage1(mpnet_config):
    cfg = build_config({**mpnet_config, "method": "pcgrad", "num_train_epochs": 1,
                        "two_step": {"num_train_epochs": 1, "keep_stage1": True}})
    results = train(cfg)
    assert set(results["best_step"]) == {"sst", "para", "sts"}
    for task in ("sst", "para", "sts"):
        assert (Path(cfg.output_dir) / "tasks" / task / "best" / "mtbert_config.json").is_file()


def test_mpnet_per_layer_groups_and_learning_rate_depths(mpnet_config, tiny_mpnet_dir):
    cfg = build_config({**mpnet_config, "layerwise_lr_decay": 0.5, "learning_rate": 1.0})
    encoder, _ = load_encoder(str(tiny_mpnet_dir), 0.0)
    model = MultiTaskModel(encoder, cfg.task_specs())
    method = make_method("pcgrad", model, ["sst", "para", "sts"], surgery_scope="per-layer")
    method.buffer.begin_step(None)
    assert len(method.buffer.layer_groups()) == 3  # layer 0, layer 1, and the rest (embeddings, attention bias)
    lr_of = {id(p): g["lr"] for g in param_groups(model, cfg) for p in g["params"]}
    named = dict(model.named_parameters())
    assert lr_of[id(named["encoder.encoder.layer.1.attention.attn.q.weight"])] == 1.0  # the top layer
    assert lr_of[id(named["encoder.encoder.layer.0.attention.attn.q.weight"])] == 0.5
    assert lr_of[id(named["encoder.embeddings.word_embeddings.weight"])] == 0.25
    assert lr_of[id(named["encoder.encoder.relative_attention_bias.weight"])] == 1.0  # shared by every layer


def test_mpnet_saves_loads_and_exports_a_cross_encoder(mpnet_config, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    from mtbert.cli import main

    cfg = build_config({**mpnet_config, "tasks": ["sts"], "method": "single"})
    train(cfg)
    run = Path(cfg.output_dir)
    assert main(["predict", str(run), "--task", "sts", "--input", str(Path(cfg.data_dir) / "sts-dev.csv"),
                 "--output", str(tmp_path / "pred.csv"), "--format", "csv"]) == 0
    expected = [float(line.split(",")[1]) for line in (tmp_path / "pred.csv").read_text().splitlines()[1:]]
    assert main(["export", str(run), "--task", "sts", "--output", str(tmp_path / "export")]) == 0
    from mtbert.data import read_task_file

    texts = [e.texts for e in read_task_file(Path(cfg.data_dir) / "sts-dev.csv", cfg.task_specs()[0],
                                             labeled=False).examples]
    got = st.CrossEncoder(str(tmp_path / "export"), device="cpu").predict(texts)
    np.testing.assert_allclose(got, expected, atol=1e-4)
