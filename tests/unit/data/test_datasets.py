"""Tasks from `datasets` datasets: a `save_to_disk` folder, a folder of data files, ClassLabel names, and the Hub
offline (the suite runs with HF_HUB_OFFLINE=1: see tests/conftest.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets")

from mtbert.data.loading import read_split, resolve_labels  # noqa: E402
from mtbert.errors import DataError  # noqa: E402
from mtbert.tasks import task_from_config  # noqa: E402


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A DatasetDict on disk: a ClassLabel label, no id column, a hostile validation split, no test split."""
    features = datasets.Features({"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["entailment", "neutral", "contradiction"])})
    train = {"premise": ["a man runs", "a dog barks", "it rains"], "hypothesis": ["someone moves", "a cat", "wet"],
             "label": [0, 1, 2]}
    dev = {"premise": ["p1", None, "p3", "p4"], "hypothesis": ["h1", "h2", "h3", "h4"], "label": [2, 0, -1, 1]}
    folder = tmp_path_factory.mktemp("nli") / "nli"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(train, features=features),
                          "validation": datasets.Dataset.from_dict(dev, features=features)}).save_to_disk(str(folder))
    return folder


def nli(folder: Path, **extra) -> object:
    return task_from_config({"name": "nli", "kind": "pair-classification", "dataset": str(folder),
                             "text_columns": ["premise", "hypothesis"], **extra}, "tasks[0]")


def test_a_saved_dataset_with_class_label_names(saved, tmp_path, caplog):
    spec = resolve_labels(nli(saved), tmp_path)
    assert spec.label_names == ("entailment", "neutral", "contradiction") and spec.num_labels == 3
    train = read_split(spec, "train", tmp_path)
    assert [(e.id, e.texts, e.label) for e in train.examples] == [
        ("1", ("a man runs", "someone moves"), 0.0), ("2", ("a dog barks", "a cat"), 1.0), ("3", ("it rains", "wet"),
                                                                                          2.0)]
    dev = read_split(spec, "dev", tmp_path)
    assert [(e.id, e.label) for e in dev.examples] == [("1", 2.0), ("4", 1.0)]
    assert dev.skipped == [(2, "'premise' is empty (null)"), (3, "empty label")]
    assert any(r.getMessage().startswith(f"dataset '{saved}', split 'validation': skipped 2 of 4 rows: row 2")
               for r in caplog.records)
    assert read_split(spec, "test", tmp_path) is None  # no test split: reported and skipped
    assert any("has no split 'test'" in r.getMessage() for r in caplog.records)


def test_missing_split_or_column_is_one_sentence(saved, tmp_path):
    with pytest.raises(DataError, match=rf"^task nli: dataset '{re.escape(str(saved))}' has no split 'dev' \(its "
                                        r"splits: train, validation\); set dev_split$"):
        read_split(nli(saved, dev_split="dev"), "dev", tmp_path)
    with pytest.raises(DataError, match=r"split 'train': missing column 'sentence2' \(its columns: 'premise', "
                                        r"'hypothesis', 'label'\)$"):
        read_split(nli(saved, text_columns=["premise", "sentence2"]), "train", tmp_path)
    with pytest.raises(DataError, match=r"split 'train': column 'label' holds ClassLabel\(.*\), not text$"):
        read_split(nli(saved, text_columns=["premise", "label"]), "train", tmp_path)


def test_a_folder_of_data_files_relative_to_data_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    folder = tmp_path / "data" / "reviews"
    folder.mkdir(parents=True)
    (folder / "train.jsonl").write_text("\n".join(json.dumps({"review": t, "stars": s}) for t, s in
                                                  [("great", 4.5), ("bad", 1.0), ("ok", 3.0)]) + "\n")
    (folder / "validation.jsonl").write_text(json.dumps({"review": "fine", "stars": 4.0}) + "\n")
    spec = task_from_config({"name": "stars", "kind": "single-regression", "dataset": "reviews",
                             "text_columns": ["review"], "label_column": "stars", "num_labels": 1}, "tasks[0]")
    train = read_split(spec, "train", tmp_path / "data")
    assert [(e.id, e.texts, e.label) for e in train.examples] == [("1", ("great",), 4.5), ("2", ("bad",), 1.0),
                                                                 ("3", ("ok",), 3.0)]
    assert [e.label for e in read_split(spec, "dev", tmp_path / "data").examples] == [4.0]


def test_an_uncached_hub_dataset_offline_is_one_sentence(tmp_path):
    spec = task_from_config({"name": "sent", "kind": "single", "dataset": "nobody-here/no-such-dataset-17",
                             "text_columns": ["text"]}, "tasks[0]")
    with pytest.raises(DataError, match=r"^task sent: cannot load dataset 'nobody-here/no-such-dataset-17': the "
                                        r"Hugging Face Hub could not be reached \(HF_HUB_OFFLINE is set\) and it is "
                                        r"not in the local cache$"):
        read_split(spec, "train", tmp_path)
    path_like = task_from_config({"name": "sent", "kind": "single", "dataset": "./not/here",
                                  "text_columns": ["text"]}, "tasks[0]")
    with pytest.raises(DataError, match=r"^task sent: dataset './not/here': folder not found"):
        read_split(path_like, "train", tmp_path)
