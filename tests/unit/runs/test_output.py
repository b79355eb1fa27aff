"""Tests of mtbert.runs.output: the one rule for the folders commands write into."""

from __future__ import annotations

import re

import pytest

from mtbert.errors import MtbertError
from mtbert.runs.output import claim_output_dir, inside


def test_a_new_or_empty_folder_is_claimed(tmp_path):
    claim_output_dir(tmp_path / "new", "ensemble", "--output_dir", lambda folder: False)
    (tmp_path / "empty").mkdir()
    claim_output_dir(tmp_path / "empty", "ensemble", "--output_dir", lambda folder: False)
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / ".mtbert.lock").write_text("")  # a run's lock alone does not make a folder non-empty
    claim_output_dir(tmp_path / "locked", "report", "--output_dir", lambda folder: False)


def test_a_folder_of_someone_else_is_refused_and_the_commands_own_is_claimed(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "results.json").write_text("{}")
    message = (f"--output_dir: {folder} is not empty and is not an earlier output of mtbert ensemble; give a new or "
               "empty folder (mtbert ensemble replaces no files it did not write)")
    with pytest.raises(MtbertError, match=f"^{re.escape(message)}$"):
        claim_output_dir(folder, "ensemble", "--output_dir", lambda f: False)
    claim_output_dir(folder, "ensemble", "--output_dir", lambda f: f == folder)
    with pytest.raises(MtbertError, match=r"^--output: .* is not empty; give a new or empty folder \(mtbert export"):
        claim_output_dir(folder, "export", "--output")  # a command that never updates a folder
    (tmp_path / "file").write_text("x")
    with pytest.raises(MtbertError, match=r"^--output: .*file is a file; give a new or empty folder$"):
        claim_output_dir(tmp_path / "file", "export", "--output")


def test_inside(tmp_path):
    assert inside(tmp_path / "a" / "b", [tmp_path / "x", tmp_path / "a"]) == tmp_path / "a"
    assert inside(tmp_path / "a", [tmp_path / "a" / "b"]) is None
