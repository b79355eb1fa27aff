"""The machine a benchmark ran on, recorded with its figures."""

from __future__ import annotations

import os
import platform
from datetime import date
from pathlib import Path
from typing import Any

import torch


def machine() -> dict[str, Any]:
    """Date, CPU architecture, model and count, the vector instructions torch's CPU kernels use (results differ in
    the last digits between AVX2 and AVX512 machines), torch threads and version, and the accelerator."""
    return {"date": date.today().isoformat(), "machine": platform.machine(), "cpu_model": cpu_model(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}


def cpu_model() -> str | None:
    """The CPU's model name (Linux: /proc/cpuinfo), or the platform's processor string elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() or None
    except OSError:
        pass
    return platform.processor() or None


def cpu_fields() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty elsewhere)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.strip():
                break
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def theoretical_fp32_peak(cores: int | None = None, fields: dict[str, str] | None = None) -> dict[str, Any] | None:
    """The CPU's theoretical fp32 peak: cores x clock x FLOPs per cycle per core, with how each was derived.

    FLOPs per cycle = fp32 lanes of the vector datapath (its width / 32 bits) x 2 (a fused multiply-add is two
    FLOPs) x 2 FMA units (what current x86 server cores have). The datapath is 512 bits with AVX-512, except on
    AMD Zen 4 (family 25 with AVX-512), which runs 512-bit instructions on 256-bit units; 256 bits with AVX2 and
    FMA; else 128 bits. The clock is the highest cpufreq allows, else /proc/cpuinfo's `cpu MHz` (the base clock
    in a VM; turbo is not counted). `cores`: the threads the benchmark runs (default torch's), one core each.
    None where /proc/cpuinfo is missing (not Linux).
    """
    fields = cpu_fields() if fields is None else fields
    if not fields:
        return None
    flags = set(fields.get("flags", "").split())
    zen4 = fields.get("vendor_id") == "AuthenticAMD" and fields.get("cpu family") == "25"
    if "avx512f" in flags:
        width, why = (256, "AVX-512 on Zen 4's 256-bit units") if zen4 else (512, "AVX-512")
    elif {"avx2", "fma"} <= flags:
        width, why = 256, "AVX2 with FMA"
    else:
        width, why = 128, "SSE"
    fma_units = 2
    per_cycle = width // 32 * 2 * fma_units
    ghz, clock_source = None, None
    try:
        khz = int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text().strip())
        ghz, clock_source = khz / 1e6, "cpufreq cpuinfo_max_freq"
    except (OSError, ValueError):
        if fields.get("cpu MHz"):
            ghz, clock_source = float(fields["cpu MHz"]) / 1000, "/proc/cpuinfo cpu MHz"
    if ghz is None:
        return None
    cores = cores or torch.get_num_threads()
    return {"gflops_per_second": round(cores * ghz * per_cycle, 1), "cores": cores, "ghz": round(ghz, 3),
            "flops_per_cycle_per_core": per_cycle,
            "derivation": f"{cores} cores x {ghz:.3f} GHz ({clock_source}) x {per_cycle} FLOPs/cycle ({why}: "
                          f"{width}-bit datapath, {width // 32} fp32 lanes x 2 for FMA x {fma_units} FMA units)"}
