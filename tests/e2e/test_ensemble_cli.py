"""End to end: train two tiny runs, then `mtbert ensemble` them as a user would and check what it writes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import mtbert.evaluation.evaluate
import mtbert.evaluation.metrics
from mtbert.cli import main
from mtbert.config import build_config
from mtbert.data import read_task_file
from mtbert.evaluation.metrics import compute_metrics
from mtbert.evaluation.predict import read_cs224n
from mtbert.training.run import train

pytestmark = pytest.mark.e2e

MAX_EVAL = 30  # of the 40 tiny dev rows: the ensemble's metrics must use the same first 30
LINE = re.compile(r"^\S+ , \S+ $")


def skip_bootstrap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stub the overall score's bootstrap (3000 metric calls, many seconds on a shared CPU) where it is not checked."""
    stub = lambda results, resamples=1000, seed=0: (0.0, 1.0)  # noqa: E731
    monkeypatch.setattr(mtbert.evaluation.evaluate, "bootstrap_overall", stub)
    monkeypatch.setattr(mtbert.evaluation.metrics, "bootstrap_overall", stub)


def check_cs224n(path: Path, header: str, ids: list[str]) -> None:
    """The exact CS224N layout: `id \\t {header} ` then `{id} , {value} ` for the member's ids in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == f"id \t {header} "
    assert all(LINE.match(line) for line in lines[1:]), path
    assert [line.split(" , ")[0] for line in lines[1:]] == ids


def test_ensemble_of_two_trained_runs(tiny_config, tmp_path, capsys, monkeypatch):
    runs = []
    with monkeypatch.context() as patch:  # training is the setup here; the first ensemble runs unpatched
        skip_bootstrap(patch)
        for seed in (0, 1):
            cfg = build_config({**tiny_config, "output_dir": str(tmp_path / f"run{seed}"), "seed": seed,
                                "num_train_epochs": 1, "max_eval_samples": MAX_EVAL})
            train(cfg)
            runs.append(Path(cfg.output_dir))
    specs = cfg.task_specs()
    data_dir = cfg.resolved_data_dir()

    out = tmp_path / "vote"
    assert main(["ensemble", str(runs[0]), str(runs[1]), "--output_dir", str(out)]) == 0
    expected = sorted(p.name for p in (runs[0] / "predictions").glob("*-output.csv"))
    assert len(expected) == 5  # the tiny data has no Quora test file
    assert sorted(p.name for p in out.glob("*-output.csv")) == expected
    for name in expected:
        header, values = read_cs224n(runs[0] / "predictions" / name)
        check_cs224n(out / name, header, list(values))

    # results.json's metrics are those of the ensemble's own dev files against the first MAX_EVAL dev labels
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["mode"] == "vote" and results["members"] == [str(r) for r in runs]
    triples = {}
    for spec in specs:
        _, values = read_cs224n(out / f"{spec.name}-dev-output.csv")
        examples = read_task_file(data_dir / spec.dev_file, spec).examples[:MAX_EVAL]
        triples[spec.name] = (spec, np.array([values[e.id] for e in examples]), np.array([e.label for e in examples]))
    recomputed = compute_metrics(triples)
    assert set(results["ensemble"]) == {*recomputed, "overall_ci95"}
    for key, value in recomputed.items():
        assert results["ensemble"][key] == pytest.approx(value, abs=1e-9), key
    low, high = results["ensemble"]["overall_ci95"]
    assert 0 <= low <= high <= 1
    # each member's metrics agree with its own run's results (STS values are rounded to 6 digits in its files,
    # and the tiny model's values differ only in the 4th digit, so r moves visibly)
    for run, member in zip(runs, results["member_metrics"], strict=True):
        own = json.loads((run / "results.json").read_text(encoding="utf-8"))
        assert member["sst_acc"] == own["sst_acc"] and member["para_acc"] == own["para_acc"]
        assert member["sts_corr"] == pytest.approx(own["sts_corr"], abs=1e-2)

    skip_bootstrap(monkeypatch)  # checked above
    # a predictions/ folder is a member too, and gives the same vote
    mixed = tmp_path / "mixed"
    assert main(["ensemble", str(runs[0] / "predictions"), str(runs[1]), "--output_dir", str(mixed)]) == 0
    for name in expected:
        assert (mixed / name).read_text() == (out / name).read_text()

    soft = tmp_path / "soft"
    assert main(["ensemble", str(runs[0]), str(runs[1]), "--output_dir", str(soft), "--mode", "soft"]) == 0
    assert sorted(p.name for p in soft.glob("*-output.csv")) == expected
    assert json.loads((soft / "results.json").read_text(encoding="utf-8"))["mode"] == "soft"
    _, sts_vote = read_cs224n(out / "sts-dev-output.csv")
    _, sts_soft = read_cs224n(soft / "sts-dev-output.csv")
    assert sts_soft == pytest.approx(sts_vote, abs=1e-4)  # both average the same values

    capsys.readouterr()
    mixed_soft = [str(runs[0]), str(runs[1] / "predictions"), "--output_dir", str(tmp_path / "x"), "--mode", "soft"]
    assert main(["ensemble", *mixed_soft]) == 2
    assert "--mode soft averages the scores/ of run folders" in capsys.readouterr().err
