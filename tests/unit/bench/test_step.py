"""The arithmetic of `mtbert bench step` on synthetic timings: rotation, paired ratios, interval, goal."""

from __future__ import annotations

from mtbert.bench.step import (
    bootstrap_interval,
    paired_ratios,
    rotated_order,
    rotated_rounds,
    step_goals,
    summarize,
    verdict,
)


def test_the_order_rotates_by_one_every_step_so_each_method_takes_each_place():
    names = ["sum", "pcgrad", "torchjd"]
    orders = [rotated_order(names, i) for i in range(4)]
    assert orders == [["sum", "pcgrad", "torchjd"], ["pcgrad", "torchjd", "sum"], ["torchjd", "sum", "pcgrad"],
                      ["sum", "pcgrad", "torchjd"]]
    for place in range(3):
        assert {order[place] for order in orders[:3]} == set(names)


def test_rounds_run_in_rotated_order_and_time_each_step_with_the_injected_clock():
    now = [0.0]
    ran: list[tuple[int, str]] = []
    cost = {"sum": 1.0, "pcgrad": 1.5}

    def step_of(name):
        def step(batch):
            ran.append((batch, name))
            now[0] += cost[name] * (2 if batch == 3 else 1)  # step 3: the machine got twice as busy
        return step

    times = rotated_rounds({n: step_of(n) for n in cost}, [0, 1, 2, 3, 4, 5], warmup=1, clock=lambda: now[0])
    assert ran[:4] == [(0, "sum"), (0, "pcgrad"), (1, "pcgrad"), (1, "sum")]
    assert times == {"sum": [1.0, 1.0, 2.0, 1.0, 1.0], "pcgrad": [1.5, 1.5, 3.0, 1.5, 1.5]}  # warm-up step dropped
    assert paired_ratios(times, "pcgrad") == [1.5] * 5  # the busy step cancels out in its pair


def test_a_paired_ratio_above_one_means_the_method_is_slower_than_sum():
    times = {"sum": [2.0, 4.0, 2.0], "fast": [1.0, 2.0, 1.0], "slow": [3.0, 6.0, 3.0]}
    assert paired_ratios(times, "slow") == [1.5, 1.5, 1.5]
    assert paired_ratios(times, "fast") == [0.5, 0.5, 0.5]
    summary = summarize(times)
    assert summary["sum"]["paired_ratio_to_sum"] == 1.0 and summary["sum"]["paired_ratio_ci95"] == [1.0, 1.0]
    assert summary["slow"]["paired_ratio_to_sum"] == 1.5 and summary["slow"]["ratio_to_sum"] == 1.5
    assert summary["fast"]["median_seconds"] == 1.0 and summary["fast"]["all_paired_ratios"] == [0.5, 0.5, 0.5]


def test_the_bootstrap_interval_holds_the_median_is_seeded_and_narrows_with_more_steps():
    import numpy as np

    rng = np.random.default_rng(1)
    few = list(1.05 + 0.05 * rng.standard_normal(8))
    many = list(1.05 + 0.05 * rng.standard_normal(200))
    low, high = bootstrap_interval(few)
    assert low <= float(np.median(few)) <= high and low < high
    assert bootstrap_interval(few) == (low, high)  # seeded: the same interval every time
    low_many, high_many = bootstrap_interval(many)
    assert high_many - low_many < high - low
    assert low_many < 1.05 < high_many
    assert bootstrap_interval([1.2] * 5) == (1.2, 1.2)


def test_the_goal_is_met_only_when_the_whole_interval_is_at_or_below_it():
    assert verdict((0.98, 1.05), 1.05) == "met"
    assert verdict((1.01, 1.06), 1.05) == "undecided"
    assert verdict((1.051, 1.2), 1.05) == "missed"
    fast = {"sum": [1.0] * 6, "pcgrad": [1.02, 1.03, 1.01, 1.02, 1.03, 1.02]}
    slow = {"sum": [1.0] * 6, "pcgrad": [1.20, 1.25, 1.22, 1.21, 1.23, 1.24]}
    assert step_goals(fast)["pcgrad_vs_sum"]["verdict"] == "met"
    assert step_goals(slow)["pcgrad_vs_sum"] == {"goal": "paired ratio <= 1.05", "paired_ratio": 1.225,
                                                 "ci95": step_goals(slow)["pcgrad_vs_sum"]["ci95"], "verdict": "missed"}
    assert step_goals({"sum": [1.0] * 5}) == {}


def test_the_torchjd_autogram_row_gives_pcgrads_encoder_gradient(tiny_model_dir):
    """Two tasks, no dropout: torchjd's Gramian weighting and mtbert's buffer compute the same PCGrad update."""
    import copy

    import torch

    from mtbert.bench.step import torchjd_autogram_step
    from mtbert.data import collate
    from mtbert.data.encoding import EncodedSet
    from mtbert.methods.method import Method, plain_objective
    from mtbert.model import MultiTaskModel, load_encoder
    from mtbert.tasks import BUILTIN_TASKS

    torch.manual_seed(0)
    encoder, _ = load_encoder(str(tiny_model_dir), 0.0)
    specs = [BUILTIN_TASKS["sst"], BUILTIN_TASKS["sts"]]
    model = MultiTaskModel(encoder, specs, dropout=0.0).train()
    sst = EncodedSet(specs[0], ["a", "b"], [[[101, 7, 8, 102]], [[101, 9, 102]]], [[[0] * 4], [[0] * 3]], [1, 3])
    sts = EncodedSet(specs[1], ["c", "d"], [[[101, 5, 6, 102, 11, 102]], [[101, 12, 102, 13, 14, 102]]],
                     [[[0, 0, 0, 0, 1, 1]], [[0, 0, 0, 1, 1, 1]]], [4.0, 1.0])
    batches = {"sst": collate(sst, [0, 1], 0), "sts": collate(sts, [0, 1], 0)}
    scale = {"sst": 0.5, "sts": 0.5}
    other, summed = copy.deepcopy(model), copy.deepcopy(model)
    Method("pcgrad", model, ["sst", "sts"], seed=0).backward(batches, scale, plain_objective(model, "cpu"))
    Method("sum", summed, ["sst", "sts"], seed=0).backward(batches, scale, plain_objective(summed, "cpu"))
    assert not all(torch.allclose(p.grad, q.grad, rtol=1e-3) for p, q in zip(  # the tasks conflict: PCGrad acts
        model.encoder.parameters(), summed.encoder.parameters(), strict=True) if p.grad is not None)
    torchjd_autogram_step(other, scale)(batches)
    compared = 0
    for (name, mine), theirs in zip(model.encoder.named_parameters(), other.encoder.parameters(), strict=True):
        if mine.grad is not None or theirs.grad is not None:
            torch.testing.assert_close(theirs.grad, mine.grad, rtol=1e-4, atol=1e-6, msg=name)
            compared += 1
    assert compared > 10
