"""Finished quality-table rows carried in table.json, and taken back from it (`mtbert bench quality --from_table`).

Each finished row of table.json (but the ensemble, rebuilt from its members in seconds) carries what reading it
back needs: per run, its signature (config, data folder, budget), stages, wall seconds, dev metrics and its dev
predictions, in the order of the dev file's usable rows (`dev_ids_sha256` at the top of the file names that order).
Restoring such a run writes its config.yaml, results.json, `predictions/<task>-dev-output.csv` and run marker into
the output folder, so that the row reads as finished and is compared (paired intervals), voted into the ensemble and
shown like a row trained here; a table can then be built over machines or sessions that share no disk. A run is
restored only into a folder that does not exist yet and only when its signature matches the run this call would
train; the row's marker names the table it came from.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from mtbert.config import TrainConfig, save_config
from mtbert.errors import MtbertError
from mtbert.io import atomic_write_json, read_json
from mtbert.runs.layout import RunDir
from mtbert.tasks import TaskSpec

RESULT_KEYS = ("sst_acc", "para_acc", "sts_corr", "overall", "overall_ci95", "train_seconds")


def ids_digest(ids: list[str]) -> str:
    """SHA-256 of the dev ids in order, one per line: the order carried predictions follow."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def carried_run(config: str, run_dir: Path, results: dict[str, Any], marker: dict[str, Any]) -> dict[str, Any]:
    """The record of one finished run, its dev predictions still to be added by `attach_predictions`."""
    return {"config": config, "run_dir": str(run_dir), "signature": marker.get("signature"),
            "stages": marker.get("stages", []), "wall_seconds": marker.get("wall_seconds"),
            "results": {k: results[k] for k in RESULT_KEYS if k in results}, "dev_predictions": None}


def attach_predictions(carried: list[dict[str, Any]],
                       triples: dict[str, tuple[TaskSpec, np.ndarray, np.ndarray]]) -> None:
    """Give each carried run the dev predictions of its own tasks, from the row's `dev_triples`."""
    for run in carried:
        config = (run.get("signature") or {}).get("config") or {}
        tasks = config.get("tasks") or list(triples)
        run["dev_predictions"] = {t: [float(v) for v in triples[t][1]] for t in tasks if t in triples}


def read_carried_table(path: Path) -> dict[str, Any]:
    """An earlier table.json with carried rows; MtbertError naming the file when it is not one."""
    if not path.exists():
        raise MtbertError(f"--from_table: {path} not found")
    if not path.is_file():
        raise MtbertError(f"--from_table: {path} is not a file")
    data = read_json(path)
    if not isinstance(data, dict) or data.get("benchmark") != "quality" or not isinstance(data.get("rows"), list):
        raise MtbertError(f"--from_table: {path} is not a table.json of `mtbert bench quality`")
    if not isinstance(data.get("dev_ids_sha256"), dict):
        raise MtbertError(f"--from_table: {path} carries no dev predictions (a table written before they were "
                          "kept; its rows must be trained again)")
    for k, row in enumerate(data["rows"]):
        if not isinstance(row, dict) or not isinstance(row.get("row"), str):
            raise MtbertError(f"--from_table: {path}: rows[{k}] is not a table row")
        for run in row.get("carried") or []:
            if not (isinstance(run, dict) and isinstance(run.get("config"), str)
                    and isinstance(run.get("results"), dict) and isinstance(run.get("dev_predictions"), dict)):
                raise MtbertError(f"--from_table: {path}: row {row['row']} has a carried run without its "
                                  "config, results or dev predictions")
    return data


def check_dev_order(path: Path, data: dict[str, Any], labels: dict[str, dict[str, float] | None]) -> None:
    """Refuse a table whose predictions follow other dev ids than this data folder's."""
    for task, digest in data["dev_ids_sha256"].items():
        local = labels.get(task)
        if local is not None and ids_digest(list(local)) != digest:
            raise MtbertError(f"--from_table: {path}: its {task} predictions follow other dev ids than this "
                              "data folder's (another data folder or max_eval_samples)")


def check_run(path: Path, run: dict[str, Any], labels: dict[str, dict[str, float] | None],
              specs: dict[str, TaskSpec]) -> None:
    """Refuse a carried run whose predictions do not fit this data folder's dev examples one for one."""
    for task, values in run["dev_predictions"].items():
        ids = labels.get(task)
        if task not in specs or ids is None or not isinstance(values, list) or len(ids) != len(values):
            count = len(values) if isinstance(values, list) else 0
            raise MtbertError(f"--from_table: {path}: run {run['config']} has {count} {task} dev predictions for "
                              f"{len(ids or {})} dev examples here")


def restore_run(run: dict[str, Any], cfg: TrainConfig, run_dir: Path, marker_name: str, source: dict[str, Any],
                labels: dict[str, dict[str, float] | None], specs: dict[str, TaskSpec]) -> None:
    """Write one carried run (checked by `check_run`) into `run_dir`: config.yaml, results.json, its dev prediction
    files, and last its marker, which names the table it came from."""
    from mtbert.evaluation.predict import write_cs224n

    folder = RunDir(run_dir)
    run_dir.mkdir(parents=True)
    save_config(cfg, folder.config)
    for task, values in run["dev_predictions"].items():
        folder.prediction(task, "dev").parent.mkdir(exist_ok=True)
        write_cs224n(folder.prediction(task, "dev"), specs[task], list(labels[task] or {}), np.array(values))
    atomic_write_json(folder.results, run["results"])
    atomic_write_json(run_dir / marker_name, {"signature": run["signature"], "stages": run["stages"],
                                              "wall_seconds": run["wall_seconds"], "restored_from": source})
