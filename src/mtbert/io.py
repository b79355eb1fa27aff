"""Crash-safe file writing: write to a temporary name in the same folder, then rename into place.

A write that fails (a full disk, a quota, a file too large, a read-only folder) raises `WriteError`, one
sentence naming the path, and leaves the previous file or folder as it was; `space_error` is the one place that
recognises a full disk, whatever library reported it (an OSError, safetensors' error, torch's RuntimeError).
Files get the usual permissions (0666 and 0777 minus the umask), not the 0600 of `tempfile` or safetensors.
JSON is written strictly: a non-finite number (NaN, infinity) becomes `null`. A folder replaced by
`atomic_dir` is swapped in one step where the system can (Linux `renameat2(RENAME_EXCHANGE)`), else by two
renames whose gap the next write repairs (`recover_dir`).

Test hooks (environment variables, matched against the path written):

- `MTBERT_TEST_FAIL_WRITE=<substring>`: the write fails with ENOSPC (no space left on device);
- `MTBERT_TEST_PAUSE_WRITE=<substring>:<seconds>`: the write sleeps once the data is complete, before the
  rename, so that a test can kill the process inside that window.
"""

from __future__ import annotations

import ctypes
import errno
import glob
import hashlib
import json
import math
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mtbert.errors import MtbertError

FAIL_WRITE_ENV = "MTBERT_TEST_FAIL_WRITE"
PAUSE_WRITE_ENV = "MTBERT_TEST_PAUSE_WRITE"
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
_EDQUOT = getattr(errno, "EDQUOT", 122)
_SPACE_REASONS = {errno.ENOSPC: "no space left on device", _EDQUOT: "disk quota exceeded",
                  errno.EFBIG: "file too large for the file system"}
_SPACE_ERRNOS = set(_SPACE_REASONS)
# How libraries that do not raise OSError say it (safetensors: "... (os error 28)"; torch: only "file write failed")
_SPACE_TEXTS = {errno.ENOSPC: ("no space left on device", f"os error {errno.ENOSPC})"),
                _EDQUOT: ("disk quota exceeded", f"os error {_EDQUOT})"),
                errno.EFBIG: ("file too large", f"os error {errno.EFBIG})")}
_LOW_SPACE_BYTES = 1 << 20


class WriteError(MtbertError):
    """A file or folder could not be written; its previous version is intact."""

    def __init__(self, path: str | Path, reason: str, errno_: int | None = None) -> None:
        self.path, self.errno = Path(path), errno_
        hint = ("; free some space and run the command again (a training run: add --resume_from_checkpoint last)"
                if errno_ in _SPACE_ERRNOS else "")
        super().__init__(f"{path}: cannot be written ({reason}), its previous version is left as it was{hint}")


def space_error(err: BaseException) -> int | None:
    """ENOSPC, EDQUOT or EFBIG when `err` (or an error it was raised from) says the disk, the quota or the file
    system's file size is exhausted, whichever library raised it; else None."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in _SPACE_ERRNOS:
            return err.errno
        text = str(err).lower()
        for code, needles in _SPACE_TEXTS.items():
            if any(n in text for n in needles):
                return code
        err = err.__cause__ or err.__context__
    return None


def write_error(path: str | Path, err: BaseException, disk_full: bool = False) -> WriteError:
    """The WriteError for `err` raised while writing `path` (`disk_full`: the file system was found full)."""
    code = space_error(err)
    if code is None and disk_full:
        code = errno.ENOSPC
    if code is not None:
        return WriteError(path, _SPACE_REASONS[code], code)
    if isinstance(err, OSError):
        return WriteError(path, err.strerror or str(err), err.errno)
    text = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
    return WriteError(path, text)


def full_disk_error(err: BaseException) -> WriteError | None:
    """The WriteError sentence for a full disk, quota or file size met outside the atomic writers (a library's own
    write: a tracker, a lock file, a staging folder); None when `err` is not one of those."""
    code = space_error(err)
    if code is None:
        return None
    name = err.filename if isinstance(err, OSError) and err.filename else None
    return WriteError(name or "a file of this command", _SPACE_REASONS[code], code)


def finite_json(data: Any) -> Any:
    """`data` with every non-finite float (NaN, infinity) replaced by None, so that it is valid JSON (`null`)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite_json(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [finite_json(v) for v in data]
    if hasattr(data, "item") and callable(data.item) and getattr(data, "ndim", None) == 0:  # a numpy/torch scalar
        return finite_json(data.item())
    return data


def to_json(data: Any, indent: int | None = None) -> str:
    """Strict JSON text of `data`: a non-finite number is written as null, never as NaN or Infinity."""
    return json.dumps(finite_json(data), indent=indent, allow_nan=False)


def _test_fail(path: Path) -> None:
    needle = os.environ.get(FAIL_WRITE_ENV)
    if needle and needle in str(path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def _test_pause(path: Path) -> None:
    needle, _, seconds = os.environ.get(PAUSE_WRITE_ENV, "").rpartition(":")
    if needle and needle in str(path):
        time.sleep(float(seconds))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _disk_full(folder: Path) -> bool:
    """Whether the file system of `folder` has (almost) no space left for this user."""
    try:
        stats = os.statvfs(folder)
    except (OSError, AttributeError):
        return False
    return stats.f_bavail * stats.f_frsize < _LOW_SPACE_BYTES


def _tmp_prefix(name: str, kind: str) -> str:
    """Temporary names carry the writer's pid and host, so that leftovers of a dead writer can be told apart."""
    return f".{name}.{kind}-{_HOST}-{os.getpid()}-"


def _dead_writer(path: Path, name: str, kind: str) -> bool:
    """Whether `path` is a temporary of `name` left by a process of this host that is no longer running."""
    head = f".{name}.{kind}-{_HOST}-"
    if not path.name.startswith(head):
        return False
    pid = path.name[len(head):].split("-", 1)[0]
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write text so that a crash leaves either the old file or the new one, never a truncated file.

    Raises WriteError naming `path` when the write fails (the old file, if any, is untouched).
    """
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """`atomic_write_text` for bytes (a PNG, ...)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{glob.escape(path.name)}.tmp-*"):
            if _dead_writer(stale, path.name, "tmp"):
                stale.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path.name, "tmp"), dir=path.parent)
    except OSError as err:
        raise write_error(path, err) from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            _test_fail(path)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        _test_pause(path)
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise write_error(path, err) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, data: Any) -> None:
    """Write `data` as strict JSON (non-finite numbers as null), atomically."""
    atomic_write_text(path, to_json(data, indent=2) + "\n")


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one whole JSON line (a single write call, flushed and synced).

    A torn last line left by a crash is ended first, so that it cannot swallow this record. A failed write
    is cut off again (the file keeps its earlier lines) and raises WriteError.
    """
    path = Path(path)
    line = to_json(record) + "\n"
    try:
        with open(path, "ab+") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size:
                handle.seek(size - 1)
                if handle.read(1) != b"\n":
                    line = "\n" + line
            try:
                _test_fail(path)
                handle.write(line.encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
            except OSError:
                handle.truncate(size)
                raise
    except OSError as err:
        raise write_error(path, err) from None


def read_json(path: str | Path) -> dict[str, Any] | None:
    """A JSON file's object, or None when the file is missing, unreadable or holds no JSON object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSON-lines file's records (JSON objects), ignoring any other line, such as one torn by a crash."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_bytes().decode("utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def recover_dir(target: str | Path) -> None:
    """Repair what a process killed inside `atomic_dir` left: restore `target` when only its old copy is there,
    and remove the temporary folders of writers that are no longer running."""
    target = Path(target)
    if not target.parent.is_dir():
        return
    olds = sorted(target.parent.glob(f".{glob.escape(target.name)}.old-*"), key=lambda p: p.stat().st_mtime)
    for old in olds:
        if _dead_writer(old, target.name, "old"):
            if not target.exists():
                os.replace(old, target)
            else:
                shutil.rmtree(old, ignore_errors=True)
    for stale in target.parent.glob(f".{glob.escape(target.name)}.tmp-*"):
        if _dead_writer(stale, target.name, "tmp"):
            shutil.rmtree(stale, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    libc = _libc()
    if libc is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)):
        return False
    raise OSError(code, os.strerror(code), str(b))


_LIBC: list[Any] = []


def _libc() -> Any:
    if not _LIBC:
        found = None
        if sys.platform.startswith("linux"):
            try:
                lib = ctypes.CDLL(None, use_errno=True)
                if hasattr(lib, "renameat2"):
                    found = lib
                    found.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                                                ctypes.c_uint]
            except OSError:
                found = None
        _LIBC.append(found)
    return _LIBC[0]


def atomic_dir(target: str | Path, fill: Callable[[Path], None]) -> None:
    """Fill a temporary sibling folder, then swap it in for `target` (the old one is removed after).

    Every file is synced before the swap. A failed write (OSError, or any error while the disk is full)
    raises WriteError naming `target`, and `target` is left as it was.
    """
    target = Path(target)
    try:
        recover_dir(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(target.name, "tmp"), dir=target.parent))
        os.chmod(tmp, 0o777 & ~_umask())
    except OSError as err:
        raise write_error(target, err) from None
    try:
        fill(tmp)
        _test_fail(target)
        for file in tmp.rglob("*"):
            if file.is_file():
                os.chmod(file, 0o666 & ~_umask())  # safetensors and tempfile create files 0600
                with open(file, "rb") as handle:
                    os.fsync(handle.fileno())
            elif file.is_dir():
                os.chmod(file, 0o777 & ~_umask())
        _fsync_dir(tmp)
        _test_pause(target)
        if not target.exists():
            os.replace(tmp, target)
        elif _exchange(tmp, target):
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old folder
        else:
            old = target.parent / f"{_tmp_prefix(target.name, 'old')}0"
            os.replace(target, old)
            try:
                os.replace(tmp, target)
            except BaseException:
                os.replace(old, target)
                raise
            shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(target.parent)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_error(target, err) from None
    except Exception as err:
        # look at the disk before the temporary folder is removed: removing it frees the space again
        full = not isinstance(err, MtbertError) and (space_error(err) is not None or _disk_full(target.parent))
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            raise write_error(target, err, disk_full=True) from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
