"""Tests of mtbert.evaluation.report: errors naming the missing file, the table, the plots."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mtbert.config import build_config, save_config
from mtbert.errors import MtbertError
from mtbert.evaluation.report import build_report, fmt, fmt_duration, rolling_mean, step_label, unique_names

KEYS = {"sst": "sst_acc", "para": "para_acc", "sts": "sts_corr"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def overall(metrics: dict[str, float]) -> float:
    scores = [(1 + v) / 2 if k.endswith("_corr") else v for k, v in metrics.items() if k in KEYS.values()]
    return sum(scores) / len(scores)


def write_lines(path: Path, lines: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")


def write_stage(folder: Path, cfg: dict[str, Any], tasks: list[str], epochs: int = 3, start: float = 0.4,
                log: bool = True) -> dict[str, Any]:
    """A one-stage run folder: config.yaml, metrics.jsonl, results.json and (optionally) train_log.jsonl."""
    folder.mkdir(parents=True, exist_ok=True)
    save_config(build_config({"tasks": tasks, **cfg, "output_dir": str(folder)}), folder / "config.yaml")
    lines = []
    for epoch in range(1, epochs + 1):
        metrics = {KEYS[t]: start + 0.05 * epoch + 0.01 * i for i, t in enumerate(tasks)}
        lines.append({"epoch": float(epoch), "step": 4 * epoch, "split": "dev", **metrics,
                      "overall": overall(metrics), "train_seconds": 2.5 * epoch})
    write_lines(folder / "metrics.jsonl", lines)
    best = lines[-1]
    results = {k: best[k] for k in (*(KEYS[t] for t in tasks), "overall")}
    results.update(overall_ci95=[best["overall"] - 0.0314159, best["overall"] + 0.0271828],
                   train_seconds=3725.4, best_step=best["step"])
    (folder / "results.json").write_text(json.dumps(results), encoding="utf-8")
    if log and len(tasks) > 1:
        pairs = [f"{a}-{b}" for i, a in enumerate(tasks) for b in tasks[i + 1 :]]
        records = []
        for step in range(1, 4 * epochs + 1):
            cosine = {p: float(0.3 * np.sin(step + i)) for i, p in enumerate(pairs)}
            records.append({"step": step, "epoch": step / 4, "lr": 1e-3, "loss": {t: 1.0 for t in tasks},
                            "total_grad_norm": 2.0, "grad_norm": {t: 1.0 + step / 10 for t in tasks},
                            "cosine": cosine, "conflict": {p: c < 0 for p, c in cosine.items()},
                            "removed_norm": 0.1})
        write_lines(folder / "train_log.jsonl", records)
    return results


def write_two_step(folder: Path, cfg: dict[str, Any], tasks: list[str]) -> dict[str, Any]:
    """A two-step run folder: stage1/, tasks/<task>/, and the combined metrics.jsonl and results.json."""
    write_stage(folder / "stage1", cfg, tasks)
    save_config(build_config({"tasks": tasks, **cfg, "output_dir": str(folder), "two_step": {"num_train_epochs": 2}}),
                folder / "config.yaml")
    per_task = {t: write_stage(folder / "tasks" / t, {"method": "single"}, [t], epochs=2, start=0.6) for t in tasks}
    results = {KEYS[t]: per_task[t][KEYS[t]] for t in tasks}
    results["overall"] = overall(results)
    results.update(overall_ci95=[0.5, 0.7], train_seconds=99.9)
    (folder / "results.json").write_text(json.dumps(results), encoding="utf-8")
    lines = []
    for i in range(2):
        metrics = {KEYS[t]: json.loads((folder / "tasks" / t / "metrics.jsonl").read_text().splitlines()[i])[KEYS[t]]
                   for t in tasks}
        lines.append({"epoch": float(i + 1), "step": i + 1, "split": "dev", "stage": 2, **metrics,
                      "overall": overall(metrics)})
    write_lines(folder / "metrics.jsonl", lines)
    return results


def table_rows(report: str) -> dict[str, dict[str, str]]:
    """The results table of a report as {run name: {column: cell}}."""
    lines = [line for line in report.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]
    header = cells[0]
    return {row[0].replace("\\|", "|"): dict(zip(header, row, strict=True)) for row in cells[2:]}


TASKS3 = ["sst", "para", "sts"]


@pytest.fixture()
def two_runs(tmp_path) -> list[Path]:
    write_stage(tmp_path / "runs" / "sum", {"method": "sum"}, TASKS3)
    write_stage(tmp_path / "runs" / "pcgrad", {"method": "pcgrad", "task_ratio": "1:3:1", "sample_weighting": True},
                TASKS3, start=0.5)
    return [tmp_path / "runs" / "sum", tmp_path / "runs" / "pcgrad"]


def test_missing_results_json_is_named(two_runs, tmp_path):
    (two_runs[1] / "results.json").unlink()
    with pytest.raises(MtbertError, match=r"pcgrad: not a finished run \(results\.json is missing\)"):
        build_report(two_runs, tmp_path / "out")


@pytest.mark.parametrize(("name", "message"), [
    ("config.yaml", r"not a run folder \(config\.yaml is missing\)"),
    ("metrics.jsonl", r"not a finished run \(metrics\.jsonl is missing\)"),
])
def test_other_missing_files_are_named(two_runs, tmp_path, name, message):
    (two_runs[0] / name).unlink()
    with pytest.raises(MtbertError, match=message):
        build_report(two_runs, tmp_path / "out")


def test_missing_folder_bad_json_and_two_step_parts(tmp_path):
    with pytest.raises(MtbertError, match=r"nowhere: not a run folder \(no such folder\)"):
        build_report([tmp_path / "nowhere"], tmp_path / "out")
    run = tmp_path / "broken"
    write_stage(run, {"method": "sum"}, TASKS3)
    (run / "results.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(MtbertError, match=r"results\.json: not valid JSON"):
        build_report([run], tmp_path / "out")
    two = tmp_path / "two"
    write_two_step(two, {"method": "pcgrad"}, TASKS3)
    (two / "tasks" / "sts" / "metrics.jsonl").unlink()
    with pytest.raises(MtbertError, match=r"not a finished two-step run \(tasks/sts/metrics\.jsonl is missing\)"):
        build_report([two], tmp_path / "out")
    with pytest.raises(MtbertError, match="at least one run folder"):
        build_report([], tmp_path / "out")


def test_report_table_and_files(two_runs, tmp_path):
    out = tmp_path / "out"
    (out).mkdir()
    (out / "stage2.png").write_bytes(b"stale")  # an earlier report's plot that this one does not make
    path = build_report(two_runs, out)
    assert path == out / "report.md"
    text = path.read_text(encoding="utf-8")
    for png in ("overall.png", "tasks.png", "conflicts.png"):
        assert (out / png).read_bytes().startswith(PNG_MAGIC)
        assert f"]({png})" in text
    assert not (out / "stage2.png").exists() and "stage2.png" not in text
    rows = table_rows(text)
    assert list(rows) == ["sum", "pcgrad"]
    for run in two_runs:
        results = json.loads((run / "results.json").read_text())
        row = rows[run.name]
        for key in (*KEYS.values(), "overall"):
            assert row[key] == f"{results[key]:.3f}"
        lo, hi = results["overall_ci95"]
        assert row["overall 95% CI"] == f"[{lo:.3f}, {hi:.3f}]"
        assert row["train time"] == "1:02:05"
        assert row["two-step"] == "no"
    assert (rows["pcgrad"]["method"], rows["pcgrad"]["task ratio"], rows["pcgrad"]["sample weighting"]) == (
        "pcgrad", "1:3:1", "yes")
    assert (rows["sum"]["task ratio"], rows["sum"]["sample weighting"]) == ("1:1:1", "no")


def test_two_step_and_single_task_runs(tmp_path):
    write_two_step(tmp_path / "two", {"method": "pcgrad", "task_ratio": "0:1:1"}, TASKS3)
    # stage 1 of a 0:1:1 run evaluates no sst: drop it from the hand-written stage-1 metrics
    stage1 = tmp_path / "two" / "stage1" / "metrics.jsonl"
    lines = [json.loads(line) for line in stage1.read_text().splitlines()]
    write_lines(stage1, [{k: v for k, v in line.items() if k != "sst_acc"} for line in lines])
    write_stage(tmp_path / "single", {"method": "single"}, ["sts"], log=False)
    out = tmp_path / "out"
    text = build_report([tmp_path / "two", tmp_path / "single"], out).read_text(encoding="utf-8")
    for png in ("overall.png", "tasks.png", "stage2.png", "conflicts.png"):
        assert (out / png).read_bytes().startswith(PNG_MAGIC)
    rows = table_rows(text)
    assert rows["two"]["two-step"] == "yes" and rows["two"]["task ratio"] == "0:1:1"
    assert rows["single"]["sst_acc"] == "–" and rows["single"]["task ratio"] == "1"
    assert "`single`: no sst, para result" in text
    assert "`two`: stage 1 trains no sst" in text


def test_no_conflicts_plot_without_per_task_logs(tmp_path):
    write_stage(tmp_path / "a", {"method": "sum"}, TASKS3, log=False)
    with (tmp_path / "a" / "metrics.jsonl").open("a") as handle:
        handle.write('{"epoch": 4.0, "ste')  # a torn last line is ignored
    text = build_report([tmp_path / "a"], tmp_path / "out").read_text(encoding="utf-8")
    assert not (tmp_path / "out" / "conflicts.png").exists() and "conflicts.png" not in text


def test_helpers():
    assert unique_names([Path("x/a/run"), Path("y/b/run"), Path("c")]) == ["a/run", "b/run", "c"]
    assert unique_names([Path("run"), Path("run")]) == ["run #1", "run #2"]
    assert fmt(0.12345) == "0.123" and fmt(None) == "–" and fmt(float("nan")) == "–" and fmt(True) == "–"
    assert fmt_duration(59.5) == "0:01:00" and fmt_duration(45296.3) == "12:34:56" and fmt_duration(None) == "–"
    assert step_label(12000) == "12k" and step_label(500) == "500"
    np.testing.assert_allclose(rolling_mean(np.array([1.0, 2.0, 3.0, 4.0]), 3), [1.5, 2.0, 3.0, 3.5])
    np.testing.assert_allclose(rolling_mean(np.array([1.0, 0.0]), 1), [1.0, 0.0])
    assert len(rolling_mean(np.array([]), 5)) == 0


def test_pipe_in_run_name_is_escaped(tmp_path):
    write_stage(tmp_path / "a|b", {"method": "sum"}, TASKS3)
    text = build_report([tmp_path / "a|b"], tmp_path / "out").read_text(encoding="utf-8")
    assert "| a\\|b |" in text
    results = json.loads((tmp_path / "a|b" / "results.json").read_text())
    assert table_rows(text)["a|b"]["overall"] == fmt(results["overall"])


def write_dev_predictions(run: Path, data_dir: Path, wrong: int, tasks: list[str] = TASKS3) -> dict[str, np.ndarray]:
    """Dev prediction files for `run`: the labels of `data_dir`, with the first `wrong` of each task made wrong
    (SST and Quora: another class; STS: the label mirrored). Returns {task: (predictions, labels)}."""
    from mtbert.data import read_task_file
    from mtbert.evaluation.predict import write_cs224n
    from mtbert.tasks import BUILTIN_TASKS

    written = {}
    for task in tasks:
        spec = BUILTIN_TASKS[task]
        examples = read_task_file(data_dir / spec.dev_file, spec).examples
        labels = np.array([float(e.label) for e in examples])
        predictions = labels.copy()
        if spec.is_regression:
            predictions[:wrong] = 5.0 - predictions[:wrong]
        else:
            predictions[:wrong] = (predictions[:wrong] + 1) % spec.num_labels
        write_cs224n(run / "predictions" / f"{task}-dev-output.csv", spec, [e.id for e in examples], predictions)
        written[task] = (predictions, labels)
    return written


def test_paired_difference_against_the_first_run(tiny_data_dir, tmp_path):
    runs = {name: tmp_path / name for name in ("exact", "worse", "same", "sts-only", "no-files")}
    for name, run in runs.items():
        tasks = ["sts"] if name == "sts-only" else TASKS3
        write_stage(run, {"method": "sum", "data_dir": str(tiny_data_dir)}, tasks)
        if name != "no-files":
            written = write_dev_predictions(run, tiny_data_dir, {"worse": 12}.get(name, 0), tasks)
            if name == "worse":
                worse = written
    text = build_report(list(runs.values()), tmp_path / "out").read_text(encoding="utf-8")
    rows = table_rows(text)
    column = "Δ vs first run [95% CI]"
    assert rows["exact"][column] == "reference" and rows["same"][column] == "+0.000 [+0.000, +0.000]"
    # the exact run scores 1 on every task; the worse one, by hand: accuracy and (1 + Pearson r) / 2
    scores = [np.mean(worse[t][0] == worse[t][1]) for t in ("sst", "para")]
    scores.append((1 + np.corrcoef(*worse["sts"])[0, 1]) / 2)
    cell = re.fullmatch(r"([+-]\d\.\d{3}) \[([+-]\d\.\d{3}), ([+-]\d\.\d{3})\]", rows["worse"][column])
    assert cell is not None, rows["worse"][column]
    difference, low, high = (float(v) for v in cell.groups())
    assert difference == round(float(np.mean(scores)) - 1.0, 3) < 0
    assert low <= difference <= high < 0  # 12 of 40 wrong on each task is beyond the noise
    assert rows["sts-only"][column] == "–" and rows["no-files"][column] == "–"
    assert "`sts-only`: no Δ vs first run: its tasks (sts) are not the reference run's (sst, para, sts)." in text
    assert f"`no-files`: no Δ vs first run: {runs['no-files']}: no sst-dev-output.csv." in text
    assert "Δ vs first run: the run's overall minus the first run's" in text

    # one run alone has no such column; a first run without prediction files gives every other run a reason
    assert column not in build_report([runs["worse"]], tmp_path / "one").read_text(encoding="utf-8")
    text = build_report([runs["no-files"], runs["exact"]], tmp_path / "none").read_text(encoding="utf-8")
    assert table_rows(text)["exact"][column] == "–"
    assert "`exact`: no Δ vs first run: the first run has no complete dev predictions" in text


def test_a_run_taken_from_a_table_is_reported_without_curves(tiny_data_dir, tmp_path, monkeypatch):
    from mtbert.bench import carried
    from mtbert.evaluation import paired
    from mtbert.tasks import BUILTIN_TASKS

    trained = tmp_path / "trained"
    write_stage(trained, {"method": "sum", "data_dir": str(tiny_data_dir)}, TASKS3)
    exact = write_dev_predictions(trained, tiny_data_dir, 0)
    worse = write_dev_predictions(tmp_path / "scratch", tiny_data_dir, 12)
    results = {"overall": 0.7, "overall_ci95": [0.6, 0.8], "train_seconds": 61.0, "sst_acc": 0.6, "para_acc": 0.7,
               "sts_corr": 0.6}
    cfg = build_config({"tasks": TASKS3, "method": "pcgrad", "data_dir": str(tiny_data_dir)})
    labels = {t: dict(zip(paired.dev_labels(BUILTIN_TASKS[t], tiny_data_dir, None), exact[t][1], strict=True))
              for t in TASKS3}
    record = {"dev_predictions": {t: list(worse[t][0]) for t in TASKS3}, "results": results, "signature": {},
              "stages": [], "wall_seconds": 61.0, "restored_from": None}
    taken = tmp_path / "taken"
    carried.restore_run(record, cfg, taken, "bench_run.json", {"file": "benchmarks/table.json"}, labels,
                        dict(BUILTIN_TASKS))
    assert not (taken / "metrics.jsonl").exists()

    calls = []
    real = paired.dev_labels
    monkeypatch.setattr(paired, "dev_labels", lambda *a: calls.append(a[0].name) or real(*a))
    text = build_report([trained, taken], tmp_path / "out").read_text(encoding="utf-8")
    assert sorted(calls) == sorted(TASKS3)  # the second run of the same data folder reads no labels again
    row = table_rows(text)["taken"]
    assert row["overall"] == "0.700" and row["method"] == "pcgrad" and row["train time"] == "0:01:01"
    assert row["Δ vs first run [95% CI]"].startswith("-")  # 12 of each task's dev examples made wrong
    assert ("`taken`: taken from `benchmarks/table.json` by `mtbert bench quality --from_table`, which carries its "
            "dev results and predictions but no curves or logs.") in text

    # a bench run trained in its folder still needs its metrics.jsonl
    (trained / "bench_run.json").write_text(json.dumps({"signature": {}}), encoding="utf-8")
    (trained / "metrics.jsonl").unlink()
    with pytest.raises(MtbertError, match=r"metrics\.jsonl is missing"):
        build_report([trained], tmp_path / "out2")
