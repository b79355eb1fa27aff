"""Tests of mtbert.bench.quality: the two-step variant rows and their budgets."""

from __future__ import annotations


def test_two_step_variants_are_compared_with_two_step_pcgrad_and_mlm_steps_scale_with_the_budget():
    from pathlib import Path

    from mtbert.bench.quality import load_reference, reference_row, scaled

    ref = load_reference(Path(__file__).resolve().parents[3] / "configs" / "bench")
    assert reference_row("two-step-pcgrad-smart", ref) == "two-step-pcgrad"
    assert reference_row("two-step-pcgrad", ref) == "pcgrad"  # the quality table's chain
    assert reference_row("pcgrad-lld", ref) == "pcgrad"
    assert reference_row("famo", ref) == "multitask"
    assert scaled({"samples_per_task_per_epoch": 1792, "mlm_steps": 672}, 16, 2.5) == {
        "samples_per_task_per_epoch": 4480, "mlm_steps": 1680}


def test_the_budget_unit_of_a_table_without_a_pcgrad_config_is_its_first_rows(monkeypatch):
    """The SNIPS table names no `pcgrad.yaml`: its unit is its first trained row's (10 epochs of 13,084
    utterances at batch 32: 4,090 steps of 32), not none."""
    from pathlib import Path

    from mtbert.bench.quality import budget_unit, load_reference

    monkeypatch.setenv("MTBERT_DATA", "unused")
    configs = Path(__file__).resolve().parents[3] / "configs"
    assert budget_unit(configs / "bench", 1.0, load_reference(configs / "bench")) == 3584
    assert budget_unit(configs / "snips", 1.0, load_reference(configs / "snips")) == 4090 * 32
    assert budget_unit(configs / "snips", 0.5, load_reference(configs / "snips")) == 10 * 204 * 32  # half the batches



def test_a_sitting_keeps_its_wall_time_in_the_marker_while_it_trains(tmp_path, monkeypatch):
    """A sitting killed mid-run (SIGKILL runs no `finally`) still adds its time: the marker takes it as it goes.

    The clock is injected (quality's `time.perf_counter`), so the figures are exact whatever the machine's load."""
    import json
    import time
    import types

    import mtbert.training.run
    from mtbert.bench import quality
    from mtbert.config import TrainConfig

    now = [1000.0]
    monkeypatch.setattr(quality, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    monkeypatch.setattr(quality, "CLOCK_SECONDS", 0.01)
    marker_file = tmp_path / quality.MARKER
    seen = []

    def wall_seconds_before() -> float:
        return json.loads(marker_file.read_text())["wall_seconds_before"]

    def training(cfg, resume_from_checkpoint=None, overwrite_output_dir=False):
        now[0] += 0.4  # 0.4 s into the sitting
        for _ in range(6000):  # until the clock's thread has written it (a hang guard, not a time bound)
            if wall_seconds_before() == 100.4:
                break
            time.sleep(0.01)
        seen.append(wall_seconds_before())  # what a kill now would keep
        now[0] += 0.3
        return {"overall": 0.5}

    monkeypatch.setattr(mtbert.training.run, "train", training)
    monkeypatch.setattr(quality, "signature", lambda cfg, budget: {"config": "c"})
    monkeypatch.setattr(quality, "stages", lambda cfg: [])
    marker_file.write_text(json.dumps({"signature": {"config": "c"}, "wall_seconds": None,
                                       "wall_seconds_before": 100.0}))  # an earlier sitting, killed
    monkeypatch.setattr(quality.RunDir, "checkpoints", lambda self: [tmp_path / "checkpoint-4"])  # left to resume
    cfg = TrainConfig(output_dir=str(tmp_path))
    results, marker = quality.train_run(cfg, tmp_path, budget=1.0)
    assert seen == [100.4]  # written during the sitting, the earlier sitting's 100 s kept
    assert marker["wall_seconds"] == 100.7 and results == {"overall": 0.5}
    assert json.loads(marker_file.read_text())["wall_seconds"] == 100.7


def test_the_floor_column_is_there_only_when_the_table_has_a_floor_and_every_row_fills_the_header():
    """The SNIPS table has no frozen-embedding floor: no empty "Δ vs floor" column. The CS224N table keeps it."""
    import json
    from pathlib import Path

    from mtbert.bench.quality import markdown

    benchmarks = Path(__file__).resolve().parents[3] / "benchmarks"
    for name, has_floor in (("snips-table.json", False), ("quality-table-equal-compute.json", True)):
        data = json.loads((benchmarks / name).read_text(encoding="utf-8"))
        assert any(r["row"] == "floor" for r in data["rows"]) == has_floor
        table = [line for line in markdown(data).splitlines() if line.startswith("|")]
        rows = [line for line in table if not line.startswith("| Row | Stage")]
        rows = rows[: len(data["rows"]) + 2]  # the header, its rule and the rows (not the budget table)
        assert ("| Δ vs floor |" in rows[0]) == has_floor
        assert {line.count("|") for line in rows} == {rows[0].count("|")}, name
