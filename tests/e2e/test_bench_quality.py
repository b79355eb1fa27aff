"""`mtbert bench quality` end to end on the tiny model and data: the table agrees with its runs, finished rows are
reused, a changed config retrains only its row; and the shipped row configs share one budget per stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import mtbert.bench.quality
import mtbert.training.run
from mtbert.bench.quality import load_reference, planned_config, stages
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
DEFAULT_ROWS = load_reference(SHIPPED).names  # the rows of configs/bench/table.yaml
ENSEMBLE_MEMBERS = load_reference(SHIPPED).ensemble_members


def tiny_configs(folder: Path, model: Path, data: Path) -> Path:
    """The shipped row configs, pointed at the tiny model and data."""
    folder.mkdir()
    for path in sorted(SHIPPED.glob("*.yaml")):
        if path.name == "table.yaml":  # the table's definition, not a row config
            (folder / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
            continue
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
    assert main(bench_args) == 0
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
    # the CPU is named with the vector instructions torch's kernels use (results differ with them in the last digits)
    assert table["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and "cpu_model" in table
    assert f"{table['cpu_capability']})" in md.split("- Date: ")[1].splitlines()[0]
    assert "[bench quality] row ensemble: done" in capsys.readouterr().err

    # a second call trains nothing: every asked row is read back from the output folder
    def boom(*args, **kwargs):
        raise AssertionError("a finished row was trained again")

    monkeypatch.setattr(mtbert.training.run, "train", boom)
    monkeypatch.setattr(mtbert.bench.quality, "floor_results", boom)
    monkeypatch.setattr("mtbert.evaluation.ensemble.run_ensemble", boom)
    assert main(bench_args) == 0
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

    # another folder (another machine or session) takes the finished rows from table.json, trains none of them,
    # and shows the same numbers and paired comparisons; the ensemble is voted again from the restored predictions
    table = json.loads((out / "table.json").read_text(encoding="utf-8"))
    assert set(table["dev_ids_sha256"]) == {"sst", "para", "sts"}
    monkeypatch.setattr(mtbert.training.run, "train", boom)
    monkeypatch.setattr(mtbert.bench.quality, "floor_results", boom)
    elsewhere = tmp_path / "elsewhere"
    assert main([*bench_args[:2], "--output_dir", str(elsewhere), *bench_args[4:], "--from_table",
                 str(out / "table.json")]) == 0
    err = capsys.readouterr().err
    assert f"row pcgrad: taken from {out / 'table.json'}" in err and "row ensemble: done" in err
    taken = {r["row"]: r for r in json.loads((elsewhere / "table.json").read_text(encoding="utf-8"))["rows"]}
    before = {r["row"]: r for r in table["rows"]}
    for name in (*ROWS.split(","), "sw-pcgrad-0-3-1-two-step"):
        assert taken[name]["status"] == "done"
        for key in ("sst_acc", "para_acc", "sts_corr", "overall", "overall_ci95", "train_seconds", "wall_seconds",
                    "versus", "versus_floor"):
            if name == "ensemble" and key == "wall_seconds":  # voted again here: its own sitting's time
                assert isinstance(taken[name][key], float) and taken[name][key] >= 0.0
                continue
            assert taken[name][key] == before[name][key], (name, key)
        assert Path(taken[name]["run_dir"]).is_relative_to(elsewhere)
        assert (taken[name]["restored_from"] or {}).get("file") == (None if name == "ensemble"
                                                                    else str(out / "table.json"))
    assert taken["two-step-pcgrad"]["versus"]["row"] == "pcgrad" and taken["ensemble"]["versus"] is not None
    for task in ("sst", "para", "sts"):  # the restored files predict what the trained ones did, id for id
        spec = BUILTIN_TASKS[task]
        run = Path("runs") / "single-task" / f"single-{task}" / "predictions" / f"{task}-dev-output.csv"
        trained, restored = (read_cs224n(folder / run, spec)[1] for folder in (out, elsewhere))
        assert restored == {i: v for i, v in trained.items() if i in restored} and len(restored) > 0
    assert "(taken: first written to `" in (elsewhere / "table.md").read_text(encoding="utf-8")
    assert f"{table['cpu_capability']}), {table['cpus']} CPUs" in (elsewhere / "table.md").read_text(encoding="utf-8")
    # a row taken twice still names the table it was first written to
    third = tmp_path / "third"
    assert main([*bench_args[:2], "--output_dir", str(third), *bench_args[4:], "--from_table",
                 str(elsewhere / "table.json")]) == 0
    again = {r["row"]: r for r in json.loads((third / "table.json").read_text(encoding="utf-8"))["rows"]}
    assert again["pcgrad"]["restored_from"]["file"] == str(out / "table.json")
    assert again["ensemble"]["overall"] == before["ensemble"]["overall"]
    assert f"first written to `{out / 'table.json'}`" in capsys.readouterr().err
    # a second call finds them finished; a row whose folder exists is not overwritten
    assert main([*bench_args[:2], "--output_dir", str(elsewhere), *bench_args[4:], "--from_table",
                 str(out / "table.json")]) == 0
    assert f"row pcgrad: finished in {elsewhere}; not taken" in capsys.readouterr().err
    # at another budget the trained rows are not this call's (they are trained, not taken); the floor has no budget
    assert mtbert.bench.quality.restore_rows(out / "table.json", tmp_path / "other", Path(config), 0.016,
                                             mtbert.bench.quality.load_reference(Path(config))) == ["floor"]
    assert "row pcgrad: not taken from" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "other" / "runs").iterdir()) == ["floor"]
    # an unfinished run folder is left as it is, its row not taken
    kept = tmp_path / "partial" / "runs" / "pcgrad" / "checkpoint-1"
    kept.mkdir(parents=True)
    taken_rows = mtbert.bench.quality.restore_rows(out / "table.json", tmp_path / "partial", Path(config), 0.008,
                                                   mtbert.bench.quality.load_reference(Path(config)))
    assert "pcgrad" not in taken_rows and "two-step-pcgrad" in taken_rows
    assert [p.name for p in kept.parent.iterdir()] == ["checkpoint-1"]
    assert "row pcgrad: not taken from" in capsys.readouterr().err


def carried_floor(table: dict) -> dict:
    return table["rows"][0]["carried"][0]


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t.pop("dev_ids_sha256"), "carries no dev predictions"),
    (lambda t: t.update(benchmark="step"), "is not a table.json of `mtbert bench quality`"),
    (lambda t: t["rows"].append(t["rows"][0]), "repeats row floor"),
    (lambda t: carried_floor(t).pop("dev_predictions"), "rows[0].carried[0] (row floor): dev_predictions is missing"),
    (lambda t: carried_floor(t).pop("signature"), "rows[0].carried[0] (row floor): signature is missing"),
    (lambda t: carried_floor(t)["results"].pop("overall"), "results has no overall score"),
    (lambda t: carried_floor(t)["results"].update(sst_acc="high"), "results.sst_acc is not a number"),
    (lambda t: carried_floor(t)["dev_predictions"].pop("sts"), "dev_predictions holds tasks ['para', 'sst']"),
    (lambda t: carried_floor(t)["dev_predictions"]["sts"].__setitem__(0, None), "dev_predictions.sts is not a list"),
    (lambda t: t["dev_ids_sha256"].update(sst="0" * 64), "its sst predictions follow other dev ids"),
    (lambda t: t["dev_ids_sha256"].pop("para"), "its para predictions follow other dev ids"),
    (lambda t: carried_floor(t)["dev_predictions"]["sst"].pop(), "sst dev predictions for"),
    (lambda t: carried_floor(t)["dev_predictions"]["sst"].__setitem__(0, 0.5), "0.5 is not a class in 0..4"),
])
def test_a_bad_from_table_is_one_sentence_and_writes_nothing(change, message, tmp_path, tiny_model_dir,
                                                              tiny_data_dir, monkeypatch, capsys):
    configs = tiny_configs(tmp_path / "configs", tiny_model_dir, tiny_data_dir)
    monkeypatch.setattr(mtbert.bench.quality, "floor_results", fake_floor_with_predictions)
    assert main(["bench", "quality", "--output_dir", str(tmp_path / "first"), "--rows", "floor",
                 "--configs", str(configs)]) == 0
    table = json.loads((tmp_path / "first" / "table.json").read_text(encoding="utf-8"))
    change(table)
    path = tmp_path / "table.json"
    path.write_text(json.dumps(table), encoding="utf-8")
    capsys.readouterr()
    assert main(["bench", "quality", "--output_dir", str(tmp_path / "second"), "--rows", "floor", "--configs",
                 str(configs), "--from_table", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --from_table: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "second").exists()


def test_a_missing_from_table_is_one_sentence(tmp_path, capsys):
    assert main(["bench", "quality", "--output_dir", str(tmp_path / "out"), "--configs", str(SHIPPED),
                 "--from_table", str(tmp_path / "nope.json")]) == 2
    assert capsys.readouterr().err.startswith(f"error: --from_table: {tmp_path / 'nope.json'} not found")
    assert not (tmp_path / "out").exists()


def fake_floor_with_predictions(cfg, run_dir):
    """A stand-in for the floor: predicts every dev label's first class (or value), with FAKE's metrics."""
    from mtbert.evaluation.ensemble import dev_labels
    from mtbert.evaluation.predict import write_cs224n
    from mtbert.runs.layout import RunDir

    for spec in cfg.task_specs():
        ids = list(dev_labels(spec, cfg.resolved_data_dir(), cfg.max_eval_samples))
        RunDir(run_dir).prediction(spec.name, "dev").parent.mkdir(parents=True, exist_ok=True)
        write_cs224n(RunDir(run_dir).prediction(spec.name, "dev"), spec, ids, np.zeros(len(ids)))
    (run_dir / "results.json").write_text(json.dumps(FAKE), encoding="utf-8")
    return dict(FAKE)


def test_shipped_rows_share_one_budget_per_stage(tmp_path):
    """Every training stage of every shipped row processes 3,584 samples per task of its run; --budget scales it.
    Masked-LM pretraining is an extra stage: 3,584 sentences per task in `two-step-pcgrad-mlm`, ten times that in
    `two-step-pcgrad-mlm-long`."""
    per_stage, pretraining = {}, {}
    for path in sorted(SHIPPED.glob("*.yaml")):
        if path.stem in ("floor", "table"):
            continue
        for stage in stages(planned_config(path, tmp_path / path.stem, 1.0)):
            target = pretraining if stage["stage"] == "masked-LM" else per_stage
            target[f"{path.stem} {stage['stage']}"] = stage["samples_per_task"]
    added = [p.stem for p in SHIPPED.glob("*.yaml") if p.stem not in ("floor", "table", *DEFAULT_ROWS, "single-sst",
                                                                       "single-para", "single-sts")]
    two_step = [name for name in added if name.startswith("two-step-pcgrad-")]
    assert len(added) - len(two_step) == 13  # the added methods and sampling, and tries on pcgrad: one stage each
    assert len(two_step) == 8  # the tries on the best row (LoRA and frozen embeddings among them): four stages each
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


# ---- the table's definition (table.yaml) and --backbone: no real training -----------------------------------------


FAKE = {"sst_acc": 0.5, "para_acc": 0.6, "sts_corr": 0.7, "overall": 0.65, "overall_ci95": [0.6, 0.7],
        "train_seconds": 1.0}


def fake_train(trained: list):
    """A stand-in for mtbert.training.run.train: records the backbone and writes a results.json."""

    def train(cfg, *args, **kwargs):
        trained.append(cfg.model_name_or_path)
        Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(cfg.output_dir) / "results.json").write_text(json.dumps(FAKE), encoding="utf-8")
        return dict(FAKE)

    return train


def fake_floor(cfg, run_dir):
    """A stand-in for the floor's embedding and fitting: records the backbone and writes a results.json."""
    fake_floor.backbones.append(cfg.model_name_or_path)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "results.json").write_text(json.dumps(FAKE), encoding="utf-8")
    return dict(FAKE)


def edit_table(configs: Path, change) -> None:
    path = configs / "table.yaml"
    raw = safe_load(path.read_text(encoding="utf-8"))
    change(raw)
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")


def test_the_table_is_read_from_table_yaml(tmp_path, tiny_model_dir, tiny_data_dir, monkeypatch):
    """Another table.yaml: other reference numbers, row order, notes and ensemble members in the output."""
    configs = tiny_configs(tmp_path / "configs", tiny_model_dir, tiny_data_dir)

    def change(raw):
        rows = raw["rows"]
        rows["pcgrad"]["reference"] = {"sst_acc": 0.111, "para_acc": 0.222, "sts_corr": 0.333, "overall": 0.444}
        rows["pcgrad"]["note"] = "a note from the test's {backbone}"
        raw["rows"] = {name: rows[name] for name in ("floor", "pcgrad", "multitask", "ensemble")}
        raw["ensemble"]["members"] = ["pcgrad", "multitask"]
        raw["backbone"] = "tiny-bert"

    edit_table(configs, change)
    monkeypatch.setattr(mtbert.training.run, "train", fake_train([]))
    out = tmp_path / "bench"
    assert main(["bench", "quality", "--output_dir", str(out), "--rows", "pcgrad", "--budget", BUDGET,
                 "--configs", str(configs)]) == 0
    table = json.loads((out / "table.json").read_text(encoding="utf-8"))
    assert [r["row"] for r in table["rows"]] == ["floor", "pcgrad", "multitask", "ensemble"]
    rows = {r["row"]: r for r in table["rows"]}
    assert rows["pcgrad"]["reference"] == {"sst_acc": 0.111, "para_acc": 0.222, "sts_corr": 0.333, "overall": 0.444}
    assert rows["pcgrad"]["status"] == "done" and rows["pcgrad"]["versus"] is None  # floor not run
    assert table["ensemble_members"] == ["pcgrad", "multitask"]
    assert table["row_notes"]["pcgrad"] == "a note from the test's tiny-bert (the CS224N report: Multi-task PCGrad)"
    md = (out / "table.md").read_text(encoding="utf-8")
    assert "0.111 / 0.222 / 0.333 / 0.444" in md and "0.506 / 0.875 / 0.878 / 0.773" not in md
    assert "`sw-pcgrad-0-3-1-two-step`" not in md  # not a row of this table.yaml (nor asked, nor run)
    assert "- `ensemble`: vote of `pcgrad`, `multitask` by the CS224N report's rules" in md
    assert f"Backbone: tiny-bert (the row configs' model_name_or_path: `{tiny_model_dir}`)" in md
    for word in ("seed", "issue"):
        assert word not in md.replace("seed: 42", "").lower()


@pytest.mark.parametrize(("change", "message"), [
    (None, "table.yaml: not found; a folder of row configs needs a table.yaml listing the quality table's rows"),
    (lambda raw: raw["rows"]["pcgrad"].update(score=1), "table.yaml: rows.pcgrad: unknown key 'score'"),
    (lambda raw: raw["rows"]["pcgrad"]["reference"].update(overall="high"),
     "table.yaml: rows.pcgrad.reference.overall: must be a number, not 'high'"),
    (lambda raw: raw["rows"]["floor"].update(note="frozen {model}"),
     "table.yaml: rows.floor.note: unknown placeholder {model}"),
    (lambda raw: raw["ensemble"].update(members=["pcgrad", "nope"]),
     "table.yaml: ensemble.members: 'nope' is neither a row of the table nor a config"),
    (lambda raw: raw.pop("reference"), "table.yaml: missing key 'reference'"),
])
def test_a_bad_or_missing_table_yaml_is_one_sentence(change, message, tmp_path, tiny_model_dir, tiny_data_dir,
                                                    capsys):
    configs = tiny_configs(tmp_path / "configs", tiny_model_dir, tiny_data_dir)
    if change is None:
        (configs / "table.yaml").unlink()
    else:
        edit_table(configs, change)
    assert main(["bench", "quality", "--output_dir", str(tmp_path / "out"), "--rows", "pcgrad",
                 "--configs", str(configs)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {configs / message.split(':')[0]}:{message.split(':', 1)[1]}")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing written


def test_backbone_is_part_of_the_signature_and_named_in_the_table(tmp_path, tiny_model_dir, tiny_data_dir,
                                                                  monkeypatch, capsys):
    configs = tiny_configs(tmp_path / "configs", tiny_model_dir, tiny_data_dir)
    other = tmp_path / "other-encoder"
    other.mkdir()
    out = tmp_path / "bench"
    trained: list = []
    fake_floor.backbones = []
    monkeypatch.setattr(mtbert.training.run, "train", fake_train(trained))
    monkeypatch.setattr(mtbert.bench.quality, "floor_results", fake_floor)
    args = ["bench", "quality", "--output_dir", str(out), "--rows", "floor,pcgrad", "--budget", BUDGET,
            "--configs", str(configs)]
    assert main(args) == 0
    assert trained == [str(tiny_model_dir)] and fake_floor.backbones == [str(tiny_model_dir)]

    # another backbone: the finished rows are stale, not reused; they are trained again with it
    ref = mtbert.bench.quality.load_reference(configs, str(other))
    for name in ("pcgrad", "floor"):
        note = mtbert.bench.quality.read_row(name, out, configs, float(BUDGET), ref).note
        assert note == f"stale (trained with backbone {tiny_model_dir}, not {other})", name
    monkeypatch.chdir(tmp_path)  # a relative --backbone is made absolute
    assert main([*args, "--backbone", "other-encoder"]) == 0
    assert trained == [str(tiny_model_dir), str(other)] and fake_floor.backbones[-1] == str(other)
    assert "row pcgrad: running" in capsys.readouterr().err
    marker = json.loads((out / "runs" / "pcgrad" / mtbert.bench.quality.MARKER).read_text(encoding="utf-8"))
    assert marker["signature"]["config"]["model_name_or_path"] == str(other)
    table = json.loads((out / "table.json").read_text(encoding="utf-8"))
    assert table["backbone"] == str(other) and table["model_name_or_path"] == [str(other)]
    assert f"frozen mean-pooled {other} embeddings" in table["row_notes"]["floor"]
    md = (out / "table.md").read_text(encoding="utf-8")
    assert f"trained here on {other}" in md.splitlines()[0]
    assert f"- Backbone: `{other}` (`--backbone`, in place of every row config's model_name_or_path)" in md
    assert "--backbone other-encoder" in md

    # the same backbone again: reused; without it the configs' own backbone makes them stale again
    assert main([*args, "--backbone", str(other)]) == 0
    assert len(trained) == 2 and "row pcgrad: reused" in capsys.readouterr().err
    assert mtbert.bench.quality.read_row("pcgrad", out, configs, float(BUDGET)).note.startswith(
        f"stale (trained with backbone {other}")


@pytest.mark.parametrize(("backbone", "message"), [
    ("", "error: --backbone: give a Hugging Face model name or a local model folder"),
    ("./no/such/folder", "error: --backbone: ./no/such/folder is not a folder"),
])
def test_a_bad_backbone_is_one_sentence(backbone, message, tmp_path, capsys):
    assert main(["bench", "quality", "--output_dir", str(tmp_path / "out"), "--backbone", backbone]) == 2
    assert capsys.readouterr().err.startswith(message)


def test_the_base_size_table_names_mpnet_and_keeps_the_report_numbers():
    """configs/bench-base/table.yaml: the same rows and reference numbers as configs/bench/, a floor note naming
    all-mpnet-base-v2 and no reference numbers for that floor."""
    base, mini = load_reference(ROOT / "configs" / "bench-base"), load_reference(SHIPPED)
    assert base.names == mini.names and base.ensemble_members == mini.ensemble_members
    for row in base.rows:
        if row.name != "floor":
            assert row.reference == mini.row(row.name).reference and row.reference is not None
    assert base.row("floor").reference is None
    assert "frozen mean-pooled all-mpnet-base-v2 embeddings" in base.note("floor")
    assert "MiniLM" not in base.note("floor") and "MiniLM" in mini.note("floor")
    assert mtbert.bench.quality.known_rows(ROOT / "configs" / "bench-base", base) == [
        *base.names, "two-step-pcgrad-keep", "two-step-pcgrad-smart"]
    assert "mpnet" in load_reference(SHIPPED, "/models/mpnet").note("floor")
