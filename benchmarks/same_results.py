"""Train a fixed set of short runs and compare two such sets: the check that a refactoring changes no result.

    # on the code before the change (a clone at the old commit) and after it, with the same data:
    PYTHONPATH=/tmp/old/src python benchmarks/same_results.py run /tmp/before
    PYTHONPATH=src python benchmarks/same_results.py run /tmp/after
    python benchmarks/same_results.py compare /tmp/before /tmp/after

`run` trains each run below with the `mtbert` found on PYTHONPATH (the 2-process run under torchrun, gloo);
`compare` reads each run's `results.json` and every saved tensor (safetensors: `best/`, two-step's
`tasks/<task>/best/` and `stage1/`) in both folders and prints the largest absolute difference per run; it exits
1 when one exceeds the tolerance (1e-6) or a file or key differs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file

# three steps; the configs log every 4th and the last step, so `sum` runs steps 1-2 without the per-task buffer
SHORT = ["--max_steps", "3", "--max_eval_samples", "64", "--max_predict_samples", "32"]
RUNS: dict[str, tuple[int, list[str]]] = {  # name: (processes, arguments after `mtbert train`)
    "smoke": (1, ["configs/smoke.yaml", *SHORT]),
    "two-step": (1, ["configs/smoke-two-step.yaml", *SHORT, "--two_step.max_steps", "2"]),
    "pcgrad-weighted": (1, ["configs/smoke.yaml", *SHORT, "--method", "pcgrad", "--task_ratio", "1:2:1",
                            "--sample_weighting", "true"]),
    "famo": (1, ["configs/smoke.yaml", *SHORT, "--method", "famo"]),
    "per-layer": (1, ["configs/smoke.yaml", *SHORT, "--method", "pcgrad", "--surgery_scope", "per-layer"]),
    "accumulation": (1, ["configs/smoke.yaml", *SHORT, "--method", "pcgrad", "--gradient_accumulation_steps", "2"]),
    "torchrun-2": (2, ["configs/smoke.yaml", *SHORT, "--method", "pcgrad"]),
}
TOLERANCE = 1e-6


def run(out: Path, only: list[str]) -> None:
    """Train every run (or those named in `only`) into out/<name>."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name, (processes, args) in RUNS.items():
        if only and name not in only:
            continue
        launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
        command = [sys.executable, *(launcher if processes > 1 else []), "-m", "mtbert", "train", *args,
                   "--output_dir", str(out / name), "--overwrite_output_dir"]
        print(name, flush=True)
        subprocess.run(command, check=True, env=env)


def _numbers(value: object, where: str) -> dict[str, float | str]:
    """Every leaf of a JSON value by its path (numbers as floats, anything else as its text)."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _numbers(item, f"{where}.{key}").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in _numbers(item, f"{where}[{i}]").items()}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {where: float(value)}
    return {where: str(value)}


# results.json keys that measure time, not what was computed
TIMED = ("runtime", "per_second", "seconds", "wall")


def compare_run(a: Path, b: Path) -> tuple[float, list[str]]:
    """The largest absolute difference between two runs' results.json and saved tensors, and what differs."""
    problems: list[str] = []
    largest = 0.0
    ra = _numbers(json.loads((a / "results.json").read_text()), "results")
    rb = _numbers(json.loads((b / "results.json").read_text()), "results")
    if ra.keys() != rb.keys():
        problems.append(f"results.json keys differ: {sorted(ra.keys() ^ rb.keys())}")
    for key in ra.keys() & rb.keys():
        if any(word in key for word in TIMED):
            continue
        x, y = ra[key], rb[key]
        if isinstance(x, float) and isinstance(y, float):
            largest = max(largest, abs(x - y))
        elif x != y and "output_dir" not in key and "/" not in str(x):
            problems.append(f"{key}: {x!r} != {y!r}")
    files_a = sorted(p.relative_to(a) for p in a.rglob("*.safetensors"))  # best/, two-step's tasks/<t>/best/, ...
    files_b = sorted(p.relative_to(b) for p in b.rglob("*.safetensors"))
    if files_a != files_b or not files_a:
        problems.append(f"the tensor files differ or there are none: {files_a} != {files_b}")
    for rel in files_a:
        if rel not in files_b:
            continue
        ta, tb = load_file(str(a / rel)), load_file(str(b / rel))
        if ta.keys() != tb.keys():
            problems.append(f"{rel}: tensor names differ")
        for key in ta.keys() & tb.keys():
            largest = max(largest, (ta[key].double() - tb[key].double()).abs().max().item() if ta[key].numel() else 0.0)
    return largest, problems


def compare(a: Path, b: Path) -> int:
    """Print the largest difference per run; 1 when any run differs beyond the tolerance."""
    failed = False
    for name in RUNS:
        if not (a / name).is_dir() or not (b / name).is_dir():
            print(f"{name}: missing in one folder")
            failed = True
            continue
        largest, problems = compare_run(a / name, b / name)
        bad = largest > TOLERANCE or problems
        failed |= bool(bad)
        print(f"{name}: largest difference {largest:.3g}{' FAIL' if bad else ''}")
        for problem in problems:
            print(f"  {problem}")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="train the runs into a folder")
    p_run.add_argument("out", type=Path)
    p_run.add_argument("--only", nargs="*", default=[], choices=list(RUNS))
    p_cmp = sub.add_parser("compare", help="compare two folders of runs")
    p_cmp.add_argument("a", type=Path)
    p_cmp.add_argument("b", type=Path)
    args = parser.parse_args()
    if args.command == "run":
        run(args.out, args.only)
        return 0
    return compare(args.a, args.b)


if __name__ == "__main__":
    sys.exit(main())
