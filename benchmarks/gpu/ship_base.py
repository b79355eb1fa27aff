"""Ship all-mpnet-base-v2 to a GPU machine that reaches no network, in carries of at most 64 MiB.

`pack` (here) writes `.gpu-base/` (git-ignored): folders `.gpu-base/carry-1` ... `carry-K` of at most 62 MiB
each, every one holding a safetensors shard of the weights rounded to fp16 (219 MB in all, four carries; fp32
would take seven), the first also the model folder's other files (config, tokenizer), the data and the wheels of `.gpu/`
(benchmarks/gpu/prepare.sh, run first) and `checksums.json` (the SHA-256 of every shipped file). Each carry
folder goes in its own `run` call, back to back (the machine keeps what earlier calls carried while it stays
warm); the last call runs benchmarks/gpu/run_base_table.sh, which unpacks and trains.

`unpack DIR` (there) checks every shipped file against checksums.json, refuses a missing or changed one, and
writes DIR: the model folder's other files and `model.safetensors` in fp32 (the fp16 values widened).

    python benchmarks/gpu/ship_base.py pack [--model DIR]   # default: prepare_mpnet.py's folder
    python benchmarks/gpu/ship_base.py unpack /tmp/mpnet      # on the GPU machine, from the repository root
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "base"))
from prepare_mpnet import default_target, sha256_of  # noqa: E402  (benchmarks/base, beside this folder)

ROOT = Path(".gpu-base")
CARRY_BYTES = 62 << 20  # a run call carries at most 64 MiB in all
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".h5", ".msgpack", ".onnx")  # the fp16 shards replace them
CHECKSUMS = "checksums.json"


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def pack(model: Path) -> None:
    from safetensors.torch import load_file, save_file

    common = Path(".gpu")
    if not (common / "data").is_dir() or not (common / "whl").is_dir():
        sys.exit("ship_base.py: .gpu/data and .gpu/whl are missing; run benchmarks/gpu/prepare.sh first")
    if not (model / "config.json").is_file() or not (model / "model.safetensors").is_file():
        sys.exit(f"ship_base.py: {model} lacks config.json or model.safetensors")
    shutil.rmtree(ROOT, ignore_errors=True)
    first = ROOT / "carry-1"
    (first / "model").mkdir(parents=True)
    for path in sorted(model.iterdir()):  # config, tokenizer and the rest of the top level, but no weights
        if path.is_file() and path.suffix not in WEIGHT_SUFFIXES:
            shutil.copy2(path, first / "model" / path.name)
    shutil.copytree(common / "data", first / "data")
    shutil.copytree(common / "whl", first / "whl")
    carries, shard, size = [first], {}, 0
    room = CARRY_BYTES - folder_bytes(first)
    for name, tensor in load_file(str(model / "model.safetensors")).items():
        tensor = (tensor.half() if tensor.is_floating_point() else tensor).contiguous()
        nbytes = tensor.numel() * tensor.element_size()
        if shard and size + nbytes > room:  # this carry is full: its one shard is written, the next carry begins
            save_file(shard, str(carries[-1] / f"model16-{len(carries):05d}.safetensors"))
            carries.append(ROOT / f"carry-{len(carries) + 1}")
            carries[-1].mkdir()
            shard, size, room = {}, 0, CARRY_BYTES
        shard[name] = tensor
        size += nbytes
    save_file(shard, str(carries[-1] / f"model16-{len(carries):05d}.safetensors"))
    files = sorted(p for p in ROOT.rglob("*") if p.is_file())
    checksums = {str(p.relative_to(ROOT)): sha256_of(p) for p in files}
    (first / CHECKSUMS).write_text(json.dumps(checksums, indent=1) + "\n")
    for carry in carries:
        size = folder_bytes(carry)
        if size > 64 << 20:
            sys.exit(f"ship_base.py: {carry} holds {size / 2**20:.1f} MiB, over the 64 MiB a call carries")
        print(f"{carry}: {size / 2**20:.1f} MiB")


def unpack(target: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    listed = ROOT / "carry-1" / CHECKSUMS
    if not listed.is_file():
        sys.exit(f"ship_base.py: {listed} has not arrived")
    checksums = json.loads(listed.read_text())
    for name, expected in checksums.items():
        path = ROOT / name
        if not path.is_file():
            sys.exit(f"ship_base.py: {path} has not arrived (was its carry folder sent?)")
        if sha256_of(path) != expected:
            sys.exit(f"ship_base.py: {path} differs from the file that was sent (SHA-256 mismatch)")
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted((ROOT / "carry-1" / "model").iterdir()):
        shutil.copy2(path, target / path.name)
    weights: dict[str, torch.Tensor] = {}
    for name in sorted(n for n in checksums if Path(n).name.startswith("model16-")):
        weights.update(load_file(str(ROOT / name)))
    save_file({k: v.float() if v.is_floating_point() else v for k, v in weights.items()},
              str(target / "model.safetensors"))
    print(f"{len(checksums)} files verified; {len(weights)} tensors widened to fp32 in {target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    packing = sub.add_parser("pack")
    packing.add_argument("--model", type=Path, default=None)
    unpacking = sub.add_parser("unpack")
    unpacking.add_argument("target", type=Path)
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.model or default_target())
    else:
        unpack(args.target)


if __name__ == "__main__":
    main()
