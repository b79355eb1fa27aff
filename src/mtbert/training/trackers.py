"""Experiment trackers (`report_to: [tensorboard, mlflow, wandb]`) through Hugging Face Accelerate's trackers.

`metrics.jsonl` and `train_log.jsonl` are always written; every number of their records is mirrored to each
tracker as a scalar named by its keys (`loss/<task>`, `lr`, `cosine/<pair>`, `dev/<metric>`, ...).

- `tensorboard`: event files under `<output_dir>/tensorboard/` (`tensorboard --logdir runs`).
- `mlflow`: one MLflow run (named `run_name`) in experiment `$MLFLOW_EXPERIMENT_NAME` (default `mtbert`) of the
  tracking store `$MLFLOW_TRACKING_URI` (MLflow's default: `sqlite:///mlflow.db` in the working directory); the
  config is logged as the run's parameters.
- `wandb`: one W&B run (named `run_name`) in project `$WANDB_PROJECT` (default `mtbert`), its files under
  `$WANDB_DIR` (default `<output_dir>/wandb/`); `WANDB_MODE=offline` keeps it on disk for `wandb sync`.

A resumed run (`--resume_from_checkpoint`) logs into the same MLflow and W&B runs: their ids are kept in the run
folder's `trackers.json`; TensorBoard reads the event files of one folder as one run anyway. The steps a resumed
run repeats (those after its checkpoint that were logged before the interruption) are not sent again, so each
step has one point.

Each needs its extra (`tensorboard`, `mlflow`, `wandb`; `mtbert.distribution.install_hint` says how). Open the trackers
on the main process only; they do not synchronise between processes.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
from pathlib import Path
from typing import Any

from mtbert.config import KNOWN_TRACKERS, parse_report_to  # noqa: F401 - defined with the config, still here
from mtbert.distribution import install_hint
from mtbert.errors import MtbertError
from mtbert.io import atomic_write_json, read_json
from mtbert.runs.layout import TENSORBOARD, RunDir

_MODULES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}  # what each tracker imports
logger = logging.getLogger(__name__)
DEFAULT_PROJECT = "mtbert"  # MLflow experiment and W&B project when the environment names none


def flatten_scalars(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Every number of a (nested) log record under the `/`-joined path of its keys (`cosine/sst-para`).

    Booleans become 0.0/1.0; strings, lists, None and the `step` key are left out.
    """
    out: dict[str, float] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_scalars(value, prefix=f"{name}/"))
        elif isinstance(value, bool):
            out[name] = float(value)
        elif isinstance(value, int | float) and key != "step":
            out[name] = float(value)
    return out


def flatten_config(config: dict[str, Any], prefix: str = "") -> dict[str, str | int | float | bool | None]:
    """A config as one level of `.`-joined keys (`two_step.learning_rate`); lists become their string form."""
    out: dict[str, str | int | float | bool | None] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_config(value, prefix=f"{name}."))
        elif value is None or isinstance(value, str | int | float | bool):
            out[name] = value
        else:
            out[name] = str(value)
    return out


class Trackers:
    """The open trackers of a run: `log(record, step)` mirrors a log record to each, `close()` ends them."""

    def __init__(self, trackers: list[Any]) -> None:
        self.trackers = trackers  # accelerate.tracking.GeneralTracker instances, started
        self.names = [t.name for t in trackers]
        self.logged_until = 0  # steps up to this one were logged before a resume (set by RunLog): not sent again

    def log(self, record: dict[str, Any], step: int) -> None:
        """Log every number of `record` (nested dicts flattened to `a/b`) at `step`, unless the step was logged
        before the run resumed (`logged_until`)."""
        if not self.trackers or step <= self.logged_until:
            return
        scalars = flatten_scalars(record)
        if not scalars:
            return
        for tracker in self.trackers:
            values = _mlflow_names(scalars) if tracker.name == "mlflow" else scalars
            tracker.log(values, step=step)

    def close(self) -> None:
        """End every tracker's run (flushing what it holds); a second call does nothing."""
        trackers, self.trackers = self.trackers, []
        for tracker in trackers:
            tracker.finish()

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_trackers(report_to: str | list[str] | None, output_dir: str | Path, run_name: str,
                  config: dict[str, Any], resume: bool = False) -> Trackers:
    """Start the trackers `report_to` names for the run in `output_dir`, logging `config` as its parameters;
    with `resume`, continue the MLflow and W&B runs that `output_dir/trackers.json` names (new ones if none).

    Raises MtbertError when a tracker's package is missing (naming the extra to install) or it cannot start.
    """
    names = parse_report_to(report_to)
    for name in names:  # every package first, so that a missing one leaves no run half-started
        try:
            importlib.import_module(_MODULES[name])
        except ImportError:
            raise MtbertError(f"report_to: {name} needs the {name} package ({install_hint(name)})") from None
    if not names:
        return Trackers([])
    output_dir = Path(output_dir)
    run_ids_file = RunDir(output_dir).tracker_runs
    earlier = _read_run_ids(run_ids_file) if resume else {}
    _ensure_accelerate_state()
    started: list[Any] = []
    try:
        for name in names:
            tracker = _make(name, output_dir, run_name, config, earlier.get(name))
            tracker.main_process_only = False  # the caller opens trackers on the main process only
            try:
                tracker.start()
                started.append(tracker)
                if name == "mlflow" and name not in earlier:  # W&B took the config in wandb.init; TensorBoard
                    tracker.store_init_configuration(flatten_config(config))  # has config.yaml beside it
            except Exception as err:  # any failure of a tool to start is reported as one sentence
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                again = (f"; to log into a new {name} run instead of run {earlier[name]}, delete {run_ids_file}"
                         if name in earlier else "")
                raise MtbertError(f"report_to: {name} could not start ({first}){again}") from None
        run_ids = {t.name: _run_id(t) for t in started if t.name in ("mlflow", "wandb")}
        if run_ids:
            atomic_write_json(run_ids_file, {**earlier, **run_ids})
    except BaseException:
        Trackers(started).close()
        raise
    return Trackers(started)


def _read_run_ids(path: Path) -> dict[str, str]:
    """The tracker run ids a run folder kept: {} when it has none; a file that cannot be read is said, and new
    tracker runs are started."""
    if not path.exists():
        return {}
    ids = read_json(path)
    if ids is None:
        logger.warning("%s: not readable as JSON; the trackers start new runs instead of continuing", path)
        return {}
    return {k: v for k, v in ids.items() if isinstance(v, str)}


def _run_id(tracker: Any) -> str:
    return tracker.active_run.info.run_id if tracker.name == "mlflow" else tracker.run.id


def _ensure_accelerate_state() -> None:
    """Accelerate's trackers log through its logger, which needs its state: start it as the training loop does."""
    from accelerate import PartialState

    if not PartialState._shared_state:
        from mtbert.distributed import start

        start()


def _make(name: str, output_dir: Path, run_name: str, config: dict[str, Any], run_id: str | None = None) -> Any:
    """The accelerate tracker `name`, not started; `run_id`: the MLflow or W&B run to continue."""
    from accelerate.tracking import MLflowTracker, TensorBoardTracker, WandBTracker

    if name == "tensorboard":
        return TensorBoardTracker(run_name=TENSORBOARD, logging_dir=output_dir)  # <output_dir>/tensorboard
    if name == "mlflow":  # env MLFLOW_* take priority
        return MLflowTracker(experiment_name=DEFAULT_PROJECT, run_name=run_name, run_id=run_id)
    wandb_dir = os.environ.get("WANDB_DIR") or str(output_dir)
    Path(wandb_dir).mkdir(parents=True, exist_ok=True)
    resume = {"id": run_id, "resume": "allow"} if run_id else {}
    # accelerate passes its `run_name` to wandb.init as the project
    return WandBTracker(os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT, name=run_name, dir=wandb_dir,
                        config=config, **resume)


def _mlflow_names(scalars: dict[str, float]) -> dict[str, float]:
    """MLflow metric names allow letters, digits, `_ - . / ` and space; anything else becomes `_`."""
    return {re.sub(r"[^/\w.\- ]", "_", k): v for k, v in scalars.items()}
