"""Property tests of task sampling: every step has exactly the promised samples of each active task."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mtbert.data import SAMPLING_STRATEGIES, MultiTaskSampler, samples_per_step

TASKS = ["a", "b", "c", "d"]


@st.composite
def setups(draw: st.DrawFn) -> dict:
    n = draw(st.integers(1, len(TASKS)))
    names = TASKS[:n]
    sizes = {t: draw(st.integers(1, 200_000)) for t in names}
    ratios = {t: draw(st.integers(0, 4)) for t in names}
    if not any(ratios.values()):
        ratios[names[0]] = 1
    num_epochs = draw(st.integers(1, 12))
    return {"sizes": sizes, "ratios": ratios, "unit": draw(st.integers(1, 64)),
            "temperature": draw(st.floats(0.5, 10.0)), "num_epochs": num_epochs,
            "epoch": draw(st.integers(1, num_epochs)), "strategy": draw(st.sampled_from(SAMPLING_STRATEGIES))}


@settings(max_examples=300, deadline=None)
@given(setup=setups())
def test_every_active_task_gets_its_promised_samples(setup: dict) -> None:
    counts = samples_per_step(setup["strategy"], setup["sizes"], setup["ratios"], setup["unit"],
                              setup["temperature"], setup["epoch"], setup["num_epochs"])
    active = [t for t, r in setup["ratios"].items() if r > 0]
    assert list(counts) == active  # every active task, in config order; a ratio-0 task never
    assert all(isinstance(n, int) and n >= 1 for n in counts.values())
    if setup["strategy"] == "fixed-ratio":
        assert counts == {t: setup["ratios"][t] * setup["unit"] for t in active}
    else:  # the shares move, the step's total stays that of one batch per active task
        assert sum(counts.values()) == setup["unit"] * len(active)


@settings(max_examples=100, deadline=None)
@given(size=st.integers(1, 50), draws=st.lists(st.integers(1, 40), min_size=1, max_size=12),
       world_size=st.integers(1, 3), seed=st.integers(0, 2**31 - 1))
def test_the_sampler_draws_exactly_n_indices_and_the_ranks_split_one_stream(size: int, draws: list[int],
                                                                             world_size: int, seed: int) -> None:
    single = MultiTaskSampler({"a": size}, seed=seed)
    ranks = [MultiTaskSampler({"a": size}, seed=seed, rank=r, world_size=world_size) for r in range(world_size)]
    stream = []
    for n in draws:
        per_rank = [s.draw("a", n) for s in ranks]
        assert all(len(batch) == n and all(0 <= i < size for i in batch) for batch in per_rank)
        assert [i for batch in per_rank for i in batch] == single.draw("a", n * world_size)
        stream.extend(i for batch in per_rank for i in batch)
    for start in range(0, len(stream) - size + 1, size):  # each full pass over the task is a permutation
        assert sorted(stream[start:start + size]) == list(range(size))
