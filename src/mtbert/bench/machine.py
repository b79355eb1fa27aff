"""The machine a benchmark ran on, recorded with its figures."""

from __future__ import annotations

import os
import platform
from datetime import date
from typing import Any

import torch


def machine() -> dict[str, Any]:
    """Date, CPU architecture and count, torch threads and version, and the accelerator."""
    return {"date": date.today().isoformat(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}
