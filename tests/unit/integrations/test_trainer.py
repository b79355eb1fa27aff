"""mtbert.MultiTaskTrainer: the same parameters as mtbert's own step logic on the same batches (sum and PCGrad, no
dropout), an exact resume from its checkpoints, a model that is not mtbert's, clear errors, and two gloo processes
under torchrun equal to one process on the union of their batches.

The reference loop below is mtbert's training step written out with its parts (`MultiTaskSampler`, `collate`,
`task_loss`, `PerTaskGradients`, the aggregators), as `mtbert train` runs it: each task's summed loss scaled by
1/unit (or 1/n_t with sample weighting), one backward per task, the buffer aggregated, clipping at 1, AdamW.
"""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.aggregator_properties import needs_torchjd
from helpers.runs import beside
from safetensors.torch import load_file
from torch import nn
from transformers import TrainerCallback, TrainingArguments, default_data_collator

from mtbert import MultiTaskTrainer
from mtbert.data import MultiTaskSampler, collate, load_task_data, samples_per_step
from mtbert.errors import ConfigError, MtbertError
from mtbert.methods.aggregators import make_aggregator
from mtbert.methods.pertask import PerTaskGradients
from mtbert.model import MultiTaskModel, load_encoder, task_loss
from mtbert.tasks import BUILTIN_TASKS
from mtbert.training.weight_average import ema_decay_at

TASKS = ["sst", "para", "sts"]
UNIT = 4


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_model(model_dir: Path, dropout: float = 0.0) -> tuple[MultiTaskModel, object]:
    torch.manual_seed(0)
    encoder, tokenizer = load_encoder(str(model_dir), dropout)
    return MultiTaskModel(encoder, [BUILTIN_TASKS[t] for t in TASKS], dropout=dropout), tokenizer


def train_sets(data_dir: Path, tokenizer) -> dict:
    data = load_task_data([BUILTIN_TASKS[t] for t in TASKS], data_dir, tokenizer, 32, "cross", splits=("train",))
    return {t: data[t].train for t in TASKS}


def args(output_dir: Path, **extra) -> TrainingArguments:
    base = {"max_steps": 3, "per_device_train_batch_size": UNIT, "learning_rate": 1e-3, "lr_scheduler_type": "constant",
            "weight_decay": 0.0, "max_grad_norm": 1.0, "optim": "adamw_torch", "logging_steps": 1,
            "save_strategy": "no", "eval_strategy": "no", "report_to": "none", "use_cpu": True, "seed": 0,
            "disable_tqdm": True}
    return TrainingArguments(output_dir=str(output_dir), **{**base, **extra})


def reference_training(model: MultiTaskModel, sets: dict, method: str, ratios: dict[str, int], weighting: bool,
                       steps: int, pad: int, seed: int = 0) -> None:
    """mtbert's step on its own parts: sampler, collate, task_loss, PerTaskGradients, the aggregator, AdamW."""
    sizes = {t: len(sets[t]) for t in TASKS if ratios[t] > 0}
    sampler = MultiTaskSampler(sizes, seed=seed)
    named = [(n, p) for n, p in model.encoder.named_parameters() if p.requires_grad]
    buffer = PerTaskGradients([p for _, p in named], len(sizes), model.encoder.get_input_embeddings().weight,
                              names=[n for n, _ in named])
    aggregate, generator = make_aggregator(method), torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        per_step = samples_per_step("fixed-ratio", sizes, ratios, UNIT)
        batches = {t: collate(sets[t], sampler.draw(t, n), pad) for t, n in per_step.items()}
        buffer.begin_step(torch.cat([x["input_ids"].view(-1) for b in batches.values() for x in b["inputs"]]))
        for index, (task, batch) in enumerate(batches.items()):
            outputs = model(task, batch["inputs"])
            scale = 1.0 / (per_step[task] if weighting else UNIT)
            (task_loss(model.specs[task], outputs.float(), batch["labels"]) * scale).backward()
            buffer.collect(index)
        buffer.write(aggregate(buffer.grads, generator=generator))
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def assert_same_parameters(a: nn.Module, b: nn.Module, atol: float = 1e-5) -> None:
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    assert pa.keys() == pb.keys()
    for name in pa:
        torch.testing.assert_close(pa[name].detach(), pb[name].detach(), atol=atol, rtol=0, msg=name)


@pytest.mark.parametrize(("method", "task_ratio", "weighting"), [("sum", None, False), ("pcgrad", "1:2:1", True)])
def test_trainer_ends_with_the_parameters_of_mtbert_step_logic(tiny_model_dir, tiny_data_dir, tmp_path, method,
                                                               task_ratio, weighting):
    model, tokenizer = tiny_model(tiny_model_dir)
    sets = train_sets(tiny_data_dir, tokenizer)
    trainer = MultiTaskTrainer(model, args(tmp_path / "t"), train_dataset=sets, processing_class=tokenizer,
                               method=method, task_ratio=task_ratio, sample_weighting=weighting)
    trainer.train()
    reference, _ = tiny_model(tiny_model_dir)
    ratios = dict(zip(TASKS, map(int, (task_ratio or "1:1:1").split(":")), strict=True))
    reference_training(reference, sets, method, ratios, weighting, 3, tokenizer.pad_token_id)
    start, _ = tiny_model(tiny_model_dir)
    layer = "encoder.encoder.layer.0.attention.self.query.weight"
    assert not torch.allclose(start.get_parameter(layer), model.get_parameter(layer))  # it trained
    assert_same_parameters(model, reference)
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 3 and all(f"loss_{t}" in logged[0] for t in TASKS)
    assert {"cosine_sst-para", "conflict_sst-sts", "grad_norm_sts", "removed_norm"} <= logged[-1].keys()
    if method == "sum":
        assert logged[-1]["removed_norm"] == pytest.approx(0.0, abs=1e-6)


def test_resumed_run_ends_where_an_uninterrupted_one_ends(tiny_model_dir, tiny_data_dir, tmp_path):
    """Dropout on (Trainer's RNG states), PCGrad (the generator), 3 steps an epoch (the sampler crosses epochs)."""
    extra = {"max_steps": 5, "save_strategy": "steps", "save_steps": 2}
    options = {"method": "pcgrad", "samples_per_task_per_epoch": 12}
    model, tokenizer = tiny_model(tiny_model_dir, dropout=0.1)
    sets = train_sets(tiny_data_dir, tokenizer)
    MultiTaskTrainer(model, args(tmp_path / "run", **extra), train_dataset=sets, processing_class=tokenizer,
                     **options).train()
    checkpoint = tmp_path / "run" / "checkpoint-2"
    assert (checkpoint / "mtbert_trainer_state.json").is_file()
    assert MultiTaskModel.from_pretrained(checkpoint).heads.keys() == model.heads.keys()  # mtbert's folder layout
    resumed, _ = tiny_model(tiny_model_dir, dropout=0.1)
    trainer = MultiTaskTrainer(resumed, args(tmp_path / "run", **extra), train_dataset=sets,
                               processing_class=tokenizer, **options)
    trainer.train(resume_from_checkpoint=str(checkpoint))
    assert trainer.state.global_step == 5
    assert_same_parameters(resumed, model, atol=1e-6)


def test_gradient_accumulation_2_x_4_trains_to_the_weights_of_batch_8(tiny_model_dir, tiny_data_dir, tmp_path):
    """PCGrad with sample weighting and a 1:2:1 ratio: each task's 2 micro-batches add up in its row of the
    engine's buffer before the one aggregation, so the step is the one of the whole batch (1e-5)."""
    runs = {}
    for name, batch, accumulation in (("accumulated", 4, 2), ("whole", 8, 1)):
        model, tokenizer = tiny_model(tiny_model_dir)
        trainer = MultiTaskTrainer(model, args(tmp_path / name, per_device_train_batch_size=batch,
                                               gradient_accumulation_steps=accumulation),
                                   train_dataset=train_sets(tiny_data_dir, tokenizer), processing_class=tokenizer,
                                   method="pcgrad", task_ratio="1:2:1", sample_weighting=True)
        trainer.train()
        runs[name] = model, [e for e in trainer.state.log_history if "loss" in e]
    (accumulated, log_a), (whole, log_w) = runs["accumulated"], runs["whole"]
    start, _ = tiny_model(tiny_model_dir)
    layer = "encoder.encoder.layer.0.attention.self.query.weight"
    assert not torch.allclose(start.get_parameter(layer), accumulated.get_parameter(layer))  # it trained
    assert_same_parameters(accumulated, whole, atol=1e-5)
    assert len(log_a) == len(log_w) == 3
    for a, w in zip(log_a, log_w, strict=True):
        assert a["loss"] == pytest.approx(w["loss"], rel=1e-4)
        assert all(a[f"loss_{t}"] == pytest.approx(w[f"loss_{t}"], rel=1e-4) for t in TASKS)


@pytest.mark.parametrize("method", ["nash-mtl", "cagrad"])
def test_fp16_trains_every_method_the_engine_unscaling_the_rows(tiny_model_dir, tiny_data_dir, tmp_path, method):
    """fp16 is no longer refused for methods that are not scale-invariant: with the gradient scaler Trainer's
    accelerator holds (a CPU `GradScaler` put in its place here: Accelerate makes one on GPUs only), the step writes
    exactly scale x the float32 step into `.grad`, which the scaler's `unscale_` then divides again."""
    needs_torchjd(method)
    model, tokenizer = tiny_model(tiny_model_dir)
    sets = train_sets(tiny_data_dir, tokenizer)
    trainer = MultiTaskTrainer(model, args(tmp_path / "fp16", fp16=True, max_steps=1), train_dataset=sets,
                               processing_class=tokenizer, method=method)
    trainer.train()  # float16 autocast on the CPU: no refusal, a finite step
    assert all(torch.isfinite(p).all() for p in model.parameters())
    batches, state = trainer.draw_batches(1), trainer.surgery.state_dict()
    grads = {}
    for scale in (None, 1024.0):
        trainer.surgery.load_state_dict(state)  # the same start for both: the generator, and no warm start
        getattr(trainer.surgery.aggregate, "reset", lambda: None)()
        trainer.accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=scale) if scale else None
        model.zero_grad(set_to_none=True)
        trainer.multitask_step(model, batches)
        grads[scale] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert grads[None].keys() == grads[1024.0].keys()
    for name, grad in grads[None].items():
        torch.testing.assert_close(grads[1024.0][name], 1024.0 * grad, rtol=1e-3, atol=1e-6, msg=name)


class Trunk(nn.Module):
    """Not mtbert's model: a shared MLP and two heads; forward(task, batch) returns the batch's mean loss."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Sequential(nn.Linear(4, 8), nn.Tanh())
        self.heads = nn.ModuleDict({"up": nn.Linear(8, 1), "down": nn.Linear(8, 1)})

    def forward(self, task: str, batch: dict) -> torch.Tensor:
        return ((self.heads[task](self.trunk(batch["x"])).squeeze(-1) - batch["labels"]) ** 2).mean()


def toy_set(sign: float, n: int = 24) -> list[dict]:
    g = torch.Generator().manual_seed(int(sign > 0))
    x = torch.randn(n, 4, generator=g)
    return [{"x": x[i], "labels": sign * x[i].sum()} for i in range(n)]


def test_any_model_whose_forward_returns_a_task_loss(tmp_path):
    model = Trunk()
    trainer = MultiTaskTrainer(model, args(tmp_path, max_steps=4, per_device_train_batch_size=6),
                               train_dataset={"up": toy_set(1.0), "down": toy_set(-1.0)},
                               eval_dataset={"up": toy_set(1.0), "down": toy_set(-1.0)},
                               data_collator=default_data_collator, shared_parameters=model.trunk.named_parameters())
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    assert set(after) >= {"eval_up_loss", "eval_down_loss", "eval_loss"} and after["eval_loss"] < before["eval_loss"]
    assert "cosine_up-down" in trainer.state.log_history[0]


def test_bad_settings_are_one_clear_error(tiny_model_dir, tiny_data_dir, tmp_path):
    model, tokenizer = tiny_model(tiny_model_dir)
    sets = train_sets(tiny_data_dir, tokenizer)
    with pytest.raises(ConfigError, match="task_ratio: '1:2' must be 3 whole numbers"):
        MultiTaskTrainer(model, args(tmp_path), train_dataset=sets, task_ratio="1:2")
    with pytest.raises(ConfigError, match="unknown task 'nli'"):
        MultiTaskTrainer(model, args(tmp_path), train_dataset=sets, task_ratio={"nli": 1})
    with pytest.raises(ConfigError, match=r"train_dataset\['sst'\]: the dataset is empty"):
        MultiTaskTrainer(model, args(tmp_path), train_dataset={**sets, "sst": []})
    with pytest.raises(ConfigError, match="unknown gradient method 'pgrad'"):
        MultiTaskTrainer(model, args(tmp_path), train_dataset=sets, method="pgrad")
    with pytest.raises(ConfigError, match="shared_parameters"):
        MultiTaskTrainer(Trunk(), args(tmp_path), train_dataset={"up": toy_set(1.0)})
    with pytest.raises(ConfigError, match="surgery_buffer_dtype: 'bf16' is not one of float32, bfloat16"):
        MultiTaskTrainer(model, args(tmp_path), train_dataset=sets, surgery_buffer_dtype="bf16")


def test_a_bfloat16_buffer_trains_close_to_float32_rows(tiny_model_dir, tiny_data_dir, tmp_path):
    start, _ = tiny_model(tiny_model_dir)
    ends = {"start": dict(start.named_parameters())}
    for dtype in ("float32", "bfloat16"):
        model, tokenizer = tiny_model(tiny_model_dir)
        trainer = MultiTaskTrainer(model, args(tmp_path / dtype), train_dataset=train_sets(tiny_data_dir, tokenizer),
                                   processing_class=tokenizer, method="pcgrad", surgery_buffer_dtype=dtype)
        trainer.train()
        assert trainer.surgery.buffer.buffer_dtype == (torch.bfloat16 if dtype == "bfloat16" else torch.float32)
        ends[dtype] = dict(model.named_parameters())
    def distance(a, b):
        return float(sum(((ends[a][n].detach() - ends[b][n].detach()) ** 2).sum() for n in ends[a]) ** 0.5)

    moved, apart = distance("float32", "start"), distance("bfloat16", "float32")
    assert 0 < apart < 0.05 * moved  # rounded rows, the same training (Adam moves a parameter by about lr per step)


DISTRIBUTED_SCRIPT = '''
import sys
import torch
from transformers import TrainingArguments
from mtbert import MultiTaskModel, MultiTaskTrainer
from mtbert.data import load_task_data
from mtbert.model import load_encoder
from mtbert.tasks import BUILTIN_TASKS
from mtbert.training.weight_average import ema_decay_at

model_dir, data_dir, out, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
torch.manual_seed(0)
encoder, tokenizer = load_encoder(model_dir, 0.0)
specs = [BUILTIN_TASKS[t] for t in ("sst", "para", "sts")]
model = MultiTaskModel(encoder, specs, dropout=0.0)
data = load_task_data(specs, __import__("pathlib").Path(data_dir), tokenizer, 32, "cross", splits=("train",))
args = TrainingArguments(output_dir=out, max_steps=3, per_device_train_batch_size=batch, learning_rate=1e-3,
                         lr_scheduler_type="constant", optim="adamw_torch", logging_steps=1, save_strategy="no",
                         report_to="none", use_cpu=True, seed=0, disable_tqdm=True)
trainer = MultiTaskTrainer(model, args, train_dataset={s.name: data[s.name].train for s in specs},
                           processing_class=tokenizer, method="pcgrad", task_ratio="1:2:1", sample_weighting=True)
trainer.train()
trainer.save_model(out + "/final")
if torch.distributed.is_initialized():  # gloo's threads stopped before the interpreter exits, else a rank can abort
    torch.distributed.barrier()         # at exit ("terminate called without an active exception")
    torch.distributed.destroy_process_group()
'''


@pytest.mark.e2e
def test_two_gloo_processes_equal_one_process_on_the_union_of_their_batches(tiny_model_dir, tiny_data_dir, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(DISTRIBUTED_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    two = subprocess.Popen(launch + [str(script), str(tiny_model_dir), str(tiny_data_dir), str(tmp_path / "two"), "2"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    # the one process on the union of the batches: this one, while the two ranks run
    with beside(two), pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", [str(script), str(tiny_model_dir), str(tiny_data_dir), str(tmp_path / "one"), "4"])
        runpy.run_path(str(script), run_name="__main__")
    _, err = two.communicate(timeout=300)
    assert two.returncode == 0, err[-3000:]
    for name in ("heads.safetensors", "encoder/model.safetensors"):
        two, one = (load_file(str(tmp_path / run / "final" / name)) for run in ("two", "one"))
        assert two.keys() == one.keys()
        for key in two:
            torch.testing.assert_close(two[key], one[key], atol=1e-5, rtol=0, msg=key)


class Recorder(TrainerCallback):
    """The trained weights after every optimizer step."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.steps = model, []

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.steps.append({n: p.detach().clone() for n, p in self.model.named_parameters()})


def toy_trainer(tmp_path: Path, ema_decay: float | None, **extra) -> MultiTaskTrainer:
    model = Trunk()
    return MultiTaskTrainer(model, args(tmp_path, **{"max_steps": 4, "per_device_train_batch_size": 6, **extra}),
                            train_dataset={"up": toy_set(1.0), "down": toy_set(-1.0)},
                            eval_dataset={"up": toy_set(1.0), "down": toy_set(-1.0)},
                            data_collator=default_data_collator, shared_parameters=model.trunk.named_parameters(),
                            ema_decay=ema_decay)


def test_ema_decay_evaluates_the_average_and_train_ends_with_it(tmp_path):
    plain = toy_trainer(tmp_path / "plain", None)
    recorder = Recorder(plain.model)
    plain.add_callback(recorder)
    plain.train()  # training is the same with and without the average: only what is evaluated and kept differs
    expected = {n: p.clone() for n, p in recorder.steps[0].items()}
    for updates, weights in enumerate(recorder.steps[1:], start=1):
        decay = ema_decay_at(0.5, updates)
        expected = {n: decay * expected[n] + (1 - decay) * weights[n] for n in expected}

    averaged = toy_trainer(tmp_path / "ema", 0.5)
    averaged.train()
    assert averaged.average.updates == 4
    for name, value in averaged.model.named_parameters():  # the model ends as the average
        torch.testing.assert_close(value.detach(), expected[name], atol=1e-6, rtol=0, msg=name)
    assert not torch.allclose(expected["trunk.0.weight"], recorder.steps[-1]["trunk.0.weight"])

    averaged.model.load_state_dict(recorder.steps[-1])  # the trained weights back in the model:
    plain.model.load_state_dict(expected)  # evaluate still scores the average
    assert averaged.evaluate()["eval_loss"] == pytest.approx(plain.evaluate()["eval_loss"], abs=1e-6)


def test_a_resumed_run_continues_the_average_exactly(tmp_path):
    extra = {"max_steps": 5, "save_strategy": "steps", "save_steps": 2}
    whole = toy_trainer(tmp_path / "run", 0.6, **extra)
    whole.train()
    checkpoint = tmp_path / "run" / "checkpoint-2"
    assert (checkpoint / "ema.safetensors").is_file()
    resumed = toy_trainer(tmp_path / "run", 0.6, **extra)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.average.updates == 5
    assert_same_parameters(resumed.model, whole.model, atol=1e-6)

    without = toy_trainer(tmp_path / "plain", None, **extra)
    without.train()
    with pytest.raises(MtbertError, match="holds no moving average of the weights"):
        toy_trainer(tmp_path / "plain", 0.6, **extra).train(resume_from_checkpoint=str(tmp_path / "plain" /
                                                                                        "checkpoint-2"))
    with pytest.raises(ConfigError, match=r"ema_decay: must be between 0 and 1 \(e.g. 0.999\), not 1.0"):
        toy_trainer(tmp_path, 1.0)


def test_the_best_checkpoint_gives_its_average_with_load_best_model_at_end(tmp_path):
    """The metric is read the wrong way round (the highest loss is best), so that the best checkpoint is an early
    one: the model ends as that checkpoint's average, not the last one."""
    extra = {"eval_strategy": "steps", "eval_steps": 1, "save_strategy": "steps", "save_steps": 1,
             "load_best_model_at_end": True, "metric_for_best_model": "loss", "greater_is_better": True}
    trainer = toy_trainer(tmp_path / "run", 0.5, **extra)
    trainer.train()
    best = Path(trainer.state.best_model_checkpoint)
    assert best.name != "checkpoint-4"
    saved = load_file(best / "ema.safetensors")
    for name, value in trainer.model.named_parameters():
        torch.testing.assert_close(value.detach(), saved[name], atol=0, rtol=0, msg=name)
    assert trainer.average.updates == int(best.name.split("-")[1])
