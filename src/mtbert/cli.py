"""The `mtbert` command: train, evaluate, predict, ensemble, export, report, bench."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from mtbert.distribution import version
from mtbert.errors import MtbertError
from mtbert.io import to_json


def _train_parser(sub) -> None:
    import dataclasses

    from mtbert.config import TrainConfig

    lines = ["config keys (set in the YAML file or as --key value; dots nest: --two_step.learning_rate 3e-6):"]
    for f in dataclasses.fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        lines.append(f"  --{f.name:<30} {f.metadata.get('help', '')} [default: {default}]")
    p = sub.add_parser("train", help="train a run from a YAML config", epilog="\n".join(lines),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="YAML config file, or a preset's name (quick, smoke, paper/pcgrad, ...: "
                   "`mtbert presets`)")
    p.add_argument("--resume_from_checkpoint", metavar="PATH|last",
                   help="continue from a checkpoint folder, or from the newest one in output_dir")
    p.add_argument("--overwrite_output_dir", action="store_true", help="train into a non-empty output_dir")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtbert", description="Fine-tune one shared encoder on several tasks.")
    parser.add_argument("--version", action="version", version=f"mtbert {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)

    p = sub.add_parser("evaluate", help="dev metrics of a run's best model on labeled files")
    p.add_argument("run_dir", help="a run folder (plain or two-step), or an ONNX export folder (mtbert export "
                   "--format onnx: run with onnxruntime)")
    p.add_argument("--json", metavar="OUT", help="also write the metrics to this JSON file")
    p.add_argument("--task_file", nargs=2, action="append", metavar=("TASK", "FILE"), default=[],
                   help="evaluate TASK on FILE instead of the config's dev file (repeatable)")
    p.add_argument("--sst", metavar="FILE", help="labeled file for task sst")
    p.add_argument("--para", metavar="FILE", help="labeled file for task para")
    p.add_argument("--sts", metavar="FILE", help="labeled file for task sts")
    p.add_argument("--quantize", choices=("int8",), help="predict with dynamically int8-quantized linear layers (CPU)")

    p = sub.add_parser("predict", help="predictions of a run's model for one task, or for every task of an "
                       "input_group")
    p.add_argument("run_dir", help="a run folder (plain or two-step), or an ONNX export folder (mtbert export "
                   "--format onnx: run with onnxruntime)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--task", help="task name")
    which.add_argument("--group", help="an input_group: every task of it for each input, one encoder pass, as JSON "
                       "Lines {\"id\", the text column(s), each task's prediction}")
    p.add_argument("--input", required=True, help="task file, or - to read examples from standard input "
                   "(one per line; pairs tab-separated)")
    p.add_argument("--output", default="-", help="output file (default: standard output)")
    p.add_argument("--format", choices=("cs224n", "csv"), default="cs224n", help="output format (--task)")
    p.add_argument("--quantize", choices=("int8",), help="predict with dynamically int8-quantized linear layers (CPU)")

    p = sub.add_parser("ensemble", help="combine runs' predictions (vote or soft)")
    p.add_argument("members", nargs="+", help="run folders or predictions/ folders")
    p.add_argument("--output_dir", required=True, help="where the ensemble's files go")
    p.add_argument("--mode", choices=("vote", "soft"), default="vote",
                   help="vote: each task's rule on predictions (majority; ordered_labels: mean class); soft: average "
                        "probabilities/values (runs)")

    p = sub.add_parser("export", help="one task's model as a sentence-transformers folder (loads without mtbert), "
                       "or every task as one ONNX graph (--format onnx)")
    p.add_argument("run_dir", help="a run folder (plain or two-step)")
    p.add_argument("--task", help="task name (sentence-transformers: required; onnx: every task is exported)")
    p.add_argument("--output", required=True, help="a new or empty folder for the exported model")
    p.add_argument("--format", choices=("sentence-transformers", "onnx"), default="sentence-transformers",
                   help="sentence-transformers: one task's model; onnx: one ONNX graph with every task's head, the "
                   "tokenizer and mtbert_onnx.json, which mtbert predict and mtbert evaluate run with onnxruntime")
    p.add_argument("--quantize", choices=("int8",), help="with --format onnx: onnxruntime's dynamic int8 "
                   "quantization of the graph")
    p.add_argument("--push_to_hub", metavar="REPO_ID", help="then upload the folder to this Hub model repo "
                   "(owner/name, created if missing) in one commit; token: HF_TOKEN or `hf auth login`")
    p.add_argument("--private", action="store_true",
                   help="with --push_to_hub: create the repo private (an existing repo keeps its visibility)")
    p.add_argument("--revision", metavar="BRANCH",
                   help="with --push_to_hub: the branch to commit to, created if missing (default: main)")
    p.add_argument("--commit_message", metavar="TEXT", help="with --push_to_hub: the commit message "
                   "(default: mtbert export of task TASK from run RUN)")

    p = sub.add_parser("data", help="the CS224N course files: data download")
    data = p.add_subparsers(dest="data", required=True)
    d = data.add_parser("download", help="fetch the course files, check their size and SHA-256, write atomically")
    d.add_argument("--to", metavar="DIR", help="target folder (default: $MTBERT_DATA, else ./data)")
    d.add_argument("--url", metavar="BASE", help="where the files are (default: the course's starter repository, "
                   "https://raw.githubusercontent.com/gpoesia/minbert-default-final-project/main/data/)")
    d.add_argument("--if_missing", action="store_true",
                   help="fetch nothing when every required file is already there (what `make run` does)")

    sub.add_parser("presets", help="the shipped configs that `mtbert train NAME` and `--configs NAME` take")

    p = sub.add_parser("report", help="tables and plots of runs")
    p.add_argument("run_dirs", nargs="+", help="run folders")
    p.add_argument("--output_dir", required=True, help="where report.md and the PNG plots go")

    p = sub.add_parser("bench", help="benchmarks: step, scaling, throughput, quality")
    bench = p.add_subparsers(dest="bench", required=True)
    b = bench.add_parser("step", help="seconds per training step of each gradient method")
    b.add_argument("--methods", default="sum,pcgrad",
                   help="comma-separated: aggregators, uncertainty, famo, pcgrad-per-layer, torchjd, torchjd-autogram "
                        "(for comparison)")
    b.add_argument("--config", metavar="CONFIG", help="time a step of this config's own tasks (any kinds; an "
                   "input_group's tasks share one batch): methods sum, an aggregator such as pcgrad (exact), "
                   "<aggregator>-representation (groups), torchjd, torchjd-autogram")
    b.add_argument("--steps", type=int, default=10, help="timed steps per method (at least 5)")
    b.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    b.add_argument("--batch_size", type=int, default=None,
                   help="samples per task per step (default 16; with --config, the config's)")
    b.add_argument("--trainable", default="full",
                   help="comma-separated: full, lora, frozen-embeddings (several: each in its own process, with its "
                        "peak memory)")
    b.add_argument("--memory", action="store_true",
                   help="also each method's peak resident memory, alone in its own process")
    b.add_argument("--json", metavar="OUT", help="write the results to this JSON file")
    b = bench.add_parser("throughput", help="training and prediction speed against Trainer and CrossEncoder")
    b.add_argument("--json", metavar="OUT", help="write the results to this JSON file")
    b.add_argument("--examples", type=int, default=256, help="examples per measurement")
    b = bench.add_parser("scaling", help="seconds per step and peak memory as the number of tasks grows")
    b.add_argument("--tasks", default="2,4,8,16,32", help="comma-separated numbers of tasks T")
    b.add_argument("--steps", type=int, default=8, help="timed steps per T (at least 5)")
    b.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    b.add_argument("--samples_per_step", type=int, default=64, help="samples per step in all, spread over the tasks")
    b.add_argument("--skip_rows", default="", help="pinned rows to leave out (not sum), e.g. torchjd: a longer "
                   "run of the others")
    b.add_argument("--extra_rows", default="", help="rows beside the pinned ones: pcgrad-bf16 (surgery_buffer_dtype "
                   "bfloat16)")
    b.add_argument("--json", metavar="OUT", help="write the results to this JSON file")
    b = bench.add_parser("quality", help="the quality table (the CS224N report's results table) on this machine")
    b.add_argument("--output_dir", required=True, help="folder of the table and its runs (finished rows are reused)")
    b.add_argument("--rows", help="comma-separated rows to run (default: all)")
    b.add_argument("--budget", type=float, default=1.0, help="scale every stage's training samples by this")
    b.add_argument("--configs", default="cs224n", help="folder of the row configs and their table.yaml, or a "
                   "shipped table: cs224n (all-MiniLM-L6-v2, the default), cs224n-base (all-mpnet-base-v2)")
    b.add_argument("--backbone", metavar="PATH_OR_NAME",
                   help="train every row (and embed the floor) with this encoder in place of the configs' "
                   "model_name_or_path; rows trained with another backbone are trained again")
    b.add_argument("--from_table", metavar="TABLE_JSON",
                   help="take the finished rows of an earlier table.json (another machine's or session's) that this "
                   "call would train alike: same config, data and budget; their dev predictions come with them")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("transformers", "accelerate", "httpx", "httpx2", "huggingface_hub"):  # httpx2: "HTTP Request" lines
        logging.getLogger(noisy).setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "train":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return dispatch(args, extra)
    except MtbertError as err:
        if _is_rank0():
            print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        from mtbert.io import full_disk_error

        full = full_disk_error(err)  # a write that no atomic writer wraps met a full disk: the same sentence
        if full is None:
            raise
        if _is_rank0():
            print(f"error: {full}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _export_onnx(args: argparse.Namespace) -> int:
    """`mtbert export RUN --format onnx [--quantize int8] --output DIR`: every task as one ONNX graph."""
    from mtbert.evaluation.onnx_export import export_onnx

    for flag in ("task", "push_to_hub", "private", "revision", "commit_message"):
        if getattr(args, flag):
            raise MtbertError(f"--{flag}: not with --format onnx (the ONNX export holds every task of the run and is "
                              "written to --output only)")
    out, settings = export_onnx(Path(args.run_dir), Path(args.output), quantize=args.quantize)
    tasks = ", ".join(t["name"] for t in settings["tasks"])
    precision = "int8 (dynamic quantization)" if args.quantize else "fp32"
    print(f"wrote {out}: one ONNX graph ({precision}) with the tasks {tasks}; run it with mtbert predict {out} "
          "--task TASK or mtbert evaluate " + str(out))
    return 0


def _is_rank0() -> bool:
    """Under torchrun or accelerate only rank 0 prints results and errors; one process is rank 0."""
    return os.environ.get("RANK", "0") == "0"


def dispatch(args: argparse.Namespace, extra: list[str]) -> int:
    if args.command == "train":
        from mtbert.config import load_config, parse_overrides
        from mtbert.presets import config_path
        from mtbert.training.run import train

        cfg = load_config(config_path(args.config), parse_overrides(extra))
        results = train(cfg, args.resume_from_checkpoint, args.overwrite_output_dir)
        if _is_rank0():
            print(to_json(results, indent=2))
        return 0
    if args.command == "evaluate":
        from mtbert.evaluation.finished import evaluate_run

        files = dict(args.task_file)
        for task in ("sst", "para", "sts"):
            if getattr(args, task):
                files[task] = getattr(args, task)
        metrics = evaluate_run(Path(args.run_dir), files, quantize=args.quantize)
        print(to_json(metrics, indent=2))
        if args.json:
            from mtbert.io import atomic_write_json

            atomic_write_json(args.json, metrics)
        return 0
    if args.command == "predict":
        from mtbert.evaluation.finished import predict_group_run, predict_run

        if args.group is not None:
            predict_group_run(Path(args.run_dir), args.group, args.input, args.output, quantize=args.quantize)
            return 0
        predict_run(Path(args.run_dir), args.task, args.input, args.output, args.format, quantize=args.quantize)
        return 0
    if args.command == "ensemble":
        from mtbert.evaluation.ensemble import run_ensemble

        results = run_ensemble([Path(m) for m in args.members], Path(args.output_dir), args.mode)
        print(to_json(results, indent=2))
        return 0
    if args.command == "export":
        from mtbert.evaluation.export import export_task

        if args.format == "onnx":
            return _export_onnx(args)
        if args.quantize is not None:
            raise MtbertError("--quantize: only with --format onnx (mtbert export RUN --format onnx --quantize int8)")
        if args.task is None:
            raise MtbertError("--task: required for a sentence-transformers export (or give --format onnx to export "
                              "every task)")
        if args.push_to_hub is None:
            for flag in ("private", "revision", "commit_message"):
                if getattr(args, flag):
                    raise MtbertError(f"--{flag}: only with --push_to_hub REPO_ID")
        else:
            from mtbert.evaluation.hub import check_push

            check_push(args.push_to_hub)  # before anything is written
        out, plan = export_task(Path(args.run_dir), args.task, Path(args.output), load_as=args.push_to_hub)
        print(f"wrote {out}: a {plan.library} {plan.library_class}; {plan.returns}")
        if args.push_to_hub is not None:
            from mtbert.evaluation.hub import push_folder

            run_name = Path(args.run_dir).resolve().name
            message = args.commit_message or f"mtbert export of task {args.task} from run {run_name}"
            repo_url, commit_url = push_folder(out, args.push_to_hub, private=args.private,
                                               revision=args.revision or None, commit_message=message)
            print(f"pushed {out} to {repo_url}: {commit_url}")
        return 0
    if args.command == "data":
        from mtbert.data.download import BASE_URL, download

        target = Path(args.to or os.environ.get("MTBERT_DATA") or "data")
        for name, state in download(target, args.url or BASE_URL, if_missing=args.if_missing):
            if state != "present":  # --if_missing says nothing when the data is there
                print(f"{target / name}: {state}")
        return 0
    if args.command == "presets":
        from mtbert.presets import TABLES, names, root

        print(f"training presets (mtbert train NAME), in {root()}:")
        for name in names():
            print(f"  {name}")
        print("bench tables (mtbert bench quality --configs NAME):")
        for name, folder in TABLES.items():
            print(f"  {name:<12} {folder}/")
        return 0
    if args.command == "report":
        from mtbert.evaluation.report import build_report

        path = build_report([Path(r) for r in args.run_dirs], Path(args.output_dir))
        print(f"wrote {path}")
        return 0
    if args.command == "bench":
        from mtbert.bench import cli as bench

        return bench.main(args)
    raise MtbertError(f"unknown command {args.command}")
