"""benchmarks/gpu/ship_base.py: carries under the limit, fp16 weights checked and widened on arrival."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "gpu" / "ship_base.py"


@pytest.fixture()
def ship(monkeypatch, tmp_path):
    """The script as a module, run in a folder that has `.gpu/data` and `.gpu/whl`, carries of 40 KiB."""
    spec = importlib.util.spec_from_file_location("ship_base", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.chdir(tmp_path)
    for folder, name in (("data", "sst-train.csv"), ("whl", "torchjd-0.18.0-py3-none-any.whl")):
        (tmp_path / ".gpu" / folder).mkdir(parents=True)
        (tmp_path / ".gpu" / folder / name).write_bytes(b"x" * 1000)
    monkeypatch.setattr(module, "CARRY_BYTES", 40 << 10)
    return module


def test_pack_then_unpack_gives_the_weights_rounded_to_fp16(ship, tiny_model_dir, tmp_path, capsys):
    ship.pack(tiny_model_dir)
    carries = sorted((tmp_path / ".gpu-base").iterdir())
    assert len(carries) >= 3  # about 2 MB of fp16 weights in carries of 40 KiB
    for carry in carries:  # each under the limit, unless one tensor alone is larger (the word embeddings here)
        (shard,) = carry.glob("model16-*.safetensors")
        assert ship.folder_bytes(carry) <= 40 << 10 or len(load_file(str(shard))) == 1
    ship.unpack(tmp_path / "arrived")
    original = load_file(str(tiny_model_dir / "model.safetensors"))
    arrived = load_file(str(tmp_path / "arrived" / "model.safetensors"))
    assert arrived.keys() == original.keys()
    for name, tensor in original.items():
        expected = tensor.half().float() if tensor.is_floating_point() else tensor
        assert torch.equal(arrived[name], expected), name
    assert (tmp_path / "arrived" / "config.json").read_bytes() == (tiny_model_dir / "config.json").read_bytes()
    assert "verified" in capsys.readouterr().out


def test_a_changed_or_missing_file_is_refused(ship, tiny_model_dir, tmp_path):
    ship.pack(tiny_model_dir)
    shard = sorted((tmp_path / ".gpu-base").glob("carry-*/model16-*.safetensors"))[-1]
    shard.write_bytes(shard.read_bytes()[:-1] + b"!")
    with pytest.raises(SystemExit, match="differs from the file that was sent"):
        ship.unpack(tmp_path / "arrived")
    shard.unlink()
    with pytest.raises(SystemExit, match="has not arrived"):
        ship.unpack(tmp_path / "arrived")
    assert not (tmp_path / "arrived" / "model.safetensors").exists()
