"""mtbert.GradientSurgery on a small model that is not mtbert's: a shared trunk (embedding + MLP) and three heads.

`apply()` must write exactly the method's update of the per-task gradients (PCGrad: Algorithm 1 of Yu et al.,
written out here by hand over the flat gradients, for the orders drawn from the same seeded generator), leave
each head its own task's gradient and an untouched shared parameter `.grad = None`.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

import mtbert
from mtbert.errors import ConfigError, MtbertError
from mtbert.methods.aggregators import AGGREGATORS, make_aggregator
from mtbert.methods.pertask import aggregate_per_layer
from mtbert.methods.surgery import GradientSurgery

TASKS = ("a", "b", "c")
VOCAB = 30


class Net(nn.Module):
    """Embedding -> mean -> two linear layers (`trunk.layer.<i>`), one head per task; `spare` is reached by no task."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(VOCAB, 6)
        self.trunk = nn.ModuleDict({"layer": nn.ModuleList([nn.Linear(6, 8), nn.Linear(8, 5)])})
        self.spare = nn.Linear(3, 3)
        self.heads = nn.ModuleDict({t: nn.Linear(5, 1) for t in TASKS})

    def shared(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if not n.startswith("heads.")]

    def forward(self, task: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        h = self.embed(batch["ids"]).mean(1)
        for layer in self.trunk["layer"]:
            h = torch.tanh(layer(h))
        return ((self.heads[task](h).squeeze(-1) - batch["y"]) ** 2).mean()


def batches(step: int, tasks=TASKS) -> dict[str, dict[str, torch.Tensor]]:
    """Task a and b pull the outputs apart (opposite targets on the same tokens): their gradients conflict."""
    g = torch.Generator().manual_seed(100 + step)
    ids = torch.randint(0, VOCAB // 2, (4, 5), generator=g)  # only half the vocabulary: sparse embedding rows
    y = torch.randn(4, generator=g) * 3
    data = {"a": {"ids": ids, "y": y}, "b": {"ids": ids, "y": -y},
            "c": {"ids": torch.randint(0, VOCAB // 2, (4, 5), generator=g), "y": torch.randn(4, generator=g)}}
    return {t: data[t] for t in tasks}


def flat_grads(model: Net, batch: dict[str, dict]) -> tuple[dict[str, torch.Tensor], dict[str, list]]:
    """Each task's gradient of the shared parameters (flat, float64, zero where unused) and of its own head."""
    shared = [p for _, p in model.shared()]
    out, heads = {}, {}
    for task, b in batch.items():
        loss = model(task, b)
        grads = torch.autograd.grad(loss, shared + list(model.heads[task].parameters()), allow_unused=True)
        dense = [torch.zeros_like(p) if g is None else g for p, g in zip(shared, grads, strict=False)]
        out[task] = torch.cat([g.reshape(-1) for g in dense]).double()
        heads[task] = [g.clone() for g in grads[len(shared) :]]
    return out, heads


def pcgrad_by_hand(grads: list[torch.Tensor], generator: torch.Generator) -> torch.Tensor:
    """Yu et al. 2020, Algorithm 1: for each i, for j in a random order, project g_i' off the ORIGINAL g_j if they
    conflict; the update is the sum of the g_i'."""
    total = torch.zeros_like(grads[0])
    for i in range(len(grads)):
        g = grads[i].clone()
        for j in torch.randperm(len(grads), generator=generator).tolist():
            if j != i and torch.dot(g, grads[j]) < 0:
                g = g - torch.dot(g, grads[j]) / torch.dot(grads[j], grads[j]) * grads[j]
        total += g
    return total


def surgery_step(model: Net, surgery: GradientSurgery, batch: dict[str, dict], sparse: bool = True):
    model.zero_grad(set_to_none=True)
    if sparse:
        surgery.begin_step([b["ids"] for b in batch.values()])
    for task, b in batch.items():
        model(task, b).backward()
        surgery.collect(task)
    return surgery.apply()


def written(model: Net) -> torch.Tensor:
    return torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1) for _, p in model.shared()])


@pytest.mark.parametrize("sparse", [True, False], ids=["embedding-rows", "dense"])
def test_pcgrad_writes_algorithm_1_heads_keep_their_gradient_and_untouched_params_stay_none(sparse):
    model = Net()
    surgery = mtbert.GradientSurgery(model.shared(), method="pcgrad", seed=7,
                                     embedding=model.embed.weight if sparse else None)
    generator = torch.Generator().manual_seed(7)
    for step in range(3):  # the generator's orders go on from step to step
        batch = batches(step)
        grads, heads = flat_grads(model, batch)
        stats = surgery_step(model, surgery, batch, sparse)
        expected = pcgrad_by_hand([grads[t] for t in TASKS], generator)
        torch.testing.assert_close(written(model).double(), expected, atol=1e-6, rtol=1e-5)
        assert not torch.allclose(expected, sum(grads.values()), atol=1e-4)  # the surgery changed something
        assert stats["conflict"]["a-b"] and stats["removed_norm"] > 0
        assert model.spare.weight.grad is None and model.spare.bias.grad is None
        for task in TASKS:
            for p, g in zip(model.heads[task].parameters(), heads[task], strict=True):
                torch.testing.assert_close(p.grad, g)


def test_sparse_rows_keep_only_the_step_tokens():
    model = Net()
    surgery = GradientSurgery(model.shared(), embedding=model.embed.weight)
    batch = batches(0)
    surgery.begin_step([b["ids"] for b in batch.values()])
    rows = torch.unique(torch.cat([b["ids"].reshape(-1) for b in batch.values()])).numel()
    assert surgery._buffer.grads.shape[1] == surgery._buffer.dense_size + rows * 6 < surgery._buffer.dense_size + 180


def test_the_rows_memory_and_the_embedding_gradient_are_kept_from_step_to_step():
    model = Net()
    surgery = GradientSurgery(model.shared(), method="pcgrad", seed=7, embedding=model.embed.weight)
    reference = GradientSurgery(model.shared(), method="pcgrad", seed=7, embedding=model.embed.weight)
    pointers, embedding_grads = [], set()
    def rows(step: int) -> int:
        return torch.unique(torch.cat([b["ids"].reshape(-1) for b in batches(step).values()])).numel()

    for step in sorted(range(4), key=rows, reverse=True):  # the most rows first: the memory never grows after it
        batch = batches(step)
        surgery_step(model, reference, batch)
        expected = written(model).clone()
        reference._buffer._memory = reference._buffer._embedding_grad = None  # fresh memory every step
        surgery_step(model, surgery, batch)
        torch.testing.assert_close(written(model), expected, atol=0, rtol=0)  # zero but for this step's rows
        pointers.append((surgery._buffer._memory.data_ptr(), surgery._buffer._update_memory.data_ptr()))
        embedding_grads.add(model.embed.weight.grad.data_ptr())
        layer = model.trunk["layer"][1].weight  # the update is written into the kept memory, not a fresh tensor
        assert layer.grad.untyped_storage().data_ptr() == surgery._buffer._update_memory.untyped_storage().data_ptr()
        model.embed.weight.grad.mul_(float("nan"))  # as clipping does after an fp16 overflow: every row, in place
    assert len(set(pointers[1:])) == 1  # the first step learns the number of tasks
    assert embedding_grads == {pointers[-1][0]}  # the embedding's .grad is written into the spent rows' memory
    # a .grad that still lives in the update's memory (left set, not cleared) is never written over: fresh memory
    model.zero_grad(set_to_none=True)
    layer = model.trunk["layer"][0].weight
    layer.grad = surgery._buffer._update_memory[: layer.numel()].view_as(layer)
    kept = layer.grad.clone()
    surgery.begin_step([b["ids"] for b in batches(0).values()])
    assert surgery._buffer._update_memory.data_ptr() != pointers[-1][1]
    assert surgery._buffer._memory.data_ptr() == pointers[-1][0]  # the rows' memory holds no .grad: kept
    surgery._buffer.update.fill_(7.0)
    torch.testing.assert_close(layer.grad, kept, atol=0, rtol=0)


METHODS_HERE = [m for m in AGGREGATORS if m in ("sum", "pcgrad") or importlib.util.find_spec("torchjd")]


@pytest.mark.parametrize("method", METHODS_HERE)
def test_every_method_writes_its_aggregator_update(method):
    model = Net()
    surgery = GradientSurgery(model.shared(), method=method, seed=3)
    reference, generator = make_aggregator(method), torch.Generator().manual_seed(3)
    batch = batches(0)
    grads, _ = flat_grads(model, batch)
    surgery_step(model, surgery, batch, sparse=False)
    expected = reference(torch.stack([grads[t] for t in TASKS]).float(), generator=generator)
    torch.testing.assert_close(written(model), expected, atol=1e-5, rtol=1e-4)


def test_per_layer_scope_aggregates_each_layer_block_separately():
    model = Net()
    surgery = GradientSurgery(model.shared(), method="pcgrad", seed=1, scope="per-layer")
    batch = batches(0)
    grads, _ = flat_grads(model, batch)
    surgery_step(model, surgery, batch, sparse=False)
    groups = surgery._buffer.layer_groups()
    assert len(groups) == 3  # trunk.layer.0, trunk.layer.1, and the rest (embedding, spare)
    matrix = torch.stack([grads[t] for t in TASKS]).float()
    expected = aggregate_per_layer(make_aggregator("pcgrad"), matrix, groups, torch.Generator().manual_seed(1))
    torch.testing.assert_close(written(model), expected, atol=1e-6, rtol=1e-5)


def test_method_options_reach_the_method():
    pytest.importorskip("torchjd")
    model = Net()
    batch = batches(0)
    grads, _ = flat_grads(model, batch)
    surgery_step(model, GradientSurgery(model.shared(), method="cagrad", c=0.2), batch, sparse=False)
    expected = make_aggregator("cagrad")(torch.stack([grads[t] for t in TASKS]).float(), c=0.2)
    torch.testing.assert_close(written(model), expected, atol=1e-5, rtol=1e-4)


def test_a_task_set_that_changes_between_steps():
    """Two tasks, then three (the buffer grows a row), then two again: each step is PCGrad of its own tasks."""
    model = Net()
    surgery = GradientSurgery(model.shared(), seed=5)
    generator = torch.Generator().manual_seed(5)
    for tasks in (("a", "b"), TASKS, ("c", "a")):
        batch = batches(1, tasks)
        grads, _ = flat_grads(model, batch)
        stats = surgery_step(model, surgery, batch, sparse=False)
        assert list(stats["grad_norm"]) == list(tasks)
        torch.testing.assert_close(written(model).double(), pcgrad_by_hand([grads[t] for t in tasks], generator),
                                   atol=1e-6, rtol=1e-5)


def test_state_dict_continues_the_random_orders():
    model = Net()
    one = GradientSurgery(model.shared(), seed=2)
    surgery_step(model, one, batches(0), sparse=False)
    resumed = GradientSurgery(model.shared(), seed=99)
    resumed.load_state_dict(one.state_dict())
    surgery_step(model, one, batches(1), sparse=False)
    first = written(model)
    surgery_step(model, resumed, batches(1), sparse=False)
    torch.testing.assert_close(written(model), first, atol=0, rtol=0)


def test_misuse_is_one_clear_error():
    model = Net()
    surgery = GradientSurgery(model.shared())
    with pytest.raises(MtbertError, match="no task was collected"):
        surgery.apply()
    model("a", batches(0)["a"]).backward()
    surgery.collect("a")
    with pytest.raises(MtbertError, match="collected twice"):
        surgery.collect("a")
    with pytest.raises(MtbertError, match="call apply"):
        surgery.begin_step()
    with pytest.raises(ConfigError, match="unknown gradient method 'pgrad'"):
        GradientSurgery(model.shared(), method="pgrad")
    with pytest.raises(ConfigError, match="'pcgrad' has no option 'c'"):
        GradientSurgery(model.shared(), method="pcgrad", c=0.5)
    with pytest.raises(ConfigError, match="needs parameter names"):
        GradientSurgery([p for _, p in model.shared()], scope="per-layer")
    with pytest.raises(MtbertError, match="outside the embedding"):
        GradientSurgery(model.shared(), embedding=model.embed.weight).begin_step(torch.tensor([VOCAB]))


def test_micro_batches_collected_with_accumulate_equal_the_whole_batch():
    """Two halves of each task's batch, each backward followed by `collect(task, accumulate=True)` (the halves
    interleaved across tasks, as Trainer's micro-steps run them), give the update of the whole batch."""
    model = Net()
    whole = batches(0)
    surgery = GradientSurgery(model.shared(), method="pcgrad", seed=1, embedding=model.embed.weight)
    surgery_step(model, surgery, whole)
    expected = written(model).clone()
    model.zero_grad(set_to_none=True)
    halves = [{t: {k: v[i * 2 : (i + 1) * 2] for k, v in b.items()} for t, b in whole.items()} for i in range(2)]
    accumulating = GradientSurgery(model.shared(), method="pcgrad", seed=1, embedding=model.embed.weight)
    accumulating.begin_step([b["ids"] for half in halves for b in half.values()])
    for half in halves:
        for task, b in half.items():
            (model(task, b) / 2).backward()  # the mean over 2 of 4 examples is half the batch's mean
            accumulating.collect(task, accumulate=True)
    assert accumulating.tasks == list(TASKS)
    accumulating.apply()
    torch.testing.assert_close(written(model), expected, atol=1e-6, rtol=1e-5)


class FakeScaler:
    """A float16 gradient scaler as `apply` reads it: the factor the losses were multiplied by."""

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def get_scale(self) -> float:
        return self.scale


def _scaled_step(method: str, scale: float | None, model: Net | None = None) -> tuple[torch.Tensor, dict | None]:
    model = model or Net()
    surgery = GradientSurgery(model.shared(), method=method, seed=2)
    for task, b in batches(0).items():
        (model(task, b) * (scale or 1.0)).backward()
        surgery.collect(task)
    stats = surgery.apply(scaler=FakeScaler(scale) if scale is not None else None)
    return written(model), stats


@pytest.mark.parametrize("method", [m for m in ("pcgrad", "nash-mtl") if m in METHODS_HERE])
def test_fp16_rows_are_unscaled_before_the_aggregation_and_the_update_written_back_scaled(method):
    """Nash-MTL's update does not scale with its input: aggregated scaled, .grad would not be s x the update."""
    plain, plain_stats = _scaled_step(method, None)
    scaled, stats = _scaled_step(method, 1024.0)
    torch.testing.assert_close(scaled, 1024.0 * plain, rtol=1e-4, atol=1e-5)
    assert stats["grad_norm"] == pytest.approx(plain_stats["grad_norm"], rel=1e-4)  # of the true gradients


def test_fp16_rows_that_overflowed_write_nan_and_no_statistics():
    model = Net()
    _, stats = _scaled_step("pcgrad", float("inf"), model)
    reached = [p.grad for n, p in model.shared() if not n.startswith("spare.")]
    assert all(torch.isnan(g).all() for g in reached) and stats is None
    assert model.spare.weight.grad is None  # reached by no task: still no gradient


def test_a_bad_ddp_mode_or_option_value_is_one_clear_error():
    model = Net()
    with pytest.raises(ConfigError, match="ddp_mode: 'global' is not one of exact, local"):
        GradientSurgery(model.shared(), ddp_mode="global")
    with pytest.raises(ConfigError, match="'cagrad': option 'c' must be a number, not 'big'"):
        GradientSurgery(model.shared(), method="cagrad", c="big")
    with pytest.raises(ConfigError, match="'nash-mtl': option 'optim_niter' must be an integer, not 2.5"):
        GradientSurgery(model.shared(), method="nash-mtl", optim_niter=2.5)
