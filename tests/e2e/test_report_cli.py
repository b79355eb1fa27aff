"""End to end: train tiny runs, then `mtbert report` them; the files exist, the PNGs are images, the table is right."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from mtbert.cli import main
from mtbert.config import build_config
from mtbert.training.run import train

pytestmark = pytest.mark.e2e


def train_run(cfg: dict, output_dir: Path, **changes) -> Path:
    train(build_config({**cfg, **changes, "output_dir": str(output_dir)}))
    return output_dir


def table_rows(report: str) -> dict[str, dict[str, str]]:
    """The results table of a report as {run name: {column: cell}}."""
    lines = [line for line in report.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]
    return {row[0]: dict(zip(cells[0], row, strict=True)) for row in cells[2:]}


def check_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 10_000, path
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 600, image.shape
    assert float(np.std(image[..., :3])) > 0.01  # not a blank canvas


def check_table(report: str, run_dirs: list[Path]) -> None:
    rows = table_rows(report)
    assert sorted(rows) == sorted(r.name for r in run_dirs)
    for run in run_dirs:
        results = json.loads((run / "results.json").read_text(encoding="utf-8"))
        row = rows[run.name]
        for key in ("sst_acc", "para_acc", "sts_corr", "overall"):
            assert float(row[key]) == round(results[key], 3), (run.name, key)
        lo, hi = (float(x) for x in row["overall 95% CI"].strip("[]").split(","))
        assert (lo, hi) == (round(results["overall_ci95"][0], 3), round(results["overall_ci95"][1], 3))
        h, m, s = (int(x) for x in row["train time"].split(":"))
        assert 3600 * h + 60 * m + s == round(results["train_seconds"])


def test_report_of_a_sum_run_and_a_two_step_pcgrad_run(tiny_config, tmp_path, capsys):
    sum_run = train_run(tiny_config, tmp_path / "runs" / "sum", method="sum")
    two_step = train_run(tiny_config, tmp_path / "runs" / "pcgrad-2step", method="pcgrad", task_ratio="1:2:1",
                         sample_weighting=True, two_step={"num_train_epochs": 1})
    out = tmp_path / "report"
    assert main(["report", str(sum_run), str(two_step), "--output_dir", str(out)]) == 0
    assert f"wrote {out / 'report.md'}" in capsys.readouterr().out
    report = (out / "report.md").read_text(encoding="utf-8")
    for png in ("overall.png", "tasks.png", "stage2.png", "conflicts.png"):
        check_png(out / png)
        assert f"]({png})" in report
    check_table(report, [sum_run, two_step])
    rows = table_rows(report)
    assert [rows["sum"][k] for k in ("method", "task ratio", "sample weighting", "two-step")] == [
        "sum", "1:1:1", "no", "no"]
    assert [rows["pcgrad-2step"][k] for k in ("method", "task ratio", "sample weighting", "two-step")] == [
        "pcgrad", "1:2:1", "yes", "yes"]
    # the paired Δ is read from the runs' dev prediction files: the difference of the overall scores of results.json
    # (up to the rounding of STS values in the files), inside its own interval
    first, second = (json.loads((r / "results.json").read_text(encoding="utf-8"))["overall"]
                     for r in (sum_run, two_step))
    assert rows["sum"]["Δ vs first run [95% CI]"] == "reference"
    cell = re.fullmatch(r"([+-][\d.]+) \[([+-][\d.]+), ([+-][\d.]+)\]", rows["pcgrad-2step"]["Δ vs first run [95% CI]"])
    assert cell is not None
    difference, low, high = (float(v) for v in cell.groups())
    assert abs(difference - (second - first)) <= 0.0015 and low <= difference <= high

    # without a two-step run there is no stage-2 plot (and the earlier one is not left behind)
    assert main(["report", str(sum_run), "--output_dir", str(out)]) == 0
    assert not (out / "stage2.png").exists() and "stage2.png" not in (out / "report.md").read_text(encoding="utf-8")
    check_png(out / "conflicts.png")  # the sum run logs per-task gradients too

    (sum_run / "results.json").unlink()
    assert main(["report", str(sum_run), "--output_dir", str(out)]) == 2
    assert f"error: {sum_run}: not a finished run (results.json is missing)" in capsys.readouterr().err
