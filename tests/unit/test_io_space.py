"""Tests of mtbert.io's one place that recognises a full disk, and of its strict JSON."""

from __future__ import annotations

import errno
import json
import math

import pytest
from safetensors import SafetensorError

from mtbert import io
from mtbert.io import WriteError, atomic_dir, atomic_write_json, full_disk_error, space_error, to_json


@pytest.mark.parametrize(("err", "code"), [
    (OSError(errno.ENOSPC, "No space left on device"), errno.ENOSPC),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), errno.EDQUOT),
    (OSError(errno.EFBIG, "File too large"), errno.EFBIG),
    (SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: \"No space left "
                     "on device\" })"), errno.ENOSPC),
    (RuntimeError("Error while writing (os error 28)"), errno.ENOSPC),
    (OSError(errno.EACCES, "Permission denied"), None),
    (RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"), None),
])
def test_space_error_knows_every_library_s_way_of_saying_it(err, code):
    assert space_error(err) == code


def test_a_full_disk_is_found_through_the_error_chain():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("saving failed") from inner
    except RuntimeError as outer:
        assert space_error(outer) == errno.ENOSPC
        assert str(full_disk_error(outer)) == ("a file of this command: cannot be written (no space left on device), "
                                               "its previous version is left as it was; free some space and run the "
                                               "command again (a training run: add --resume_from_checkpoint last)")
    assert full_disk_error(ValueError("x")) is None


def test_the_disk_is_looked_at_before_the_temporary_folder_is_removed(tmp_path, monkeypatch):
    """A library that says only "write failed" on a full disk: the check must see the disk while the temporary
    folder still fills it (removing it first frees the space, which hid the cause)."""
    seen = []

    def full_while_tmp_exists(folder):
        left = [p for p in folder.iterdir() if p.name.startswith(".ckpt.tmp-")]
        seen.append(bool(left))
        return bool(left)

    def torch_style(folder):
        (folder / "big").write_bytes(b"x" * 10)
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(io, "_disk_full", full_while_tmp_exists)
    with pytest.raises(WriteError, match=r"ckpt: cannot be written \(no space left on device\)"):
        atomic_dir(tmp_path / "ckpt", torch_style)
    assert seen == [True] and list(tmp_path.iterdir()) == []


def test_efbig_is_a_file_too_large(tmp_path):
    def fails(folder):
        raise OSError(errno.EFBIG, "File too large")

    with pytest.raises(WriteError, match=r"cannot be written \(file too large for the file system\).*free some space"):
        atomic_dir(tmp_path / "x", fails)


def test_json_is_strict_undefined_metrics_are_null(tmp_path):
    path = tmp_path / "results.json"
    atomic_write_json(path, {"overall": math.nan, "sts_corr": -math.inf, "ci": [0.1, math.nan], "n": 3})
    assert json.loads(path.read_text(), parse_constant=pytest.fail) == {"overall": None, "sts_corr": None,
                                                                         "ci": [0.1, None], "n": 3}
    assert to_json({"x": math.inf}) == '{"x": null}'
