"""examples/python_api.py runs as a user runs it (2 steps of the `smoke` preset on MTBERT_DATA, here the tiny data
and model), and what it predicted is what the saved model predicts."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mtbert import MultiTaskModel

pytestmark = pytest.mark.e2e
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "python_api.py"


def test_the_python_api_example_trains_loads_and_predicts(tiny_data_dir, tiny_model_dir, tmp_path, monkeypatch,
                                                          capsys):
    out = tmp_path / "api"
    monkeypatch.setenv("MTBERT_DATA", str(tiny_data_dir))
    monkeypatch.setattr(sys, "argv", ["python_api.py", "--max_steps", "2", "--output_dir", str(out),
                                      "--model_name_or_path", str(tiny_model_dir), "--max_length", "32"])
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runpy.run_path(str(EXAMPLE), run_name="__main__")
    finally:
        torch.set_num_threads(before)
    printed = capsys.readouterr().out
    assert "refused: learning_rate: must be positive, not -1.0" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["best_step"] == 2 and {"sst_acc", "para_acc", "sts_corr", "overall"} <= results.keys()
    saved = json.loads((out / "python_api_predictions.json").read_text())
    assert [len(saved[t]["labels"]) for t in ("sst", "sts", "para")] == [2, 2, 1]
    model = MultiTaskModel.from_pretrained(out / "best")
    again = model.predict("sst", ["A gripping, funny and moving film.", "Dull, slow and far too long."])
    np.testing.assert_allclose(saved["sst"]["scores"], again.scores, atol=1e-6)
    assert saved["sst"]["labels"] == again.labels and all(label in "01234" for label in again.labels)
