"""Finished quality-table rows carried in table.json, and taken back from it (`mtbert bench quality --from_table`).

Each finished row of table.json (but the ensemble, rebuilt from its members in seconds) carries what reading it
back needs: per run, its signature (config, data folder, budget), tasks, stages, wall seconds, dev metrics and its
dev predictions, in the order of the dev file's usable rows (`dev_ids_sha256` at the top of the file names that
order). Restoring such a run writes its config.yaml, results.json, `predictions/<task>-dev-output.csv` and run
marker into the output folder, so that the row reads as finished and is compared (paired intervals), voted into the
ensemble and shown like a row trained here; a table can then be built over machines or sessions that share no disk.
Models, scores and test predictions are not carried: a vote ensemble of taken rows is built on dev, a soft one not.
A run is restored only into a folder that does not exist yet and only when its signature matches the run this call
would train; its marker names the table the row was first written to, however many tables it passed through since.
"""

from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from mtbert.config import TrainConfig, save_config
from mtbert.errors import MtbertError
from mtbert.io import atomic_write_json, read_json
from mtbert.runs.layout import RunDir
from mtbert.tasks import TaskSpec

RESULT_KEYS = ("overall", "overall_ci95", "train_seconds")  # carried with each task's metric


def ids_digest(ids: list[str]) -> str:
    """SHA-256 of the dev ids in order, one per line: the order carried predictions follow."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def carried_run(config: str, run_dir: Path, specs: list[TaskSpec], results: dict[str, Any],
                marker: dict[str, Any]) -> dict[str, Any]:
    """The record of one finished run of `specs`' tasks, its dev predictions still to be added by
    `attach_predictions`; a run taken from an earlier table keeps that table's `restored_from`."""
    keys = [spec.metric_key for spec in specs] + list(RESULT_KEYS)
    return {"config": config, "run_dir": str(run_dir), "tasks": [spec.name for spec in specs],
            "signature": marker.get("signature"), "stages": marker.get("stages", []),
            "wall_seconds": marker.get("wall_seconds"), "results": {k: results[k] for k in keys if k in results},
            "restored_from": marker.get("restored_from"), "dev_predictions": None}


def attach_predictions(carried: list[dict[str, Any]],
                       triples: dict[str, tuple[TaskSpec, np.ndarray, np.ndarray]]) -> None:
    """Give each carried run the dev predictions of its own tasks, from the row's `dev_triples`; a run lacking
    one of them, or with predictions that are not one number per example (a token task's tags), stays without
    (and is not written to table.json)."""
    for run in carried:
        if all(task in triples and triples[task][1].dtype != object for task in run["tasks"]):
            run["dev_predictions"] = {task: [float(v) for v in triples[task][1]] for task in run["tasks"]}


def finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def carried_problem(run: Any) -> str | None:
    """What is wrong with one carried run record (its key and the fault), or None."""
    if not isinstance(run, dict):
        return "is not a record"
    checks = (
        ("config", isinstance(run.get("config"), str), "is not a config name"),
        ("tasks", isinstance(run.get("tasks"), list) and bool(run["tasks"])
         and all(isinstance(t, str) for t in run["tasks"]), "is not a list of task names"),
        ("signature", isinstance(run.get("signature"), dict), "is missing"),
        ("stages", isinstance(run.get("stages"), list), "is not a list"),
        ("wall_seconds", finite(run.get("wall_seconds")), "is not a number"),
        ("results", isinstance(run.get("results"), dict) and finite(run["results"].get("overall")),
         "has no overall score"),
        ("dev_predictions", isinstance(run.get("dev_predictions"), dict), "is missing"),
        ("restored_from", run.get("restored_from") is None or isinstance(run["restored_from"], dict),
         "is not a record"),
    )
    for key, ok, fault in checks:
        if not ok:
            return f"{key} {fault}"
    for key, value in run["results"].items():
        numbers = value if key == "overall_ci95" and isinstance(value, list) else [value]
        if not all(finite(v) for v in numbers):
            return f"results.{key} is not a number"
    if set(run["dev_predictions"]) != set(run["tasks"]):
        return f"dev_predictions holds tasks {sorted(run['dev_predictions'])}, not its tasks {sorted(run['tasks'])}"
    for task, values in run["dev_predictions"].items():
        if not (isinstance(values, list) and all(finite(v) for v in values)):
            return f"dev_predictions.{task} is not a list of numbers"
    return None


def read_carried_table(path: Path) -> dict[str, Any]:
    """An earlier table.json with carried rows, every carried run checked; MtbertError naming the file and key."""
    if not path.exists():
        raise MtbertError(f"--from_table: {path} not found")
    if not path.is_file():
        raise MtbertError(f"--from_table: {path} is not a file")
    data = read_json(path)
    if not isinstance(data, dict) or data.get("benchmark") != "quality" or not isinstance(data.get("rows"), list):
        raise MtbertError(f"--from_table: {path} is not a table.json of `mtbert bench quality`")
    digests = data.get("dev_ids_sha256")
    if not (isinstance(digests, dict) and all(isinstance(d, str) for d in digests.values())):
        raise MtbertError(f"--from_table: {path} carries no dev predictions (written before rows carried them, or "
                          "from a configs folder without floor.yaml); its rows must be trained again")
    names = set()
    for k, row in enumerate(data["rows"]):
        if not isinstance(row, dict) or not isinstance(row.get("row"), str):
            raise MtbertError(f"--from_table: {path}: rows[{k}] is not a table row")
        if row["row"] in names:
            raise MtbertError(f"--from_table: {path}: rows[{k}] repeats row {row['row']}")
        names.add(row["row"])
        carried = row.get("carried") or []
        if not isinstance(carried, list):
            raise MtbertError(f"--from_table: {path}: rows[{k}].carried is not a list")
        for j, run in enumerate(carried):
            problem = carried_problem(run)
            if problem:
                raise MtbertError(f"--from_table: {path}: rows[{k}].carried[{j}] (row {row['row']}): {problem}")
        configs = [run["config"] for run in carried]
        if len(set(configs)) != len(configs):
            raise MtbertError(f"--from_table: {path}: rows[{k}] (row {row['row']}) carries a run twice")
    return data


def check_run(path: Path, data: dict[str, Any], run: dict[str, Any], labels: dict[str, dict[str, float] | None],
              specs: dict[str, TaskSpec]) -> None:
    """Refuse a carried run whose predictions do not fit this data folder's dev examples one for one."""
    for task, values in run["dev_predictions"].items():
        where = f"--from_table: {path}: run {run['config']}"
        ids, spec = labels.get(task), specs.get(task)
        if spec is None or ids is None:
            raise MtbertError(f"{where}: task {task} has no dev labels here")
        if data["dev_ids_sha256"].get(task) != ids_digest(list(ids)):
            raise MtbertError(f"{where}: its {task} predictions follow other dev ids than this data folder's "
                              "(another data folder or max_eval_samples)")
        if len(ids) != len(values):
            raise MtbertError(f"{where}: {len(values)} {task} dev predictions for {len(ids)} dev examples here")
        wrong = next((v for v in values if spec.task_kind.check_prediction(spec, float(v)) is not None), None)
        if wrong is not None:
            raise MtbertError(f"{where}: a {task} dev prediction {wrong:g} "
                              f"{spec.task_kind.check_prediction(spec, float(wrong))}")


def restore_run(run: dict[str, Any], cfg: TrainConfig, run_dir: Path, marker_name: str, source: dict[str, Any],
                labels: dict[str, dict[str, float] | None], specs: dict[str, TaskSpec]) -> None:
    """Write one carried run (checked by `check_run`) into a new `run_dir`: config.yaml, results.json, its dev
    prediction files and its marker, built in a sibling folder and renamed into place (a kill leaves no half run)."""
    from mtbert.evaluation.predict import write_cs224n

    building = run_dir.with_name(f".{run_dir.name}.restoring")
    if building.exists():
        shutil.rmtree(building)  # left by a restore that was killed
    folder = RunDir(building)
    building.mkdir(parents=True)
    save_config(cfg, folder.config)
    for task, values in run["dev_predictions"].items():
        folder.prediction(task, "dev").parent.mkdir(exist_ok=True)
        write_cs224n(folder.prediction(task, "dev"), specs[task], list(labels[task] or {}), np.array(values))
    atomic_write_json(folder.results, run["results"])
    atomic_write_json(building / marker_name, {"signature": run["signature"], "stages": run["stages"],
                                               "wall_seconds": run["wall_seconds"],
                                               "restored_from": run["restored_from"] or source})
    building.rename(run_dir)
