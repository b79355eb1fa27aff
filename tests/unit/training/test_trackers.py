"""report_to trackers: names, flattening, a missing package, and real offline runs of TensorBoard, MLflow and W&B."""

from __future__ import annotations

import json
import re
import struct
import sys
from pathlib import Path

import pytest

from mtbert.errors import ConfigError, MtbertError
from mtbert.training.trackers import flatten_scalars, open_trackers, parse_report_to

TRAIN = {"step": 1, "epoch": 0.5, "lr": 1e-3, "loss": {"sst": 1.5, "para": 0.7}, "cosine": {"sst-para": -0.25},
         "conflict": {"sst-para": True}, "method": "pcgrad"}
DEV = {"dev": {"sst_acc": 0.4, "overall": 0.6}}
CONFIG = {"method": "pcgrad", "learning_rate": 1e-3, "tasks": ["sst", "para"], "two_step": {"learning_rate": 1e-5}}


def test_parse_report_to_accepts_a_name_a_list_and_none():
    assert parse_report_to("none") == []
    assert parse_report_to([]) == []
    assert parse_report_to(None) == []
    assert parse_report_to("tensorboard") == ["tensorboard"]
    assert parse_report_to(["wandb", "MLflow", "wandb"]) == ["wandb", "mlflow"]
    assert parse_report_to("tensorboard, mlflow") == ["tensorboard", "mlflow"]
    with pytest.raises(ConfigError, match="report_to: 'comet' is not one of none | tensorboard | mlflow | wandb"):
        parse_report_to(["tensorboard", "comet"])
    with pytest.raises(ConfigError, match="report_to: expected a tracker name"):
        parse_report_to([1])


def test_flatten_scalars_names_nested_numbers_by_their_keys():
    assert flatten_scalars(TRAIN) == {"epoch": 0.5, "lr": 1e-3, "loss/sst": 1.5, "loss/para": 0.7,
                                      "cosine/sst-para": -0.25, "conflict/sst-para": 1.0}


def test_no_tracker_logs_nothing(tmp_path):
    trackers = open_trackers("none", tmp_path, "run", CONFIG)
    trackers.log(TRAIN, step=1)
    trackers.close()
    assert trackers.names == [] and list(tmp_path.iterdir()) == []


def test_a_tracker_that_is_not_installed_names_its_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb now raises ImportError
    message = (r'^report_to: wandb needs the wandb package \(pip install -e "\.\[wandb\]" in the mtbert checkout, or '
               r'pip install "mtbert-.+-py3-none-any\.whl\[wandb\]" with the built wheel \(make wheel\)\)$')
    with pytest.raises(MtbertError, match=message):
        open_trackers(["tensorboard", "wandb"], tmp_path, "run", CONFIG)
    assert not (tmp_path / "tensorboard").exists()  # nothing was started


def test_tensorboard_tracker_writes_scalars_under_the_run_folder(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with open_trackers("tensorboard", tmp_path, "run", CONFIG) as trackers:
        trackers.log(TRAIN, step=1)
        trackers.log(DEV, step=2)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss/sst")] == [(1, 1.5)]
    assert [(e.step, round(e.value, 6)) for e in events.Scalars("dev/overall")] == [(2, 0.6)]


@pytest.fixture()
def mlflow_store(monkeypatch, tmp_path) -> None:
    """MLflow logs to a file store in tmp_path, its default experiment, no run named by the environment."""
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)


def test_mlflow_tracker_logs_metrics_and_config_to_a_local_store(mlflow_store, tmp_path):
    import mlflow

    trackers = open_trackers(["mlflow"], tmp_path / "run", "my-run", CONFIG)
    trackers.log(TRAIN, step=1)
    trackers.log({**TRAIN, "step": 2, "loss": {"sst": 1.25, "para": 0.5}}, step=2)
    trackers.log(DEV, step=2)
    trackers.close()
    assert mlflow.active_run() is None

    client = mlflow.tracking.MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("mtbert").experiment_id])
    assert run.info.run_name == "my-run" and run.info.status == "FINISHED"
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss/sst")] == [(1, 1.5), (2, 1.25)]
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "dev/overall")] == [(2, 0.6)]
    assert run.data.metrics["conflict/sst-para"] == 1.0
    assert run.data.params["two_step.learning_rate"] == "1e-05"
    assert run.data.params["tasks"] == "['sst', 'para']"


def test_a_resumed_run_logs_into_the_same_mlflow_run(mlflow_store, tmp_path):
    import mlflow

    with open_trackers(["mlflow"], tmp_path / "run", "my-run", CONFIG) as trackers:
        trackers.log(TRAIN, step=1)
    first = json.loads((tmp_path / "run" / "trackers.json").read_text())["mlflow"]
    changed = {**CONFIG, "learning_rate": 2e-3}  # MLflow refuses a parameter logged again with another value
    with open_trackers(["mlflow"], tmp_path / "run", "my-run", changed, resume=True) as trackers:
        trackers.log({**TRAIN, "step": 2, "loss": {"sst": 1.25, "para": 0.5}}, step=2)
    client = mlflow.tracking.MlflowClient()
    experiment = client.get_experiment_by_name("mtbert").experiment_id
    (run,) = client.search_runs([experiment])
    assert run.info.run_id == first and run.info.status == "FINISHED"
    assert [(m.step, m.value) for m in client.get_metric_history(first, "loss/sst")] == [(1, 1.5), (2, 1.25)]
    assert run.data.params["learning_rate"] == "0.001"  # logged once, not again on resume
    with open_trackers(["mlflow"], tmp_path / "run", "my-run", CONFIG):  # a fresh run of the folder: a new run
        pass
    assert len(client.search_runs([experiment])) == 2
    assert json.loads((tmp_path / "run" / "trackers.json").read_text())["mlflow"] != first


def test_a_tracker_run_that_cannot_be_continued_names_the_file_to_delete(mlflow_store, tmp_path):
    ids = tmp_path / "run" / "trackers.json"
    ids.parent.mkdir()
    ids.write_text(json.dumps({"mlflow": "0123456789abcdef0123456789abcdef"}))  # a run this store never had
    with pytest.raises(MtbertError, match=r"^report_to: mlflow could not start \(.*\); to log into a new mlflow run "
                       rf"instead of run 0123456789abcdef0123456789abcdef, delete {re.escape(str(ids))}$"):
        open_trackers(["mlflow"], tmp_path / "run", "my-run", CONFIG, resume=True)


def _wandb_records(path: Path):
    """The protobuf Records of a .wandb file (a LevelDB-style log: 32 KiB blocks of checksummed chunks)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            break
        pending += chunk
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def _finished_wandb_records(path: Path) -> list:
    """The records of a finished offline run's file, once W&B's service has written them all (it writes after
    `finish()` returns, up to its exit record)."""
    import time

    deadline = time.time() + 60
    while True:
        records = list(_wandb_records(path))
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.time() > deadline:
            return records
        time.sleep(0.1)


def _offline_wandb(monkeypatch, tmp_path: Path) -> None:
    pytest.importorskip("wandb")
    for key, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / "wb"), "WANDB_SILENT": "true",
                       "WANDB_CONSOLE": "off", "WANDB_CONFIG_DIR": str(tmp_path / "cfg"),
                       "WANDB_CACHE_DIR": str(tmp_path / "cache"), "WANDB_DATA_DIR": str(tmp_path / "data"),
                       "WANDB_DISABLE_GIT": "true", "WANDB_X_DISABLE_STATS": "true"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)


def test_wandb_tracker_offline_run_folder_holds_the_metrics(monkeypatch, tmp_path):
    _offline_wandb(monkeypatch, tmp_path)
    with open_trackers(["wandb"], tmp_path / "run", "my-run", CONFIG) as trackers:
        trackers.log(TRAIN, step=1)
        trackers.log(DEV, step=2)

    (run_file,) = (tmp_path / "wb" / "wandb").glob("offline-run-*/run-*.wandb")
    history, run_info = {}, None
    for record in _finished_wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            items = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in record.history.item}
            history[int(items.pop("_step"))] = {k: v for k, v in items.items() if not k.startswith("_")}
        elif kind == "run":
            run_info = record.run
    assert run_info.project == "mtbert" and run_info.display_name == "my-run"
    assert json.loads(next(u.value_json for u in run_info.config.update if u.key == "two_step")) == {
        "learning_rate": 1e-5}
    assert history[1] == {"epoch": 0.5, "lr": 1e-3, "loss/sst": 1.5, "loss/para": 0.7, "cosine/sst-para": -0.25,
                          "conflict/sst-para": 1.0}
    assert history[2] == {"dev/sst_acc": 0.4, "dev/overall": 0.6}


def test_a_resumed_run_continues_the_same_wandb_run(monkeypatch, tmp_path):
    _offline_wandb(monkeypatch, tmp_path)
    with open_trackers(["wandb"], tmp_path / "run", "my-run", CONFIG) as trackers:
        trackers.log(TRAIN, step=1)
    first = json.loads((tmp_path / "run" / "trackers.json").read_text())["wandb"]
    with open_trackers(["wandb"], tmp_path / "run", "my-run", CONFIG, resume=True) as trackers:
        trackers.log(DEV, step=2)
    runs = list((tmp_path / "wb" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 2 and all(path.name == f"run-{first}.wandb" for path in runs)  # `wandb sync` joins them
    for path in runs:
        (record,) = [r.run for r in _finished_wandb_records(path) if r.WhichOneof("record_type") == "run"]
        assert record.run_id == first


def test_the_run_log_continues_the_tracker_run_when_its_stage_resumes(mlflow_store, tmp_path):
    import mlflow

    from mtbert.runs.layout import RunDir
    from mtbert.training.runlog import RunLog

    config, run = {**CONFIG, "report_to": "mlflow"}, RunDir(tmp_path / "run")
    client = mlflow.tracking.MlflowClient()
    for first_step, runs in ((0, 1), (4, 1), (0, 2)):  # a fresh start, its resume at step 4, a fresh start again
        RunLog(run, config, total_steps=8, first_step=first_step, enabled=True).close()
        assert len(client.search_runs([client.get_experiment_by_name("mtbert").experiment_id])) == runs


def test_an_unreadable_run_ids_file_is_said_and_new_tracker_runs_start(mlflow_store, tmp_path, caplog):
    import mlflow

    ids = tmp_path / "run" / "trackers.json"
    ids.parent.mkdir()
    ids.write_text('{"mlflow": ')  # torn
    with caplog.at_level("WARNING"), open_trackers(["mlflow"], tmp_path / "run", "my-run", CONFIG, resume=True):
        pass
    assert f"{ids}: not readable as JSON" in caplog.text
    client = mlflow.tracking.MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("mtbert").experiment_id])
    assert json.loads(ids.read_text())["mlflow"] == run.info.run_id  # rewritten with the new run's id


def test_a_resumed_run_sends_each_step_to_the_tracker_once(mlflow_store, tiny_config, tmp_path):
    import mlflow
    import yaml
    from helpers.runs import train_here

    from mtbert.io import read_jsonl

    config = tmp_path / "run.yaml"  # 3 steps an epoch, 2 epochs, every step logged, checkpoints 2, 3, 4, 6 kept
    config.write_text(yaml.safe_dump({**tiny_config, "samples_per_task_per_epoch": 12, "save_steps": 2,
                                      "save_total_limit": 4, "report_to": "mlflow"}))
    train_here([str(config)])
    train_here([str(config), "--resume_from_checkpoint", str(tmp_path / "run" / "checkpoint-2")])  # repeats 3-6
    client = mlflow.tracking.MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("mtbert").experiment_id])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss/sst")] == [1, 2, 3, 4, 5, 6]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "dev/overall")] == [3, 6]
    assert [r["step"] for r in read_jsonl(tmp_path / "run" / "train_log.jsonl")] == [1, 2, 3, 4, 5, 6]


def test_truncating_the_logs_returns_the_last_step_they_held(tmp_path):
    from mtbert.training.checkpoint import truncate_logs

    (tmp_path / "train_log.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3, 4)))
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 5}) + "\n")
    assert truncate_logs(tmp_path, 2) == 5
    assert (tmp_path / "train_log.jsonl").read_text() == '{"step": 1}\n{"step": 2}\n'
    assert (tmp_path / "metrics.jsonl").read_text() == ""
    assert truncate_logs(tmp_path, 2) == 2  # nothing after the step: the step itself
