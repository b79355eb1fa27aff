"""One run per folder: a lock file `RunDir(root).lock` held by the process that trains into the folder.

The holder keeps an exclusive `flock` on the file for as long as it runs and writes its pid and host in it.
The kernel drops the `flock` when the process ends in any way (`kill -9` included), so a lock file left by
a dead process does not block: the next run takes it over. Where `flock` is not supported, a lock of this
host whose pid is no longer running counts as dead. With several ranks only rank 0 holds the lock; the
others learn of a refusal from it (`Ranks.main_only`).

```python
with RunLock(run.root, ranks):   # refuses in one sentence when a live process holds the folder
    train(...)
```
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from mtbert.errors import MtbertError
from mtbert.runs.layout import RunDir

try:
    import fcntl
except ImportError:  # not on Windows
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from mtbert.distributed import Ranks

logger = logging.getLogger(__name__)


class RunLock:
    """The lock of a run folder, taken by `acquire()` (or `with`) and released by `release()` (or the end of it)."""

    def __init__(self, root: str | Path, ranks: Ranks | None = None) -> None:
        """`ranks`: the run's processes (None: one process); only rank 0 takes the lock."""
        self.path = RunDir(root).lock
        self.ranks = ranks
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        """Take the lock (rank 0 only); raise MtbertError naming the live holder's pid when another run holds it."""
        if self.ranks is None:
            self._acquire()
        else:
            self.ranks.main_only(self._acquire)
        return self

    def release(self) -> None:
        """Remove the lock file and drop the lock (nothing when this process does not hold it)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if _same_file(fd, self.path):
                self.path.unlink(missing_ok=True)
        except OSError:
            pass
        finally:
            os.close(fd)  # drops the flock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.release()

    # ---- rank 0 --------------------------------------------------------------------------------
    def _acquire(self) -> None:
        if self._fd is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise MtbertError(f"{self.path.parent}: cannot create the run folder ({err.strerror or err})") from None
        for _ in range(20):  # another process may remove or replace the file between our steps: try again
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as err:
                raise MtbertError(f"{self.path}: cannot create the run's lock file ({err.strerror or err})") from None
            try:
                locked = _flock(fd)
                holder = _read_holder(fd)
                if locked is False or (locked is None and _alive(holder)):
                    raise MtbertError(_refusal(self.path, holder))
                if not _same_file(fd, self.path):
                    continue  # the holder released it (and removed the file) while we waited: take the new file
                if holder:
                    logger.info("%s: taking over the lock of process %s on %s, which is no longer running",
                                self.path, holder.get("pid"), holder.get("host"))
                _write_holder(fd)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            return
        raise MtbertError(f"{self.path}: cannot take the run's lock (it keeps changing); is another run starting?")


def _flock(fd: int) -> bool | None:
    """True when we hold the exclusive flock, False when a live process does, None where flock is unsupported."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        return None  # ENOLCK, EOPNOTSUPP: a file system without locks


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, 4096)
        holder = json.loads(data.decode("utf-8")) if data.strip() else {}
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _write_holder(fd: int) -> None:
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(record) + "\n").encode("utf-8"))


def _same_file(fd: int, path: Path) -> bool:
    try:
        mine, now = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (now.st_dev, now.st_ino)


def _alive(holder: dict[str, Any]) -> bool:
    """Without flock: a holder of another host counts as alive; one of this host while its pid runs."""
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if holder.get("host") != socket.gethostname():
        return True
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _refusal(path: Path, holder: dict[str, Any]) -> str:
    pid, host = holder.get("pid", "unknown"), holder.get("host", "an unknown host")
    folder = path.parent
    return (f"{folder}: another run (process {pid} on {host}) is training into this folder; wait for it to "
            f"finish, stop it (kill {pid}), or choose another output_dir")
