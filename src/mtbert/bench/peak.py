"""Peak resident memory of the part of a benchmark that is measured, not of the data loading before it.

Loading and tokenizing the training files takes more memory than a training step of a small model, so a process's
lifetime peak (`ru_maxrss`) hides what a step holds: every method would show the loading's peak. `start_peak`
returns the heap that loading freed to the system (glibc's `malloc_trim`) and resets the kernel's peak of this
process (Linux: `/proc/self/clear_refs`), so that `peak_mb` then reads the peak since that point.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import re
import resource
from pathlib import Path

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_mb(field: str) -> float | None:
    """A memory line of /proc/self/status in MB (None where there is none: not Linux)."""
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) / 1024 if match else None


def start_peak() -> dict[str, float | bool]:
    """Free what can be freed, reset the process's peak, and say from where `peak_mb` measures: `resident_mb` (the
    memory held now) and `reset` (False: the kernel's peak could not be reset, so the peak is the lifetime's)."""
    gc.collect()
    libc = ctypes.util.find_library("c")
    if libc:
        try:
            ctypes.CDLL(libc).malloc_trim(0)
        except (OSError, AttributeError):
            pass
    try:
        CLEAR_REFS.write_text("5")
        reset = True
    except OSError:
        reset = False
    return {"resident_mb": round(_status_mb("VmRSS") or 0.0, 1), "reset": reset}


def peak_mb() -> float:
    """The peak resident memory (MB) since the last `start_peak` (the lifetime's where it could not reset)."""
    peak = _status_mb("VmHWM")
    return round(peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
