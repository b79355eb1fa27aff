"""`mtbert bench scaling`: the T tasks, their disjoint shares, the arithmetic (a tiny run: tests/e2e)."""

from __future__ import annotations

import pytest

from mtbert.bench.scaling import ROWS, marginal_cost, scaled_tasks, scaling_goals, task_shares


def test_t_tasks_cycle_over_the_course_files_with_their_own_names_and_disjoint_shares():
    specs = scaled_tasks(5)
    assert [s.name for s in specs] == ["sst-0", "para-1", "sts-2", "sst-3", "para-4"]
    assert [s.kind for s in specs] == [specs[0].kind, specs[1].kind, specs[2].kind, specs[0].kind, specs[1].kind]
    shares = task_shares(5, {"sst": 10, "para": 7, "sts": 4})
    assert list(shares["sst-0"]) == [0, 2, 4, 6, 8] and list(shares["sst-3"]) == [1, 3, 5, 7, 9]
    assert set(shares["para-1"]).isdisjoint(shares["para-4"]) and list(shares["sts-2"]) == [0, 1, 2, 3]


def test_the_marginal_cost_is_the_slope_over_t_and_the_goals_read_their_t():
    tasks = {str(t): {row: {"seconds_per_step": 1.0 + 0.1 * t * (2 if row == "pcgrad" else 1)} for row in ROWS}
             for t in (2, 4, 8)}
    slopes = marginal_cost(tasks)
    assert slopes["sum"] == pytest.approx(0.1) and slopes["pcgrad"] == pytest.approx(0.2)
    assert marginal_cost({"2": tasks["2"]}) == {row: None for row in ROWS}
    rows = {"pcgrad": {"ratio_to_sum": 1.04, "peak_ratio_to_sum": 1.4, "seconds_per_step": 1.0},
            "pcgrad-k2": {"seconds_per_step": 1.0}}
    goals = scaling_goals({"2": {**rows, "pcgrad-k2": {"seconds_per_step": 1.0}}, "16": rows,
                           "32": {**rows, "pcgrad-k2": {"seconds_per_step": 1.2}}})
    assert goals["pcgrad_step_at_16"]["met"] is True and goals["pcgrad_peak_at_16"]["met"] is False
    assert goals["pcgrad_k2_32_vs_2"] == {"goal": "<= 1.1", "ratio": 1.2, "met": False}
    assert scaling_goals({"4": rows}) == {}


def test_the_scaling_command_refuses_bad_counts(capsys):
    from mtbert.cli import main

    assert main(["bench", "scaling", "--tasks", "2,x"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --tasks: '2,x' is not a comma-separated list of numbers")
    assert main(["bench", "scaling", "--tasks", "1,4"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --tasks: each count must be at least 2 (got [1, 4])")
    assert main(["bench", "scaling", "--tasks", "2,4", "--extra_rows", "pcgrad-fp8"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --extra_rows: pcgrad-fp8 is not one of pcgrad-bf16")


def test_the_bfloat16_row_stands_beside_the_pinned_rows_and_has_its_peak_goal():
    from mtbert.bench.scaling import ALL_ROWS

    assert ROWS == ("sum", "pcgrad", "pcgrad-k2", "torchjd") and ALL_ROWS == (*ROWS, "pcgrad-bf16")
    rows = {row: {"seconds_per_step": 1.0, "ratio_to_sum": 1.0, "peak_ratio_to_sum": 1.0} for row in ALL_ROWS}
    rows["pcgrad"]["peak_ratio_to_sum"], rows["pcgrad-bf16"]["peak_ratio_to_sum"] = 1.6, 1.29
    goals = scaling_goals({"16": rows})
    assert goals["pcgrad_peak_at_16"]["met"] is False
    assert goals["pcgrad_bf16_peak_at_16"] == {"goal": "<= 1.3", "ratio": 1.29, "met": True}
    assert goals["pcgrad_bf16_step_at_16"] == {"goal": "<= 1.05", "ratio": 1.0, "met": True}
    assert set(marginal_cost({"2": rows, "4": rows})) == set(ALL_ROWS)


def test_skipped_rows_are_neither_timed_nor_in_the_file_and_sum_cannot_be_skipped(monkeypatch, capsys):
    from mtbert.bench import scaling
    from mtbert.cli import main

    timed = []

    def time_rows(count, rows, steps, warmup, samples, model_path):
        timed.append(tuple(rows))
        return {row: [1.0 + 0.01 * i for i in range(steps)] for row in rows}

    monkeypatch.setattr(scaling, "time_rows", time_rows)
    monkeypatch.setattr(scaling, "row_peak_mb", lambda count, row, *rest: 1000.0)
    monkeypatch.setattr(scaling, "machine", lambda: {})
    results = scaling.bench_scaling([16], steps=5, extra_rows=["pcgrad-bf16"], skip_rows=["torchjd", "pcgrad-k2"])
    assert timed == [("sum", "pcgrad", "pcgrad-bf16")] and set(results["tasks"]["16"]) == set(timed[0])
    assert set(results["goals"]) == {"pcgrad_step_at_16", "pcgrad_peak_at_16", "pcgrad_bf16_step_at_16",
                                     "pcgrad_bf16_peak_at_16"}
    assert main(["bench", "scaling", "--tasks", "2", "--skip_rows", "sum"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --skip_rows: sum is not one of pcgrad, pcgrad-k2, torchjd (sum is the reference of every ratio)")


def test_an_extra_row_is_timed_and_measured_beside_the_pinned_rows(monkeypatch):
    from mtbert.bench import scaling

    seconds = {"sum": 1.0, "pcgrad": 1.1, "pcgrad-k2": 1.0, "torchjd": 2.0, "pcgrad-bf16": 1.2}
    peaks = {"sum": 1000.0, "pcgrad": 1600.0, "pcgrad-k2": 1200.0, "torchjd": 4000.0, "pcgrad-bf16": 1290.0}
    timed = []

    def time_rows(count, rows, steps, warmup, samples, model_path):
        timed.append(tuple(rows))
        return {row: [seconds[row] * (1 + 0.01 * i) for i in range(steps)] for row in rows}

    monkeypatch.setattr(scaling, "time_rows", time_rows)
    monkeypatch.setattr(scaling, "row_peak_mb", lambda count, row, *rest: peaks[row])
    monkeypatch.setattr(scaling, "machine", lambda: {})
    results = scaling.bench_scaling([2, 16], steps=5, extra_rows=["pcgrad-bf16"])
    assert timed == [scaling.ALL_ROWS] * 2 and results["rows"] == list(scaling.ALL_ROWS)
    row = results["tasks"]["16"]["pcgrad-bf16"]
    assert row["peak_mb"] == 1290.0 and row["peak_ratio_to_sum"] == 1.29 and row["ratio_to_sum"] == 1.2
    assert results["goals"]["pcgrad_bf16_peak_at_16"]["met"] and not results["goals"]["pcgrad_peak_at_16"]["met"]
    assert set(results["marginal_seconds_per_task"]) == set(scaling.ALL_ROWS)
    plain = scaling.bench_scaling([2, 16], steps=5)
    assert list(plain["tasks"]["16"]) == list(ROWS) and "pcgrad_bf16_peak_at_16" not in plain["goals"]
