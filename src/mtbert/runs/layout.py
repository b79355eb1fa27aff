"""The layout of a run folder: one place that names every file and folder a run writes (pinned on disk).

```
output_dir/
  config.yaml  metrics.jsonl  train_log.jsonl  results.json
  best/                      the best model (MultiTaskModel.save_pretrained)
  checkpoint-<step>/         resumable training state
  predictions/<task>-<split>-output.csv   scores/<task>-<split>.tsv
  tensorboard/  mlm/  mlm_log.jsonl
  trackers.json              the MLflow and W&B run ids (report_to), which a resumed run logs into again
  .hub-push/                 push_to_hub's snapshots of the pushes not yet done (gone when the run ends)
  stage1/  tasks/<task>/     a two-step run: stage 1 and each task's stage 2, each a run folder itself
  bench_run.json             a run of `mtbert bench quality` (one taken from a table holds only config, results,
                             dev predictions and this)
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
TRAIN_LOG = "train_log.jsonl"
RESULTS = "results.json"
BEST = "best"
PREDICTIONS = "predictions"
SCORES = "scores"
STAGE1 = "stage1"
TASKS = "tasks"
MLM = "mlm"
MLM_LOG = "mlm_log.jsonl"
TENSORBOARD = "tensorboard"
TRACKER_RUNS = "trackers.json"
CHECKPOINT_PREFIX = "checkpoint-"
LOCK = ".mtbert.lock"
MODEL_CONFIG = "mtbert_config.json"  # marks a saved MultiTaskModel folder
HUB_PUSH = ".hub-push"  # push_to_hub's snapshots of the pushes not yet done (training/hub_push.py)
BENCH_RUN = "bench_run.json"  # a `mtbert bench quality` run: what it trained with, or the table it was taken from


@dataclass(frozen=True)
class RunDir:
    """A run folder and the paths of everything in it."""

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    @property
    def train_log(self) -> Path:
        return self.root / TRAIN_LOG

    @property
    def results(self) -> Path:
        return self.root / RESULTS

    @property
    def best(self) -> Path:
        return self.root / BEST

    @property
    def stage1(self) -> RunDir:
        return RunDir(self.root / STAGE1)

    @property
    def mlm(self) -> Path:
        return self.root / MLM

    @property
    def mlm_log(self) -> Path:
        return self.root / MLM_LOG

    @property
    def tensorboard(self) -> Path:
        return self.root / TENSORBOARD

    @property
    def tracker_runs(self) -> Path:
        return self.root / TRACKER_RUNS

    @property
    def lock(self) -> Path:
        return self.root / LOCK

    @property
    def tasks_dir(self) -> Path:
        return self.root / TASKS

    def task(self, name: str) -> RunDir:
        """A two-step run's stage-2 folder of one task."""
        return RunDir(self.root / TASKS / name)

    def checkpoint(self, step: int) -> Path:
        return self.root / f"{CHECKPOINT_PREFIX}{step}"

    def checkpoints(self) -> list[Path]:
        """Checkpoint folders, oldest step first."""
        found = [p for p in self.root.glob(f"{CHECKPOINT_PREFIX}*") if p.is_dir()
                 and p.name[len(CHECKPOINT_PREFIX):].isdigit()]
        return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))

    def prediction(self, task: str, split: str, suffix: str = ".csv") -> Path:
        """The prediction file of a task and split (`dev` or `test`): CS224N-format `.csv`, or the task kind's
        `prediction_suffix` (a token task's `.jsonl`)."""
        return self.root / PREDICTIONS / f"{task}-{split}-output{suffix}"

    def scores(self, task: str, split: str) -> Path:
        """The probabilities (or values) file of a task and split, for soft ensembles."""
        return self.root / SCORES / f"{task}-{split}.tsv"

    def model_for(self, task: str) -> Path:
        """The model that predicts `task`: tasks/<task>/best in a two-step run, else best/."""
        specialised = self.task(task).best
        return specialised if specialised.is_dir() else self.best

    def written_by_training(self) -> list[Path]:
        """Everything `--overwrite_output_dir` removes before a new run."""
        names = (BEST, PREDICTIONS, SCORES, STAGE1, TASKS, MLM, MLM_LOG, METRICS, TRAIN_LOG, RESULTS, CONFIG,
                 TENSORBOARD, TRACKER_RUNS, HUB_PUSH)
        return [self.root / n for n in names] + self.checkpoints()
