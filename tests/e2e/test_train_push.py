"""`push_to_hub` during training, against the fake upload Hub on 127.0.0.1 (tests/helpers/fake_hub.py): what each
`hub_strategy` commits and when, a private repo, and a Hub that fails mid-training (training finishes, results.json
is intact, the failure is recorded and the printed `hf upload` command pushes the model later); a two-step run's
pushes (each stage into its folder of the repo, every model at the end) and its models loaded back from the repo as
their cards say.

The runs train the tiny model on task sst for 3 epochs of 2 steps: evaluations at steps 2, 4 and 6, checkpoints at
the ends of the first two epochs (steps 2 and 4; the last epoch ends the run and keeps none). huggingface_hub's
endpoint and offline mode are patched in this process (it reads them at import), its token is HF_TOKEN; the pause
between two tries of a push is recorded instead of slept.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers.fake_hub import UploadHub, read_commit, serving, uploading

import mtbert.evaluation.evaluate
import mtbert.evaluation.metrics
import mtbert.training.run
import mtbert.training.two_step
from mtbert.config import build_config
from mtbert.training.hub_push import HubPush
from mtbert.training.run import train

pytestmark = pytest.mark.e2e

REPO = "alice/tiny-run"
MODEL_FILES = {"README.md", "mtbert_config.json", "heads.safetensors", "encoder/model.safetensors",
               "encoder/config.json"}  # some of best/'s files
CHECKPOINT_FILES = {"model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json"}


@pytest.fixture()
def hub(monkeypatch, tmp_path) -> Iterator[UploadHub]:
    from huggingface_hub import constants

    with uploading() as server:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", "hf_test")
        monkeypatch.setenv("HF_XET_CACHE", str(tmp_path / "xet"))  # hf_xet's logs, not in the user's cache
        yield server


@pytest.fixture()
def pauses(monkeypatch) -> list[float]:
    """The pauses between tries of a push, recorded instead of slept; huggingface_hub's own pauses between the
    retries of one request (1, 2, 4, 8, 8 s on a 5xx) are not slept either."""
    import huggingface_hub.utils._http as hf_http

    slept: list[float] = []
    monkeypatch.setattr(mtbert.training.run, "HubPush", functools.partial(HubPush, sleep=slept.append))
    monkeypatch.setattr(mtbert.training.two_step, "HubPush", functools.partial(HubPush, sleep=slept.append))
    monkeypatch.setattr(hf_http, "time", types.SimpleNamespace(**{**vars(time), "sleep": lambda seconds: None}))
    return slept


@pytest.fixture(autouse=True)
def _no_bootstrap(monkeypatch):  # the overall score's bootstrap interval is not what these tests check
    stub = lambda results, resamples=1000, seed=0: (0.0, 1.0)  # noqa: E731
    monkeypatch.setattr(mtbert.evaluation.evaluate, "bootstrap_overall", stub)
    monkeypatch.setattr(mtbert.evaluation.metrics, "bootstrap_overall", stub)


def run_config(tiny_config: dict, **keys) -> dict:
    return {**tiny_config, "tasks": ["sst"], "num_train_epochs": 3, "push_to_hub": True, "hub_model_id": REPO,
            **keys}


def best_steps_at_saves(run: Path) -> dict[int, int]:
    """The best model's step at each checkpoint save (2 and 4), from metrics.jsonl (a greater overall wins)."""
    best, value, at = None, None, {}
    for row in (json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()):
        if value is None or row["overall"] > value:
            best, value = row["step"], row["overall"]
        at[row["step"]] = best
    return {step: at[step] for step in (2, 4)}


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def push_later(command: str, hub, run: Path) -> tuple[dict, dict]:
    """Run a printed push-later command (the venv's `hf`) against the fake Hub; the commit it posted."""
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_test",
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HOME": str(run.parent / "hf_home"), "NO_PROXY": "127.0.0.1",
           "no_proxy": "127.0.0.1",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    done = subprocess.run(shlex.split(command), capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return read_commit(hub.posted("commit")[-1][2])


@pytest.mark.parametrize("strategy", ["end", "every_save", "checkpoint", "all_checkpoints"])
def test_each_hub_strategy_commits_what_transformers_does(tiny_config, hub, pauses, strategy):
    results = train(build_config(run_config(tiny_config, hub_strategy=strategy)))
    run = Path(tiny_config["output_dir"])
    best_at = best_steps_at_saves(run)
    commits = hub.commits()
    messages = [header["summary"] for header, _ in commits]
    # every_save: a save pushes the best model when it is newer than the one pushed; the checkpoint strategies
    # push at every save (the model only when it is newer)
    model_saves = [s for i, s in enumerate((2, 4)) if i == 0 or best_at[s] != best_at[(2, 4)[i - 1]]]
    saves = {"end": [], "every_save": model_saves, "checkpoint": [2, 4], "all_checkpoints": [2, 4]}[strategy]
    assert messages == [f"Training in progress, step {s}" for s in saves] + ["End of training"]
    assert len(hub.posted("repos/create")) == 1  # created once, by the first push
    for step, (_, files) in zip(saves, commits, strict=False):
        folder = {"checkpoint": "last-checkpoint/", "all_checkpoints": f"checkpoint-{step}/"}.get(strategy)
        pushed_model = {f for f in files if "/" not in f or f.startswith("encoder/")}
        assert bool(pushed_model) == (step in model_saves), (step, sorted(files))
        if pushed_model:
            assert MODEL_FILES <= pushed_model
            card = files["README.md"].decode()
            assert f"best step: {best_at[step]}" in card and f'MultiTaskModel.from_pretrained("{REPO}")' in card
        in_folder = {f[len(folder):] for f in files if f.startswith(folder)} if folder else set()
        assert CHECKPOINT_FILES <= in_folder if folder else not in_folder
        assert set(files) == pushed_model | {f"{folder}{f}" for f in in_folder}
    _, last = commits[-1]
    assert last == files_of(run / "best")  # the end push: best/ byte for byte, with the run's final card
    assert str(run.parent) not in last["README.md"].decode()  # the card names no folder of this machine
    assert results["hub"]["revision"] == f"{len(commits):040x}" and results["hub"]["repo_id"] == REPO
    assert [p["step"] for p in results["hub"]["pushes"]] == [*saves, "end"]
    assert all("error" not in p for p in results["hub"]["pushes"]) and pauses == []
    assert json.loads((run / "results.json").read_text()) == results
    assert not (run / ".hub-push").exists()  # the snapshots are gone


def test_a_private_repo(tiny_config, hub, pauses):
    train(build_config(run_config(tiny_config, hub_strategy="end", hub_private_repo=True)))
    [(_, _, body)] = hub.posted("repos/create")
    assert json.loads(body) == {"name": "tiny-run", "organization": "alice", "type": "model", "visibility": "private"}
    assert [h["summary"] for h, _ in hub.commits()] == ["End of training"]


def test_a_hub_that_fails_mid_training_loses_nothing(tiny_config, hub, pauses, capsys):
    hub.fail_commits_from = 2  # the first commit lands (step 2), every later one is answered 503
    results = train(build_config(run_config(tiny_config, hub_strategy="checkpoint", hub_private_repo=True)))
    run = Path(tiny_config["output_dir"])
    assert results["best_step"] in (2, 4, 6) and "sst_acc" in results  # training finished
    assert json.loads((run / "results.json").read_text()) == results
    assert [h["summary"] for h, _ in hub.commits()] == ["Training in progress, step 2"]
    assert len(hub.failed_bodies) >= 6  # step 4's push and the end push, 3 tries each (huggingface_hub retries each)
    assert pauses == [10.0, 20.0, 10.0, 20.0]  # the pauses before the second and third tries
    pushes = results["hub"]["pushes"]
    assert [p["step"] for p in pushes] == [2, 4, "end"] and "error" not in pushes[0]
    assert results["hub"]["revision"] == pushes[0]["commit"]
    for push in pushes[1:]:
        assert push["error"].startswith(f"push_to_hub: the Hub at {hub.url} could not upload ")
        assert push["error"].endswith(f" to {REPO} (503 Service Unavailable: Service Unavailable) (after 3 tries)")
    command = results["hub"]["push_later"]
    assert command == (f"hf upload {REPO} {shlex.quote(str(run / 'best'))} . --commit-message 'End of training' "
                       "--private")
    err = capsys.readouterr().err
    assert (f"mtbert: {pushes[-1]['error']}; the run finished and {run / 'results.json'} is written; push its best "
            f"model later with `{command}`") in err.splitlines()

    hub.fail_commits_from = None  # the Hub is back: the printed command pushes best/ as the end push would have
    header, files = push_later(command, hub, run)
    assert header["summary"] == "End of training" and files == files_of(run / "best")


def test_only_rank_0_pushes_under_torchrun(tiny_config, hub, tmp_path):
    """Two CPU processes (torchrun, gloo), 3 steps of one per epoch: checkpoints after steps 1 and 2, evaluated at
    the end only. Each push is made once: by rank 0."""
    import yaml

    run = tmp_path / "ddp"
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(run_config(
        tiny_config, output_dir=str(run), hub_strategy="checkpoint", max_steps=3, eval_strategy="no",
        samples_per_task_per_epoch=8, per_device_train_batch_size=4)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_test",
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HOME": str(tmp_path / "hf_home"), "NO_PROXY": "127.0.0.1",
           "no_proxy": "127.0.0.1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
               "mtbert", "train", str(config)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(hub.posted("repos/create")) == 1
    commits = hub.commits()
    assert [h["summary"] for h, _ in commits] == ["Training in progress, step 1", "Training in progress, step 2",
                                                  "End of training"]
    for _, files in commits[:2]:  # no best model before the end's evaluation: the checkpoint alone
        assert {f.split("/")[0] for f in files} == {"last-checkpoint"}
        assert CHECKPOINT_FILES <= {f.removeprefix("last-checkpoint/") for f in files}
    assert commits[-1][1] == files_of(run / "best")
    results = json.loads((run / "results.json").read_text())
    assert [p["step"] for p in results["hub"]["pushes"]] == [1, 2, "end"]


# ---- a two-step run -------------------------------------------------------------------------------------------

TWO_STEP_MODELS = ("stage1", "tasks/sst", "tasks/sts")
TEXTS = ["great fun love the film", "awful dull", "a very bad actor"]


def two_step_config(tiny_config: dict, **keys) -> dict:
    """Stage 1 on sst and sts for 2 epochs of 2 steps, then 2 such epochs per task: each stage keeps one
    checkpoint, at step 2."""
    return run_config(tiny_config, tasks=["sst", "sts"], num_train_epochs=2, two_step={"num_train_epochs": 2},
                      **keys)


def end_files(run: Path) -> dict[str, bytes]:
    """What a two-step run's end push holds: its card and each model's best/, at their paths in the run folder."""
    files = {"README.md": (run / "README.md").read_bytes()}
    for name in TWO_STEP_MODELS:
        files.update({f"{name}/best/{f}": data for f, data in files_of(run / name / "best").items()})
    return files


def repo_state(hub: UploadHub, folder: Path) -> Path:
    """The repo after every commit the Hub accepted, written into `folder` (no commit deletes a file)."""
    for _, files in hub.commits():
        for name, data in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
    return folder


def load_as_the_card_says(card: str, repo_folder: Path, home: Path) -> list[list[float]]:
    """Run the card's Python block against a fake Hub serving `repo_folder` as REPO (its own process:
    huggingface_hub reads HF_ENDPOINT when imported) and return the scores of `model.predict`."""
    code = card.split("```python\n", 1)[1].split("```", 1)[0]
    script = f"texts = {TEXTS!r}\n" + code.replace("model.predict(", "found = model.predict(") + \
        "import json; print(json.dumps(found.scores.tolist()))\n"
    with serving() as server:
        server.add(REPO, repo_folder)
        env = {**os.environ, "HF_ENDPOINT": server.url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(home),
               "HF_HUB_DISABLE_TELEMETRY": "1", "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_two_step_run_pushes_each_stage_and_every_model_which_load_from_the_hub(tiny_config, hub, pauses,
                                                                                   tmp_path):
    from mtbert.model import MultiTaskModel

    results = train(build_config(two_step_config(tiny_config, hub_strategy="checkpoint")))
    run = Path(tiny_config["output_dir"])
    commits = hub.commits()
    assert [h["summary"] for h, _ in commits] == [f"Training in progress, {name}, step 2" for name in
                                                  TWO_STEP_MODELS] + ["End of training"]
    assert len(hub.posted("repos/create")) == 1
    for name, (_, files) in zip(TWO_STEP_MODELS, commits, strict=False):  # each stage's save, into its folder
        assert CHECKPOINT_FILES <= {f.removeprefix(f"{name}/last-checkpoint/") for f in files}
        assert all(f.startswith((f"{name}/last-checkpoint/", f"{name}/best/")) for f in files), sorted(files)
        if f"{name}/best/README.md" in files:  # the stage's best model at step 2 (stage 2 may keep stage 1's)
            assert {f"{name}/best/{f}" for f in MODEL_FILES} <= set(files)
    assert commits[-1][1] == end_files(run)  # the end push: the run's card and every model, byte for byte
    assert [(p["step"], p.get("stage")) for p in results["hub"]["pushes"]] == [
        (2, name) for name in TWO_STEP_MODELS] + [("end", None)]
    assert all("error" not in p for p in results["hub"]["pushes"]) and pauses == []
    assert results["hub"]["revision"] == f"{len(commits):040x}"
    assert json.loads((run / "results.json").read_text()) == results
    assert not (run / ".hub-push").exists()

    repo = repo_state(hub, tmp_path / "repo")
    root_card = (repo / "README.md").read_text()
    assert "tasks/<task>/best/" in root_card and str(run.parent) not in root_card
    for name in ("tasks/sst", "stage1"):  # each card's own code loads its model from the Hub: same scores as here
        card = (repo / name / "best" / "README.md").read_text()
        assert str(run.parent) not in card
        scores = load_as_the_card_says(card, repo, tmp_path / f"home-{name.replace('/', '-')}")
        local = MultiTaskModel.from_pretrained(run / name / "best").eval().predict("sst", TEXTS).scores
        assert np.allclose(scores, local, atol=1e-6)


def test_a_two_step_run_on_a_failing_hub_finishes_and_its_command_pushes_later(tiny_config, hub, pauses, capsys):
    hub.fail_commits_from = 2  # stage 1's push lands, every later commit is answered 503
    results = train(build_config(two_step_config(tiny_config, hub_strategy="every_save")))
    run = Path(tiny_config["output_dir"])
    assert results["sst_acc"] >= 0 and "sts_corr" in results  # stage 2 finished for every task
    assert json.loads((run / "results.json").read_text()) == results
    assert [h["summary"] for h, _ in hub.commits()] == ["Training in progress, stage1, step 2"]
    pushes = results["hub"]["pushes"]
    assert pushes[-1]["step"] == "end" and all("error" in p for p in pushes[1:])
    command = results["hub"]["push_later"]
    assert command == (f"hf upload {REPO} {shlex.quote(str(run))} . --include README.md --include 'stage1/best/*' "
                       "--include 'tasks/*/best/*' --commit-message 'End of training'")
    assert f"push its models later with `{command}`" in capsys.readouterr().err

    hub.fail_commits_from = None  # the Hub is back: the printed command pushes what the end push would have
    header, files = push_later(command, hub, run)
    assert header["summary"] == "End of training" and files == end_files(run)
