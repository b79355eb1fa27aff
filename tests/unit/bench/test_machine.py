"""The CPU's theoretical fp32 peak: cores x clock x FLOPs per cycle from the vector width, on given cpuinfo."""

from __future__ import annotations

from mtbert.bench.machine import theoretical_fp32_peak


def _fields(flags: str, vendor: str = "GenuineIntel", family: str = "6", mhz: str = "2000.000") -> dict[str, str]:
    return {"vendor_id": vendor, "cpu family": family, "cpu MHz": mhz, "flags": f"fpu sse sse2 {flags}"}


def test_flops_per_cycle_follow_the_vector_width_and_two_fma_units(monkeypatch):
    from pathlib import Path

    real = Path.read_text

    def no_cpufreq(self, *args, **kwargs):
        if "cpufreq" in str(self):
            raise OSError("no cpufreq")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", no_cpufreq)
    avx512 = theoretical_fp32_peak(4, _fields("avx avx2 fma avx512f"))
    assert avx512["flops_per_cycle_per_core"] == 64 and avx512["gflops_per_second"] == 4 * 2.0 * 64
    zen4 = theoretical_fp32_peak(2, _fields("avx avx2 fma avx512f", "AuthenticAMD", "25", "2596.144"))
    assert zen4["flops_per_cycle_per_core"] == 32 and zen4["gflops_per_second"] == 166.2
    assert "Zen 4" in zen4["derivation"] and "2 cores x 2.596 GHz" in zen4["derivation"]
    assert theoretical_fp32_peak(1, _fields("avx avx2 fma"))["flops_per_cycle_per_core"] == 32
    assert theoretical_fp32_peak(1, _fields(""))["flops_per_cycle_per_core"] == 16
    assert theoretical_fp32_peak(1, {}) is None
