"""`mtbert bench step | scaling | throughput | quality`: run one benchmark and print (and optionally save) its JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mtbert.errors import MtbertError
from mtbert.io import atomic_write_json


def main(args: argparse.Namespace) -> int:
    """Run the benchmark `args.bench` names; print its results as JSON (and write them to `--json`)."""
    if args.bench == "step" and getattr(args, "config", None):
        from mtbert.bench.group_step import bench_group_step
        from mtbert.presets import config_path

        results = bench_group_step(config_path(args.config), args.methods.split(","), args.steps, args.warmup,
                                   args.batch_size)
    elif args.bench == "step":
        from mtbert.bench.step import bench_step

        results = bench_step(args.methods.split(","), args.steps, args.warmup, args.batch_size or 16,
                             args.trainable.split(","), memory=getattr(args, "memory", False))
    elif args.bench == "scaling":
        from mtbert.bench.scaling import bench_scaling

        try:
            counts = [int(t) for t in args.tasks.split(",")]
        except ValueError:
            raise MtbertError(f"--tasks: '{args.tasks}' is not a comma-separated list of numbers") from None
        extra = tuple(r for r in (getattr(args, "extra_rows", None) or "").split(",") if r)
        skip = tuple(r for r in (getattr(args, "skip_rows", None) or "").split(",") if r)
        results = bench_scaling(counts, args.steps, args.warmup, args.samples_per_step, extra_rows=extra,
                                skip_rows=skip)
    elif args.bench == "throughput":
        from mtbert.bench.throughput import bench_throughput

        results = bench_throughput(args.examples)
    else:
        from mtbert.bench.quality import bench_quality
        from mtbert.presets import table_dir

        results = bench_quality(Path(args.output_dir), args.rows.split(",") if args.rows else None, args.budget,
                                table_dir(args.configs), getattr(args, "backbone", None),
                                Path(args.from_table) if getattr(args, "from_table", None) is not None else None)
    print(json.dumps(results, indent=2))
    if getattr(args, "json", None):
        atomic_write_json(args.json, results)
    return 0
