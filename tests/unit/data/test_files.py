"""Readers of the CS224N files, tokenization, dynamic-padding batches and the multi-task sampler."""

from __future__ import annotations

import csv
import logging
import os
import re
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mtbert.data import (
    EncodedSet,
    Example,
    MultiTaskSampler,
    collate,
    encode_examples,
    length_sorted_batches,
    load_task_data,
    read_task_file,
)
from mtbert.errors import DataError
from mtbert.tasks import BUILTIN_TASKS

SST, PARA, STS = BUILTIN_TASKS["sst"], BUILTIN_TASKS["para"], BUILTIN_TASKS["sts"]
ID = "{:025x}".format


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


# ---- reading --------------------------------------------------------------------------------------------------
def test_reads_rows_with_ids_texts_labels_and_lines(tmp_path):
    path = write(tmp_path / "sst.csv", f"\tid\tsentence\tsentiment\n0\t{ID(1)}\t a good film \t4\n1\t{ID(2)}\tbad\t0\n")
    result = read_task_file(path, SST)
    assert [(e.id, e.texts, e.label, e.line) for e in result.examples] == [
        (ID(1), ("a good film",), 4.0, 2),
        (ID(2), ("bad",), 0.0, 3),
    ]
    assert result.skipped == [] and result.rows == 2 and result.path == path


def test_pair_files_read_both_sentences_and_float_labels(tmp_path):
    quora = write(tmp_path / "q.csv", f"\tid\tsentence1\tsentence2\tis_duplicate\n7\t{ID(1)}\tA?\tB?\t1.0\n")
    sts = write(tmp_path / "s.csv", f"\tid\tsentence1\tsentence2\tsimilarity\n7\t{ID(1)}\tA\tB\t3.8\n")
    assert read_task_file(quora, PARA).examples[0].texts == ("A?", "B?")
    assert read_task_file(quora, PARA).examples[0].label == 1.0
    assert read_task_file(sts, STS).examples[0].label == pytest.approx(3.8)


def test_empty_and_out_of_range_labels_are_skipped_with_their_lines_and_a_summary(tmp_path, caplog):
    path = write(tmp_path / "sst.csv", "\n".join([
        "\tid\tsentence\tsentiment",
        f"0\t{ID(1)}\tok\t1",
        f"1\t{ID(2)}\tempty\t",
        f"2\t{ID(3)}\tok\t2",
        f"3\t{ID(4)}\ttoo big\t5",
        f"4\t{ID(5)}\tnegative\t-1",
        f"5\t{ID(6)}\tnot an int\t2.5",
        f"6\t{ID(7)}\tword\tfour",
    ]) + "\n")
    with caplog.at_level(logging.WARNING, logger="mtbert.data"):
        result = read_task_file(path, SST)
    assert [e.line for e in result.examples] == [2, 4]
    assert [line for line, _ in result.skipped] == [3, 5, 6, 7, 8]
    assert result.skipped[0] == (3, "empty label")
    assert "not a class in 0..4" in result.skipped[1][1]
    assert "not a number" in result.skipped[4][1]
    assert result.rows == 7
    summary = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(summary) == 1
    assert summary[0].startswith(f"{path}: skipped 5 of 7 rows: line 3 (empty label), 5 (")


def test_summary_line_shortens_many_skipped_rows(tmp_path, caplog):
    lines = ["\tid\tsentence1\tsentence2\tsimilarity"] + [f"{i}\t{ID(i)}\ta\tb\t{9 + i}" for i in range(8)]
    path = write(tmp_path / "sts.csv", "\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING, logger="mtbert.data"):
        result = read_task_file(path, STS)
    assert result.examples == [] and len(result.skipped) == 8
    assert result.skipped[0] == (2, "label 9 is outside 0..5")
    (message,) = [r.getMessage() for r in caplog.records]
    assert message.startswith(f"{path}: skipped 8 of 8 rows: line 2 (label 9 is outside 0..5)")
    assert message.endswith(" and 3 more")


def test_regression_labels_on_the_bounds_load(tmp_path):
    lines = ["\tid\tsentence1\tsentence2\tsimilarity", f"0\t{ID(0)}\ta\tb\t0", f"1\t{ID(1)}\ta\tb\t5.0",
             f"2\t{ID(2)}\ta\tb\t5.01", f"3\t{ID(3)}\ta\tb\tnan", f"4\t{ID(4)}\ta\tb\tinf"]
    result = read_task_file(write(tmp_path / "sts.csv", "\n".join(lines)), STS)
    assert [e.label for e in result.examples] == [0.0, 5.0]
    assert [line for line, _ in result.skipped] == [4, 5, 6]


def test_duplicate_and_empty_ids_are_skipped(tmp_path):
    lines = ["\tid\tsentence\tsentiment", f"0\t{ID(1)}\ta\t1", f"1\t{ID(1)}\tb\t2", "2\t\tc\t3"]
    result = read_task_file(write(tmp_path / "sst.csv", "\n".join(lines)), SST)
    assert [e.texts for e in result.examples] == [("a",)]
    assert result.skipped == [(3, f"duplicate id {ID(1)} (first on line 2)"), (4, "empty id")]


def test_rows_with_the_wrong_number_of_fields_are_reported(tmp_path):
    lines = ["\tid\tsentence\tsentiment", f"0\t{ID(1)}\ta", f"1\t{ID(2)}\tb\t2\textra", f"2\t{ID(3)}\tc\t3"]
    result = read_task_file(write(tmp_path / "sst.csv", "\n".join(lines)), SST)
    assert [e.id for e in result.examples] == [ID(3)]
    assert result.skipped == [(2, "3 fields where the header has 4"), (3, "5 fields where the header has 4")]


def test_unlabeled_row_missing_only_an_unused_trailing_field_loads(tmp_path):
    path = write(tmp_path / "t.csv", f"\tid\tsentence1\tsentence2\textra\n0\t{ID(1)}\ta\tb\n")
    assert [e.texts for e in read_task_file(path, STS, labeled=False).examples] == [("a", "b")]


def test_quoted_fields_with_doubled_quotes_and_newlines_keep_physical_line_numbers(tmp_path):
    text = ("\tid\tsentence1\tsentence2\tis_duplicate\n"
            f'0\t{ID(1)}\t"He said ""hi""."\t"two\nlines"\t0.0\n'
            f"1\t{ID(2)}\tx\ty\t\n")
    result = read_task_file(write(tmp_path / "q.csv", text), PARA)
    assert result.examples[0].texts == ('He said "hi".', "two\nlines")
    assert result.skipped == [(4, "empty label")]


def test_bom_and_crlf_line_ends(tmp_path):
    text = f"\ufeff\tid\tsentence\tsentiment\r\n0\t{ID(1)}\tgood\t3\r\n1\t{ID(2)}\tbad\t1"
    result = read_task_file(write(tmp_path / "sst.csv", text), SST)
    assert [(e.id, e.texts, e.label) for e in result.examples] == [(ID(1), ("good",), 3.0), (ID(2), ("bad",), 1.0)]


def test_shifted_sst_test_header_reads_the_right_columns(tmp_path):
    text = f"0\t\tid\tsentence\n1\t0.0\t{ID(10)}\t Effective but too-tepid biopic\n2\t1.0\t{ID(11)}\tWasabi\n"
    result = read_task_file(write(tmp_path / "test.csv", text), SST, labeled=False)
    assert [(e.id, e.texts, e.label) for e in result.examples] == [
        (ID(10), ("Effective but too-tepid biopic",), None),
        (ID(11), ("Wasabi",), None),
    ]


# ---- errors: one sentence naming the file and the line --------------------------------------------------------
def test_missing_column_names_file_line_and_column(tmp_path):
    path = write(tmp_path / "q.csv", f"\tid\tsentence1\tsentence2\n0\t{ID(1)}\ta\tb\n")
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}, line 1: missing column 'is_duplicate' "
                                        r"\(the header has '', 'id', 'sentence1', 'sentence2'\)$"):
        read_task_file(path, PARA)
    assert read_task_file(path, PARA, labeled=False).rows == 1


def test_empty_file_is_an_error_naming_line_1(tmp_path):
    path = write(tmp_path / "empty.csv", "")
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}, line 1: the file is empty"):
        read_task_file(path, SST)


def test_non_utf8_names_the_line_of_the_bad_byte(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(f"\tid\tsentence\tsentiment\n0\t{ID(1)}\tok\t1\n1\t{ID(2)}\tcaf".encode() + b"\xe9\t2\n")
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}, line 3: not valid UTF-8 text$"):
        read_task_file(path, SST)


def test_non_utf8_after_a_bom_and_crlf_names_the_right_line(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf\tid\tsentence\tsentiment\r\n\xff")
    with pytest.raises(DataError, match=r", line 2: not valid UTF-8 text$"):
        read_task_file(path, SST)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DataError, match=rf"^{re.escape(str(tmp_path / 'nope.csv'))}: file not found$"):
        read_task_file(tmp_path / "nope.csv", SST)
    with pytest.raises(DataError, match="file not found"):
        read_task_file(tmp_path, SST)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user")
def test_unreadable_file_is_a_data_error(tmp_path):
    path = write(tmp_path / "locked.csv", "\tid\tsentence\tsentiment\n")
    path.chmod(0)
    try:
        with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: cannot be read"):
            read_task_file(path, SST)
    finally:
        path.chmod(0o600)


# ---- loading a data folder --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir), use_fast=True)


def test_missing_test_file_is_reported_and_skipped(tokenizer, tiny_data_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="mtbert.data"):
        data = load_task_data([SST, PARA, STS], tiny_data_dir, tokenizer, 32, "cross")
    assert data["para"].test is None and data["para"].train is not None and data["para"].dev is not None
    assert len(data["sst"].test) == 40 and len(data["sts"].test) == 40
    assert any("quora-test-student.csv: test file not found" in r.getMessage() for r in caplog.records)


def test_missing_train_file_or_folder_is_an_error(tokenizer, tmp_path):
    with pytest.raises(DataError, match="data folder not found"):
        load_task_data([SST], tmp_path / "nope", tokenizer, 32, "cross")
    with pytest.raises(DataError, match=rf"^{re.escape(str(tmp_path / 'ids-sst-train.csv'))}: file not found; "):
        load_task_data([SST], tmp_path, tokenizer, 32, "cross")


def test_header_only_train_file_is_an_error(tokenizer, tmp_path):
    write(tmp_path / "ids-sst-train.csv", "\tid\tsentence\tsentiment\n")
    with pytest.raises(DataError, match=r"ids-sst-train.csv: no usable rows$"):
        load_task_data([SST], tmp_path, tokenizer, 32, "cross", splits=("train",))


def test_sample_limits(tokenizer, tiny_data_dir):
    data = load_task_data([SST], tiny_data_dir, tokenizer, 32, "cross", max_train_samples=5, max_eval_samples=3,
                          max_predict_samples=2)
    assert (len(data["sst"].train), len(data["sst"].dev), len(data["sst"].test)) == (5, 3, 2)


# ---- tokenization and batches ---------------------------------------------------------------------------------
def examples(*texts: tuple[str, ...], labels=None) -> list[Example]:
    labels = labels or [None] * len(texts)
    return [Example(id=ID(i), texts=t, label=y, line=i + 2) for i, (t, y) in enumerate(zip(texts, labels, strict=True))]


def test_long_sentences_are_truncated_to_max_length(tokenizer):
    long = " ".join(["movie"] * 500)
    single = encode_examples(tokenizer, SST, examples((long,), ("short",)), 16, "cross")
    assert len(single.features[0][0]) == 16 and len(single.features[1][0]) < 16
    assert single.features[0][0][0] == tokenizer.cls_token_id and single.features[0][0][-1] == tokenizer.sep_token_id
    cross = encode_examples(tokenizer, STS, examples((long, long)), 16, "cross")
    assert len(cross.features[0]) == 1 and len(cross.features[0][0]) == 16
    assert set(cross.token_types[0][0]) == {0, 1}
    bi = encode_examples(tokenizer, STS, examples((long, "a b")), 16, "bi-cosine")
    assert [len(f) for f in bi.features[0]] == [16, 4]
    assert encode_examples(tokenizer, SST, [], 16, "cross").features == []


def make_set(lengths: list[int], labels: list[float | None] | None = None, inputs: int = 1) -> EncodedSet:
    features = [[list(range(1, n + 1)) for _ in range(inputs)] for n in lengths]
    return EncodedSet(spec=SST, ids=[ID(i) for i in range(len(lengths))], features=features,
                      token_types=[[[0] * n for _ in range(inputs)] for n in lengths],
                      labels=labels if labels is not None else [float(i % 5) for i in range(len(lengths))])


def test_collate_pads_only_to_the_batch_longest_member():
    encoded = make_set([3, 9, 5, 2, 40])
    batch = collate(encoded, [0, 2, 3], pad_token_id=0)
    (inputs,) = batch["inputs"]
    assert inputs["input_ids"].shape == (3, 5)
    assert inputs["attention_mask"].sum(dim=1).tolist() == [3, 5, 2]
    assert inputs["input_ids"][2].tolist() == [1, 2, 0, 0, 0]
    assert inputs["token_type_ids"].shape == (3, 5)
    assert batch["labels"].tolist() == [0.0, 2.0, 3.0] and batch["labels"].dtype == torch.float


def test_collate_pads_each_input_of_a_bi_encoder_separately_and_without_labels():
    encoded = make_set([3, 6], labels=[None, None], inputs=2)
    encoded.features[0][1] = [7] * 10
    encoded.token_types[0][1] = [0] * 10
    batch = collate(encoded, [0, 1], pad_token_id=99)
    assert [x["input_ids"].shape for x in batch["inputs"]] == [(2, 6), (2, 10)]
    assert batch["inputs"][0]["input_ids"][0].tolist() == [1, 2, 3, 99, 99, 99]
    assert batch["labels"] is None


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(1, 50), min_size=0, max_size=40), batch_size=st.integers(1, 9))
def test_length_sorted_batches_are_longest_first_and_cover_every_index_once(lengths, batch_size):
    encoded = make_set(lengths)
    batches = list(length_sorted_batches(encoded, batch_size))
    order = [i for b in batches for i in b]
    assert sorted(order) == list(range(len(lengths)))
    assert [lengths[i] for i in order] == sorted(lengths, reverse=True)
    assert all(len(b) == batch_size for b in batches[:-1]) and all(0 < len(b) <= batch_size for b in batches)
    for b in batches:  # padding is minimal: every batch is padded to its own longest member
        width = collate(encoded, b, 0)["inputs"][0]["input_ids"].shape[1]
        assert width == max(lengths[i] for i in b)


# ---- the multi-task sampler -----------------------------------------------------------------------------------
def test_sampler_same_seed_same_draws_and_other_seed_other_draws():
    def draws(seed):
        sampler = MultiTaskSampler({"sst": 50, "para": 80}, seed=seed)
        return [sampler.draw(task, 7) for _ in range(5) for task in ("sst", "para")]

    assert draws(3) == draws(3)
    assert draws(3) != draws(4)


def test_sampler_cycles_a_small_task_reshuffling_each_pass():
    sampler = MultiTaskSampler({"big": 1000, "small": 6}, seed=0)
    passes = [sampler.draw("small", 6) for _ in range(6)]
    assert all(sorted(p) == list(range(6)) for p in passes)
    assert len({tuple(p) for p in passes}) > 1
    stream = MultiTaskSampler({"big": 1000, "small": 6}, seed=0)
    flat = stream.draw("small", 4) + stream.draw("small", 4) + stream.draw("small", 4)  # crosses pass boundaries
    assert flat == [i for p in passes for i in p][:12]
    assert stream.positions == {"big": 0, "small": 12}


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), sizes=st.lists(st.integers(1, 30), min_size=1, max_size=3),
       before=st.lists(st.tuples(st.integers(0, 2), st.integers(1, 12)), max_size=8),
       after=st.lists(st.tuples(st.integers(0, 2), st.integers(1, 12)), min_size=1, max_size=8))
def test_sampler_state_dict_resumes_exactly(seed, sizes, before, after):
    names = [f"t{i}" for i in range(len(sizes))]
    sampler = MultiTaskSampler(dict(zip(names, sizes, strict=True)), seed=seed)
    for k, n in before:
        sampler.draw(names[k % len(names)], n)
    state = sampler.state_dict()
    expected = [sampler.draw(names[k % len(names)], n) for k, n in after]
    resumed = MultiTaskSampler(dict(zip(names, sizes, strict=True)), seed=seed)
    resumed.load_state_dict({k: str(v) for k, v in state.items()})  # e.g. read back from JSON
    assert [resumed.draw(names[k % len(names)], n) for k, n in after] == expected
    assert resumed.state_dict() == sampler.state_dict()


def test_sampler_ranks_split_one_stream():
    single = MultiTaskSampler({"a": 10}, seed=1)
    expected = single.draw("a", 8) + single.draw("a", 8)
    ranks = [MultiTaskSampler({"a": 10}, seed=1, rank=r, world_size=2) for r in range(2)]
    got = [ranks[0].draw("a", 4) + ranks[1].draw("a", 4), ranks[0].draw("a", 4) + ranks[1].draw("a", 4)]
    assert got[0] + got[1] == expected


# ---- the real data (MTBERT_DATA points at the CS224N files) ----------------------------------------------------
REAL = {
    "ids-sst-train.csv": ("sst", True, 7927),
    "ids-sst-dev.csv": ("sst", True, 1101),
    "ids-sst-test-student.csv": ("sst", False, 2210),
    "quora-train.csv": ("para", True, 14144),
    "quora-dev.csv": ("para", True, 3995),
    "sts-train.csv": ("sts", True, 5623),
    "sts-dev.csv": ("sts", True, 863),
    "sts-test-student.csv": ("sts", False, 1725),
}


def real_file(name: str) -> Path:
    folder = os.environ.get("MTBERT_DATA")
    if not folder or not (Path(folder) / name).is_file():
        pytest.skip(f"MTBERT_DATA does not point at a folder with {name}")
    return Path(folder) / name


def csv_rows(path: Path) -> int:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return sum(1 for _ in csv.reader(handle, delimiter="\t")) - 1


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_file_loads_and_every_row_is_loaded_or_skipped(name):
    path = real_file(name)
    task, labeled, rows = REAL[name]
    result = read_task_file(path, BUILTIN_TASKS[task], labeled=labeled)
    assert result.rows == len(result.examples) + len(result.skipped) == csv_rows(path) == rows
    assert all(why == "empty label" for _, why in result.skipped)  # the only dirt the README announces


def test_real_quora_train_reports_exactly_its_empty_label_rows():
    path = real_file("quora-train.csv")
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        next(reader)
        empty, start = [], reader.line_num + 1
        for row in reader:
            if not row[4].strip():
                empty.append(start)
            start = reader.line_num + 1
    result = read_task_file(path, PARA)
    assert empty and result.skipped == [(line, "empty label") for line in empty]
    assert len(result.examples) == 14144 - len(empty)


def test_real_sst_test_file_with_the_shifted_header_loads_every_row():
    result = read_task_file(real_file("ids-sst-test-student.csv"), SST, labeled=False)
    assert len(result.examples) == 2210 and result.skipped == []
    assert result.examples[0].id == "b7573736a6ddf7be102b7fee0"
    assert result.examples[0].texts == ("Effective but too-tepid biopic",)
    assert all(re.fullmatch(r"[0-9a-f]{25}", e.id) for e in result.examples)
