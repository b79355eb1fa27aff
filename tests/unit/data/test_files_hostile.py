"""Property-based tests: malformed data files thrown at every reader.

Every case must end in one of two ways:
- a successful load whose loaded + skipped counts equal the rows in the file, counted independently
  with `csv.reader` on the same text (the oracle), or
- a `DataError` whose message starts with the file path and names a line (", line N").

The same cases through the command line (exit code 2, one "error: " line, no traceback) are in
tests/e2e/test_cli_errors.py.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtbert.data import read_task_file
from mtbert.errors import DataError
from mtbert.tasks import BUILTIN_TASKS, TaskSpec

BOM = b"\xef\xbb\xbf"
READERS = [(name, labeled) for name in BUILTIN_TASKS for labeled in (True, False)]
READER_IDS = [f"{name}-{'labeled' if labeled else 'unlabeled'}" for name, labeled in READERS]
SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))

IDS = ["b7573736a6ddf7be102b7fee0", "d17a8752e342834fd18b31aaa", "fbfddc56315fb8a39e7608fa0"]
WORDS = ["good", "movie", "it 's", "a", "''", "``", "what", "é", "日本", "-", "?"]
LABELS = ["0", "1", "2", "4", "0.0", "1.0", "3.8", "5.0", "5", "-1", "7", "2.5", "", " ", "abc", "nan", "inf",
          "-inf", "1e400", "0x1", "1_0", "True", "None", "-0.0", "4.0000001", "1e-320"]


# ---- the oracle --------------------------------------------------------------------------------------------------
def wanted_columns(spec: TaskSpec, labeled: bool) -> list[str]:
    return [spec.id_column, *spec.text_columns] + ([spec.label_column] if labeled else [])


def first_bad_utf8_line(data: bytes) -> int | None:
    """The 1-based line of the first byte that is not UTF-8 (after a BOM), or None when all of it is."""
    body = data[len(BOM):] if data.startswith(BOM) else data
    for number, line in enumerate(body.splitlines(keepends=True), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return number
    return None


def expected_outcome(data: bytes, spec: TaskSpec, labeled: bool) -> tuple[str, int | None]:
    """('rows', n) for a file that must load with n rows, ('error', line or None) for one that must not."""
    bad_line = first_bad_utf8_line(data)
    if bad_line is not None:
        return "error", bad_line
    text = data.decode("utf-8-sig")
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter="\t"))
    except csv.Error:
        return "error", None
    if not rows:
        return "error", 1
    if any(column not in rows[0] for column in wanted_columns(spec, labeled)):
        return "error", 1
    return "rows", len(rows) - 1


def physical_lines(data: bytes) -> int:
    return max(1, len(data.splitlines()))


def check_file(path: Path, data: bytes, spec: TaskSpec, labeled: bool) -> None:
    """Read `data` written to `path` and check the outcome against the oracle."""
    path.write_bytes(data)
    kind, value = expected_outcome(data, spec, labeled)
    try:
        result = read_task_file(path, spec, labeled=labeled)
    except DataError as err:
        message = str(err)
        assert kind == "error", f"the oracle counts {value} rows, but the reader failed: {message}"
        assert message.startswith(f"{path}, line "), message
        match = re.match(rf"{re.escape(str(path))}, line (\d+): \S", message)
        assert match, message
        assert "\n" not in message
        if value is not None:
            assert int(match.group(1)) == value, message
        return
    assert kind == "rows", f"the reader loaded a file it should have refused ({value})"
    assert result.rows == value == len(result.examples) + len(result.skipped)
    # Every row is loaded or reported once, in file order, on a line of the file.
    lines = sorted([e.line for e in result.examples] + [n for n, _ in result.skipped])
    assert len(set(lines)) == len(lines)
    assert all(2 <= n <= physical_lines(data) for n in lines)
    assert all(isinstance(why, str) and why for _, why in result.skipped)
    ids = [e.id for e in result.examples]
    assert all(ids) and len(set(ids)) == len(ids)
    for example in result.examples:
        assert len(example.texts) == len(spec.text_columns)
        if not labeled:
            assert example.label is None
        elif spec.is_regression:
            assert spec.label_min <= example.label <= spec.label_max
        else:
            assert example.label in range(spec.num_labels)


# ---- strategies ---------------------------------------------------------------------------------------------------
def header_line(spec: TaskSpec, labeled: bool) -> list[str]:
    return ["", *wanted_columns(spec, labeled)]


@st.composite
def good_row(draw, spec: TaskSpec, labeled: bool, index: int) -> list[str]:
    sentence = st.lists(st.sampled_from(WORDS), min_size=0, max_size=6).map(" ".join)
    row = [str(index), draw(st.sampled_from(IDS) | st.text("0123456789abcdef", min_size=25, max_size=25))]
    row += [draw(sentence) for _ in spec.text_columns]
    if labeled:
        if spec.is_regression:
            row.append(draw(st.floats(spec.label_min, spec.label_max).map(lambda v: f"{v:.1f}")))
        else:
            row.append(draw(st.integers(0, spec.num_labels - 1).map(lambda v: f"{v}.0" if v < 2 else str(v))))
    return row


def insert(text: bytes, at: int, piece: bytes) -> bytes:
    at = at % (len(text) + 1)
    return text[:at] + piece + text[at:]


@st.composite
def hostile_line(draw, spec: TaskSpec, labeled: bool, index: int) -> bytes:
    """One data line: valid, or broken in one of many ways."""
    row = draw(good_row(spec, labeled, index))
    how = draw(st.sampled_from(["good", "good", "label", "truncated", "extra_tab", "missing_tab", "quote", "binary",
                                "long", "blank", "duplicate_id", "empty_id", "spaces", "quoted_field"]))
    if how == "label" and labeled:
        row[-1] = draw(st.sampled_from(LABELS) | st.text(max_size=6))
    elif how == "truncated":
        row = row[: draw(st.integers(0, len(row) - 1))]
    elif how == "duplicate_id":
        row[1] = IDS[0]
    elif how == "empty_id":
        row[1] = draw(st.sampled_from(["", "  "]))
    elif how == "spaces":
        row = [f" {field} " for field in row]
    elif how == "quoted_field":
        k = draw(st.integers(0, len(row) - 1))
        row[k] = '"' + row[k].replace('"', '""') + ' ""quoted"" \t tab\nnewline"'
    elif how == "long":
        row[2] = "very long " * draw(st.integers(13_500, 16_000))
    elif how == "blank":
        return b""
    line = "\t".join(row).encode("utf-8")
    if how == "extra_tab":
        line = insert(line, draw(st.integers(0, 10_000)), b"\t" * draw(st.integers(1, 3)))
    elif how == "missing_tab" and b"\t" in line:
        tabs = [i for i, b in enumerate(line) if b == 9]
        at = draw(st.sampled_from(tabs))
        line = line[:at] + line[at + 1:]
    elif how == "quote":
        for _ in range(draw(st.integers(1, 3))):
            line = insert(line, draw(st.integers(0, 10_000)), b'"')
    elif how == "binary":
        line = insert(line, draw(st.integers(0, 10_000)), draw(st.binary(min_size=1, max_size=8)))
    return line


@st.composite
def hostile_file(draw, spec: TaskSpec, labeled: bool) -> bytes:
    """A whole file: a (possibly broken) header, hostile lines, any line ends, maybe a BOM, maybe truncated."""
    shape = draw(st.sampled_from(["normal", "normal", "normal", "empty", "header_only", "shifted_header",
                                  "missing_column", "no_header"]))
    if shape == "empty":
        return draw(st.sampled_from([b"", BOM, b"\n", b"\r\n"]))
    header = header_line(spec, labeled)
    if shape == "shifted_header":
        header = ["0", "", *header[1:]]
    elif shape == "missing_column":
        del header[draw(st.integers(1, len(header) - 1))]
    lines = [] if shape == "no_header" else ["\t".join(header).encode()]
    if shape != "header_only":
        count = draw(st.integers(0, 8))
        lines += [draw(hostile_line(spec, labeled, i)) for i in range(count)]
    ending = draw(st.sampled_from(["\n", "\r\n", "mixed"]))
    if ending == "mixed":
        ends = [draw(st.sampled_from([b"\n", b"\r\n", b"\r"])) for _ in lines]
    else:
        ends = [ending.encode()] * len(lines)
    data = b"".join(line + end for line, end in zip(lines, ends, strict=True))
    if draw(st.booleans()) and data:
        data = data[: -len(ends[-1])]  # no line end after the last row
    if draw(st.integers(0, 9)) == 0:
        data = data[: draw(st.integers(0, len(data)))]  # cut anywhere, even inside a UTF-8 sequence
    if draw(st.integers(0, 4)) == 0:
        data = BOM + data
    return data


def spec_of(name: str) -> TaskSpec:
    return BUILTIN_TASKS[name]


# ---- the properties -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("task", "labeled"), READERS, ids=READER_IDS)
def test_hostile_files_load_with_matching_counts_or_fail_clearly(task, labeled, tmp_path_factory):
    path = tmp_path_factory.mktemp("hostile") / "data.csv"
    spec = spec_of(task)

    @SETTINGS
    @given(data=hostile_file(spec, labeled))
    def run(data: bytes) -> None:
        check_file(path, data, spec, labeled)

    run()


ALPHABET = st.sampled_from(list('\t\t\t"\r\n ab01.5-\ufeff\x00é') + ["\u2028", "\x85", "\x0c"])


@pytest.mark.parametrize(("task", "labeled"), READERS, ids=READER_IDS)
def test_arbitrary_text_after_a_valid_header(task, labeled, tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "data.csv"
    spec = spec_of(task)
    header = "\t".join(header_line(spec, labeled))

    @SETTINGS
    @given(body=st.text(ALPHABET, max_size=120), ending=st.sampled_from(["\n", "\r\n", "\r"]))
    def run(body: str, ending: str) -> None:
        check_file(path, (header + ending + body).encode("utf-8"), spec, labeled)

    run()


@pytest.mark.parametrize(("task", "labeled"), READERS, ids=READER_IDS)
def test_arbitrary_bytes(task, labeled, tmp_path_factory):
    path = tmp_path_factory.mktemp("bytes") / "data.csv"
    spec = spec_of(task)
    header = "\t".join(header_line(spec, labeled)).encode()

    @SETTINGS
    @given(prefix=st.sampled_from([b"", BOM, header + b"\n", BOM + header + b"\r\n"]), body=st.binary(max_size=200))
    def run(prefix: bytes, body: bytes) -> None:
        check_file(path, prefix + body, spec, labeled)

    run()


# ---- named cases (each one of the list, kept explicit so that a regression names its case) -------------
def sst_header() -> str:
    return "\tid\tsentence\tsentiment"


NAMED = {
    "truncated_row": f"{sst_header()}\n0\t{IDS[0]}\tgood\t1\n1\t{IDS[1]}\n",
    "extra_tab": f"{sst_header()}\n0\t{IDS[0]}\tgo\tod\t1\n1\t{IDS[1]}\tfine\t2\n",
    "missing_tab": f"{sst_header()}\n0\t{IDS[0]}good\t1\n1\t{IDS[1]}\tfine\t2\n",
    "stray_quote": f'{sst_header()}\n0\t{IDS[0]}\t"good\t1\n1\t{IDS[1]}\tfine\t2\n',
    "quote_inside": f'{sst_header()}\n0\t{IDS[0]}\tit "s good\t1\n1\t{IDS[1]}\tfine\t2\n',
    "doubled_quotes": f'{sst_header()}\n0\t{IDS[0]}\t"say ""hi"" now"\t1\n',
    "long_line": f"{sst_header()}\n0\t{IDS[0]}\t{'word ' * 100_000}\t3\n",
    "empty": "",
    "bom_only": "\ufeff",
    "header_only": f"{sst_header()}\n",
    "wrong_label_type": f"{sst_header()}\n0\t{IDS[0]}\tgood\tpositive\n1\t{IDS[1]}\tok\t2.5\n2\t{IDS[2]}\tok\t4\n",
    "label_out_of_range": f"{sst_header()}\n0\t{IDS[0]}\tgood\t5\n1\t{IDS[1]}\tok\t-1\n2\t{IDS[2]}\tok\t0\n",
    "duplicate_id": f"{sst_header()}\n0\t{IDS[0]}\tgood\t1\n1\t{IDS[0]}\tagain\t2\n",
    "crlf": f"{sst_header()}\r\n0\t{IDS[0]}\tgood\t1\r\n1\t{IDS[1]}\tok\t2\r\n",
    "bom": f"\ufeff{sst_header()}\n0\t{IDS[0]}\tgood\t1\n",
    "bom_crlf_no_final_newline": f"\ufeff{sst_header()}\r\n0\t{IDS[0]}\tgood\t1\r\n1\t{IDS[1]}\tok\t2",
    "nul_byte": f"{sst_header()}\n0\t{IDS[0]}\tgo\x00od\t1\n",
    "blank_lines": f"{sst_header()}\n\n0\t{IDS[0]}\tgood\t1\n\n",
    "missing_column": f"\tid\tsentence\n0\t{IDS[0]}\tgood\n",
}


@pytest.mark.parametrize("case", sorted(NAMED))
def test_named_hostile_case(case, tmp_path):
    check_file(tmp_path / f"{case}.csv", NAMED[case].encode("utf-8"), BUILTIN_TASKS["sst"], labeled=True)


@pytest.mark.parametrize(("bad", "line"), [(b"\xff", 3), (b"\xe2\x82", 3), (b"\xc0\xaf", 3)])
def test_binary_bytes_name_their_line(bad, line, tmp_path):
    path = tmp_path / "bin.csv"
    data = f"{sst_header()}\r\n0\t{IDS[0]}\tgood\t1\r\n".encode() + b"1\t" + IDS[1].encode() + b"\tb" + bad + b"\t2\n"
    check_file(path, BOM + data, BUILTIN_TASKS["sst"], labeled=True)
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}, line {line}: not valid UTF-8 text$"):
        read_task_file(path, BUILTIN_TASKS["sst"])
