"""Tests of mtbert.training.mlm: masked-LM pretraining on the training sentences."""

from __future__ import annotations

import json

import pytest
import torch

from mtbert.config import build_config
from mtbert.data import read_task_file
from mtbert.errors import ConfigError, MtbertError
from mtbert.model import load_encoder
from mtbert.training.mlm import pretrain_mlm, training_sentences
from mtbert.training.run import train


@pytest.mark.parametrize(("key", "value"), [("smart_weight", -1), ("smart_step_size", 0), ("mlm_steps", -2),
                                            ("mlm_probability", 1.0), ("mlm_learning_rate", 0)])
def test_bad_smart_and_mlm_settings_name_the_key(tiny_config, key, value):
    with pytest.raises(ConfigError, match=rf"^{key}: "):
        build_config({**tiny_config, key: value})


def test_mlm_reads_only_training_sentences(tiny_config):
    cfg = build_config(tiny_config)
    sentences = set(training_sentences(cfg))
    for spec in cfg.task_specs():
        train_texts = {t for e in read_task_file(cfg.resolved_data_dir() / spec.train_file, spec).examples
                       for t in e.texts}
        dev_texts = {t for e in read_task_file(cfg.resolved_data_dir() / spec.dev_file, spec).examples
                     for t in e.texts}
        assert train_texts <= sentences
        assert not (dev_texts - train_texts) & sentences


def test_mlm_pretraining_lowers_its_loss_and_writes_a_loadable_encoder(tiny_config, tmp_path):
    cfg = build_config({**tiny_config, "mlm_steps": 30, "mlm_learning_rate": 1e-3, "logging_steps": 5})
    folder = pretrain_mlm(cfg, tmp_path / "run" / "mlm", torch.device("cpu"))
    losses = [json.loads(line)["mlm_loss"] for line in (tmp_path / "run" / "mlm_log.jsonl").read_text().splitlines()]
    assert len(losses) == 6 and losses[-1] < losses[0]
    before, _ = load_encoder(cfg.model_name_or_path, 0.0)
    after, _ = load_encoder(str(folder), 0.0)
    changed = [n for n, p in after.named_parameters() if not torch.equal(p, dict(before.named_parameters())[n])]
    assert any(n.startswith("encoder.layer.") for n in changed)
    assert not any(n.startswith("pooler.") for n in changed)  # masked-LM does not use the pooler
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert pretrain_mlm(cfg, folder, torch.device("cpu")) == folder  # a finished pretraining is reused
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    other = build_config({**tiny_config, "mlm_steps": 31, "mlm_learning_rate": 1e-3, "logging_steps": 5})
    with pytest.raises(MtbertError, match=r"^mlm_steps: .* was pretrained with other settings"):
        pretrain_mlm(other, folder, torch.device("cpu"))  # never reused with other settings


def test_a_run_with_mlm_steps_fine_tunes_from_the_pretrained_encoder(tiny_config, tmp_path):
    out = tmp_path / "run"
    train(build_config({**tiny_config, "output_dir": str(out), "mlm_steps": 4, "num_train_epochs": 1,
                        "two_step": {"num_train_epochs": 1}}))
    assert (out / "mlm" / "model.safetensors").is_file()
    assert (out / "results.json").is_file() and (out / "tasks" / "sts" / "results.json").is_file()
    saved = (out / "config.yaml").read_text()
    assert "mlm_steps: 4" in saved  # the run's config as written, not the pretrained path
    from mtbert.config import load_config

    stage1 = load_config(out / "stage1" / "config.yaml")
    assert stage1.mlm_steps == 4


def test_mlm_reads_a_token_tasks_words_as_sentences(tiny_config, tmp_path):
    """A token task's input is a list of words: masked-LM pretraining reads each as one sentence, spaces between
    the words (it used to fail on the list). Its input group's intent task reads the same words: one sentence."""
    rows = [{"tokens": ["play", "nina", "simone"], "intent": "play", "slots": ["O", "B-artist", "I-artist"]},
            {"tokens": ["book", "paris"], "intent": "book", "slots": ["O", "B-city"]}]
    (tmp_path / "joint-train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "joint-dev.jsonl").write_text(json.dumps(rows[0]) + "\n")
    common = {"train_file": "joint-train.jsonl", "dev_file": "joint-dev.jsonl", "text_columns": ["tokens"],
              "input_group": "joint"}
    cfg = build_config({**tiny_config, "data_dir": str(tmp_path), "mlm_steps": 2, "tasks": [
        {"name": "intent", "kind": "single", "label_column": "intent", **common},
        {"name": "slots", "kind": "token-classification", "label_column": "slots", **common}]})
    assert training_sentences(cfg) == ["play nina simone", "book paris"]
