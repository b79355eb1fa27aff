"""The training step and loop on the tiny random model: per-task gradients, heads, ratios, determinism."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from mtbert.config import build_config
from mtbert.data import MultiTaskSampler, collate, load_task_data
from mtbert.methods.method import make_method, plain_objective
from mtbert.model import MultiTaskModel, load_encoder, task_loss
from mtbert.training.run import train

CPU = torch.device("cpu")


def _setup(tiny_config, batch_size=4):
    cfg = build_config({**tiny_config, "dropout": 0.0})
    torch.manual_seed(0)
    encoder, tokenizer = load_encoder(cfg.model_name_or_path, 0.0)
    specs = cfg.task_specs()
    model = MultiTaskModel(encoder, specs, dropout=0.0)
    data = load_task_data(specs, cfg.resolved_data_dir(), tokenizer, 32, "cross", splits=("train",))
    sampler = MultiTaskSampler({s.name: len(data[s.name].train) for s in specs}, seed=0)
    batches = {s.name: collate(data[s.name].train, sampler.draw(s.name, batch_size), 0) for s in specs}
    return model, batches


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_per_task_buffer_with_sum_equals_plain_accumulation(tiny_config):
    model, batches = _setup(tiny_config)
    scale = {t: 0.25 for t in batches}
    plain = copy.deepcopy(model)
    summed = make_method("sum", plain, list(batches))
    summed.backward(batches, scale, plain_objective(plain, CPU))
    assert not summed.uses_buffer(3, diagnostics=False)
    buffered = make_method("sum", model, list(batches))
    assert buffered.uses_buffer(3, diagnostics=True)  # a step that logs diagnostics fills the buffer
    buffered.backward(batches, scale, plain_objective(model, CPU), diagnostics=True)
    expected, got = _grads(plain), _grads(model)
    assert expected.keys() == got.keys()  # unused parameters (the pooler) keep None in both
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-6, rtol=1e-5, msg=name)


def test_heads_get_only_their_own_task_gradient_under_pcgrad(tiny_config):
    model, batches = _setup(tiny_config)
    scale = {t: 0.25 for t in batches}
    reference = copy.deepcopy(model)
    make_method("pcgrad", model, list(batches)).backward(batches, scale, plain_objective(model, CPU))
    for task, batch in batches.items():
        reference.zero_grad(set_to_none=True)
        loss = task_loss(reference.specs[task], reference(task, batch["inputs"]), batch["labels"]) * scale[task]
        loss.backward()
        for (name, p), (_, q) in zip(model.heads[task].named_parameters(), reference.heads[task].named_parameters(),
                                     strict=True):
            torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-5, msg=f"{task}.{name}")


def test_pcgrad_update_differs_from_sum_only_when_tasks_conflict(tiny_config):
    model, batches = _setup(tiny_config)
    scale = {t: 0.25 for t in batches}
    _, stats = make_method("pcgrad", model, list(batches)).backward(batches, scale, plain_objective(model, CPU),
                                                                     diagnostics=True)
    assert set(stats["cosine"]) == {"sst-para", "sst-sts", "para-sts"}
    if not any(stats["conflict"].values()):
        assert stats["removed_norm"] == pytest.approx(0.0, abs=1e-6)
    else:
        assert stats["removed_norm"] > 0


def test_ratio_zero_task_head_does_not_change(tiny_config, tmp_path):
    cfg = build_config({**tiny_config, "method": "pcgrad", "task_ratio": "0:1:1"})
    torch.manual_seed(cfg.seed)
    encoder, _ = load_encoder(cfg.model_name_or_path, cfg.dropout)
    initial = MultiTaskModel(encoder, cfg.task_specs(), dropout=cfg.dropout).heads["sst"].state_dict()
    results = train(cfg)
    assert "sst_acc" not in results and "para_acc" in results
    saved = load_file(f"{cfg.output_dir}/best/heads.safetensors")
    for name, value in initial.items():
        torch.testing.assert_close(saved[f"sst.{name}"], value)
    assert not (tmp_path / "run" / "predictions" / "sst-dev-output.csv").exists()


def test_same_seed_same_result_and_sample_weighting_changes_it(tiny_config, tmp_path):
    first = train(build_config({**tiny_config, "output_dir": str(tmp_path / "a"), "method": "pcgrad",
                                "task_ratio": "1:3:1"}))
    second = train(build_config({**tiny_config, "output_dir": str(tmp_path / "b"), "method": "pcgrad",
                                 "task_ratio": "1:3:1"}))
    train(build_config({**tiny_config, "output_dir": str(tmp_path / "c"), "method": "pcgrad",
                                   "task_ratio": "1:3:1", "sample_weighting": True}))
    for key in ("sst_acc", "para_acc", "sts_corr", "overall"):
        assert first[key] == second[key]
    a = load_file(str(tmp_path / "a" / "best" / "heads.safetensors"))
    c = load_file(str(tmp_path / "c" / "best" / "heads.safetensors"))
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_run_dir_outputs_and_train_log(tiny_config, tmp_path):
    cfg = build_config({**tiny_config, "method": "pcgrad"})
    train(cfg)
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "results.json", "train_log.jsonl", "best/mtbert_config.json",
                 "best/heads.safetensors", "best/encoder/model.safetensors"):
        assert (run / name).is_file(), name
    assert not list(run.glob("checkpoint-*"))
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1.0, 2.0]
    assert all({"step", "split", "sst_acc", "para_acc", "sts_corr", "overall"} <= set(line) for line in lines)
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert {"loss", "grad_norm", "cosine", "conflict", "removed_norm"} <= set(log[0])
    results = json.loads((run / "results.json").read_text())
    assert results["overall_ci95"][0] <= results["overall"] <= results["overall_ci95"][1]
    model = MultiTaskModel.from_pretrained(run / "best")
    assert set(model.heads) == {"sst", "para", "sts"}


def test_non_empty_output_dir_is_refused(tiny_config, tmp_path):
    from mtbert.errors import MtbertError

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("x")
    with pytest.raises(MtbertError, match=r"output_dir: .* is not empty; pass --overwrite_output_dir"):
        train(build_config(tiny_config))


def test_non_finite_loss_stops_after_max_bad_steps(tiny_config, monkeypatch):
    from mtbert.errors import MtbertError
    from mtbert.training import stage as train_module  # the stage's objective calls task_loss

    real = train_module.task_loss

    def poisoned(spec, outputs, labels, sts_loss="mse"):
        return real(spec, outputs, labels, sts_loss) * float("nan") if spec.name == "sts" else real(
            spec, outputs, labels, sts_loss)

    monkeypatch.setattr(train_module, "task_loss", poisoned)
    message = r"training stopped at step 3 after 3 non-finite steps in a row \(tasks: sts\)"
    with pytest.raises(MtbertError, match=message):
        train(build_config({**tiny_config, "max_bad_steps": 3}))


def test_report_to_tensorboard_logs_losses_lr_dev_metrics_and_cosines(tiny_config, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = build_config({**tiny_config, "method": "pcgrad", "report_to": "tensorboard"})
    train(cfg)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    logged = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert {"loss/sst", "loss/para", "loss/sts", "lr", "dev/overall", "dev/sts_corr", "cosine/sst-para"} <= tags
    assert [e.step for e in events.Scalars("loss/sst")] == [r["step"] for r in logged]
    assert [e.value for e in events.Scalars("loss/para")] == pytest.approx([r["loss"]["para"] for r in logged])
    dev = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [e.value for e in events.Scalars("dev/overall")] == pytest.approx(
        [r["overall"] for r in dev if r.get("split") == "dev"])


def test_final_dev_metrics_reuse_the_best_epochs_outputs(tiny_config, tmp_path, monkeypatch):
    import mtbert.training.stage

    calls = []
    real = mtbert.training.stage.evaluate_sets

    def counting(*args, **kwargs):
        calls.append(kwargs.get("with_interval", False))
        return real(*args, **kwargs)

    monkeypatch.setattr(mtbert.training.stage, "evaluate_sets", counting)
    results = train(build_config(tiny_config))
    dev = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert calls == [False] * len(dev) == [False, False]  # one evaluation per epoch, none again at the end
    best = next(r for r in dev if r["step"] == results["best_step"])
    assert {k: results[k] for k in ("sst_acc", "para_acc", "sts_corr", "overall")} == \
        {k: best[k] for k in ("sst_acc", "para_acc", "sts_corr", "overall")}
    assert results["overall_ci95"][0] <= results["overall"] <= results["overall_ci95"][1]
    from mtbert.evaluation.evaluate import evaluate_sets
    from mtbert.model import MultiTaskModel

    fresh, _ = evaluate_sets(MultiTaskModel.from_pretrained(tmp_path / "run" / "best"), _dev_sets(tiny_config), 16, 0)
    assert fresh["overall"] == pytest.approx(results["overall"], abs=1e-12)


def _dev_sets(tiny_config):
    cfg = build_config(tiny_config)
    _, tokenizer = load_encoder(cfg.model_name_or_path, 0.0)
    data = load_task_data(cfg.task_specs(), cfg.resolved_data_dir(), tokenizer, cfg.max_length, cfg.pair_architecture,
                          splits=("dev",))
    return {name: task_data.dev for name, task_data in data.items()}
