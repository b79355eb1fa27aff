"""Tests of the config's size bounds (issue 36: sizes beyond any run fill the memory or never end) and of keys
given twice in YAML."""

from __future__ import annotations

import json

import pytest

from mtbert.config import (
    MAX_BATCH,
    MAX_STEPS,
    build_config,
    check_model_limits,
    encoder_positions,
    load_config,
    parse_overrides,
)
from mtbert.errors import ConfigError


@pytest.mark.parametrize(("values", "message"), [
    ({"per_device_train_batch_size": MAX_BATCH + 1}, "per_device_train_batch_size: 65537 is more than 65,536 samples"),
    ({"per_device_eval_batch_size": 10**9}, "per_device_eval_batch_size: 1000000000 is more than 65,536"),
    ({"task_ratio": "1:1:100000000000"}, "task_ratio: '1:1:100000000000' times per_device_train_batch_size 16 is"),
    ({"per_device_train_batch_size": 4096, "task_ratio": "1:1:17"},
     "task_ratio: '1:1:17' times per_device_train_batch_size 4096 is 69,632 samples of one task per batch"),
    ({"gradient_accumulation_steps": 65536, "per_device_train_batch_size": 512}, "gradient_accumulation_steps: "
                                                                                 "65536 micro-batches of 512"),
    ({"gradient_accumulation_steps": 10**6}, "gradient_accumulation_steps: 1000000 is more than 65,536"),
    ({"samples_per_task_per_epoch": 10**15}, "samples_per_task_per_epoch: 10 epochs of 1,000,000,000,000,000"),
    ({"num_train_epochs": 1e12}, "num_train_epochs: 1e+12 epochs of 20,000 samples per task make about"),
    ({"max_steps": MAX_STEPS + 1}, "max_steps: 1000000001 is more than 1,000,000,000 steps"),
    ({"mlm_steps": 10**10}, "mlm_steps: 10000000000 is more than 1,000,000,000 steps"),
    ({"max_length": 10**6}, "max_length: 1000000 is more than 65,536 tokens"),
    ({"seed": -1}, "seed: must be in 0..4294967295, not -1"),
    ({"seed": 2**40}, "seed: must be in 0..4294967295"),
    ({"seed": 2**64}, "seed: 18446744073709551616 is too large (more than 64 bits)"),
    ({"lora": {"r": 10**9}}, "lora.r: 1000000000 is more than 4,096"),
    ({"two_step": {"per_device_train_batch_size": 10**8}}, "two_step.per_device_train_batch_size: 100000000 is more"),
])
def test_sizes_beyond_any_run_are_refused_naming_the_key(values, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        build_config(values)


def test_the_command_line_has_the_yaml_loader_s_64_bit_limit():
    """`--key 1e20` used to pass as an int (the YAML loader refuses it in a file)."""
    with pytest.raises(ConfigError, match=r"^samples_per_task_per_epoch: 100000000000000000000 is too large"):
        build_config(parse_overrides(["--samples_per_task_per_epoch", "100000000000000000000"]))
    with pytest.raises(ConfigError, match=r"^warmup_steps: 1e30 is too large"):
        build_config(parse_overrides(["--warmup_steps", "1e30"]))


def test_sizes_at_the_bounds_still_validate():
    cfg = build_config({"per_device_train_batch_size": MAX_BATCH, "max_steps": MAX_STEPS, "seed": 2**32 - 1,
                        "max_length": 512, "logging_steps": 2**63 - 1})
    assert cfg.per_device_train_batch_size == MAX_BATCH and cfg.seed == 2**32 - 1
    build_config({"samples_per_task_per_epoch": 10**9, "max_steps": 10})  # max_steps bounds the run instead


def test_max_length_is_checked_against_the_encoder_s_positions(tmp_path):
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "max_position_embeddings": 512}))
    roberta = tmp_path / "roberta"
    roberta.mkdir()
    (roberta / "config.json").write_text(json.dumps({"model_type": "roberta", "max_position_embeddings": 514,
                                                     "pad_token_id": 1}))
    short = tmp_path / "short"
    short.mkdir()
    (short / "config.json").write_text(json.dumps({"model_type": "bert", "max_position_embeddings": 512}))
    (short / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 256}))
    assert encoder_positions(str(bert)) == 512 and encoder_positions(str(roberta)) == 512
    assert encoder_positions(str(short)) == 256 and encoder_positions(str(tmp_path / "nothing")) is None
    check_model_limits(build_config({"max_length": 512}), 512, "bert")
    with pytest.raises(ConfigError, match=r"^max_length: 513 is more than the 512 token positions of the encoder "
                                          r"bert; give at most 512$"):
        check_model_limits(build_config({"max_length": 513}), 512, "bert")


def test_a_key_given_twice_is_refused_with_its_lines(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method: sum\nlearning_rate: 1.0e-5\nseed: 1\nlearning_rate: 3.0e-5\n")
    with pytest.raises(ConfigError, match=rf"^{path}, line 4: refused: the key 'learning_rate' is given twice \(first "
                                          r"on line 2\); keep one$"):
        load_config(path)
    path.write_text("two_step:\n  learning_rate: 1.0e-5\n  learning_rate: 2.0e-5\n")
    with pytest.raises(ConfigError, match=r"line 3: refused: the key 'learning_rate' is given twice"):
        load_config(path)
    path.write_text("tasks: [sst, para]\nmethod: sum\n")  # the same value under different keys is fine
    assert load_config(path).tasks == ["sst", "para"]
