"""Paired Δ of two run folders' dev predictions (the second is the reference): python paired.py RUN REF."""

from __future__ import annotations

import sys
from pathlib import Path

from mtbert.evaluation.finished import load_run_config
from mtbert.evaluation.metrics import compute_metrics
from mtbert.evaluation.paired import paired_difference, run_dev_results

run, ref = (Path(a) for a in sys.argv[1:3])
a, b = (run_dev_results(p, load_run_config(p)) for p in (run, ref))
print({k: round(v, 4) for k, v in compute_metrics(a).items()}, {k: round(v, 4) for k, v in compute_metrics(b).items()})
difference, low, high = paired_difference(a, b)
print(f"delta {difference:+.4f} ({low:+.4f}, {high:+.4f})")
