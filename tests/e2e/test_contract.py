"""The contract of every command that uses a run, under generated hostile inputs (hypothesis).

`mtbert evaluate`, `predict` (a file and standard input), `ensemble` and `report` are driven in-process
(`mtbert.cli.main`) with malformed task files, damaged run folders (missing or truncated files, garbled
lines), foreign prediction files and members whose ids do not match. Each call must end in one of two ways:

- exit 0, with counts that add up (rows loaded + skipped = rows in the file, one output line per loaded
  example, one ensemble line per shared id, one report table row per run), or
- exit 2 with exactly one line `error: ...` on stderr (one sentence) and no traceback (any other exception
  propagates out of `main` and fails the test).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mtbert.cli import main
from mtbert.config import build_config
from mtbert.data import read_task_file
from mtbert.tasks import BUILTIN_TASKS

pytestmark = pytest.mark.e2e

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])
SST = BUILTIN_TASKS["sst"]
STS = BUILTIN_TASKS["sts"]


# ---- one tiny trained run for the whole module -------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model_dir, tiny_data_dir) -> Path:
    from mtbert.training.run import train

    out = tmp_path_factory.mktemp("contract") / "run"
    cfg = build_config({"output_dir": str(out), "model_name_or_path": str(tiny_model_dir),
                        "data_dir": str(tiny_data_dir), "tasks": ["sst", "para", "sts"], "method": "sum",
                        "per_device_train_batch_size": 4, "per_device_eval_batch_size": 16,
                        "samples_per_task_per_epoch": 8, "num_train_epochs": 1, "learning_rate": 1e-3,
                        "max_length": 32, "logging_steps": 1, "seed": 0})
    train(cfg)
    return out


@pytest.fixture()
def cached_model(monkeypatch):
    """Load the (undamaged) run's model once: the file tests are about the files, loading is tested below."""
    import functools

    import mtbert.evaluation.finished as finished

    monkeypatch.setattr(finished, "load_model", functools.cache(finished.load_model))


def call(argv: list[str], stdin: str | None = None) -> tuple[int, str, str]:
    """`mtbert ARGV` in this process: (exit code, stdout, stderr). Exceptions other than SystemExit propagate."""
    out, err = io.StringIO(), io.StringIO()
    old_stdin = sys.stdin
    try:
        if stdin is not None:
            sys.stdin = io.StringIO(stdin)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as stop:  # argparse
                code = stop.code if isinstance(stop.code, int) else 1
    finally:
        sys.stdin = old_stdin
    event(f"exit {code}")
    return code, out.getvalue(), err.getvalue()


def check_error(code: int, err: str) -> str:
    """Exit 2 and one `error: ` line, the last on stderr (progress bars may come before it), no traceback."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    event("error: " + errors[0].split(": ", 2)[-1][:50])
    return errors[0]


# ---- malformed task files ----------------------------------------------------------------------------------------
LABELS = ["0", "1", "2", "3", "4", "4.0", "5", "-1", "2.5", "", " ", "abc", "nan", "inf", "1e400", "0x1", "５"]
WORDS = ["good", "movie", "it 's", "\"quoted\"", "\"", "é", "日本", "a\tb", "''", "-", "x" * 300]
IDS = ["a1", "a2", "a3", "", " a1", "dup"]


@st.composite
def task_files(draw, spec=SST, labeled=True) -> bytes:
    """A CS224N-style file with hostile headers, rows, quotes, line breaks and bytes.

    Each kind of damage comes with a set chance (a `random.Random` seeded by hypothesis: its own random
    draws lean to the extremes), so that many files stay usable and the success path is exercised too.
    """
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    columns = ["", spec.id_column, *spec.text_columns] + ([spec.label_column] if labeled else [])
    header = rng.choices(["ok", "missing", "extra", "none"], weights=[85, 5, 5, 5])[0]
    if header == "missing":
        columns = columns[:-1]
    elif header == "extra":
        columns = [*columns, "extra"]
    rows = []
    for index in range(rng.randint(0, 6)):
        hostile = rng.random() < 0.3
        texts = [" ".join(rng.choices(WORDS if hostile else WORDS[:3], k=rng.randint(0, 3)))
                 for _ in spec.text_columns]
        fields = [str(index), rng.choice(IDS if hostile else IDS[:3]) + str(index), *texts]
        if labeled:
            fields.append(rng.choice(LABELS if hostile else LABELS[:5]))
        if hostile and rng.random() < 0.3:
            fields = fields[:-1] if rng.random() < 0.5 else [*fields, "more"]
        rows.append("\t".join(fields))
    newline = rng.choice(["\n", "\r\n"])
    lines = ([] if header == "none" else ["\t".join(columns)]) + rows
    text = newline.join(lines) + (newline if lines and rng.random() < 0.5 else "")
    if rows and rng.random() < 0.15:  # a stray quote opening a field that runs to the end of the file
        at = text.rfind("\t", 0, len(text) - 1) if rng.random() < 0.5 else text.find("\t", len(lines[0]) + 1)
        text = text[: at + 1] + '"' + text[at + 1 :] if at > 0 else text
    data = text.encode("utf-8")
    if rng.random() < 0.2:
        data = b"\xef\xbb\xbf" + data
    if data and rng.random() < 0.08:
        at = rng.randint(0, len(data) - 1)
        data = data[:at] + b"\xff" + data[at:]
    return data


def csv_rows(data: bytes) -> int | None:
    """Rows after the header by csv.reader itself (the oracle), or None when the text is not UTF-8 or has none."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter="\t"))
    return len(rows) - 1 if rows else None


def check_counts(path: Path, data: bytes, spec, labeled: bool) -> list:
    """Loaded + skipped = the oracle's rows; return the loaded examples."""
    result = read_task_file(path, spec, labeled=labeled)
    assert result.rows == len(result.examples) + len(result.skipped) == csv_rows(data)
    return result.examples


@SETTINGS
@given(data=task_files())
def test_evaluate_any_sst_file(run_dir, cached_model, data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sst.csv"
        path.write_bytes(data)
        code, out, err = call(["evaluate", str(run_dir), "--sst", str(path)])
        if code != 0:
            check_error(code, err)
            return
        examples = check_counts(path, data, SST, labeled=True)
        metrics = json.loads(out)
        assert examples and 0 <= metrics["sst_acc"] <= 1 and "sts_corr" in metrics and "para_acc" in metrics
        hits = metrics["sst_acc"] * len(examples)
        assert abs(hits - round(hits)) < 1e-6  # an accuracy over exactly the loaded rows


@SETTINGS
@given(data=task_files(STS, labeled=False), fmt=st.sampled_from(["cs224n", "csv"]))
def test_predict_any_file(run_dir, cached_model, data, fmt):
    with tempfile.TemporaryDirectory() as tmp:
        path, output = Path(tmp) / "sts.csv", Path(tmp) / "out.csv"
        path.write_bytes(data)
        code, _, err = call(["predict", str(run_dir), "--task", "sts", "--input", str(path), "--output", str(output),
                             "--format", fmt])
        if code != 0:
            check_error(code, err)
            assert not output.exists()
            return
        examples = check_counts(path, data, STS, labeled=False)
        lines = output.read_text(encoding="utf-8").splitlines()
        separator = " , " if fmt == "cs224n" else ","
        assert [line.split(separator)[0] for line in lines[1:]] == [e.id for e in examples]


@SETTINGS
@given(lines=st.lists(st.sampled_from(["a man plays\ta guitar", "one text only", "", "  ", "a\tb\tc", "é\t日本",
                                       "\t", "x" * 500 + "\ty"]), max_size=6))
def test_predict_standard_input(run_dir, cached_model, lines):
    code, out, err = call(["predict", str(run_dir), "--task", "sts", "--input", "-"], stdin="\n".join(lines))
    if code != 0:
        check_error(code, err)
        return
    wanted = [str(n) for n, line in enumerate(lines, start=1) if line.strip()]
    assert all(len(line.split("\t")) == 2 for line in lines if line.strip())
    assert [row.split("\t")[0] for row in out.splitlines()] == wanted


# ---- damaged run folders -----------------------------------------------------------------------------------------
def damage(folder: Path, how: str, name: str, fraction: float) -> None:
    """Apply one kind of damage to `folder/name` (a missing file stays missing)."""
    path = folder / name
    if not path.exists():
        return
    if how == "remove":
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    elif path.is_file():
        data = path.read_bytes()
        at = int(len(data) * fraction)
        if how == "truncate":
            path.write_bytes(data[:at])
        elif how == "garble":
            path.write_bytes(data[:at] + b"\x00garbled\xff{[" + data[at + 9 :])
        elif how == "junk lines":
            path.write_bytes(data + b'\n[1, 2]\n"text"\n{"epoch": 1e999, "overall": "x"}\n{"epoch": NaN}\n'
                             b'{"step": 3, "cosine": 5}\n{"step": "x", "cosine": {"sst-para": "a"}}\n\xff\xfe\n')


RUN_FILES = ["config.yaml", "results.json", "metrics.jsonl", "train_log.jsonl", "best/mtbert_config.json",
             "best/heads.safetensors", "best/encoder/model.safetensors", "best/encoder/config.json",
             "best/encoder/tokenizer.json", "best", "predictions/sst-dev-output.csv"]
DAMAGE = st.tuples(st.sampled_from(["remove", "truncate", "garble", "junk lines"]), st.sampled_from(RUN_FILES),
                   st.floats(0, 1))


def copy_run(run_dir: Path, target: Path, with_model: bool = True) -> Path:
    shutil.copytree(run_dir, target, ignore=None if with_model else shutil.ignore_patterns("best"))
    return target


@settings(SETTINGS, max_examples=20)
@given(damages=st.lists(DAMAGE, min_size=1, max_size=2), command=st.sampled_from(["evaluate", "predict"]))
def test_evaluate_and_predict_a_damaged_run(run_dir, damages, command):
    with tempfile.TemporaryDirectory() as tmp:
        run = copy_run(run_dir, Path(tmp) / "run")
        for how, name, fraction in damages:
            damage(run, how, name, fraction)
        if command == "evaluate":
            code, out, err = call(["evaluate", str(run)])
        else:
            code, out, err = call(["predict", str(run), "--task", "sst", "--input", "-"], stdin="good movie\n")
        if code != 0:
            check_error(code, err)
        elif command == "evaluate":
            assert {"sst_acc", "para_acc", "sts_corr", "overall"} <= set(json.loads(out))
        else:
            assert [row.split("\t")[0] for row in out.splitlines()] == ["1"]


# ---- ensembles ---------------------------------------------------------------------------------------------------
PREDICTION_FILES = ["sst-dev-output.csv", "sst-test-output.csv", "para-dev-output.csv", "sts-dev-output.csv",
                    "sts-test-output.csv"]
MEMBER_DAMAGE = st.one_of(
    st.tuples(st.just("remove"), st.sampled_from([f"predictions/{n}" for n in PREDICTION_FILES] +
                                                 ["config.yaml", "scores/sst-dev.tsv", "predictions"])),
    st.tuples(st.sampled_from(["truncate", "garble"]),
              st.sampled_from([f"predictions/{n}" for n in PREDICTION_FILES] + ["config.yaml", "scores/sts-dev.tsv",
                                                                                "scores/sst-test.tsv"])),
    st.tuples(st.just("drop id"), st.sampled_from([f"predictions/{n}" for n in PREDICTION_FILES])),
    st.tuples(st.just("rename id"), st.sampled_from([f"predictions/{n}" for n in PREDICTION_FILES])),
    st.tuples(st.just("foreign"), st.sampled_from(["predictions/foo-dev-output.csv", "predictions/sst-dev-output.csv",
                                                   "predictions/para-dev-output.csv", "scores/para-dev.tsv"])),
)


def damage_member(member: Path, how: str, name: str, fraction: float) -> None:
    path = member / name
    if how in ("remove", "truncate", "garble"):
        damage(member, how, name, fraction)
    elif how in ("drop id", "rename id") and path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) > 1:
            k = 1 + int(fraction * (len(lines) - 2))
            lines[k:k + 1] = [] if how == "drop id" else ["renamed" + lines[k]]
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif how == "foreign" and path.parent.is_dir():
        source = member / ("predictions/sts-dev-output.csv" if "predictions" in name else "scores/sts-dev.tsv")
        if source.is_file():  # another task's file (values that are not classes, other ids) under this name
            shutil.copyfile(source, path)


@SETTINGS
@given(damages=st.lists(st.lists(st.tuples(MEMBER_DAMAGE, st.floats(0, 1)), max_size=2), min_size=1, max_size=3),
       bare=st.lists(st.booleans(), min_size=3, max_size=3), mode=st.sampled_from(["vote", "soft"]))
def test_ensemble_of_damaged_members(run_dir, damages, bare, mode):
    with tempfile.TemporaryDirectory() as tmp:
        members = []
        for index, member_damage in enumerate(damages):
            member = copy_run(run_dir, Path(tmp) / f"m{index}", with_model=False)
            for (how, name), fraction in member_damage:
                damage_member(member, how, name, fraction)
            members.append(member / "predictions" if bare[index] else member)
        out = Path(tmp) / "ens"
        code, stdout, err = call(["ensemble", *map(str, members), "--output_dir", str(out), "--mode", mode])
        if code != 0:
            check_error(code, err)
            return
        results = json.loads(stdout)
        assert results == json.loads((out / "results.json").read_text())
        assert sorted(results["files"]) == sorted(p.name for p in out.glob("*-output.csv")) and results["files"]
        for name in results["files"]:  # one line per id that every member predicts, in the first member's order
            if mode == "vote":
                folder = members[0] if members[0].name == "predictions" else members[0] / "predictions"
                source, separator = folder / name, " , "
            else:
                source, separator = members[0] / "scores" / name.replace("-output.csv", ".tsv"), "\t"
            ids = [line.split(separator)[0].strip() for line in source.read_text().splitlines()[1:] if line.strip()]
            written = [line.split(" , ")[0] for line in (out / name).read_text().splitlines()[1:]]
            assert written == ids


# ---- reports -----------------------------------------------------------------------------------------------------
REPORT_FILES = ["config.yaml", "results.json", "metrics.jsonl", "train_log.jsonl"]


@settings(SETTINGS, max_examples=8)
@given(damages=st.lists(st.lists(st.tuples(st.sampled_from(["remove", "truncate", "garble", "junk lines"]),
                                           st.sampled_from(REPORT_FILES), st.floats(0, 1)), max_size=2),
                        min_size=1, max_size=2))
def test_report_of_damaged_runs(run_dir, damages, monkeypatch):
    import mtbert.evaluation.report

    monkeypatch.setattr(mtbert.evaluation.report, "DPI", 12)  # the plots are drawn in full, rendered small
    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        for index, run_damage in enumerate(damages):
            run = copy_run(run_dir, Path(tmp) / f"r{index}", with_model=False)
            for how, name, fraction in run_damage:
                damage(run, how, name, fraction)
            runs.append(run)
        out = Path(tmp) / "report"
        code, stdout, err = call(["report", *map(str, runs), "--output_dir", str(out)])
        if code != 0:
            check_error(code, err)
            return
        report = (out / "report.md").read_text(encoding="utf-8")
        table = [line for line in report.splitlines() if line.startswith("| ")]
        assert len(table) == 2 + len(runs)  # header, alignment, one row per run
        assert stdout.strip() == f"wrote {out / 'report.md'}"
