"""`mtbert train` on bad configs and bad data: exit code 2, one line "error: ...", no traceback.

The data cases load the tiny model (the error comes from reading the data after it), so they are kept few;
the readers themselves get the full hostile treatment in tests/unit/test_hostile_input.py.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from mtbert.cli import main

pytestmark = pytest.mark.e2e

ID = "{:025x}".format


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(code: int, err: str, pattern: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert re.search(pattern, errors[0]), errors[0]
    return errors[0]


def write_config(tmp_path: Path, config: dict, **changes) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**config, **changes}), encoding="utf-8")
    return path


# ---- config errors (no model is loaded) ----------------------------------------------------------------------------
def test_missing_config_file(tmp_path, capsys):
    code, _, err = run_cli(["train", str(tmp_path / "nope.yaml")], capsys)
    assert_one_error_line(code, err, rf"^error: {re.escape(str(tmp_path / 'nope.yaml'))}: config file not found$")


def test_unknown_key_in_the_file(tmp_path, tiny_config, capsys):
    path = write_config(tmp_path, tiny_config, learning_rat=1e-4)
    code, _, err = run_cli(["train", str(path)], capsys)
    assert_one_error_line(code, err, r"^error: learning_rat: unknown config key")
    assert not Path(tiny_config["output_dir"]).exists()


def test_python_tag_in_the_file(tmp_path, tiny_config, capsys):
    marker = tmp_path / "executed"
    path = tmp_path / "config.yaml"
    path.write_text(f"seed: 1\nmax_length: !!python/object/apply:os.system [\"touch {marker}\"]\n")
    code, _, err = run_cli(["train", str(path)], capsys)
    assert_one_error_line(code, err, rf"^error: {re.escape(str(path))}, line 2: not valid YAML$")
    assert not marker.exists()


@pytest.mark.parametrize(("extra", "pattern"), [
    (["--learning_rat", "1e-4"], r"^error: learning_rat: unknown config key"),
    (["--two_step.learning_rat", "3e-6"], r"^error: two_step\.learning_rat: not a key that stage 2 can change$"),
    (["--max_length", "0"], r"^error: max_length: must be a positive integer, not 0$"),
    (["--per_device_train_batch_size", "-4"], r"^error: per_device_train_batch_size: must be a positive integer"),
    (["--task_ratio", "1:1"], r"^error: task_ratio: '1:1' has 2 parts but there are 3 tasks \(sst, para, sts\)$"),
    (["--seed"], r"^error: --seed: an override needs a value \(--key value\)$"),
])
def test_bad_override(tmp_path, tiny_config, capsys, extra, pattern):
    path = write_config(tmp_path, tiny_config)
    code, _, err = run_cli(["train", str(path), *extra], capsys)
    assert_one_error_line(code, err, pattern)


# ---- data errors (the tiny model is loaded first) -------------------------------------------------------------
def bad_data(tiny_data_dir: Path, folder: Path, name: str, content: bytes) -> Path:
    shutil.copytree(tiny_data_dir, folder)
    (folder / name).write_bytes(content)
    return folder


HEADER = b"\tid\tsentence\tsentiment\n"
DATA_CASES = {
    "non_utf8": ("ids-sst-train.csv", HEADER + f"0\t{ID(1)}\tok\t1\n1\t{ID(2)}\tcaf".encode() + b"\xe9\t2\n",
                 r"ids-sst-train\.csv, line 3: not valid UTF-8 text$"),
    "missing_column": ("quora-dev.csv", f"\tid\tsentence1\tsentence2\n0\t{ID(1)}\ta\tb\n".encode(),
                       r"quora-dev\.csv, line 1: missing column 'is_duplicate'"),
    "empty_file": ("sts-train.csv", b"", r"sts-train\.csv, line 1: the file is empty"),
    "only_bad_rows": ("ids-sst-train.csv", HEADER + f"0\t{ID(1)}\tok\t9\r\n1\t{ID(2)}\tok\t\r\n".encode(),
                      r"ids-sst-train\.csv: no usable rows \(2 rows read, 2 skipped: line 2: label 9 is not a class "
                      r"in 0\.\.4; "
                      r"line 3: empty label\)$"),
}


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_bad_data_file(case, tmp_path, tiny_config, tiny_data_dir, capsys):
    name, content, pattern = DATA_CASES[case]
    folder = bad_data(tiny_data_dir, tmp_path / "data", name, content)
    path = write_config(tmp_path, tiny_config, data_dir=str(folder))
    code, _, err = run_cli(["train", str(path)], capsys)
    line = assert_one_error_line(code, err, pattern)
    assert line.startswith(f"error: {folder / name}")


def test_missing_data_folder(tmp_path, tiny_config, capsys):
    path = write_config(tmp_path, tiny_config, data_dir=str(tmp_path / "nowhere"))
    code, _, err = run_cli(["train", str(path)], capsys)
    assert_one_error_line(code, err, rf"^error: {re.escape(str(tmp_path / 'nowhere'))}: data folder not found; ")


def test_an_option_the_method_does_not_take(tmp_path, tiny_config, capsys):
    """`method_options` are checked against the method, as GradientSurgery checks them, before anything is written."""
    path = write_config(tmp_path, tiny_config, method="pcgrad")
    code, _, err = run_cli(["train", str(path), "--method_options.c", "0.4"], capsys)
    assert_one_error_line(code, err, r"^error: method_options: gradient method 'pcgrad' has no option 'c' "
                                     r"\(its options: none\)$")
    code, _, err = run_cli(["train", str(path), "--method", "cagrad", "--method_options.c", "much"], capsys)
    assert_one_error_line(code, err, r"^error: method_options: gradient method 'cagrad': option 'c' must be a "
                                     r"number, not 'much'$")
    assert not Path(tiny_config["output_dir"]).exists()
