"""`push_to_hub` during training: the run's best model (`best/` with its model card) pushed to the Hub model repo
`hub_model_id`, as `hub_strategy` says (the values and meanings of transformers' `TrainingArguments`):

- `end`: one commit when training ends;
- `every_save`: also a commit at each checkpoint save whose best model is newer than the last one pushed;
- `checkpoint`: `every_save`, and each commit also holds the saved checkpoint in `last-checkpoint/`;
- `all_checkpoints`: `every_save`, and each checkpoint is pushed into its own `checkpoint-<step>/`.

A two-step run has one model per task (`tasks/<task>/best`, what `mtbert predict` and `mtbert export` use) and
stage 1's shared model (`stage1/best`), so its repo mirrors the run folder: `README.md` (the run's card),
`stage1/best/` (absent with `two_step.init_from`) and `tasks/<task>/best/`, each loading with
`MultiTaskModel.from_pretrained` and holding its own card. Each stage pushes as a one-stage run does, into its own
folder (`stage1/`, `tasks/<task>/`: its `best/`, `last-checkpoint/` or `checkpoint-<step>/`); the end push, after
stage 2, holds every model and the run's card (`two_step.py` calls `begin_stage` before each stage).

A push never stops or loses the training. The pushes during training run in one background thread, in order, each
from a snapshot of its files (hard links in `<run>/.hub-push/`, so that a newer best/ or a checkpoint rotation
cannot change a file being uploaded). The end push follows them, after `results.json` and the card are written;
the finished run waits END_WAIT_S at most for them. A push the Hub may take later (no answer, 408, 429, a 5xx) is
tried PUSH_ATTEMPTS times with a doubling pause; a push that still fails is reported in one sentence and training
goes on. `results.json` records every push (its
commit, or its error) under `hub`, and a failed end push prints the `hf upload` command that sends the end push's
files later.
Only rank 0 pushes. The token is huggingface_hub's own (HF_TOKEN, else `hf auth login`'s), the Hub its HF_ENDPOINT.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mtbert.config import TrainConfig
from mtbert.errors import MtbertError
from mtbert.evaluation import hub as hub_api
from mtbert.evaluation.hub import PushFailed
from mtbert.io import atomic_write_json, read_jsonl
from mtbert.runs.layout import BEST, CHECKPOINT_PREFIX, HUB_PUSH, STAGE1, TASKS, RunDir
from mtbert.runs.model_card import CARD, write_model_card

logger = logging.getLogger(__name__)

PUSH_ATTEMPTS = 3  # tries of one push that the Hub did not refuse (no answer, 408, 429, 5xx)
FIRST_PAUSE_S = 10.0  # the pause before the second try; doubled before each later one
LAST_CHECKPOINT = "last-checkpoint"  # the repo folder of the latest checkpoint (hub_strategy: checkpoint)
END_MESSAGE = "End of training"
END_WAIT_S = 1800.0  # how long a finished run waits for its pushes (huggingface_hub's requests have no time-out)


class HubClient(Protocol):
    """What pushing needs of the Hub (huggingface_hub's HfApi by default; tests give a fake)."""

    def create_repo(self, repo_id: str, private: bool | None) -> str: ...

    def upload(self, folder: Path, repo_id: str, commit_message: str) -> Any: ...  # .oid, .commit_url


class HfHub:
    """The Hub through huggingface_hub (evaluation/hub.py): each failure a PushFailed naming `push_to_hub`."""

    def create_repo(self, repo_id: str, private: bool | None) -> str:
        return hub_api.create_repo(repo_id, private=private, flag="push_to_hub")

    def upload(self, folder: Path, repo_id: str, commit_message: str) -> Any:
        return hub_api.upload(folder, repo_id, commit_message=commit_message, flag="push_to_hub")


def check_can_push(cfg: TrainConfig) -> None:
    """Refuse, before the run writes anything, a push that cannot happen: offline mode, or no token at all."""
    if not cfg.push_to_hub:
        return
    from huggingface_hub import constants, get_token

    if constants.is_offline_mode():
        raise MtbertError("push_to_hub: the push needs the Hub, but offline mode is set (HF_HUB_OFFLINE=1); unset "
                          "it, or train with push_to_hub: false and push best/ later with `hf upload`")
    if get_token() is None:
        raise MtbertError("push_to_hub: no Hugging Face token found; set HF_TOKEN or log in with `hf auth login` "
                          "(a token with write access)")


@dataclass
class _Push:
    """One commit to make: its staged folder (the repo's layout), message and the step it comes from."""

    folder: Path
    message: str
    step: int | None  # None: the end push
    files: list[str]
    staged: bool  # the folder is a snapshot to remove once pushed
    stage: str = ""  # a two-step run's stage: its folder in the run and the repo (stage1, tasks/<task>)


class HubPush:
    """The pushes of one run (rank 0 only): `saved(step, best_step)` after each checkpoint, `finish(results)` at
    the end; a two-step run calls `begin_stage` before each of its stages. `client`, `sleep`, `attempts`,
    `first_pause` and `end_wait` are injectable (tests: a fake Hub, no real pause)."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, client: HubClient | None = None,
                 sleep: Callable[[float], None] = time.sleep, attempts: int = PUSH_ATTEMPTS,
                 first_pause: float = FIRST_PAUSE_S, end_wait: float = END_WAIT_S) -> None:
        self.cfg, self.run = cfg, RunDir(run_dir)
        self.repo_id: str = cfg.hub_model_id or ""
        self.strategy = cfg.hub_strategy
        self.client = client or HfHub()
        self.sleep, self.attempts, self.first_pause, self.end_wait = sleep, attempts, first_pause, end_wait
        self.records: list[dict[str, Any]] = []  # one per push, in order: results.json's hub.pushes
        self.repo_url: str | None = None
        self._pushed_best: int | None = None  # the best step of the last push that held the model
        self._queue: list[_Push | None] = []  # the pushes not done, the first one running; None: the end
        self._cond = threading.Condition()  # guards _queue, records and _given_up
        self._thread: threading.Thread | None = None
        self._given_up = False  # the run ended without waiting for the pushes left
        self._count = 0
        self.two_step = cfg.two_step is not None
        self.stage_cfg, self.stage_run, self.stage = cfg, self.run, ""  # the stage training now
        shutil.rmtree(self.staging, ignore_errors=True)  # a killed run's snapshots

    def begin_stage(self, cfg: TrainConfig, stage_dir: Path) -> None:
        """A stage of a two-step run starts (stage 1, or one task's stage 2, trained with `cfg` into `stage_dir`,
        a folder of the run): its saves push into the repo folder of the same name."""
        self.stage_cfg, self.stage_run = cfg, RunDir(stage_dir)
        self.stage = self.stage_run.root.relative_to(self.run.root).as_posix()
        self._pushed_best = None

    @property
    def staging(self) -> Path:
        return self.run.root / HUB_PUSH

    # ---- during training ---------------------------------------------------------------------------
    def saved(self, step: int, best_step: int | None) -> None:
        """checkpoint-<step> was saved: queue its push (every strategy but `end`), returning at once."""
        if self.strategy == "end":
            return
        with_model = best_step is not None and best_step != self._pushed_best
        checkpoint = {"checkpoint": LAST_CHECKPOINT, "all_checkpoints": f"{CHECKPOINT_PREFIX}{step}"}.get(
            self.strategy)
        if not with_model and checkpoint is None:
            return  # every_save, and the best model is the one pushed already (or there is none yet)
        self._count += 1
        folder = self.staging / str(self._count)
        base = folder / self.stage  # a two-step run's stage: its folder in the repo, as in the run
        model = base / BEST if self.stage else folder
        try:
            if with_model:
                snapshot(self.stage_run.best, model, skip=CARD)
                write_model_card(self.stage_run, model, self.stage_cfg, best_record(self.stage_run, best_step))
            if checkpoint is not None:
                snapshot(self.stage_run.checkpoint(step), base / checkpoint)
        except (OSError, MtbertError) as err:  # e.g. a full disk: this push is left out, training goes on
            shutil.rmtree(folder, ignore_errors=True)
            logger.warning("push_to_hub: step %d is not pushed, its files could not be staged in %s (%s)", step,
                           self.staging, err)
            return
        if with_model:
            self._pushed_best = best_step
        message = f"Training in progress, {self.stage}, step {step}" if self.stage else \
            f"Training in progress, step {step}"
        self._submit(_Push(folder, message, step, files_in(folder), staged=True, stage=self.stage))

    def _submit(self, push: _Push | None) -> None:
        with self._cond:
            self._queue.append(push)
            self._cond.notify()
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="mtbert-hub-push", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        """The background thread: the queued pushes, in order, until the end marker (or the run gives up)."""
        while True:
            with self._cond:
                while not self._queue and not self._given_up:
                    self._cond.wait()
                if self._given_up or self._queue[0] is None:
                    return
                push = self._queue[0]
            record = self._push(push)
            with self._cond:
                if self._given_up:
                    return  # finish() has recorded this push and the ones after it as not done
                self.records.append(record)
                self._queue.pop(0)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every queued push is done (pushed or its failure recorded), at most `timeout` seconds; whether
        they are. The pushes still waiting then are given up: recorded as not done, and never made."""
        if self._thread is None:
            return True
        self._submit(None)
        self._thread.join(timeout)
        with self._cond:
            left = [p for p in self._queue if p is not None]
            self._given_up = bool(left)
            for push in left:
                self.records.append({**_record(push), "error": (
                    f"push_to_hub: the push to {self.repo_id} was not done {timeout:g} s after training ended (the "
                    "Hub is slow or does not answer)")})
            self._queue.clear()
            self._cond.notify()
        self._thread = None
        return not left

    # ---- at the end --------------------------------------------------------------------------------
    def finish(self, results: dict[str, Any]) -> dict[str, Any]:
        """After training: the queued pushes, then the end push in one commit (best/ with the card the stage's
        finish wrote; a two-step run: its card and every model, see the module docstring), waiting at most
        `end_wait` seconds for them. Returns `results` with `hub` (the repo, the last commit, every push) and writes
        them to results.json; a failed end push is printed with the command that pushes its files later."""
        try:
            end = self._end_push()
        except OSError as err:  # e.g. a full disk: recorded as the end push's failure, after the queued pushes
            end = _Push(self.staging / "end", END_MESSAGE, None, [], staged=True)
            failure = {**_record(end), "error": f"push_to_hub: the end push could not be staged in {self.staging} "
                                                f"({err})"}
        else:
            failure = None
        if self._queue:
            logger.info("push_to_hub: waiting for %d push(es) to %s, then the end push (at most %g s)",
                        len(self._queue), self.repo_id, self.end_wait)
        if failure is None:
            self._submit(end)
        self.wait(self.end_wait)
        shutil.rmtree(self.staging, ignore_errors=True)
        with self._cond:
            if failure is not None:
                self.records.append(failure)
            records = list(self.records)
        hub: dict[str, Any] = {"repo_id": self.repo_id, "strategy": self.strategy}
        done = [r for r in records if "commit" in r]
        if done:
            hub["revision"] = done[-1]["commit"]  # the repo's commit after the run's last successful push
        hub["pushes"] = records
        if "error" in records[-1]:  # the end push
            hub["push_later"] = self.push_later_command()
            what = "models" if self.two_step else "best model"
            print(f"mtbert: {records[-1]['error']}; the run finished and {self.run.results} is written; push its "
                  f"{what} later with `{hub['push_later']}`", file=sys.stderr)
        results = {**results, "hub": hub}
        atomic_write_json(self.run.results, results)
        return results

    def push_later_command(self) -> str:
        """The command that pushes what the end push does: best/, or a two-step run's card and models."""
        private = " --private" if self.cfg.hub_private_repo else ""
        if self.two_step:
            include = "".join(f" --include {shlex.quote(p)}" for p in (CARD, f"{STAGE1}/{BEST}/*",
                                                                         f"{TASKS}/*/{BEST}/*"))
            return (f"hf upload {self.repo_id} {shlex.quote(str(self.run.root))} .{include} "
                    f"--commit-message {shlex.quote(END_MESSAGE)}{private}")
        return (f"hf upload {self.repo_id} {shlex.quote(str(self.run.best))} . "
                f"--commit-message {shlex.quote(END_MESSAGE)}{private}")

    def _end_push(self) -> _Push:
        """The end push: best/ itself, or (a two-step run) a snapshot of the run's card, stage 1's best/ (when this
        run trained it) and each task's best/, at their paths in the run folder."""
        if not self.two_step:
            return _Push(self.run.best, END_MESSAGE, None, files_in(self.run.best), staged=False)
        folder = self.staging / "end"
        shutil.rmtree(folder, ignore_errors=True)
        models = [self.run.stage1.best] if self.run.stage1.best.is_dir() else []
        models += [self.run.task(spec.name).best for spec in self.cfg.task_specs()]
        try:
            for model in models:
                snapshot(model, folder / model.relative_to(self.run.root))
            link(self.run.root / CARD, folder / CARD)
        except OSError:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return _Push(folder, END_MESSAGE, None, files_in(folder), staged=True)

    # ---- one push ----------------------------------------------------------------------------------
    def _push(self, push: _Push) -> dict[str, Any]:
        """Make one commit (creating the repo first if no push has yet), trying again a push the Hub may take
        later, and return its record (its commit or its error). Never raises."""
        record = _record(push)
        try:
            commit = self._with_retries(push)
        except Exception as err:  # noqa: BLE001 - a push must never stop the training: each failure is recorded
            record["error"] = str(err) if isinstance(err, PushFailed) else (
                f"push_to_hub: could not push to {self.repo_id} ({type(err).__name__}: {err})")
            if push.step is not None:
                logger.warning("%s; training goes on (the end of training pushes best/ again)", record["error"])
        else:
            record.update(commit=commit.oid, url=commit.commit_url)
            logger.info("pushed %s to %s: %s", push.message.lower(), self.repo_id, commit.commit_url)
        finally:
            if push.staged:
                shutil.rmtree(push.folder, ignore_errors=True)
        return record

    def _with_retries(self, push: _Push) -> Any:
        pause = self.first_pause
        for attempt in range(1, self.attempts + 1):
            try:
                if self.repo_url is None:
                    self.repo_url = self.client.create_repo(self.repo_id, self.cfg.hub_private_repo)
                return self.client.upload(push.folder, self.repo_id, push.message)
            except PushFailed as err:
                if not err.retryable or attempt == self.attempts:
                    if attempt > 1:
                        raise PushFailed(f"{err} (after {attempt} tries)", err.retryable) from None
                    raise
                logger.info("%s; trying again in %g s", err, pause)
                self.sleep(pause)
                pause *= 2
        raise AssertionError("unreachable")


def _record(push: _Push) -> dict[str, Any]:
    stage = {"stage": push.stage} if push.stage else {}
    return {"step": push.step if push.step is not None else "end", **stage, "message": push.message,
            "files": push.files}


def files_in(folder: Path) -> list[str]:
    """The files under `folder`, as sorted repo paths."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def snapshot(source: Path, target: Path, skip: str | None = None) -> None:
    """`target` as a copy of folder `source` made of hard links (a copy where the file system has none), so that
    `source` may be replaced or removed while `target` is uploaded; `skip`: a top-level file left out."""
    for path in sorted(source.rglob("*")):
        if not path.is_file() or path.relative_to(source).as_posix() == skip:
            continue
        link(path, target / path.relative_to(source))


def link(path: Path, out: Path) -> None:
    """`out` as a hard link to the file `path` (a copy where the file system has none)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(path, out)
    except OSError:
        shutil.copy2(path, out)


def best_record(run: RunDir, best_step: int) -> dict[str, Any]:
    """The dev metrics of the evaluation that made best/ (its metrics.jsonl line), for the card of a push during
    training."""
    rows = [r for r in read_jsonl(run.metrics) if r.get("step") == best_step] if run.metrics.is_file() else []
    return {**(rows[-1] if rows else {}), "best_step": best_step}
