"""bench/peak.py: the peak resident memory of the measured part of a benchmark, after the data's loading."""

from __future__ import annotations

import pytest
import torch

from mtbert.bench.peak import peak_mb, start_peak


def test_the_peak_is_reset_after_loading_and_then_follows_the_steps():
    loading = torch.ones(64 * 2**20 // 4 * 3)  # 192 MB held, as loading the data holds its rows
    del loading
    start = start_peak()
    if not start["reset"]:
        pytest.skip("this system's kernel peak cannot be reset (/proc/self/clear_refs)")
    assert peak_mb() < start["resident_mb"] + 150  # the 192 MB of "loading" are not in the peak
    step = torch.ones(64 * 2**20 // 4 * 4)  # 256 MB held by a "step"
    assert peak_mb() >= start["resident_mb"] + 240
    del step
