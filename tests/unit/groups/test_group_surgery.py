"""Gradient surgery when tasks share a forward pass (an input_group): exact per-task gradients through the kept
graph, and `surgery_scope: representation` (the method on the tasks' gradients of the encoder's hidden states)."""

from __future__ import annotations

import pytest
import torch
from helpers.groups import group_tasks

from mtbert.config import METHODS
from mtbert.data import load_task_data
from mtbert.data.encoding import collate_packed
from mtbert.data.groups import GroupBatch, collate_group
from mtbert.methods.aggregators import pcgrad
from mtbert.methods.method import Method, plain_group_objective, plain_objective
from mtbert.methods.representation import factor, gramian_weights
from mtbert.model import MultiTaskModel, load_encoder, task_loss
from mtbert.tasks import task_from_config

SCALE = 1.0 / 4


@pytest.fixture()
def setup(tiny_model_dir, group_data_dir):
    """A dropout-free tiny model with the group (intent, mood) and sst, and the group's data."""
    specs = [task_from_config(t, f"tasks[{i}]") for i, t in enumerate([*group_tasks(), "sst"])]
    data = load_task_data(specs, group_data_dir, load_encoder(str(tiny_model_dir), 0.0)[1], 32, "cross")
    specs = [data[s.name].spec for s in specs]  # with their class names
    torch.manual_seed(0)
    encoder, _ = load_encoder(str(tiny_model_dir), 0.0)
    model = MultiTaskModel(encoder, specs, dropout=0.0)
    return model, data


def _group_batch(data, indices=(0, 1, 2, 3, 4, 5), packed=True) -> GroupBatch:
    return collate_group({t: data[t].train for t in ("intent", "mood")}, list(indices), 0, packed=packed)


def _grads(model) -> dict[str, torch.Tensor | None]:
    out = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return out


def _assert_same(a: dict, b: dict, atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for name in a:
        if a[name] is None or b[name] is None:
            assert (a[name] is None or not a[name].any()) and (b[name] is None or not b[name].any()), name
            continue
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=1e-4, msg=name)


def _summed_loss_grads(model, batch: GroupBatch, extra: dict | None = None) -> dict:
    """The gradients of the plain summed (scaled) losses of one forward pass of the group (and of `extra`)."""
    hidden, outputs = model.forward_group(list(batch.tasks), batch.inputs)
    total = sum(task_loss(model.specs[t], outputs[t], b["labels"]) * SCALE for t, b in batch.tasks.items())
    for task, task_batch in (extra or {}).items():
        total = total + task_loss(model.specs[task], model(task, task_batch["inputs"]), task_batch["labels"]) * SCALE
    total.backward()
    return _grads(model)


def _step(method: Method, model, batches: dict, diagnostics: bool = True):
    scale = {t: SCALE for t in ("intent", "mood", "sst")}
    return method.backward(batches, scale, plain_objective(model, torch.device("cpu")), diagnostics,
                           group_objective=plain_group_objective(model, torch.device("cpu")))


def test_one_batch_encodes_once_and_each_task_keeps_its_own_labels(setup):
    model, data = setup
    batch = _group_batch(data, packed=False)
    assert list(batch.tasks) == ["intent", "mood"]
    assert all(b["inputs"] is batch.inputs for b in batch.tasks.values())
    for task in ("intent", "mood"):
        expected = [data[task].train.labels[i] for i in range(6)]
        assert batch.tasks[task]["labels"].tolist() == expected
    assert data["intent"].train.ids == data["mood"].train.ids
    assert data["intent"].train.labels != data["mood"].train.labels  # two label columns of the same rows
    hidden, outputs = model.forward_group(["intent", "mood"], batch.inputs)
    for task in ("intent", "mood"):  # the group's one forward gives each head what its own forward would
        torch.testing.assert_close(outputs[task], model(task, batch.inputs))


@pytest.mark.parametrize("diagnostics", [False, True])
def test_exact_sum_of_a_group_is_the_summed_loss(setup, diagnostics):
    """With diagnostics the engine backpropagates each task through the kept graph into its row; without, the
    sum of the group's losses once: both give the summed loss's gradients."""
    model, data = setup
    batch = _group_batch(data)
    expected = _summed_loss_grads(model, batch)
    losses, stats = _step(Method("sum", model, ["intent", "mood"], seed=0), model, {"utt": batch}, diagnostics)
    _assert_same(_grads(model), expected)
    assert set(losses) == {"intent", "mood"}
    assert (stats is not None) == diagnostics


def test_exact_pcgrad_of_a_group_is_pcgrad_of_the_separately_computed_task_gradients(setup):
    model, data = setup
    batch = _group_batch(data)
    shared = [p for p in model.encoder.parameters()]
    rows, heads = [], {}
    for task, task_batch in batch.tasks.items():  # each task's gradient from its own forward and backward
        (task_loss(model.specs[task], model(task, task_batch["inputs"]), task_batch["labels"]) * SCALE).backward()
        rows.append(torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in shared]))
        heads.update({n: p.grad.clone() for n, p in model.heads.named_parameters() if p.grad is not None})
        model.zero_grad(set_to_none=True)
    update = pcgrad(torch.stack(rows), generator=torch.Generator().manual_seed(3))
    _, stats = _step(Method("pcgrad", model, ["intent", "mood"], seed=3), model, {"utt": batch})
    got = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in shared])
    torch.testing.assert_close(got, update, atol=1e-6, rtol=1e-4)
    for name, p in model.heads.named_parameters():  # each head: its own task's gradient (sst's: none)
        if name.startswith("sst."):
            assert p.grad is None
        else:
            torch.testing.assert_close(p.grad, heads[name], msg=name)
    cosine = torch.nn.functional.cosine_similarity(rows[0], rows[1], dim=0).item()
    assert stats["cosine"]["intent-mood"] == pytest.approx(cosine, abs=1e-5)


@pytest.mark.parametrize("with_sst", [False, True])
def test_representation_scope_with_sum_is_the_summed_loss(setup, with_sst):
    model, data = setup
    batch = _group_batch(data)
    sst = {"sst": collate_packed(data["sst"].train, [0, 1, 2, 3], 0)} if with_sst else {}
    expected = _summed_loss_grads(model, batch, sst)
    tasks = ["intent", "mood", *sst]
    _, stats = _step(Method("sum", model, tasks, seed=0, representation=True), model, {"utt": batch, **sst})
    _assert_same(_grads(model), expected, atol=1e-5)
    assert set(stats["cosine"]) == ({"intent-mood", "intent-sst", "mood-sst"} if with_sst else {"intent-mood"})


def test_representation_pcgrad_is_pcgrad_of_the_hidden_states_gradients(setup):
    """Built by hand: each task's gradient of the step's hidden states (zero on the blocks it does not read: sst's
    batch is its own block), PCGrad on the concatenated rows, one backward of each block's share."""
    model, data = setup
    batch = _group_batch(data)
    sst = collate_packed(data["sst"].train, [0, 1, 2, 3], 0)
    hidden, outputs = model.forward_group(["intent", "mood"], batch.inputs)
    sst_hidden = [model.hidden_states(x) for x in sst["inputs"]]
    losses = {t: task_loss(model.specs[t], outputs[t], b["labels"]) * SCALE for t, b in batch.tasks.items()}
    losses["sst"] = task_loss(model.specs["sst"], model.head_outputs("sst", sst_hidden, sst["inputs"]),
                              sst["labels"]) * SCALE
    blocks = [hidden[0], sst_hidden[0]]
    rows = []
    for loss in losses.values():
        grads = torch.autograd.grad(loss, blocks, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(g if g is not None else torch.zeros_like(b)).reshape(-1)
                               for g, b in zip(grads, blocks, strict=True)]))
    update = pcgrad(torch.stack(rows), generator=torch.Generator().manual_seed(5))
    parts = update.split([b.numel() for b in blocks])
    torch.autograd.backward(blocks, [p.view_as(b) for p, b in zip(parts, blocks, strict=True)])
    expected = {n: p.grad.clone() for n, p in model.encoder.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    _step(Method("pcgrad", model, ["intent", "mood", "sst"], seed=5, representation=True), model,
          {"utt": batch, "sst": sst})
    got = {n: p.grad.clone() for n, p in model.encoder.named_parameters() if p.grad is not None}
    assert got.keys() == expected.keys()
    for name in got:
        torch.testing.assert_close(got[name], expected[name], atol=1e-6, rtol=1e-4, msg=name)


def test_weights_from_a_gramian_factor_reproduce_the_method_on_the_rows():
    grads = torch.randn(3, 50, dtype=torch.float64)
    grads[1] = -0.5 * grads[0] + 0.1 * grads[1]  # a conflict
    weights, f, _ = gramian_weights(pcgrad, grads @ grads.T, torch.Generator().manual_seed(0))
    torch.testing.assert_close(f @ f.T, grads @ grads.T)
    torch.testing.assert_close(weights @ grads, pcgrad(grads, generator=torch.Generator().manual_seed(0)))
    singular = torch.stack([grads[0], 2 * grads[0], torch.zeros(50, dtype=torch.float64)])
    w, _, _ = gramian_weights(pcgrad, singular @ singular.T)
    torch.testing.assert_close(w @ singular, pcgrad(singular))
    assert factor(torch.zeros(2, 2)).abs().sum() == 0


@pytest.mark.parametrize("representation", [False, True])
@pytest.mark.parametrize("name", [m for m in METHODS if m != "single"])
def test_every_method_trains_a_group_with_either_scope(setup, name, representation):
    model, data = setup
    method = Method(name, model, ["intent", "mood", "sst"], seed=0, representation=representation)
    if method.loss_module is not None:
        model.loss_weighting = method.loss_module
    batches = {"utt": _group_batch(data), "sst": collate_packed(data["sst"].train, [0, 1, 2, 3], 0)}
    losses, stats = _step(method, model, batches)
    assert set(losses) == {"intent", "mood", "sst"}
    grads = [p.grad for p in model.encoder.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)
    assert any(bool(g.any()) for g in grads)
    for task in ("intent", "mood", "sst"):  # every head got its own task's gradient
        assert all(p.grad is not None for p in model.heads[task].parameters())
    if name in ("uncertainty", "famo") and not representation:
        return  # a loss weighting on one process logs its weights; its rows only with diagnostics
    assert set(stats["cosine"]) == {"intent-mood", "intent-sst", "mood-sst"}


def test_micro_batches_of_a_group_collect_the_whole_batch_gradient(setup):
    """Gradient accumulation: each micro-batch's per-task gradients are added into the task's row, so PCGrad sees
    the whole batch's per-task gradients."""
    model, data = setup
    whole = _group_batch(data, range(6), packed=False)
    halves = [_group_batch(data, range(3), packed=False), _group_batch(data, range(3, 6), packed=False)]
    _step(Method("pcgrad", model, ["intent", "mood"], seed=1), model, {"utt": whole})
    expected = _grads(model)
    _step(Method("pcgrad", model, ["intent", "mood"], seed=1), model, {"utt": halves})
    _assert_same(_grads(model), expected, atol=1e-6)
