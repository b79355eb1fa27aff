"""`mtbert bench step` on the bundled backbone and the tiny data: every method of issue 9 is timed."""

from __future__ import annotations

import json

import pytest

from mtbert.cli import main
from mtbert.methods.aggregators import AGGREGATORS

pytestmark = pytest.mark.e2e
METHODS = [*AGGREGATORS, "uncertainty", "famo", "pcgrad-per-layer", "torchjd"]


def test_bench_step_times_every_method_against_sum(tiny_data_dir, tmp_path, monkeypatch, capsys):
    pytest.importorskip("torchjd")
    monkeypatch.setenv("MTBERT_DATA", str(tiny_data_dir))
    out = tmp_path / "step.json"
    code = main(["bench", "step", "--methods", ",".join(METHODS), "--steps", "2", "--warmup", "0",
                 "--batch_size", "2", "--json", str(out)])
    assert code == 0
    methods = json.loads(out.read_text())["methods"]
    assert list(methods) == METHODS
    assert methods["sum"]["ratio_to_sum"] == 1.0
    for name, result in methods.items():
        assert len(result["all_seconds"]) == 2 and result["median_seconds"] > 0, name
        assert result["ratio_to_sum"] == pytest.approx(result["median_seconds"] / methods["sum"]["median_seconds"],
                                                       rel=1e-2, abs=1e-3), name


def test_bench_step_names_an_unknown_method(tiny_data_dir, monkeypatch, capsys):
    monkeypatch.setenv("MTBERT_DATA", str(tiny_data_dir))
    assert main(["bench", "step", "--methods", "sum,adam"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: --methods: unknown method 'adam' (known: sum, pcgrad")
