"""push_to_hub's keys and `HubPush` on a fake Hub client: pushes in the background and in order, from snapshots,
tried again with a doubling pause when the Hub may take them later, and recorded (never raised) when they fail.
The end-to-end runs against a fake Hub server are tests/e2e/test_train_push.py."""

from __future__ import annotations

import json
import re
import shutil
import threading
import types
from pathlib import Path

import pytest

from mtbert.cli import main
from mtbert.config import HUB_STRATEGIES, TrainConfig, build_config
from mtbert.errors import ConfigError, MtbertError
from mtbert.evaluation.hub import PushFailed
from mtbert.training.hub_push import HubPush, check_can_push

REPO = "alice/run"
GUARD_S = 60  # how long a test waits for the background thread before failing (never reached when it works)


class FakeClient:
    """A Hub client whose uploads record each folder's files, answer as told (None: a commit; an exception: raised)
    and, while `hold` is not set, wait (a slow Hub)."""

    def __init__(self, *answers: Exception | None) -> None:
        self.answers = list(answers)
        self.created: list[tuple[str, bool | None]] = []
        self.uploads: list[tuple[str, dict[str, bytes]]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.uploading = threading.Event()

    def create_repo(self, repo_id: str, private: bool | None) -> str:
        self.created.append((repo_id, private))
        return f"https://hub/{repo_id}"

    def upload(self, folder: Path, repo_id: str, commit_message: str):
        self.uploading.set()
        assert self.hold.wait(GUARD_S)
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        answer = self.answers.pop(0) if self.answers else None
        if answer is not None:
            raise answer
        self.uploads.append((commit_message, files))
        oid = f"{len(self.uploads):040x}"
        return types.SimpleNamespace(oid=oid, commit_url=f"https://hub/{repo_id}/commit/{oid}")


def config(run: Path, **keys) -> TrainConfig:
    return build_config({"output_dir": str(run), "tasks": ["sst"], "push_to_hub": True, "hub_model_id": REPO,
                         **keys})


def fake_run(run: Path, best_steps: tuple[int, ...] = (2,)) -> Path:
    """A run folder as a stage leaves it mid-training: best/ (weights 'w<step>'), metrics.jsonl, checkpoints."""
    run.mkdir(parents=True)
    save_best(run, best_steps[-1])
    rows = [{"epoch": s / 2, "step": s, "split": "dev", "sst_acc": s / 10, "overall": s / 10, "train_seconds": 1.0}
            for s in best_steps]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def save_best(run: Path, step: int) -> None:
    """A new best/ as the stage writes it: a new folder put in place of the old one (new files, the old removed)."""
    new = run / "best.new"
    (new / "encoder").mkdir(parents=True)
    (new / "encoder" / "model.safetensors").write_text(f"w{step}")
    (new / "mtbert_config.json").write_text("{}")
    shutil.rmtree(run / "best", ignore_errors=True)
    new.rename(run / "best")


def save_checkpoint(run: Path, step: int) -> None:
    folder = run / f"checkpoint-{step}"
    folder.mkdir()
    (folder / "model.safetensors").write_text(f"c{step}")
    (folder / "optimizer.pt").write_text("o")


# ---- the keys -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("keys", "message"), [
    ({"push_to_hub": True}, "hub_model_id: must be set when push_to_hub is true (the Hub model repo to push to, "
                            "owner/name)"),
    ({"push_to_hub": True, "hub_model_id": "run"}, "hub_model_id: 'run' is not a Hub repo id; give owner/name "
     "(letters, digits, '-', '_' and '.', at most 96 characters, no '--' or '..')"),
    ({"hub_model_id": "a/b/c"}, "hub_model_id: 'a/b/c' is not a Hub repo id; give owner/name (letters, digits, '-', "
                                "'_' and '.', at most 96 characters, no '--' or '..')"),
    ({"hub_strategy": "steps"}, "hub_strategy: 'steps' is not one of end | every_save | checkpoint | all_checkpoints"),
    ({"hub_private_repo": "maybe"}, "hub_private_repo: must be true or false, not 'maybe'"),
    ({"push_to_hub": True, "two_step": {"num_train_epochs": 1}},  # a two-step run still needs its repo
     "hub_model_id: must be set when push_to_hub is true (the Hub model repo to push to, owner/name)"),
    ({"two_step": {"push_to_hub": True}}, "two_step.push_to_hub: not a key that stage 2 can change"),
    ({"push_to_hub": True, "hub_model_id": REPO, "two_step": {"hub_strategy": "end"}},  # one repo, one strategy
     "two_step.hub_strategy: not a key that stage 2 can change"),
    ({"hub_token": "hf_secret"}, "hub_token: not a config key, because the config is saved in the run folder and the "
                                 "model card; set HF_TOKEN or log in with `hf auth login`"),
])
def test_a_bad_hub_key_is_one_sentence(keys, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        build_config({"tasks": ["sst"], **keys})


def test_the_keys_default_as_transformers_does():
    cfg = TrainConfig(tasks=["sst"])
    assert (cfg.push_to_hub, cfg.hub_model_id, cfg.hub_strategy, cfg.hub_private_repo) == (False, None, "every_save",
                                                                                           None)
    assert HUB_STRATEGIES == ("end", "every_save", "checkpoint", "all_checkpoints")
    with pytest.raises(ConfigError, match="^hub_strategy: 'never' is not one of"):
        TrainConfig(tasks=["sst"], hub_strategy="never")  # the Python API validates as YAML does


def test_a_bad_key_on_the_command_line_writes_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "smoke", "--output_dir", str(run), "--push_to_hub", "true"])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: hub_model_id: must be set when push_to_hub is true (the Hub model repo to push to, owner/name)")
    assert not run.exists()


def test_offline_mode_or_no_token_is_refused_before_the_run(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cfg = config(tmp_path / "run")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(MtbertError, match=r"^push_to_hub: the push needs the Hub, but offline mode is set "):
        check_can_push(cfg)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    with pytest.raises(MtbertError, match=r"^push_to_hub: no Hugging Face token found; set HF_TOKEN or log in "):
        check_can_push(cfg)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    check_can_push(cfg)
    check_can_push(build_config({"tasks": ["sst"]}))  # no push: nothing to check


# ---- the pushes ---------------------------------------------------------------------------------------------


def test_a_slow_push_never_holds_training_and_pushes_land_in_order(tmp_path):
    run = fake_run(tmp_path / "run", best_steps=(2,))
    client = FakeClient()
    client.hold.clear()  # the Hub takes its time
    hub = HubPush(config(run, hub_strategy="every_save", hub_private_repo=True), run, client=client)
    save_checkpoint(run, 2)
    hub.saved(2, best_step=2)  # returns while its upload waits
    assert client.uploading.wait(GUARD_S)
    save_best(run, 4)  # training goes on: a new best/ replaces the one being uploaded
    with (run / "metrics.jsonl").open("a") as log:
        log.write(json.dumps({"epoch": 2.0, "step": 4, "split": "dev", "sst_acc": 0.4, "overall": 0.4,
                              "train_seconds": 2.0}) + "\n")
    save_checkpoint(run, 4)
    hub.saved(4, best_step=4)  # queued behind the first
    assert client.uploads == []
    client.hold.set()
    results = hub.finish({"sst_acc": 0.4, "overall": 0.4, "best_step": 4})
    assert client.created == [(REPO, True)]
    assert [m for m, _ in client.uploads] == ["Training in progress, step 2", "Training in progress, step 4",
                                              "End of training"]
    first, second, end = (files for _, files in client.uploads)
    assert first["encoder/model.safetensors"] == b"w2"  # the snapshot: what best/ held when step 2 was saved
    assert second["encoder/model.safetensors"] == b"w4"
    assert "best step: 2" in first["README.md"].decode() and "best step: 4" in second["README.md"].decode()
    assert end == {"encoder/model.safetensors": b"w4", "mtbert_config.json": b"{}"}  # best/ itself
    assert results["hub"] == {"repo_id": REPO, "strategy": "every_save", "revision": f"{3:040x}", "pushes": [
        {"step": 2, "message": "Training in progress, step 2", "files": sorted(first), "commit": f"{1:040x}",
         "url": f"https://hub/{REPO}/commit/{1:040x}"},
        {"step": 4, "message": "Training in progress, step 4", "files": sorted(second), "commit": f"{2:040x}",
         "url": f"https://hub/{REPO}/commit/{2:040x}"},
        {"step": "end", "message": "End of training", "files": sorted(end), "commit": f"{3:040x}",
         "url": f"https://hub/{REPO}/commit/{3:040x}"}]}
    assert json.loads((run / "results.json").read_text()) == results
    assert not (run / ".hub-push").exists()


@pytest.mark.parametrize("strategy", HUB_STRATEGIES)
def test_what_each_strategy_pushes_at_a_save(tmp_path, strategy):
    run = fake_run(tmp_path / "run", best_steps=(2,))
    client = FakeClient()
    hub = HubPush(config(run, hub_strategy=strategy), run, client=client)
    for step in (2, 4):  # the best model stays step 2's
        save_checkpoint(run, step)
        hub.saved(step, best_step=2)
    hub.wait()
    pushed = [set(files) for _, files in client.uploads]
    model = {"README.md", "encoder/model.safetensors", "mtbert_config.json"}
    assert pushed == {
        "end": [],
        "every_save": [model],  # step 4's best model is the one pushed at step 2
        "checkpoint": [model | {"last-checkpoint/model.safetensors", "last-checkpoint/optimizer.pt"},
                       {"last-checkpoint/model.safetensors", "last-checkpoint/optimizer.pt"}],
        "all_checkpoints": [model | {"checkpoint-2/model.safetensors", "checkpoint-2/optimizer.pt"},
                            {"checkpoint-4/model.safetensors", "checkpoint-4/optimizer.pt"}],
    }[strategy]


def test_no_best_model_yet_pushes_no_model(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    client = FakeClient()
    hub = HubPush(config(run, hub_strategy="checkpoint"), run, client=client)
    save_checkpoint(run, 2)
    hub.saved(2, best_step=None)  # eval_strategy steps: no evaluation before this checkpoint
    hub.wait()
    assert [sorted(files) for _, files in client.uploads] == [["last-checkpoint/model.safetensors",
                                                               "last-checkpoint/optimizer.pt"]]


def test_a_push_the_hub_may_take_later_is_tried_again_with_a_doubling_pause(tmp_path):
    run = fake_run(tmp_path / "run")
    busy = PushFailed("push_to_hub: the Hub at H could not upload X to alice/run (503 Service Unavailable)", True)
    client = FakeClient(busy, busy)
    slept: list[float] = []
    hub = HubPush(config(run, hub_strategy="end"), run, client=client, sleep=slept.append)
    results = hub.finish({"overall": 0.2})
    assert slept == [10.0, 20.0]
    assert [m for m, _ in client.uploads] == ["End of training"]
    assert results["hub"]["revision"] == f"{1:040x}" and "push_later" not in results["hub"]


def test_a_push_that_still_fails_is_reported_and_the_run_finishes(tmp_path, capsys):
    run = fake_run(tmp_path / "run")
    busy = PushFailed("push_to_hub: the Hub at H could not upload X to alice/run (503 Service Unavailable)", True)
    refused = PushFailed("push_to_hub: the Hub at H refused to upload X to alice/run (401 Unauthorized)", False)
    client = FakeClient(busy, busy, busy, refused, RuntimeError("a bug in a library"))
    slept: list[float] = []
    hub = HubPush(config(run, hub_strategy="all_checkpoints"), run, client=client, sleep=slept.append, attempts=3)
    save_checkpoint(run, 2)
    hub.saved(2, best_step=2)  # 3 tries, all busy
    save_checkpoint(run, 4)
    hub.saved(4, best_step=2)  # refused: not tried again
    results = hub.finish({"overall": 0.2, "best_step": 2})  # the end push: a library's own error
    assert slept == [10.0, 20.0] and client.uploads == []
    assert [p.get("error") for p in results["hub"]["pushes"]] == [
        "push_to_hub: the Hub at H could not upload X to alice/run (503 Service Unavailable) (after 3 tries)",
        "push_to_hub: the Hub at H refused to upload X to alice/run (401 Unauthorized)",
        f"push_to_hub: could not push to {REPO} (RuntimeError: a bug in a library)"]
    assert "revision" not in results["hub"]
    later = f"hf upload {REPO} {run / 'best'} . --commit-message 'End of training'"
    assert results["hub"]["push_later"] == later
    assert capsys.readouterr().err == (
        f"mtbert: push_to_hub: could not push to {REPO} (RuntimeError: a bug in a library); the run finished and "
        f"{run / 'results.json'} is written; push its best model later with `{later}`\n")
    assert json.loads((run / "results.json").read_text()) == results


def test_a_hub_that_never_answers_does_not_hold_the_finished_run(tmp_path, capsys):
    run = fake_run(tmp_path / "run")
    client = FakeClient()
    client.hold.clear()  # every upload waits until the test ends
    hub = HubPush(config(run, hub_strategy="every_save"), run, client=client, end_wait=0.1)
    save_checkpoint(run, 2)
    hub.saved(2, best_step=2)
    assert client.uploading.wait(GUARD_S)
    thread = hub._thread
    results = hub.finish({"overall": 0.2, "best_step": 2})  # gives up on the pushes after end_wait
    not_done = "push_to_hub: the push to alice/run was not done 0.1 s after training ended (the Hub is slow or does " \
               "not answer)"
    assert [(p["step"], p["error"]) for p in results["hub"]["pushes"]] == [(2, not_done), ("end", not_done)]
    assert "revision" not in results["hub"] and results["hub"]["push_later"].startswith(f"hf upload {REPO} ")
    assert capsys.readouterr().err.startswith(f"mtbert: {not_done}; the run finished")
    assert json.loads((run / "results.json").read_text()) == results
    client.hold.set()  # the Hub answers at last: the given-up thread ends, recording nothing more
    thread.join(GUARD_S)
    assert not thread.is_alive() and [p["step"] for p in hub.records] == [2, "end"] and len(client.uploads) == 1


# ---- a two-step run -------------------------------------------------------------------------------------------


def test_a_two_step_run_may_push(tmp_path):
    cfg = config(tmp_path / "run", tasks=["sst", "para"], two_step={"num_train_epochs": 1}, hub_strategy="checkpoint")
    assert cfg.push_to_hub and cfg.two_step == {"num_train_epochs": 1}  # the old refusal is gone


def two_step_stages(run: Path, cfg: TrainConfig) -> list[tuple[TrainConfig, Path]]:
    """The stages of a two-step run on sst and para, as two_step.py trains them: (its config, its folder)."""
    from dataclasses import replace

    from mtbert.config import save_config, stage2_config

    run.mkdir(parents=True)
    save_config(cfg, run / "config.yaml")
    stage2 = stage2_config(cfg)
    return [(replace(cfg, two_step=None, output_dir=str(run / "stage1")), run / "stage1")] + [
        (replace(stage2, tasks=[task], method="single", output_dir=str(run / "tasks" / task),
                 metric_for_best_model="overall"), run / "tasks" / task) for task in ("sst", "para")]


@pytest.mark.parametrize("strategy", HUB_STRATEGIES)
def test_a_two_step_run_pushes_each_stage_into_its_folder_and_every_model_at_the_end(tmp_path, strategy):
    run = tmp_path / "run"
    cfg = config(run, tasks=["sst", "para"], two_step={"num_train_epochs": 1}, hub_strategy=strategy)
    stages = two_step_stages(run, cfg)
    client = FakeClient()
    hub = HubPush(cfg, run, client=client)
    for stage_cfg, folder in stages:  # each stage: a checkpoint at step 2 that is also its best model
        hub.begin_stage(stage_cfg, folder)
        fake_run(folder, best_steps=(2,))
        save_checkpoint(folder, 2)
        hub.saved(2, best_step=2)
        (folder / "best" / "README.md").write_text(f"the final card of {folder.name}")  # the stage's finish
    (run / "README.md").write_text("the run's card")  # combine_task_runs writes it after stage 2
    results = hub.finish({"overall": 0.2, "best_step": {"sst": 2, "para": 2}})
    names = ["stage1", "tasks/sst", "tasks/para"]
    saves = [] if strategy == "end" else names
    assert [m for m, _ in client.uploads] == [f"Training in progress, {n}, step 2" for n in saves] + [
        "End of training"]
    model = {"best/README.md", "best/encoder/model.safetensors", "best/mtbert_config.json"}
    checkpoint = {"checkpoint": "last-checkpoint", "all_checkpoints": "checkpoint-2"}.get(strategy)
    kept = {f"{checkpoint}/model.safetensors", f"{checkpoint}/optimizer.pt"} if checkpoint else set()
    for name, (_, files) in zip(saves, client.uploads, strict=False):
        assert set(files) == {f"{name}/{f}" for f in model | kept}
        card = files[f"{name}/best/README.md"].decode()
        assert f'MultiTaskModel.from_pretrained("{REPO}", subfolder="{name}/best")' in card
        assert str(tmp_path) not in card
    _, end = client.uploads[-1]  # the end push: the run's card and every model, at their paths in the run
    assert end == {"README.md": b"the run's card", **{
        f"{n}/best/{f}": (run / n / "best" / f).read_bytes() for n in names for f in
        ("README.md", "encoder/model.safetensors", "mtbert_config.json")}}
    pushes = results["hub"]["pushes"]
    assert [(p["step"], p.get("stage")) for p in pushes] == [(2, n) for n in saves] + [("end", None)]
    assert results["hub"]["revision"] == f"{len(client.uploads):040x}" and "push_later" not in results["hub"]
    assert json.loads((run / "results.json").read_text()) == results
    assert not (run / ".hub-push").exists()


def test_a_two_step_run_whose_pushes_fail_finishes_and_prints_the_command(tmp_path, capsys):
    run = tmp_path / "run"
    cfg = config(run, tasks=["sst", "para"], two_step={"num_train_epochs": 1}, hub_strategy="every_save",
                 hub_private_repo=True)
    stages = two_step_stages(run, cfg)
    busy = PushFailed("push_to_hub: the Hub at H could not upload X to alice/run (503 Service Unavailable)", True)
    client = FakeClient(None, *[busy] * 20)  # stage 1's push lands, every later one fails
    slept: list[float] = []
    hub = HubPush(cfg, run, client=client, sleep=slept.append)
    for stage_cfg, folder in stages:
        hub.begin_stage(stage_cfg, folder)
        fake_run(folder, best_steps=(2,))
        hub.saved(2, best_step=2)
        hub.saved(4, best_step=2)  # the same best model: nothing more to push
    (run / "README.md").write_text("card")
    results = hub.finish({"overall": 0.2})
    assert [(p["step"], p.get("stage"), "error" in p) for p in results["hub"]["pushes"]] == [
        (2, "stage1", False), (2, "tasks/sst", True), (2, "tasks/para", True), ("end", None, True)]
    assert slept == [10.0, 20.0] * 3 and results["hub"]["revision"] == f"{1:040x}"
    later = (f"hf upload {REPO} {run} . --include README.md --include 'stage1/best/*' --include 'tasks/*/best/*' "
             "--commit-message 'End of training' --private")
    assert results["hub"]["push_later"] == later
    assert capsys.readouterr().err == (
        f"mtbert: {results['hub']['pushes'][-1]['error']}; the run finished and {run / 'results.json'} is written; "
        f"push its models later with `{later}`\n")
    assert json.loads((run / "results.json").read_text()) == results


def test_a_two_step_run_from_init_from_pushes_no_stage1(tmp_path):
    run = tmp_path / "run"
    cfg = config(run, tasks=["sst", "para"], two_step={"init_from": str(tmp_path / "other")}, hub_strategy="end")
    stages = two_step_stages(run, cfg)[1:]  # stage 1 is the other run's
    client = FakeClient()
    hub = HubPush(cfg, run, client=client)
    for stage_cfg, folder in stages:
        hub.begin_stage(stage_cfg, folder)
        fake_run(folder)
    (run / "README.md").write_text("card")
    hub.finish({"overall": 0.2})
    [(_, end)] = client.uploads
    assert {f.split("/best/")[0] for f in end} == {"README.md", "tasks/sst", "tasks/para"}


def test_a_two_step_end_push_that_cannot_be_staged_is_reported_and_the_run_finishes(tmp_path, monkeypatch, capsys):
    import mtbert.training.hub_push as hub_push

    run = tmp_path / "run"
    cfg = config(run, tasks=["sst", "para"], two_step={"num_train_epochs": 1}, hub_strategy="end")
    client = FakeClient()
    hub = HubPush(cfg, run, client=client)
    for stage_cfg, folder in two_step_stages(run, cfg):
        hub.begin_stage(stage_cfg, folder)
        fake_run(folder)
    (run / "README.md").write_text("card")

    def full_disk(path: Path, out: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hub_push, "link", full_disk)
    results = hub.finish({"overall": 0.2})
    assert client.uploads == [] and not (run / ".hub-push").exists()
    [end] = results["hub"]["pushes"]
    assert end["step"] == "end" and end["error"] == (
        f"push_to_hub: the end push could not be staged in {run / '.hub-push'} ([Errno 28] No space left on device)")
    assert results["hub"]["push_later"].startswith(f"hf upload {REPO} {run} . --include README.md ")
    assert capsys.readouterr().err.startswith(f"mtbert: {end['error']}; the run finished")
    assert json.loads((run / "results.json").read_text()) == results
