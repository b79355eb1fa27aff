"""`GradientSurgery(buffer_dtype="bfloat16")` (`surgery_buffer_dtype`): the per-task rows in bfloat16, the Gramian
and the update one bfloat16 product each where the device has bf16 instructions, else accumulated in float32 over
column chunks; the update in the parameters' dtype.

The update must be that of the float32 buffer up to bfloat16's rounding of the rows (2^-9 relative per element):
every method, on both paths, is checked against the float32 buffer's update within a relative error of 2e-2 (sum
and PCGrad: 1e-2); the chunked products against float32 products of the same (rounded) rows, and the bfloat16
products against float64 ones within bfloat16's rounding, with the sign of every entry kept.
"""

from __future__ import annotations

import pytest
import torch

from mtbert.config import build_config
from mtbert.errors import ConfigError
from mtbert.methods import aggregators
from mtbert.methods.aggregators import _combine, _gramian, diagnose, make_aggregator, pcgrad_projected, sum_rows
from mtbert.methods.surgery import GradientSurgery, aggregate_per_layer

from .test_surgery import METHODS_HERE, TASKS, FakeScaler, Net, batches, surgery_step, written


@pytest.fixture
def small_chunks(monkeypatch):
    """The float32 chunks' path (as on a CPU without bf16 instructions), with chunks of 64 bytes: every product runs
    over many chunks, the last one shorter."""
    monkeypatch.setattr(aggregators, "_native_bfloat16", lambda device_type: False)
    monkeypatch.setattr(aggregators, "CHUNK_BYTES", 64)


@pytest.fixture(params=["chunks", "bfloat16-products"])
def products(request, monkeypatch):
    """Each path of low-precision rows: float32 column chunks (of 64 bytes), or one bfloat16 product (taken on
    the CPU here whatever its instructions: slower without them, the same rounding)."""
    native = request.param == "bfloat16-products"
    monkeypatch.setattr(aggregators, "_native_bfloat16", lambda device_type: native)
    monkeypatch.setattr(aggregators, "CHUNK_BYTES", 64)
    return request.param


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(value.double() - reference.double()) / torch.linalg.vector_norm(reference))


def test_chunked_gramian_combination_and_diagnostics_equal_float32_products_of_the_rounded_rows(small_chunks):
    rows = torch.randn(4, 37, generator=torch.Generator().manual_seed(0)).bfloat16()
    full = rows.float()
    torch.testing.assert_close(_gramian(rows), (full.double() @ full.double().T), rtol=1e-6, atol=1e-6)
    weights = torch.tensor([0.5, -1.0, 2.0, 0.25])
    combined = _combine(weights, rows)
    assert combined.dtype == torch.float32
    torch.testing.assert_close(combined, weights @ full, rtol=1e-6, atol=1e-6)
    out = torch.empty(37)
    assert _combine(weights, rows, out=out) is out
    torch.testing.assert_close(sum_rows(rows), full.sum(0), rtol=1e-6, atol=1e-6)
    generator = torch.Generator().manual_seed(3)
    torch.testing.assert_close(pcgrad_projected(rows, generator), pcgrad_projected(full, torch.Generator()
                                                                                      .manual_seed(3)))
    stats, reference = diagnose(rows, combined, list("abcd")), diagnose(full, combined, list("abcd"))
    assert stats["conflict"] == reference["conflict"]
    assert stats["cosine"] == pytest.approx(reference["cosine"], abs=1e-6)
    assert stats["removed_norm"] == pytest.approx(reference["removed_norm"], rel=1e-5)


def test_bfloat16_products_equal_float64_products_of_the_rounded_rows_within_one_rounding(monkeypatch):
    monkeypatch.setattr(aggregators, "_native_bfloat16", lambda device_type: True)
    generator = torch.Generator().manual_seed(5)
    rows = torch.randn(5, 4000, generator=generator)
    rows[1] = 0.3 * rows[0] + rows[1]  # a large cosine, and entries of both signs
    rows[2] = -0.01 * rows[3] + rows[2]
    rows = rows.bfloat16()
    exact = rows.double() @ rows.double().T
    gramian = _gramian(rows)
    assert gramian.dtype == torch.float64
    assert ((gramian - exact).abs() <= 2.0**-8 * exact.abs() + 1e-3).all()  # float32 sums, one bfloat16 rounding
    assert torch.equal(gramian > 0, exact > 0)
    weights = torch.tensor([0.5, -1.0, 2.0, 0.25, 1.0])
    combined = _combine(weights, rows, out=torch.empty(4000))
    assert combined.dtype == torch.float32
    assert relative_error(combined, weights.double() @ rows.double()) < 2.0**-8
    assert aggregators._bfloat16_products(rows) and not aggregators._bfloat16_products(rows.float())


def test_bfloat16_products_are_taken_where_the_device_multiplies_bfloat16(monkeypatch):
    """A CPU with AVX512-BF16 or AMX; else (a GPU too) the float32 chunks."""
    aggregators._native_bfloat16.cache_clear()
    for capabilities, expected in (({"avx512_bf16": True}, True), ({"amx_bf16": True}, True),
                                   ({"avx512_f": True, "avx2": True}, False)):
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda capabilities=capabilities: capabilities)
        assert aggregators._native_bfloat16("cpu") is expected
        aggregators._native_bfloat16.cache_clear()
    assert not aggregators._native_bfloat16("cuda") and not aggregators._native_bfloat16("meta")
    aggregators._native_bfloat16.cache_clear()


@pytest.mark.parametrize("method", METHODS_HERE)
@pytest.mark.parametrize("sparse", [True, False], ids=["embedding-rows", "dense"])
def test_every_method_runs_on_bfloat16_rows_close_to_the_float32_buffer(method, sparse, products):
    updates = {}
    for dtype in ("float32", "bfloat16"):
        model = Net()
        surgery = GradientSurgery(model.shared(), method=method, seed=4, buffer_dtype=dtype,
                                  embedding=model.embed.weight if sparse else None)
        for step in range(2):
            stats = surgery_step(model, surgery, batches(step), sparse)
        assert surgery.buffer._memory.dtype == getattr(torch, dtype)
        assert all(p.grad is None or p.grad.dtype == torch.float32 for _, p in model.shared())
        updates[dtype] = (written(model), stats)
    (full, full_stats), (half, half_stats) = updates["float32"], updates["bfloat16"]
    assert relative_error(half, full) < (1e-2 if method in ("sum", "pcgrad") else 2e-2)
    assert half_stats["conflict"] == full_stats["conflict"]
    assert half_stats["grad_norm"] == pytest.approx(full_stats["grad_norm"], rel=1e-2)


def test_per_layer_scope_on_bfloat16_rows():
    updates = []
    for dtype in ("float32", "bfloat16"):
        model = Net()
        surgery = GradientSurgery(model.shared(), method="pcgrad", seed=1, scope="per-layer", buffer_dtype=dtype)
        surgery_step(model, surgery, batches(0), sparse=False)
        updates.append(written(model))
    assert relative_error(updates[1], updates[0]) < 1e-2


def test_per_layer_groups_of_one_range_read_views_and_equal_copies_of_their_columns():
    grads = torch.randn(3, 50, generator=torch.Generator().manual_seed(2))
    groups = [[(0, 12)], [(12, 30)], [(30, 41), (45, 50)], [(41, 45)]]
    expected = torch.empty(50)
    generator = torch.Generator().manual_seed(8)
    for group in groups:  # as before views: every group's columns copied
        columns = torch.cat([torch.arange(s, e) for s, e in group])
        expected[columns] = make_aggregator("pcgrad")(grads.index_select(1, columns), generator=generator)
    update = aggregate_per_layer(make_aggregator("pcgrad"), grads, groups, torch.Generator().manual_seed(8))
    torch.testing.assert_close(update, expected, atol=0, rtol=0)


def test_accumulated_micro_batches_and_fp16_unscaling_on_bfloat16_rows():
    model = Net()
    whole = batches(0)
    reference = GradientSurgery(model.shared(), method="pcgrad", seed=1, embedding=model.embed.weight)
    surgery_step(model, reference, whole)
    expected = written(model).clone()
    model.zero_grad(set_to_none=True)
    halves = [{t: {k: v[i * 2 : (i + 1) * 2] for k, v in b.items()} for t, b in whole.items()} for i in range(2)]
    surgery = GradientSurgery(model.shared(), method="pcgrad", seed=1, embedding=model.embed.weight,
                              buffer_dtype="bfloat16")
    surgery.begin_step([b["ids"] for half in halves for b in half.values()])
    for half in halves:
        for task, b in half.items():
            (model(task, b) / 2 * 1024.0).backward()  # scaled as float16 training scales it
            surgery.collect(task, accumulate=True)
    surgery.apply(scaler=FakeScaler(1024.0))
    assert relative_error(written(model) / 1024.0, expected) < 1e-2


def test_a_gradient_left_set_between_steps_is_moved_out_of_the_rows():
    """`zero_grad(set_to_none=False)`: the embedding's .grad (written into the spent rows) stays set, and the next
    backward adds into it; the rows it lived in must not be written over under it."""
    results = []
    for clear in (True, False):
        model = Net()
        surgery = GradientSurgery(model.shared(), method="pcgrad", seed=6, embedding=model.embed.weight,
                                  buffer_dtype="bfloat16")
        for step in range(3):
            if clear:
                model.zero_grad(set_to_none=True)
            else:
                for p in model.parameters():
                    if p.grad is not None:
                        p.grad.zero_()
            surgery.begin_step([b["ids"] for b in batches(step).values()])
            for task, b in batches(step).items():
                model(task, b).backward()
                surgery.collect(task)
            surgery.apply()
        results.append(written(model))
    torch.testing.assert_close(results[1], results[0], atol=0, rtol=0)


def test_the_rows_take_half_the_memory_and_grow_in_place_where_there_is_room():
    model = Net()
    sizes = {}
    for dtype in ("float32", "bfloat16"):
        surgery = GradientSurgery(model.shared(), buffer_dtype=getattr(torch, dtype))
        surgery_step(model, surgery, batches(0), sparse=False)
        sizes[dtype] = surgery.buffer._memory.untyped_storage().nbytes()
        layer = model.trunk["layer"][0].weight.grad
        assert layer.dtype == torch.float32
        # float32 rows keep the update's memory for the next step; bfloat16 rows let it go with the .grad
        assert (surgery.buffer.update is not None) == (dtype == "float32") == surgery.buffer.keeps_update
    assert sizes["bfloat16"] * 2 == sizes["float32"]
    buffer = surgery.buffer
    buffer.begin_step(None)  # 3 rows, kept with room for a quarter more: a 4th row grows in place
    start = buffer._memory.data_ptr()
    buffer.add_row()
    assert buffer._memory.data_ptr() == start and buffer.grads.shape[0] == 4
    buffer.grads[:].fill_(2.0)
    buffer.add_row()  # no room: twice the rows, the collected ones copied
    assert buffer._memory.data_ptr() != start and buffer._memory.numel() == 8 * buffer.grads.shape[1]
    assert bool((buffer.grads[:4] == 2.0).all()) and buffer.grads.shape[0] == 5


def test_a_bad_buffer_dtype_is_one_clear_error():
    model = Net()
    with pytest.raises(ConfigError, match="buffer_dtype: 'float16' is not one of float32, bfloat16"):
        GradientSurgery(model.shared(), buffer_dtype="float16")
    with pytest.raises(ConfigError, match="surgery_buffer_dtype: 'bf16' is not one of float32 \\| bfloat16"):
        build_config({"surgery_buffer_dtype": "bf16"})
    assert build_config({"surgery_buffer_dtype": "bfloat16"}).surgery_buffer_dtype == "bfloat16"


def test_the_method_passes_the_buffer_dtype_to_its_engine():
    from mtbert.methods.method import make_method

    model = Net()
    method = make_method("pcgrad", model, list(TASKS), buffer_dtype="bfloat16")
    assert method.surgery.buffer.buffer_dtype == torch.bfloat16


DISTRIBUTED_SCRIPT = '''
import os, sys
import torch
import torch.distributed as dist
from mtbert.methods.surgery import GradientSurgery

out, dtype = sys.argv[1], sys.argv[2]
if "RANK" in os.environ:
    dist.init_process_group("gloo")
rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
torch.manual_seed(0)
trunk = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4))
heads = [torch.nn.Linear(4, 1) for _ in range(3)]
g = torch.Generator().manual_seed(1)
x, y = torch.randn(3, 8, 6, generator=g), torch.randn(3, 8, generator=g)
y[1] = -y[0]
x[1] = x[0]
surgery = GradientSurgery(trunk.named_parameters(), "pcgrad", seed=0, buffer_dtype=dtype)
share = slice(rank * 8 // world, (rank + 1) * 8 // world)
for t in range(3):
    ((heads[t](trunk(x[t, share])).squeeze(-1) - y[t, share]) ** 2).mean().backward()
    surgery.collect(str(t))
surgery.apply()
if rank == 0:
    torch.save(torch.cat([p.grad.reshape(-1) for p in trunk.parameters()]), out)
if dist.is_initialized():
    dist.barrier()
    dist.destroy_process_group()
'''


@pytest.mark.e2e
def test_two_gloo_processes_average_a_bfloat16_buffer_like_one_process_on_the_union(tmp_path):
    import os
    import subprocess
    import sys

    script = tmp_path / "step.py"
    script.write_text(DISTRIBUTED_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    for launch, name, dtype in ((two, "two", "bfloat16"), ([sys.executable], "one", "float32")):
        done = subprocess.run([*launch, str(script), str(tmp_path / name), dtype], capture_output=True, text=True,
                              env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    two_ranks, one = torch.load(tmp_path / "two"), torch.load(tmp_path / "one")
    assert two_ranks.dtype == torch.float32 and relative_error(two_ranks, one) < 1e-2


def test_a_run_with_surgery_buffer_dtype_bfloat16_keeps_bfloat16_rows_and_logs_finite_losses(tiny_config, monkeypatch):
    import json
    import math
    from pathlib import Path

    from mtbert.methods import method as method_module
    from mtbert.training.run import train

    methods = []
    real = method_module.Method.__init__

    def recording(self, *args, **kwargs):
        real(self, *args, **kwargs)
        methods.append(self)

    monkeypatch.setattr(method_module.Method, "__init__", recording)
    cfg = build_config({**tiny_config, "method": "pcgrad", "surgery_buffer_dtype": "bfloat16", "max_steps": 3,
                        "logging_steps": 1})
    train(cfg)
    assert len(methods) == 1 and methods[0].buffer._memory.dtype == torch.bfloat16
    lines = [json.loads(x) for x in (Path(cfg.output_dir) / "train_log.jsonl").open()]
    assert [x["step"] for x in lines] == [1, 2, 3]
    losses = [v for line in lines for v in line["loss"].values()]
    assert len(losses) == 3 * len(lines[0]["loss"]) > 0 and all(math.isfinite(v) for v in losses)
    assert all(len(line["conflict"]) == 3 and all(v > 0 for v in line["grad_norm"].values()) for line in lines)
