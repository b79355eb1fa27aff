"""`mtbert bench quality` end to end on the tiny model and data: the table agrees with its runs, finished rows are
reused, a changed config retrains only its row; and the shipped row configs share one budget per stage."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import mtbert.bench.quality
import mtbert.training.run
from mtbert.bench.quality import DEFAULT_ROWS, ENSEMBLE_MEMBERS, planned_config, stages
from mtbert.cli import main
from mtbert.config import safe_load
from mtbert.data import read_task_file
from mtbert.evaluation.metrics import bootstrap_overall
from mtbert.evaluation.predict import read_cs224n
from mtbert.tasks import BUILTIN_TASKS

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "configs" / "bench"
BUDGET = "0.008"  # 1792 samples per epoch x 0.008 = one batch of 16 per epoch: 2 steps per stage
ROWS = "floor,single-task,pcgrad,two-step-pcgrad,ensemble"


def tiny_configs(folder: Path, model: Path, data: Path) -> Path:
    """The shipped row configs, pointed at the tiny model and data."""
    folder.mkdir()
    for path in sorted(SHIPPED.glob("*.yaml")):
        raw = safe_load(path.read_text(encoding="utf-8"))
        raw.update(model_name_or_path=str(model), data_dir=str(data))
        (folder / path.name).write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return folder


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text(encoding="utf-8"))


def check_row(row: dict, expected: dict, run_dir: Path) -> None:
    assert row["status"] == "done"
    assert Path(row["run_dir"]) == run_dir
    for key in ("sst_acc", "para_acc", "sts_corr", "overall", "overall_ci95"):
        assert row[key] == expected[key], key
    low, high = row["overall_ci95"]
    assert low <= row["overall"] <= high


@pytest.fixture(autouse=True)
def one_torch_thread():
    """On a busy 2-core machine two torch threads wait on each other: one runs the tiny model several times faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def bench_args(tmp_path, tiny_model_dir, tiny_data_dir) -> list[str]:
    configs = tiny_configs(tmp_path / "configs", tiny_model_dir, tiny_data_dir)
    return ["bench", "quality", "--output_dir", str(tmp_path / "bench"), "--rows", ROWS, "--budget", BUDGET,
            "--configs", str(configs)]


def test_table_matches_runs_and_finished_rows_are_reused(bench_args, tmp_path, tiny_data_dir, capsys, monkeypatch):
    out = tmp_path / "bench"
    clock = time.perf_counter()
    assert main(bench_args) == 0
    first = time.perf_counter() - clock
    table = json.loads((out / "table.json").read_text(encoding="utf-8"))
    assert [r["row"] for r in table["rows"]] == list(DEFAULT_ROWS)
    rows = {r["row"]: r for r in table["rows"]}
    assert rows["multitask"]["status"] == "not run" and rows["multitask"]["overall"] is None
    assert table["budget"] == 0.008 and table["samples_per_task_per_stage"] == 32

    # one-config rows, the ensemble's member added for it, and the floor: the numbers of their results.json
    for name in ("pcgrad", "two-step-pcgrad", "sw-pcgrad-0-3-1-two-step", "floor"):
        check_row(rows[name], results(out / "runs" / name), out / "runs" / name)
        assert rows[name]["train_seconds"] == results(out / "runs" / name)["train_seconds"]
    assert [s["steps"] for s in rows["two-step-pcgrad"]["stages"]] == [2, 2, 2, 2]
    assert rows["pcgrad"]["stages"][0]["samples"] == {"sst": 32, "para": 32, "sts": 32}
    assert rows["sw-pcgrad-0-3-1-two-step"]["stages"][0]["samples"] == {"sst": 0, "para": 96, "sts": 32}

    # the ensemble: a vote of the fixed members, its numbers those of its results.json
    ensemble = results(out / "runs" / "ensemble")
    assert ensemble["mode"] == "vote"
    assert [Path(m).name for m in ensemble["members"]] == list(ENSEMBLE_MEMBERS)
    check_row(rows["ensemble"], ensemble["ensemble"], out / "runs" / "ensemble")
    assert rows["ensemble"]["members"] == list(ENSEMBLE_MEMBERS)

    # single-task: each task's metric from its own run; overall and its interval over the combined predictions
    single = rows["single-task"]
    triples = {}
    for task in ("sst", "para", "sts"):
        spec = BUILTIN_TASKS[task]
        run = out / "runs" / "single-task" / f"single-{task}"
        assert single[spec.metric_key] == results(run)[spec.metric_key]
        _, values = read_cs224n(run / "predictions" / f"{task}-dev-output.csv")
        examples = read_task_file(tiny_data_dir / spec.dev_file, spec).examples
        triples[task] = (spec, np.array([values[e.id] for e in examples]), np.array([e.label for e in examples]))
    assert single["overall"] == pytest.approx((single["sst_acc"] + single["para_acc"] + (1 + single["sts_corr"]) / 2)
                                              / 3, abs=1e-12)
    assert single["overall_ci95"] == list(bootstrap_overall(triples))
    assert single["train_seconds"] == pytest.approx(sum(r["train_seconds"] for r in single["runs"]), abs=0.11)

    # paired comparisons: each row against the previous row of the seed's table, when both are done
    assert rows["floor"]["versus"] is None and rows["pcgrad"]["versus"] is None  # multitask was not run
    for name, reference in (("single-task", "floor"), ("two-step-pcgrad", "pcgrad"),
                            ("sw-pcgrad-0-3-1-two-step", "two-step-pcgrad"),
                            ("ensemble", "sw-pcgrad-0-3-1-two-step")):
        versus = rows[name]["versus"]
        assert versus["row"] == reference
        assert versus["difference"] == pytest.approx(rows[name]["overall"] - rows[reference]["overall"], abs=1e-5)
        assert versus["ci95"][0] <= versus["ci95"][1]
        floor = rows[name]["versus_floor"]
        assert floor["row"] == "floor"
        assert floor["difference"] == pytest.approx(rows[name]["overall"] - rows["floor"]["overall"], abs=1e-5)
    assert rows["floor"]["versus_floor"] is None and rows["pcgrad"]["versus_floor"] is not None

    md = (out / "table.md").read_text(encoding="utf-8")
    assert f"`mtbert bench quality --output_dir {out} --rows {ROWS} --budget 0.008" in md
    assert "| Row | SST acc | Quora acc | STS corr | Overall | 95% CI | Δ overall (paired 95% CI) | Δ vs floor |" in md
    versus = rows["two-step-pcgrad"]["versus"]
    assert f"{versus['difference']:+.3f} ({versus['ci95'][0]:+.3f}, {versus['ci95'][1]:+.3f}) vs `pcgrad`" in md
    lines = [line for line in md.splitlines() if line.startswith("| `")]
    assert [line.split("`")[1] for line in lines[: len(DEFAULT_ROWS)]] == list(DEFAULT_ROWS)
    for name, line in zip(DEFAULT_ROWS, lines, strict=False):
        row = rows[name]
        if row["status"] == "done":
            assert f"**{row['overall']:.3f}**" in line and f"{row['sst_acc']:.3f}" in line
    assert "0.530 / 0.904 / 0.889 / 0.793" in md and "| `multitask` | not run |" in md
    assert "CPUs" in md and "torch threads" in md and "Wall time" in md and "## Budget" in md
    assert "[bench quality] row ensemble: done" in capsys.readouterr().err

    # a second call trains nothing: every asked row is read back from the output folder
    def boom(*args, **kwargs):
        raise AssertionError("a finished row was trained again")

    monkeypatch.setattr(mtbert.training.run, "train", boom)
    monkeypatch.setattr(mtbert.bench.quality, "floor_results", boom)
    monkeypatch.setattr("mtbert.evaluation.ensemble.run_ensemble", boom)
    clock = time.perf_counter()
    assert main(bench_args) == 0
    assert time.perf_counter() - clock < min(10.0, first / 2)
    again = {r["row"]: r for r in json.loads((out / "table.json").read_text(encoding="utf-8"))["rows"]}
    for name, row in rows.items():
        assert {k: v for k, v in again[name].items() if k != "reused"} == {k: v for k, v in row.items()
                                                                           if k != "reused"}
        assert again[name]["reused"] == (row["status"] == "done")
    err = capsys.readouterr().err
    assert "row pcgrad: reused" in err and "row single-task: reused" in err and "training" not in err
    monkeypatch.undo()

    # a changed config retrains its row only, and the ensemble that votes it is combined again
    config = bench_args[bench_args.index("--configs") + 1]
    path = Path(config) / "pcgrad.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("seed: 42", "seed: 7"), encoding="utf-8")
    trained = []
    real_train = mtbert.training.run.train

    def counting(cfg, *args, **kwargs):
        trained.append(Path(cfg.output_dir).name)
        return real_train(cfg, *args, **kwargs)

    monkeypatch.setattr(mtbert.training.run, "train", counting)
    assert main([*bench_args[:4], "--rows", "ensemble", *bench_args[6:]]) == 0
    assert trained == ["pcgrad"]
    final = {r["row"]: r for r in json.loads((out / "table.json").read_text(encoding="utf-8"))["rows"]}
    assert results(out / "runs" / "pcgrad")["overall"] == final["pcgrad"]["overall"]
    assert final["ensemble"]["overall"] == results(out / "runs" / "ensemble")["ensemble"]["overall"]
    assert not final["ensemble"]["reused"] and final["two-step-pcgrad"]["reused"]
    assert final["single-task"]["status"] == "done"  # not asked this time, still shown as finished
    assert mtbert.bench.quality.read_row("pcgrad", out, Path(config), 0.016).note.startswith("stale")
    # a run recorded before a config key existed (at its default) is still current; a changed value is not
    marker_path = out / "runs" / "pcgrad" / mtbert.bench.quality.MARKER
    marker = json.loads(marker_path.read_text(encoding="utf-8"))
    del marker["signature"]["config"]["smart_weight"]
    marker_path.write_text(json.dumps(marker), encoding="utf-8")
    assert mtbert.bench.quality.read_row("pcgrad", out, Path(config), 0.008).done
    marker["signature"]["config"]["smart_weight"] = 1.0
    marker_path.write_text(json.dumps(marker), encoding="utf-8")
    assert mtbert.bench.quality.read_row("pcgrad", out, Path(config), 0.008).note.startswith("stale")
    del marker["signature"]["config"]["smart_weight"]
    marker_path.write_text(json.dumps(marker), encoding="utf-8")

    # an interrupted two-step row resumes: finished stages are kept, the unfinished one is trained
    run = out / "runs" / "two-step-pcgrad"
    marker = json.loads((run / "bench_run.json").read_text(encoding="utf-8"))
    (run / "bench_run.json").write_text(json.dumps({**marker, "wall_seconds": None}), encoding="utf-8")
    (run / "results.json").unlink()
    (run / "tasks" / "sts" / "results.json").unlink()
    kept = {p: p.stat().st_mtime_ns for p in (run / "stage1" / "results.json", run / "tasks" / "sst" / "results.json")}
    assert main([*bench_args[:4], "--rows", "two-step-pcgrad", *bench_args[6:]]) == 0
    assert "(resumed)" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    assert (run / "tasks" / "sts" / "results.json").is_file()
    last = {r["row"]: r for r in json.loads((out / "table.json").read_text(encoding="utf-8"))["rows"]}
    check_row(last["two-step-pcgrad"], results(run), run)

    # the ensemble goes stale when a member's predictions change, and is voted again when asked
    path = run / "predictions" / "para-dev-output.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[1] = lines[1][:-2] + ("0 " if lines[1].endswith("1 ") else "1 ")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert mtbert.bench.quality.read_row("ensemble", out, Path(config), 0.008).note.startswith("stale")
    assert main([*bench_args[:4], "--rows", "ensemble", *bench_args[6:]]) == 0
    assert "row ensemble: done" in capsys.readouterr().err


def test_shipped_rows_share_one_budget_per_stage(tmp_path):
    """Every training stage of every shipped row processes 3,584 samples per task of its run; --budget scales it.
    Masked-LM pretraining is an extra stage: 3,584 sentences per task in `two-step-pcgrad-mlm`, ten times that in
    `two-step-pcgrad-mlm-long`."""
    per_stage, pretraining = {}, {}
    for path in sorted(SHIPPED.glob("*.yaml")):
        if path.stem == "floor":
            continue
        for stage in stages(planned_config(path, tmp_path / path.stem, 1.0)):
            target = pretraining if stage["stage"] == "masked-LM" else per_stage
            target[f"{path.stem} {stage['stage']}"] = stage["samples_per_task"]
    added = [p.stem for p in SHIPPED.glob("*.yaml") if p.stem not in ("floor", *DEFAULT_ROWS, "single-sst",
                                                                       "single-para", "single-sts")]
    two_step = [name for name in added if name.startswith("two-step-pcgrad-")]
    assert len(added) - len(two_step) == 13  # issue 9's methods and sampling, issue 8's tries: one stage each
    assert len(two_step) == 6  # issue 8's tries on the best row: four stages each
    assert len(per_stage) == 3 + 1 + 1 + 4 + 4 + 13 + 4 * len(two_step)
    assert set(per_stage.values()) == {3584}, per_stage
    assert pretraining == {"two-step-pcgrad-mlm masked-LM": 3584, "two-step-pcgrad-mlm-long masked-LM": 35840}
    sw = stages(planned_config(SHIPPED / "sw-pcgrad-0-3-1-two-step.yaml", tmp_path / "sw", 1.0))
    assert sw[0]["samples"] == {"sst": 0, "para": 8064, "sts": 2688}
    assert [s["samples_per_task"] for s in stages(planned_config(SHIPPED / "two-step-pcgrad.yaml", tmp_path, 2.5))] \
        == [8960] * 4


@pytest.mark.parametrize(("args", "message"), [
    (["--rows", "nope"], "error: --rows: unknown row 'nope'"),
    (["--budget", "0"], "error: --budget: must be a positive number, not 0"),
    (["--configs", "no/such/folder"], "error: --configs: no/such/folder is not a folder of row configs"),
])
def test_bad_arguments_are_one_sentence(args, message, tmp_path, capsys):
    assert main(["bench", "quality", "--output_dir", str(tmp_path / "out"), *args]) == 2
    assert capsys.readouterr().err.startswith(message)
