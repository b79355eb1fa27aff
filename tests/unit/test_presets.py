"""Presets: the shipped configs by name (`mtbert train quick`, `--configs cs224n`), paths still winning."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mtbert import presets
from mtbert.cli import main
from mtbert.config import load_config
from mtbert.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_the_presets_are_the_repositorys_configs_in_a_checkout():
    assert presets.root() == REPO / "configs"
    names = presets.names()
    for name in ("quick", "smoke", "smoke-two-step", "paper/pcgrad", "paper/sw-pcgrad-0-3-1-two-step",
                 "bench/two-step-pcgrad", "bench-base/pcgrad", "examples/jsonl-task"):
        assert name in names
    assert not any(n.endswith("table") or "/data/" in n for n in names)


@pytest.mark.parametrize("name", presets.names())
def test_every_preset_loads_by_name(name):
    cfg = load_config(presets.config_path(name))
    assert cfg == load_config(REPO / "configs" / f"{name}.yaml")


def test_a_path_that_exists_wins_over_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("quick").write_text("output_dir: mine\n")
    assert presets.config_path("quick") == Path("quick")
    assert presets.config_path("quick.yaml") == presets.root() / "quick.yaml"  # no such file here: the preset
    Path("cs224n").mkdir()
    assert presets.table_dir("cs224n") == Path("cs224n")


def test_names_that_are_not_presets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert presets.config_path("missing.yaml") == Path("missing.yaml")  # load_config then says it is not found
    assert presets.config_path(f"no{os.sep}such") == Path(f"no{os.sep}such")
    with pytest.raises(ConfigError,
                       match=r"^quik: neither a config file nor a preset name \(presets: main, quick, smoke"):
        presets.config_path("quik")
    assert presets.table_dir("no/such/folder") == Path("no/such/folder")


def test_the_bench_tables_by_name(monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    assert presets.table_dir("cs224n") == Path("configs/bench")  # shown relative to the current folder
    assert presets.table_dir("cs224n-base") == Path("configs/bench-base")
    monkeypatch.chdir(tmp_path)
    assert presets.table_dir("cs224n") == REPO / "configs" / "bench"


def test_mtbert_train_takes_a_preset_name_from_any_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "quick", "--learning_rate", "-1"]) == 2  # the preset was read, the override refused
    assert capsys.readouterr().err.strip() == "error: learning_rate: must be positive, not -1.0"
    assert main(["train", "quik"]) == 2
    assert "quik: neither a config file nor a preset name" in capsys.readouterr().err


def test_mtbert_presets_lists_them(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "  quick\n" in out and "  paper/pcgrad\n" in out and "  cs224n       bench/" in out
