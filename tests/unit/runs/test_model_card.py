"""Model cards: Hub metadata (read back with huggingface_hub), results, config, loading and citations."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard

from mtbert.config import build_config, save_config
from mtbert.runs.layout import RunDir
from mtbert.runs.model_card import BUNDLED_BACKBONE, base_model_id, write_ensemble_card, write_model_card
from mtbert.tasks import BUILTIN_TASKS

RESULTS = {"sst_acc": 0.437, "para_acc": 0.794, "sts_corr": 0.845, "overall": 0.718, "overall_ci95": [0.707, 0.729],
           "train_seconds": 710.2, "best_step": 300}


def _cfg(tmp_path: Path, **keys):
    return build_config({"output_dir": str(tmp_path / "quick"), "method": "pcgrad", **keys})


def test_a_run_card_has_hub_metadata_results_config_loading_and_citation(tmp_path):
    cfg = _cfg(tmp_path, task_ratio="1:3:1", sample_weighting=True)
    run = RunDir(tmp_path / "quick")
    (run.best).mkdir(parents=True)
    path = write_model_card(run, run.best, cfg, RESULTS)
    assert path == run.best / "README.md"
    card = ModelCard.load(path)
    data = card.data
    assert data.base_model == BUNDLED_BACKBONE
    assert data.library_name == "mtbert"
    assert {"mtbert", "multi-task-learning", "pcgrad", "gradient-surgery"} <= set(data.tags)
    found = {(r.task_name, r.metric_type): r.metric_value for r in data.eval_results}
    assert found == {("sst", "accuracy"): 0.437, ("para", "accuracy"): 0.794, ("sts", "pearsonr"): 0.845}
    assert {r.dataset_split for r in data.eval_results} == {"dev"}
    text = card.text
    assert "| sst | single | Accuracy | 0.4370 |" in text
    assert "| overall | | mean task score (95% bootstrap interval 0.7070 - 0.7290) | 0.7180 |" in text
    assert f'MultiTaskModel.from_pretrained("{tmp_path}/quick/best")' in text
    assert f"mtbert export {tmp_path}/quick --task sst --output quick-sst" in text
    config_block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert yaml.safe_load(config_block)["task_ratio"] == "1:3:1"
    assert "Gradient Surgery for Multi-Task Learning" in text and "@inproceedings{yu2020gradient" in text
    assert "Ang" in text  # sample weighting is the seed's method


@pytest.mark.parametrize(("method", "words"), [("famo", "Fast Adaptive Multitask Optimization"),
                                               ("uncertainty", "Uncertainty to Weigh Losses"),
                                               ("cagrad", "Conflict-Averse"), ("nash-mtl", "Bargaining Game")])
def test_each_method_cites_its_paper(tmp_path, method, words):
    run = RunDir(tmp_path / "r")
    run.best.mkdir(parents=True)
    text = write_model_card(run, run.best, _cfg(tmp_path, method=method), RESULTS).read_text()
    assert words in text and "Gradient Surgery" not in text


def test_plain_training_cites_nothing_and_a_missing_metric_is_left_out(tmp_path):
    run = RunDir(tmp_path / "r")
    run.best.mkdir(parents=True)
    results = {"sst_acc": 0.5, "overall": 0.5}
    card = ModelCard.load(write_model_card(run, run.best, _cfg(tmp_path, method="sum"), results))
    assert [r.task_name for r in card.data.eval_results] == ["sst"]
    assert "## Citation" not in card.text and "| para |" not in card.text


def test_a_stage2_card_names_its_two_step_run_and_cites_stage_1s_method(tmp_path):
    top = _cfg(tmp_path, two_step={"num_train_epochs": 1})
    run = RunDir(tmp_path / "quick")
    run.root.mkdir()
    save_config(top, run.config)
    task_run = run.task("sts")
    task_run.best.mkdir(parents=True)
    task_cfg = build_config({**top.to_dict(), "two_step": None, "tasks": ["sts"], "method": "single"})
    card = ModelCard.load(write_model_card(task_run, task_run.best, task_cfg, {"sts_corr": 0.8, "overall": 0.9}))
    assert card.data.model_name == "mtbert-quick-sts"
    assert "two-step" in card.data.tags
    assert "Stage 2 of the two-step run `quick`" in card.text
    assert f'from_pretrained("{tmp_path}/quick/tasks/sts/best")' in card.text
    assert "Gradient Surgery" in card.text and "Ang" in card.text
    # stage 1's own card says what it is
    stage1 = run.stage1
    stage1.best.mkdir(parents=True)
    stage1_cfg = build_config({**top.to_dict(), "two_step": None})
    stage1_card = ModelCard.load(write_model_card(stage1, stage1.best, stage1_cfg, RESULTS))
    assert stage1_card.data.model_name == "mtbert-quick-stage1" and "two-step" in stage1_card.data.tags
    assert "Stage 1 of the two-step run `quick`: one encoder shared by" in stage1_card.text
    assert "Ang" in stage1_card.text  # cites the two-step report
    # the two-step run's top level: no weights there, each task's folder is named
    top_card = write_model_card(run, run.root, top, RESULTS).read_text()
    assert "tasks/<task>/best" in top_card and "from_pretrained(\"" not in top_card


def test_base_model_is_a_hub_id_or_left_out(tmp_path):
    from mtbert.model import default_backbone

    assert base_model_id(None) == BUNDLED_BACKBONE
    assert base_model_id(default_backbone()) == BUNDLED_BACKBONE
    assert base_model_id("bert-base-uncased") == "bert-base-uncased"
    assert base_model_id("google-bert/bert-base-uncased") == "google-bert/bert-base-uncased"
    assert base_model_id(str(tmp_path)) is None  # a local folder is no Hub id
    assert base_model_id("runs/a/mlm/extra") is None


def test_ensemble_writes_a_card(tmp_path):
    from mtbert.evaluation import ensemble

    specs = {name: BUILTIN_TASKS[name] for name in ("sst", "sts")}
    results = {"mode": "vote", "members": ["runs/a", "runs/b"], "files": [],
               "ensemble": {"sst_acc": 0.5, "sts_corr": 0.7, "overall": 0.675}}
    card = ModelCard.load(write_ensemble_card(tmp_path / "ens", results, specs))
    assert card.data.library_name == "mtbert" and "ensemble" in card.data.tags
    assert {r.task_name: r.metric_value for r in card.data.eval_results} == {"sst": 0.5, "sts": 0.7}
    assert "- `runs/a`" in card.text and "mtbert ensemble runs/a runs/b" in card.text

    # and `run_ensemble` writes it next to results.json
    members = []
    for k, values in enumerate(([1, 2, 3], [1, 2, 4])):
        folder = tmp_path / f"m{k}" / "predictions"
        folder.mkdir(parents=True)
        lines = ["id \t Predicted_Sentiment "] + [f"x{i} , {v} " for i, v in enumerate(values)]
        (folder / "sst-dev-output.csv").write_text("\n".join(lines) + "\n")
        members.append(folder)
    out = tmp_path / "out"
    ensemble.run_ensemble(members, out, "vote")
    written = ModelCard.load(out / "README.md")
    assert "ensemble" in written.data.tags
    assert "An ensemble of 2 mtbert runs" in written.text


def test_the_backbone_is_named_by_hub_id_or_by_its_folder_name_never_its_path(tmp_path):
    from mtbert.runs.model_card import BUNDLED_BACKBONE, backbone_words

    folder = tmp_path / "deep" / "my-bert"
    folder.mkdir(parents=True)
    assert backbone_words(None) == f"{BUNDLED_BACKBONE} (bundled)"
    assert backbone_words("bert-base-uncased") == "bert-base-uncased"
    assert backbone_words("google-bert/bert-base-uncased") == "google-bert/bert-base-uncased"
    assert backbone_words(str(folder)) == "my-bert (a local folder)"
