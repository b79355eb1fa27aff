"""Task data in every format: delimited (comma or tab), JSON, JSON Lines, Parquet and `datasets` datasets.

The same hostile rows go into each format: every row must be loaded or reported by its line or row number with
its reason, and a file or column that cannot be used at all is one DataError sentence naming it.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from mtbert.data.files import read_task_file
from mtbert.data.loading import load_task_data, read_split, resolve_labels
from mtbert.errors import ConfigError, DataError
from mtbert.evaluation.predict import read_cs224n, write_cs224n, write_csv
from mtbert.tasks import TaskSpec, task_from_config

MOOD = TaskSpec(name="mood", kind="single", text_columns=("text",), label_names=("neg", "pos"), num_labels=2)

# (row, the reason it is skipped or None); ids are strings, labels class names.
HOSTILE = [
    ({"id": "a", "text": "good fun", "label": "pos"}, None),
    ({"id": "b", "text": "meh", "label": ""}, "empty label"),
    ({"id": "c", "text": "so so", "label": "meh"}, "label 'meh' is not one of the label_names (neg, pos)"),
    ({"id": "a", "text": "again", "label": "neg"}, "duplicate id a"),
    ({"id": "", "text": "no id", "label": "neg"}, "empty id"),
    ({"id": "d", "text": " awful, dull ", "label": "neg"}, None),
]


def write_format(path: Path, rows: list[dict]) -> Path:
    """Write rows as the format the suffix names; return the path."""
    suffix = path.suffix
    if suffix in (".csv", ".tsv"):
        handle = io.StringIO()
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="," if suffix == ".csv" else "\t",
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        path.write_text(handle.getvalue(), encoding="utf-8")
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif suffix == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def position(suffix: str, k: int) -> int:
    """The number a format reports for data row k (1-based): the line for text files, else the row."""
    return k + 1 if suffix in (".csv", ".tsv") else k


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".json", ".jsonl", ".parquet"])
def test_hostile_rows_in_each_format_are_loaded_or_reported_by_number(suffix, tmp_path, caplog):
    path = write_format(tmp_path / f"mood{suffix}", [r for r, _ in HOSTILE])
    result = read_task_file(path, MOOD)
    assert result.rows == len(HOSTILE)
    assert [(e.id, e.texts, e.label) for e in result.examples] == [("a", ("good fun",), 1.0),
                                                                  ("d", ("awful, dull",), 0.0)]
    assert [e.line for e in result.examples] == [position(suffix, 1), position(suffix, 6)]
    expected = [(position(suffix, k), why) for k, (_, why) in enumerate(HOSTILE, start=1) if why]
    assert [(n, why.split(" (first")[0]) for n, why in result.skipped] == expected
    unit = "line" if suffix in (".csv", ".tsv", ".jsonl") else "row"
    assert result.unit == unit
    summary = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert summary == [f"{path}: skipped 4 of 6 rows: {unit} " + ", ".join(f"{n} ({why})" for n, why in result.skipped)]


def test_json_specific_hostile_rows(tmp_path):
    lines = ['{"id": 1, "text": "fine", "label": "pos"}', "{broken", "[1, 2]", "",
             '{"id": 2, "text": null, "label": "neg"}', '{"id": 3, "text": 7, "label": "neg"}',
             '{"id": 4, "label": "neg"}', '{"id": true, "text": "x", "label": "neg"}']
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = read_task_file(path, MOOD)
    assert [(e.id, e.line) for e in result.examples] == [("1", 1)]
    reasons = dict(result.skipped)
    assert reasons[2].startswith("not valid JSON (")
    assert reasons[3] == "not a JSON object but an array"
    assert 4 not in reasons  # a blank line is no row
    assert reasons[5] == "'text' is empty (null)"
    assert reasons[6] == "'text' is a number, not text"
    assert reasons[7] == "no field 'text'"
    assert reasons[8] == "id is a boolean, not text or an integer"


def test_json_layouts_columnar_wrapped_and_lines_in_a_json_file(tmp_path):
    rows = [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}]
    columnar = tmp_path / "c.json"
    columnar.write_text(json.dumps({"text": ["good", "bad"], "label": ["pos", "neg"]}))
    wrapped = tmp_path / "w.json"
    wrapped.write_text(json.dumps({"version": 1, "data": rows}))
    lines = tmp_path / "l.json"
    lines.write_text("\n".join(json.dumps(r) for r in rows))
    for path in (columnar, wrapped, lines):
        assert [(e.id, e.texts, e.label) for e in read_task_file(path, MOOD).examples] == [
            ("1", ("good",), 1.0), ("2", ("bad",), 0.0)], path


@pytest.mark.parametrize(("name", "data", "message"), [
    ("bad.json", b'{"a": 1,\n "b": }', r"bad.json, line 2: not valid JSON \(Expecting value\)$"),
    ("empty.jsonl", b"\n\n", r"empty.jsonl, line 1: the file is empty$"),
    ("scalar.json", b"42", r"scalar.json: expected an array of objects, an object of column lists or JSON Lines, "
                           r"not a number$"),
    ("nolabel.jsonl", b'{"text": "a"}\n{"text": "b"}\n', r"nolabel.jsonl: no row has the field 'label' "
                                                         r"\(its columns: 'text'\)$"),
    ("latin1.jsonl", b'{"text": "ok", "label": "pos"}\n{"text": "caf\xe9"}\n', r"latin1.jsonl, line 2: not valid "
                                                                             r"UTF-8 text$"),
    ("junk.parquet", b"PAR1 not really", r"junk.parquet: not a readable Parquet file \(.+\)$"),
    ("semi.csv", b"text;label\nx;pos\n", r"semi.csv, line 1: missing column 'text' \(the header has 'text;label'\)$"),
])
def test_unusable_files_are_one_sentence_naming_them(name, data, message, tmp_path):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(DataError, match=rf"^{re.escape(str(tmp_path))}/{message}") as err:
        read_task_file(path, MOOD)
    assert "\n" not in str(err.value)


def test_parquet_columns_are_checked_by_name_and_type(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"text": [1, 2], "label": ["pos", "neg"]}), path)
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: column 'text' holds int64, not text$"):
        read_task_file(path, MOOD)
    pq.write_table(pa.table({"sentence": ["a"], "label": ["pos"]}), path)
    with pytest.raises(DataError, match=r"m.parquet: missing column 'text' \(its columns: 'sentence', 'label'\)$"):
        read_task_file(path, MOOD)


def test_delimiter_is_detected_or_given(tmp_path):
    spec = TaskSpec(name="pairs", kind="pair-regression", text_columns=("a", "b"), num_labels=1)
    comma = tmp_path / "p.csv"
    comma.write_text('a,b,label\n"x, y",z,1.5\n')
    tab = tmp_path / "p2.csv"
    tab.write_text("a\tb\tlabel\nx, y\tz\t1.5\n")
    semi = tmp_path / "p3.txt"
    semi.write_text("a;b;label\nx, y;z;1.5\n")
    for path, given in ((comma, None), (tab, None), (semi, ";")):
        loaded = read_task_file(path, TaskSpec(**{**spec.__dict__, "delimiter": given})).examples
        assert [(e.id, e.texts, e.label) for e in loaded] == [("2", ("x, y", "z"), 1.5)], path


def test_id_column_is_used_when_there_and_required_when_named(tmp_path):
    path = write_format(tmp_path / "m.jsonl", [{"id": 10, "text": "a", "label": "pos"}])
    assert read_task_file(path, MOOD).examples[0].id == "10"
    named = TaskSpec(**{**MOOD.__dict__, "id_column": "uid"})
    with pytest.raises(DataError, match=r"no row has the field 'uid'"):
        read_task_file(path, named)
    # id-less data: stable ids from the line (text files) or row number
    bare = write_format(tmp_path / "b.csv", [{"text": "a", "label": "pos"}, {"text": "b", "label": "neg"}])
    assert [e.id for e in read_task_file(bare, MOOD).examples] == ["2", "3"]
    assert [e.id for e in read_task_file(bare, MOOD).examples] == ["2", "3"]


# ---- label spaces ------------------------------------------------------------------------------------------------
def test_string_labels_without_names_become_the_sorted_distinct_training_labels(tmp_path):
    spec = task_from_config({"name": "topic", "kind": "single-classification", "train_file": "t.jsonl",
                             "dev_file": "d.jsonl", "text_columns": ["text"]}, "tasks[0]")
    assert spec.kind == "single" and spec.label_names is None
    write_format(tmp_path / "t.jsonl", [{"text": t, "label": y} for t, y in
                                        [("a", "sport"), ("b", "art"), ("c", "news"), ("d", "art")]])
    write_format(tmp_path / "d.jsonl", [{"text": "e", "label": "news"}, {"text": "f", "label": "cooking"}])
    resolved = resolve_labels(spec, tmp_path)
    assert resolved.label_names == ("art", "news", "sport") and resolved.num_labels == 3
    dev = read_split(resolved, "dev", tmp_path)
    assert [e.label for e in dev.examples] == [1.0]
    assert dev.skipped == [(2, "label 'cooking' is not one of the label_names (art, news, sport)")]


def test_numeric_labels_stay_class_indices_and_given_names_keep_their_order(tmp_path):
    numbers = write_format(tmp_path / "n.csv", [{"text": "a", "label": "1"}, {"text": "b", "label": "oops"}])
    spec = TaskSpec(name="n", kind="single", text_columns=("text",), train_file="n.csv")
    assert resolve_labels(spec, tmp_path) is spec  # one numeric label: indices, and 'oops' is skipped
    assert read_task_file(numbers, spec).skipped == [(3, "label 'oops' is not a number")]
    given = task_from_config({"name": "m", "kind": "single", "text_columns": ["text"], "train_file": "m.csv",
                              "label_names": ["pos", "neg"]}, "tasks[0]")
    assert given.num_labels == 2 and resolve_labels(given, tmp_path) is given
    write_format(tmp_path / "m.csv", [{"text": "a", "label": "neg"}])
    assert read_task_file(tmp_path / "m.csv", given).examples[0].label == 1.0


@pytest.mark.parametrize(("entry", "message"), [
    ({"kind": "single", "label_names": ["a"]}, "tasks[0].label_names: must list at least two non-empty class names"),
    ({"kind": "single", "label_names": ["a", "a"]}, "tasks[0].label_names: the class names must differ"),
    ({"kind": "single", "label_names": ["a", "b"], "num_labels": 3},
     "tasks[0].num_labels: is 3 but label_names lists 2 classes"),
    ({"kind": "single-regression", "label_names": ["a", "b"]}, "tasks[0].label_names: a single-regression task has "
                                                               "no classes"),
    ({"kind": "single", "delimiter": ";;"}, "tasks[0].delimiter: must be one character, such as ',' or '\\t'"),
    ({"kind": "single", "dataset": "glue", "train_file": "x.csv"},
     "tasks[0].dataset: give either dataset or train_file/dev_file/test_file, not both"),
    ({"kind": "pair", "text_columns": ["a", "b"]}, "tasks[0].kind: 'pair' is not one of single | single-classification"
                                                   " | single-regression | pair-classification | pair-regression"
                                                   " | multi-label | multiple-choice"),
])
def test_bad_new_task_keys(entry, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        task_from_config({"name": "t", "text_columns": ["x"], **entry}, "tasks[0]")


def test_kinds_single_regression_and_old_names():
    reg = task_from_config({"name": "score", "kind": "single-regression", "text_columns": ["x"], "num_labels": 1},
                           "tasks[0]")
    assert reg.is_regression and not reg.is_pair and reg.num_outputs == 1 and reg.metric == "corr"
    for kind in ("single", "pair-classification", "pair-regression"):
        columns = ["x"] if kind == "single" else ["x", "y"]
        assert task_from_config({"name": "t", "kind": kind, "text_columns": columns}, "t").kind == kind


def test_predictions_are_written_and_read_back_in_the_label_space(tmp_path):
    spec = TaskSpec(name="topic", kind="single", text_columns=("t",), label_names=("art", "news, local", "sport"),
                    num_labels=3)
    predictions = np.array([2, 0, 1])
    write_cs224n(tmp_path / "p.csv", spec, ["a", "b", "c"], predictions)
    assert (tmp_path / "p.csv").read_text().splitlines()[1:] == ["a , sport ", "b , art ", "c , news, local "]
    assert read_cs224n(tmp_path / "p.csv", spec)[1] == {"a": 2.0, "b": 0.0, "c": 1.0}
    write_csv(tmp_path / "p2.csv", spec, ["a", "b", "c"], predictions)
    assert list(csv.reader(open(tmp_path / "p2.csv"))) == [["id", "prediction"], ["a", "sport"], ["b", "art"],
                                                           ["c", "news, local"]]


def test_label_names_are_saved_with_the_model(tiny_model_dir, tmp_path):
    from mtbert.model import MultiTaskModel
    from mtbert.model.multitask import load_encoder

    spec = TaskSpec(name="topic", kind="single", text_columns=("t",), label_names=("art", "sport"), num_labels=2,
                    dataset="some/name", dev_split="test", head_hidden_sizes=(8,))
    encoder, tokenizer = load_encoder(str(tiny_model_dir), 0.0)
    MultiTaskModel(encoder, [spec]).save_pretrained(tmp_path / "best", tokenizer)
    assert json.loads((tmp_path / "best" / "mtbert_config.json").read_text())["tasks"][0]["label_names"] == ["art",
                                                                                                            "sport"]
    assert MultiTaskModel.from_pretrained(tmp_path / "best").specs["topic"] == spec


def test_an_uncached_hub_model_offline_is_one_sentence(monkeypatch):
    from mtbert.errors import MtbertError
    from mtbert.model.multitask import load_encoder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MtbertError, match=r"^model_name_or_path: cannot load 'nobody-here/no-such-model-17': it is "
                                          r"not a local folder, the Hugging Face Hub could not be reached "
                                          r"\(HF_HUB_OFFLINE is set\), and it is not in the local cache$"):
        load_encoder("nobody-here/no-such-model-17", 0.1)


def test_load_task_data_tokenizes_an_id_less_jsonl_task(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    spec = task_from_config({"name": "mood", "kind": "single", "train_file": "t.jsonl", "dev_file": "d.jsonl",
                             "test_file": "x.jsonl", "text_columns": ["text"]}, "tasks[0]")
    write_format(tmp_path / "t.jsonl", [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}])
    write_format(tmp_path / "d.jsonl", [{"text": "fine", "label": "pos"}])
    write_format(tmp_path / "x.jsonl", [{"text": "what"}, {"text": "now"}])
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir), use_fast=True)
    data = load_task_data([spec], tmp_path, tokenizer, 16, "cross")["mood"]
    assert data.spec.label_names == ("neg", "pos") and data.spec.num_labels == 2
    assert data.train.labels == [1.0, 0.0] and data.dev.labels == [1.0] and data.test.ids == ["1", "2"]
