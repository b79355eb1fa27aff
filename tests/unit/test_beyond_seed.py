"""Issue 8's options beyond the seed, on the tiny model: SMART smoothness, masked-LM pretraining, keep_stage1."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from mtbert.config import build_config
from mtbert.data import load_task_data, read_task_file
from mtbert.errors import ConfigError, MtbertError
from mtbert.model import MultiTaskModel, load_encoder
from mtbert.tasks import BUILTIN_TASKS
from mtbert.training.mlm import pretrain_mlm, training_sentences
from mtbert.training.run import train
from mtbert.training.smart import Smoothness, divergence, smart_penalty


def _model_and_inputs(tiny_config, task):
    cfg = build_config({**tiny_config, "dropout": 0.0})
    torch.manual_seed(0)
    encoder, tokenizer = load_encoder(cfg.model_name_or_path, 0.0)
    model = MultiTaskModel(encoder, cfg.task_specs(), dropout=0.0).eval()
    data = load_task_data(cfg.task_specs(), cfg.resolved_data_dir(), tokenizer, 32, "cross", splits=("train",))
    from mtbert.data import collate

    batch = collate(data[task].train, list(range(8)), 0)
    return model, batch["inputs"]


# ---- SMART ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["sst", "para", "sts"])
def test_divergence_is_zero_for_equal_outputs_and_positive_otherwise(task):
    spec = BUILTIN_TASKS[task]
    outputs = torch.randn(6, spec.num_outputs).squeeze(-1)
    assert torch.allclose(divergence(spec, outputs, outputs), torch.zeros(6), atol=1e-6)
    assert (divergence(spec, outputs + torch.randn_like(outputs), outputs) > 0).all()


@pytest.mark.parametrize("task", ["sst", "para", "sts"])
def test_smart_penalty_grows_with_the_perturbation_and_reaches_the_encoder(tiny_config, task):
    model, inputs = _model_and_inputs(tiny_config, task)
    outputs = model(task, inputs)
    penalties = []
    for step in (1e-5, 1e-2, 1.0):
        torch.manual_seed(1)
        penalties.append(smart_penalty(model, task, inputs, outputs, Smoothness(1.0, step_size=step)))
    assert all(p.item() >= 0 for p in penalties)
    assert penalties[0].item() < penalties[1].item() < penalties[2].item()
    assert penalties[0].item() < 1e-3 * penalties[2].item()  # a tiny box barely moves the outputs
    model.zero_grad()
    penalties[2].backward()
    layer = model.encoder.encoder.layer[0].attention.self.query.weight
    assert layer.grad is not None and layer.grad.abs().sum() > 0


def test_smart_weight_changes_training_and_keeps_losses_finite(tiny_config, tmp_path):
    # dropout off: SMART's noise draws would otherwise change the dropout masks, and the weights, by themselves
    plain = train(build_config({**tiny_config, "output_dir": str(tmp_path / "plain"), "method": "pcgrad",
                                "dropout": 0.0}))
    smooth = train(build_config({**tiny_config, "output_dir": str(tmp_path / "smart"), "method": "pcgrad",
                                 "dropout": 0.0, "smart_weight": 3.0, "smart_step_size": 1e-2}))
    weights = [load_file(str(tmp_path / name / "best" / "encoder" / "model.safetensors")) for name in ("plain",
                                                                                                     "smart")]
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    logged = [json.loads(line) for line in (tmp_path / "smart" / "train_log.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(list(r["loss"].values()))).all() for r in logged)
    assert 0 < plain["overall"] <= 1 and 0 < smooth["overall"] <= 1


@pytest.mark.parametrize(("key", "value"), [("smart_weight", -1), ("smart_step_size", 0), ("mlm_steps", -2),
                                            ("mlm_probability", 1.0), ("mlm_learning_rate", 0)])
def test_bad_smart_and_mlm_settings_name_the_key(tiny_config, key, value):
    with pytest.raises(ConfigError, match=rf"^{key}: "):
        build_config({**tiny_config, key: value})


# ---- masked-LM pretraining ------------------------------------------------------------------------------------------


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


# ---- two_step.keep_stage1 -------------------------------------------------------------------------------------------


def test_keep_stage1_lets_the_stage1_model_compete_as_step_0(tiny_config, tmp_path):
    out = tmp_path / "run"
    results = train(build_config({**tiny_config, "output_dir": str(out), "method": "pcgrad",
                                  "two_step": {"num_train_epochs": 2, "keep_stage1": True}}))
    stage1 = json.loads((out / "stage1" / "results.json").read_text())
    for task, key in (("sst", "sst_acc"), ("para", "para_acc"), ("sts", "sts_corr")):
        lines = [json.loads(x) for x in (out / "tasks" / task / "metrics.jsonl").read_text().splitlines()]
        assert lines[0]["step"] == 0
        assert lines[0][key] == pytest.approx(stage1[key], abs=1e-9)  # stage 1's model, unchanged
        best = max(lines, key=lambda r: r["overall"])  # the first of equals wins: step 0 on a tie
        task_results = json.loads((out / "tasks" / task / "results.json").read_text())
        assert task_results["best_step"] == best["step"]
        assert results[key] == pytest.approx(best[key], abs=1e-9)
        heads = load_file(str(out / "tasks" / task / "best" / "heads.safetensors"))
        stage1_heads = load_file(str(out / "stage1" / "best" / "heads.safetensors"))
        same = all(torch.equal(v, stage1_heads[k]) for k, v in heads.items())
        assert same == (best["step"] == 0)


def test_keep_stage1_adds_a_candidate_without_changing_stage_2_training(tiny_config, tmp_path):
    runs, logs = {}, {}
    for keep in (False, True):
        out = tmp_path / f"keep-{keep}"
        train(build_config({**tiny_config, "output_dir": str(out), "dropout": 0.3,
                            "two_step": {"num_train_epochs": 2, "keep_stage1": keep}}))
        lines = (out / "tasks" / "sst" / "metrics.jsonl").read_text().splitlines()
        runs[keep] = [{k: v for k, v in json.loads(x).items() if k != "train_seconds"} for x in lines]
        logs[keep] = (out / "tasks" / "sst" / "train_log.jsonl").read_text()
    assert [r["step"] for r in runs[True]] == [0] + [r["step"] for r in runs[False]]
    assert runs[True][1:] == runs[False]
    assert logs[True] == logs[False]  # every step's loss and gradient norm: dropout drew the same masks


def test_keep_stage1_must_be_a_boolean(tiny_config):
    with pytest.raises(ConfigError, match=r"^two_step\.keep_stage1: must be true or false"):
        build_config({**tiny_config, "two_step": {"keep_stage1": "maybe"}})


@pytest.mark.parametrize(("two_step", "message"), [
    ({"init_from": "runs/x"}, r"^mlm_steps: has no effect with two_step\.init_from"),
    ({"pooling": "cls"}, r"^two_step\.pooling: not a key that stage 2 can change"),
    ({"pair_architecture": "bi-cosine"}, r"^two_step\.pair_architecture: not a key that stage 2 can change"),
])
def test_two_step_refuses_keys_it_would_ignore(tiny_config, two_step, message):
    with pytest.raises(ConfigError, match=message):
        build_config({**tiny_config, "mlm_steps": 5 if "init_from" in two_step else 0, "two_step": two_step})


def test_keep_stage1_with_a_task_left_out_of_stage_1(tiny_config, tmp_path):
    out = tmp_path / "run"
    train(build_config({**tiny_config, "output_dir": str(out), "task_ratio": "0:1:1",
                        "two_step": {"num_train_epochs": 2, "keep_stage1": True}}))
    steps = {t: [json.loads(x)["step"] for x in (out / "tasks" / t / "metrics.jsonl").read_text().splitlines()]
             for t in ("sst", "para", "sts")}
    assert steps["sst"][0] != 0 and steps["para"][0] == 0 and steps["sts"][0] == 0  # no untrained SST candidate
    combined = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in combined] == steps["sst"]  # rows go by step, the same step of every task


# ---- the bench rows of these options --------------------------------------------------------------------------------


def test_two_step_variants_are_compared_with_two_step_pcgrad_and_mlm_steps_scale_with_the_budget():
    from mtbert.bench.quality import reference_row, scaled

    assert reference_row("two-step-pcgrad-smart") == "two-step-pcgrad"
    assert reference_row("two-step-pcgrad") == "pcgrad"  # the seed's chain
    assert reference_row("pcgrad-lld") == "pcgrad"
    assert reference_row("famo") == "multitask"
    assert scaled({"samples_per_task_per_epoch": 1792, "mlm_steps": 672}, 16, 2.5) == {
        "samples_per_task_per_epoch": 4480, "mlm_steps": 1680}
