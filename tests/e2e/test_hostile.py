"""What a careless user or a full disk does to mtbert (issue 36): each case ends in one sentence and exit 2 (or a
warning and a documented way on), with nothing overwritten or lost.

The full-disk tests fill a real, small file system (a tmpfs, mounted when the tests run as root, as CI does) and
fall back to the MTBERT_TEST_FAIL_WRITE hook otherwise; `test_the_hook_and_a_real_full_disk_end_the_same_way`
checks that both end alike.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, settings
from hypothesis import given as hypothesis_given
from hypothesis import strategies as st
from safetensors.torch import load_file

from mtbert.cli import main

pytestmark = pytest.mark.e2e

INTENTS = {"PlayMusic": "play some song music by", "GetWeather": "weather rain sunny forecast in",
           "BookRestaurant": "book a table restaurant for"}


def write_intent_data(folder: Path) -> dict:
    """An intent task read from JSON Lines whose labels are class names (as SNIPS gives them); its config entry."""
    for split, rows in (("train", 24), ("dev", 12)):
        lines = []
        for i in range(rows):
            name = list(INTENTS)[i % 3]
            words = INTENTS[name].split()
            lines.append(json.dumps({"id": f"{split}{i}", "text": " ".join(words[(i + k) % len(words)]
                                                                            for k in range(4)), "label": name}))
        (folder / f"intent-{split}.jsonl").write_text("\n".join(lines) + "\n")
    return {"name": "intent", "kind": "single-classification", "train_file": "intent-train.jsonl",
            "dev_file": "intent-dev.jsonl", "text_columns": ["text"]}


@pytest.fixture(scope="module")
def data_dir(tiny_data_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile-data")
    shutil.copytree(tiny_data_dir, folder, dirs_exist_ok=True)
    write_intent_data(folder)
    return folder


@pytest.fixture(scope="module")
def base(tiny_model_dir, data_dir) -> dict:
    """A one-step run of the tiny model on sst and the named-label intent task."""
    return {"model_name_or_path": str(tiny_model_dir), "data_dir": str(data_dir),
            "tasks": ["sst", {"name": "intent", "kind": "single-classification", "train_file": "intent-train.jsonl",
                              "dev_file": "intent-dev.jsonl", "text_columns": ["text"]}],
            "per_device_train_batch_size": 4, "per_device_eval_batch_size": 16, "samples_per_task_per_epoch": 4,
            "num_train_epochs": 1, "learning_rate": 1e-3, "max_length": 32, "logging_steps": 1, "seed": 0}


def write_config(folder: Path, name: str, base: dict, **extra) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**base, "output_dir": str(folder / name), **extra}))
    return path


@pytest.fixture(scope="module")
def finished(base, tmp_path_factory) -> Path:
    """A finished run (trained once for the module)."""
    folder = tmp_path_factory.mktemp("finished")
    assert main(["train", str(write_config(folder, "run", base))]) == 0
    return folder / "run"


def last_line(err: str) -> str:
    """The command's one error sentence (progress bars may be drawn after it)."""
    assert "Traceback" not in err, err
    errors = [line[line.index("error: "):] for line in re.split(r"[\r\n]+", err) if "error: " in line]
    assert len(errors) == 1, err
    return errors[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def hidden(folder: Path) -> list[str]:
    """Temporaries a failed write would leave (`.name.tmp-...`)."""
    return sorted(str(p) for p in folder.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name)


# ---- 1 and 11: ensemble into another run's folder; a member twice ----------------------------------------------


def test_ensemble_refuses_a_folder_that_is_not_its_own_and_updates_its_own(finished, tmp_path, capsys):
    other = tmp_path / "other_run"
    shutil.copytree(finished, other)
    before = snapshot(other)
    assert main(["ensemble", str(finished), str(other), "--output_dir", str(other)]) == 2
    assert "is a member's folder" in last_line(capsys.readouterr().err)
    third = tmp_path / "third"  # a run that is no member
    shutil.copytree(finished, third, ignore=shutil.ignore_patterns("best"))
    third_before = snapshot(third)
    assert main(["ensemble", str(finished), str(other), "--output_dir", str(third)]) == 2
    message = last_line(capsys.readouterr().err)
    assert message == (f"error: --output_dir: {third} is not empty and is not an earlier output of mtbert ensemble; "
                       "give a new or empty folder (mtbert ensemble replaces no files it did not write)")
    assert snapshot(other) == before and snapshot(third) == third_before
    out = tmp_path / "ens"
    for _ in range(2):  # its own folder is updated
        assert main(["ensemble", str(finished), str(other), "--output_dir", str(out)]) == 0
    assert json.loads((out / "results.json").read_text())["mode"] == "vote"


def test_ensemble_of_a_run_with_itself_or_alone_warns(finished, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="mtbert.evaluation.ensemble"):
        twice = [str(finished), str(finished / "predictions")]
        assert main(["ensemble", *twice, "--output_dir", str(tmp_path / "a")]) == 0
    assert f"is listed again (as {finished / 'predictions'})" in caplog.text and "one distinct member" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mtbert.evaluation.ensemble"):
        assert main(["ensemble", str(finished), "--output_dir", str(tmp_path / "b")]) == 0
    assert "one distinct member" in caplog.text


def test_report_refuses_a_folder_that_is_not_its_own(finished, tmp_path, capsys):
    target = tmp_path / "notes"
    target.mkdir()
    (target / "overall.png").write_bytes(b"the user's own picture")
    (target / "notes.md").write_text("the user's notes")
    assert main(["report", str(finished), "--output_dir", str(target)]) == 2
    assert "is not an earlier output of mtbert report" in last_line(capsys.readouterr().err)
    assert (target / "overall.png").read_bytes() == b"the user's own picture"


# ---- 2: a full disk ----------------------------------------------------------------------------------------------


@contextmanager
def small_disk(folder: Path, size: str) -> Iterator[bool]:
    """Mount a tmpfs of `size` on `folder` (True) where this process may (root), else leave it a plain folder."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = False
    if os.geteuid() == 0 and shutil.which("mount"):
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                 capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


FULL_AT = {"best": {}, "checkpoint": {"save_steps": 1, "max_steps": 2, "eval_strategy": "no"}}


def full_disk_run(base: dict, folder: Path, where: str, real: bool, monkeypatch, capsys) -> tuple[str, list[str]]:
    """Train into `folder` until the write of `where` meets a full disk (real, or the hook); (message with the
    folder as RUN, files left)."""
    config = write_config(folder.parent, f"cfg-{uuid.uuid4().hex[:6]}", base, output_dir=str(folder / "run"),
                          **FULL_AT[where])
    if not real:
        monkeypatch.setenv("MTBERT_TEST_FAIL_WRITE", where)
    before = snapshot(folder)
    try:
        code = main(["train", str(config)])
    finally:
        monkeypatch.delenv("MTBERT_TEST_FAIL_WRITE", raising=False)
    assert code == 2
    message = last_line(capsys.readouterr().err)
    assert hidden(folder) == [] and all(snapshot(folder).get(k) == v for k, v in before.items())
    left = sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
    return message.replace(str(folder), "RUN"), left


@pytest.mark.parametrize("where", list(FULL_AT))
def test_a_full_disk_is_one_sentence_and_leaves_nothing_half_written(base, tmp_path, monkeypatch, capsys, where):
    with small_disk(tmp_path / "disk", "1m") as real:
        message, left = full_disk_run(base, tmp_path / "disk", where, real, monkeypatch, capsys)
    step = "-1" if where == "checkpoint" else ""
    assert message.startswith(f"error: RUN/run/{where}{step}: cannot be written (no space left on device), its "
                              "previous version is left as it was; free some space"), message
    assert "run/config.yaml" in left and not any(name.startswith(f"run/{where}") for name in left)


def test_the_hook_and_a_real_full_disk_end_the_same_way(base, tmp_path, monkeypatch, capsys):
    with small_disk(tmp_path / "disk", "1m") as real:
        if not real:
            pytest.skip("mounting a small file system needs root")
        on_disk = full_disk_run(base, tmp_path / "disk", "best", True, monkeypatch, capsys)
    by_hook = full_disk_run(base, tmp_path / "plain", "best", False, monkeypatch, capsys)
    assert on_disk == by_hook


def test_an_export_onto_a_full_disk_is_one_sentence(finished, tmp_path, capsys):
    pytest.importorskip("sentence_transformers")
    with small_disk(tmp_path / "disk", "512k") as real:
        env = {} if real else {"MTBERT_TEST_FAIL_WRITE": "exported"}
        os.environ.update(env)
        try:
            code = main(["export", str(finished), "--task", "sst", "--output", str(tmp_path / "disk" / "exported")])
        finally:
            for key in env:
                os.environ.pop(key)
        assert code == 2
        assert "exported: cannot be written (no space left on device)" in last_line(capsys.readouterr().err)
        assert list((tmp_path / "disk").iterdir()) == []


# ---- 3 and 5: sizes beyond any run -------------------------------------------------------------------------------


@pytest.mark.parametrize(("flag", "value", "said"), [
    ("--per_device_train_batch_size", "1000000000", "per_device_train_batch_size: 1000000000 is more than 65,536"),
    ("--task_ratio", "1:100000000000", "task_ratio: '1:100000000000' times per_device_train_batch_size 4"),
    ("--samples_per_task_per_epoch", "100000000000000000000", "samples_per_task_per_epoch: 100000000000000000000 is "
                                                              "too large (more than 64 bits)"),
    ("--samples_per_task_per_epoch", "10000000000000", "more than 1,000,000,000; set max_steps"),
    ("--max_length", "1000000", "max_length: 1000000 is more than 65,536 tokens"),
    ("--max_length", "200", "max_length: 200 is more than the 128 token positions of the encoder"),
])
def test_a_size_beyond_any_run_is_refused_before_anything_is_written(base, tmp_path, capsys, flag, value, said):
    config = write_config(tmp_path, "run", base)
    assert main(["train", str(config), flag, value]) == 2
    assert said in last_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()  # so the same command, corrected, is not refused as "not empty"


# ---- 4: a diverged run -------------------------------------------------------------------------------------------


def test_a_diverged_run_stops_in_one_sentence_naming_the_last_good_checkpoint(base, tmp_path, capsys):
    config = write_config(tmp_path, "run", base, tasks=["sst", "sts"], learning_rate=1e6, save_steps=1,
                          samples_per_task_per_epoch=8, num_train_epochs=3)
    assert main(["train", str(config)]) == 2
    message = last_line(capsys.readouterr().err)
    assert message.startswith("error: training stopped at step ") and "lower learning_rate" in message
    run = tmp_path / "run"
    good = sorted(run.glob("checkpoint-*"))
    assert good and message.endswith(f"the last good checkpoint is {good[-1]}")
    assert not (run / "results.json").exists()
    for weights in (run / "best").rglob("*.safetensors"):  # a best/ from an evaluation before: finite weights
        assert all(bool(torch.isfinite(t).all()) for t in load_file(str(weights)).values())
    for line in (run / "metrics.jsonl").read_text().splitlines():  # valid JSON: undefined metrics are null
        json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} in metrics.jsonl"))


# ---- 6 and 13: predict from standard input -----------------------------------------------------------------------


def predict(run: Path, task: str, data: bytes) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mtbert", "predict", str(run), "--task", task, "--input", "-"],
                          input=data, capture_output=True, timeout=300)


def test_non_utf8_standard_input_is_one_sentence(finished):
    result = predict(finished, "sst", b"a fine film\n\xff\xfe not text\n")
    assert result.returncode == 2
    assert last_line(result.stderr.decode()) == "error: <stdin>, line 2: not valid UTF-8 text"


def test_predict_writes_the_class_names_the_run_was_trained_with(finished):
    result = predict(finished, "intent", b"play some music\nrain forecast in paris\n")
    assert result.returncode == 0, result.stderr.decode()
    written = [line.split("\t")[1] for line in result.stdout.decode().splitlines()]
    assert len(written) == 2 and set(written) <= set(INTENTS)
    own = (finished / "predictions" / "intent-dev-output.csv").read_text().splitlines()[1:]
    assert {line.split(",")[1].strip() for line in own} <= set(INTENTS)  # the run's own file: names too


# ---- 7: killed before the first checkpoint -----------------------------------------------------------------------


def test_a_run_killed_before_its_first_checkpoint_resumes_from_the_start(base, tmp_path, capsys, caplog):
    config = write_config(tmp_path, "run", base, save_steps=1, max_steps=2)
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "mtbert", "train", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "MTBERT_TEST_PAUSE_WRITE": "checkpoint-1:30"})
    deadline = time.time() + 300
    while not any(run.glob(".checkpoint-1.tmp-*")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)  # inside the paused write of the first checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert (run / "config.yaml").is_file() and not list(run.glob("checkpoint-*"))
    assert main(["train", str(config)]) == 2  # not empty: the sentence names both ways on
    assert "--overwrite_output_dir" in last_line(capsys.readouterr().err)
    with caplog.at_level(logging.WARNING, logger="mtbert.training.run"):
        assert main(["train", str(config), "--resume_from_checkpoint", "last"]) == 0
    assert "no checkpoint yet" in caplog.text and (run / "results.json").is_file()


def test_resuming_a_finished_run_without_checkpoints_names_the_way_on(finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({**yaml.safe_load((run / "config.yaml").read_text()), "output_dir": str(run)}))
    before = snapshot(run)
    assert main(["train", str(config), "--resume_from_checkpoint", "last"]) == 2
    assert last_line(capsys.readouterr().err) == (f"error: --resume_from_checkpoint last: {run} is a finished run and "
                                                  "holds no checkpoint; pass --overwrite_output_dir to train it again")
    assert snapshot(run) == before


# ---- 8, 9, 10, 12 ------------------------------------------------------------------------------------------------


def test_a_key_given_twice_in_yaml_is_refused_naming_both_lines(base, tmp_path, capsys):
    config = write_config(tmp_path, "run", base)
    config.write_text(config.read_text() + "learning_rate: 0.5\n")
    assert main(["train", str(config)]) == 2
    message = last_line(capsys.readouterr().err)
    assert "refused: the key 'learning_rate' is given twice (first on line" in message and str(config) in message


def test_a_huge_bad_header_line_gives_a_short_sentence(finished, tmp_path, capsys):
    bad = tmp_path / "bad.tsv"
    bad.write_text("\t".join(["x" * 1000] * 2000) + "\n1\tsome text\n")
    assert main(["evaluate", str(finished), "--task_file", "sst", str(bad)]) == 2
    message = last_line(capsys.readouterr().err)
    assert len(message) < 2000 and "missing column 'id'" in message and "and 1980 more" in message


def test_model_files_are_written_0644_under_the_usual_umask(finished):
    mask = os.umask(0o022)
    os.umask(mask)
    files = [p for p in (finished / "best").rglob("*") if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in files)
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o666 & ~mask}


def test_report_refuses_a_garbage_metrics_log(finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(["garbage, not JSON", *lines]) + "\n")
    assert main(["report", str(run), "--output_dir", str(tmp_path / "out")]) == 2
    assert last_line(capsys.readouterr().err) == (f"error: {run / 'metrics.jsonl'}, line 1: not a JSON record of "
                                                  "mtbert train (the file is damaged)")
    (run / "metrics.jsonl").write_bytes(os.urandom(4096).replace(b"\n", b" ") + b"\n")
    assert main(["report", str(run), "--output_dir", str(tmp_path / "out")]) == 2
    assert "metrics.jsonl, line 1:" in last_line(capsys.readouterr().err)


# ---- properties: whatever the inputs, each command ends in exit 0 or 2, without a traceback, and changes no file
# outside its output ----------------------------------------------------------------------------------------------

EXTREME_NUMBERS = [0, -1, 1, 3, 2**31, 2**63 - 1, 2**63, 10**30, 1e-300, 0.5, 1e300, "nan", "-inf", "1e309"]
SIZE_KEYS = ["per_device_train_batch_size", "per_device_eval_batch_size", "samples_per_task_per_epoch",
             "num_train_epochs", "max_steps", "learning_rate", "head_learning_rate", "max_length", "warmup_steps",
             "warmup_ratio", "logging_steps", "save_steps", "save_total_limit", "max_bad_steps", "seed",
             "gradient_accumulation_steps", "max_grad_norm", "dropout", "sampling_temperature", "layerwise_lr_decay",
             "weight_decay", "max_train_samples", "max_eval_samples", "early_stopping_patience", "eval_steps",
             "freeze_layers", "smart_weight", "mlm_steps"]


def ends_cleanly(argv: list[str], outside: list[Path], capsys) -> int:
    """Run the command in this process: it exits 0 or 2 (any other exception fails the test with its traceback),
    says no traceback, and leaves every file under `outside` as it was."""
    before = [snapshot(folder) for folder in outside]
    code = main(argv)
    err = capsys.readouterr().err
    assert code in (0, 2) and "Traceback" not in err, err
    assert [snapshot(folder) for folder in outside] == before
    return code


def given(max_examples: int = 6, **strategies):
    """hypothesis.given with few examples (each runs a command) and no deadline."""
    checks = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
    return lambda test: settings(max_examples=max_examples, deadline=None, suppress_health_check=checks)(
        hypothesis_given(**strategies)(test))


def fresh(tmp_path: Path, name: str) -> Path:
    return tmp_path / f"{name}-{uuid.uuid4().hex[:8]}"


@given(max_examples=8, values=st.dictionaries(st.sampled_from(SIZE_KEYS), st.sampled_from(EXTREME_NUMBERS),
                                              min_size=1, max_size=2))
def test_property_train_with_extreme_numbers(base, data_dir, tmp_path, capsys, values):
    config = write_config(tmp_path, "cfg", {**base, "max_steps": 1, "per_device_eval_batch_size": 64})
    out = fresh(tmp_path, "run")
    overrides = [part for key, value in values.items() for part in (f"--{key}", str(value))]
    ends_cleanly(["train", str(config), "--output_dir", str(out), *overrides], [data_dir], capsys)


LINE = st.text(st.sampled_from("ab \t,\"'é\x00\\"), max_size=12)
TASK_FILE = st.one_of(st.binary(max_size=200),
                      st.lists(LINE, max_size=5).map(lambda lines: "\n".join(["\tid\tsentence\tsentiment", *lines])
                                                     .encode("utf-8", "surrogatepass")))


@given(content=TASK_FILE)
def test_property_evaluate_any_labeled_file(finished, tmp_path, capsys, content):
    path = fresh(tmp_path, "dev")
    path.write_bytes(content)
    ends_cleanly(["evaluate", str(finished), "--task_file", "sst", str(path)], [finished], capsys)


@given(task=st.sampled_from(["sst", "intent", "nope"]), content=st.one_of(st.binary(max_size=120),
                                                                         st.lists(LINE, max_size=4).map(
                                                                             lambda x: "\n".join(x).encode())))
def test_property_predict_any_standard_input(finished, tmp_path, capsys, monkeypatch, task, content):
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(content), encoding="utf-8"))
    out = fresh(tmp_path, "out")
    ends_cleanly(["predict", str(finished), "--task", task, "--input", "-", "--output", str(out / "p.csv")],
                 [finished], capsys)


@given(content=TASK_FILE, target=st.sampled_from(["new", "empty", "file", "member", "run"]))
def test_property_ensemble_any_member_file_and_output(finished, tmp_path, capsys, content, target):
    member = fresh(tmp_path, "member")
    shutil.copytree(finished / "predictions", member)
    (member / "sst-dev-output.csv").write_bytes(content)
    out = {"new": fresh(tmp_path, "ens"), "empty": fresh(tmp_path, "empty"), "file": fresh(tmp_path, "file"),
           "member": member, "run": finished}[target]
    if target == "empty":
        out.mkdir()
    if target == "file":
        out.write_text("a user's file")
    outside = [finished, member] if target not in ("member", "run") else []
    before = snapshot(out.parent) if target in ("member", "run", "file") else None
    ends_cleanly(["ensemble", str(finished), str(member), "--output_dir", str(out)], outside, capsys)
    if before is not None:
        assert snapshot(out.parent) == before  # refused: nothing of the folder (or file) was replaced


@given(metrics=st.one_of(st.binary(max_size=200), st.lists(st.sampled_from(
    ['{"epoch": 1.0, "split": "dev", "overall": 0.5}', '{"epoch": "x"}', '{"epoch": 1e999}', "[1, 2]", "null",
     '{"epoch": 2, "sst_acc": "high"}', "{", ""]), max_size=4).map(lambda x: "\n".join(x).encode())),
       results=st.sampled_from([None, b"{}", b'{"overall": NaN}', b'{"overall": "x", "sst_acc": []}', b"\xff"]))
def test_property_report_any_logs(finished, tmp_path, capsys, metrics, results):
    run = fresh(tmp_path, "run")
    shutil.copytree(finished, run, ignore=shutil.ignore_patterns("best"))
    (run / "metrics.jsonl").write_bytes(metrics)
    if results is not None:
        (run / "results.json").write_bytes(results)
    ends_cleanly(["report", str(run), "--output_dir", str(fresh(tmp_path, "out"))], [run], capsys)


@given(max_examples=5, task=st.sampled_from(["sst", "intent", "nope"]),
       target=st.sampled_from(["new", "non-empty", "file", "best", "run"]))
def test_property_export_any_task_and_output(finished, tmp_path, capsys, task, target):
    pytest.importorskip("sentence_transformers")
    out = {"new": fresh(tmp_path, "exp"), "non-empty": fresh(tmp_path, "full"), "file": fresh(tmp_path, "file"),
           "best": finished / "best" / "exported", "run": finished}[target]
    if target == "non-empty":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    if target == "file":
        out.write_text("mine")
    outside = [finished] + ([out] if target in ("non-empty",) else [])
    ends_cleanly(["export", str(finished), "--task", task, "--output", str(out)], outside, capsys)
