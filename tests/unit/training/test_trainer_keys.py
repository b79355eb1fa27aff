"""The Trainer-style keys of a stage: gradient accumulation, the best-model metric, early stopping, fp16, LoRA."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mtbert.config import build_config
from mtbert.errors import ConfigError, MtbertError
from mtbert.training.run import train
from mtbert.training.stage import Stage


def _weights(run_dir):
    return load_file(str(run_dir / "best" / "encoder" / "model.safetensors"))


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", ["sum", "pcgrad"])
def test_accumulating_two_micro_batches_of_8_equals_one_batch_of_16(tiny_config, tmp_path, method):
    common = {**tiny_config, "method": method, "dropout": 0.0, "samples_per_task_per_epoch": 32,
              "num_train_epochs": 1, "eval_strategy": "no", "learning_rate": 1e-3}
    train(build_config({**common, "output_dir": str(tmp_path / "big"), "per_device_train_batch_size": 16}))
    train(build_config({**common, "output_dir": str(tmp_path / "acc"), "per_device_train_batch_size": 8,
                        "gradient_accumulation_steps": 2}))
    big, acc = _weights(tmp_path / "big"), _weights(tmp_path / "acc")
    assert big.keys() == acc.keys()
    start = load_file(str(Path(tiny_config["model_name_or_path"]) / "model.safetensors"))
    moved = max((big[k] - start[k]).abs().max() for k in big.keys() & start.keys())
    assert moved > 1e-4  # training changed the encoder, so equality below means something
    for key in big:
        torch.testing.assert_close(acc[key], big[key], atol=1e-5, rtol=1e-5, msg=key)
    logs = [json.loads(line) for line in (tmp_path / "acc" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs] == [1, 2]  # optimizer steps: 32 samples per task in batches of 16


def test_packed_batches_train_as_padded_ones(tiny_config, tmp_path):
    common = {**tiny_config, "method": "pcgrad", "dropout": 0.0, "eval_strategy": "no", "num_train_epochs": 1}
    train(build_config({**common, "output_dir": str(tmp_path / "padded"), "packing": False}))
    train(build_config({**common, "output_dir": str(tmp_path / "packed"), "packing": True}))
    padded, packed = _weights(tmp_path / "padded"), _weights(tmp_path / "packed")
    for key in padded:
        torch.testing.assert_close(packed[key], padded[key], atol=1e-5, rtol=1e-4, msg=key)


def test_metric_for_best_model_picks_best_by_that_metric(tiny_config):
    results = train(build_config({**tiny_config, "num_train_epochs": 4, "metric_for_best_model": "sts_corr",
                                  "greater_is_better": False}))
    run_dir = Path(tiny_config["output_dir"])
    dev = _metrics(run_dir)
    worst = min(dev, key=lambda r: r["sts_corr"])  # greater_is_better false: the lowest correlation wins
    assert results["best_step"] == worst["step"]
    assert (run_dir / "best").is_dir()


def test_early_stopping_stops_after_patience_evaluations_and_finishes(tiny_config):
    cfg = build_config({**tiny_config, "num_train_epochs": 30, "learning_rate": 1e-9, "head_learning_rate": 1e-9,
                        "early_stopping_patience": 2})
    results = train(cfg)
    dev = _metrics(Path(cfg.output_dir))
    best = max(r["overall"] for r in dev)
    assert len(dev) < 30 and results["stopped_early_at"] == dev[-1]["step"]
    assert all(r["overall"] <= best for r in dev[-2:])  # the last two evaluations did not improve
    assert (Path(cfg.output_dir) / "results.json").is_file()


def test_fp16_without_a_gpu_is_one_sentence_and_writes_nothing(tiny_config, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(MtbertError, match="^fp16: float16 mixed precision needs a CUDA GPU and none is available"):
        train(build_config({**tiny_config, "fp16": True}))
    assert not Path(tiny_config["output_dir"]).exists()


# fp16's mechanics run here on the CPU, which has float16 autocast and a GradScaler too: `train` refuses fp16
# without a GPU (above), so these build the Stage themselves.
def _fp16_stage(tiny_config: dict, **extra) -> Stage:
    cfg = build_config({**tiny_config, "fp16": True, "eval_strategy": "no", "dropout": 0.0, **extra})
    return Stage(cfg, Path(cfg.output_dir))


@pytest.mark.parametrize("method", ["sum", "pcgrad"])
def test_fp16_trains_in_float16_autocast_with_a_gradient_scaler(tiny_config, method):
    stage = _fp16_stage(tiny_config, method=method)
    assert stage.amp_dtype == torch.float16 and stage.scaler.get_scale() == 2.0**16
    start = {k: v.clone() for k, v in stage.model.encoder.state_dict().items()}
    stage.run()
    logs = [json.loads(line) for line in (stage.run_dir.train_log).read_text().splitlines()]
    assert len(logs) == 4 and all(math.isfinite(v) for r in logs for v in r["loss"].values())
    moved = max((stage.model.encoder.state_dict()[k] - v).abs().max() for k, v in start.items())
    assert moved > 1e-4


@pytest.mark.parametrize("method", ["sum", "pcgrad"])
def test_fp16_skips_a_step_whose_scaled_gradients_overflow_and_halves_the_scale(tiny_config, method):
    stage = _fp16_stage(tiny_config, method=method, max_steps=1)
    stage.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**120)  # float16 gradients overflow at 65504
    start = {k: v.clone() for k, v in stage.model.state_dict().items()}
    stage.run()
    assert stage.scaler.get_scale() == 2.0**119
    for key, value in stage.model.state_dict().items():
        torch.testing.assert_close(value, start[key], rtol=0, atol=0, msg=key)  # no parameter moved
    assert stage.scheduler.last_epoch == 0  # the schedule did not advance either


def test_fp16_stops_after_max_bad_steps_of_non_finite_loss_as_float32_does(tiny_config, monkeypatch):
    """A non-finite loss overflows the scaled gradients too, but halving the scale cannot cure it: each such step
    counts as bad, and training stops after max_bad_steps of them in a row."""
    from mtbert.training import stage as stage_module  # the stage's objective calls task_loss

    real = stage_module.task_loss

    def poisoned(spec, outputs, labels, sts_loss="mse"):
        loss = real(spec, outputs, labels, sts_loss)
        return loss * float("nan") if spec.name == "sts" else loss

    monkeypatch.setattr(stage_module, "task_loss", poisoned)
    stage = _fp16_stage(tiny_config, max_bad_steps=3)
    message = r"training stopped at step 3 after 3 non-finite steps in a row \(tasks: sts\)"
    with pytest.raises(MtbertError, match=message):
        stage.run()
    assert stage.scaler.get_scale() == 2.0**13  # and each of them halved the scale


def test_fp16_checkpoints_the_gradient_scaler_and_resume_restores_it(tiny_config):
    stage = _fp16_stage(tiny_config)
    stage.scaler = torch.amp.GradScaler("cpu", init_scale=1234.0, growth_interval=7)
    stage.save_checkpoint(1)
    resumed = Stage(stage.cfg, stage.run_dir.root, resume_from_checkpoint="last")
    assert resumed.scaler.get_scale() == 1234.0 and resumed.scaler.get_growth_interval() == 7


@pytest.mark.parametrize(("raw", "message"), [
    ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps: must be a positive integer, not 0"),
    ({"metric_for_best_model": "bleu"}, "metric_for_best_model: 'bleu' is not one of overall | sst_acc"),
    ({"early_stopping_patience": 0}, "early_stopping_patience: must be a positive integer or empty, not 0"),
    ({"freeze_layers": -1}, "freeze_layers: must be >= 0, not -1"),
])
def test_bad_trainer_keys_name_the_key(tiny_config, raw, message):
    with pytest.raises(ConfigError, match="^" + message.replace("|", r"\|")):
        build_config({**tiny_config, **raw})


def test_lora_run_trains_adapters_only_and_best_loads_them(tiny_config):
    from mtbert.model import MultiTaskModel

    cfg = build_config({**tiny_config, "method": "pcgrad", "lora": {"r": 4, "lora_alpha": 8},
                        "freeze_embeddings": True})
    train(cfg)
    best = Path(cfg.output_dir) / "best"
    assert (best / "adapter").is_dir()
    model = MultiTaskModel.from_pretrained(best)
    base = load_file(str(Path(tiny_config["model_name_or_path"]) / "model.safetensors"))
    saved = load_file(str(best / "encoder" / "model.safetensors"))
    for key in base.keys() & saved.keys():  # the base weights never move under LoRA
        torch.testing.assert_close(saved[key], base[key], msg=key)
    assert any("lora" in name for name, _ in model.encoder.named_parameters())
