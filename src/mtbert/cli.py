"""The `mtbert` command: train, evaluate, predict, ensemble, report, bench."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from mtbert.errors import MtbertError

KEY_HELP = {
    "output_dir": "folder of the run (config.yaml, metrics.jsonl, best/, results.json, predictions/)",
    "model_name_or_path": "any Hugging Face encoder, by hub name or local folder (default: bundled all-MiniLM-L6-v2)",
    "data_dir": "folder of the task files (default: $MTBERT_DATA, else ./data)",
    "tasks": "built-in task names (sst, para, sts) or mappings declaring your own task",
    "method": "single | sum | pcgrad | cagrad | gradvac | imtl-g | mgda | upgrad | aligned-mtl | nash-mtl "
              "(gradient aggregation) | uncertainty | famo (loss weighting)",
    "task_ratio": "samples per step of each task in units of the batch size, e.g. '0:3:1' (0 leaves a task out)",
    "sample_weighting": "scale each task's summed loss by 1/n_i (the seed's sample-weighted PCGrad)",
    "pair_architecture": "cross (one sequence with [SEP]) | bi-cosine | bi-concat",
    "pooling": "cls | mean",
    "dropout": "dropout of the encoder and heads; 0 turns every dropout off",
    "max_length": "tokens per sequence; longer inputs are truncated",
    "per_device_train_batch_size": "samples of each task per step (times its ratio)",
    "per_device_eval_batch_size": "batch size of evaluation and prediction",
    "samples_per_task_per_epoch": "samples of each task in an epoch (a smaller task cycles)",
    "num_train_epochs": "epochs to train",
    "max_steps": "when > 0, the number of steps to train (overrides num_train_epochs)",
    "learning_rate": "AdamW learning rate of the encoder's top layer",
    "head_learning_rate": "learning rate of the heads (default: learning_rate)",
    "layerwise_lr_decay": "each lower encoder layer's learning rate is this times the one above (1: off)",
    "weight_decay": "AdamW weight decay (not on biases and LayerNorm)",
    "warmup_steps": "linear warmup steps", "warmup_ratio": "warmup as a share of all steps",
    "lr_scheduler_type": "transformers scheduler name (linear, cosine, constant, ...)",
    "max_grad_norm": "gradient clipping norm (0: off)",
    "sts_loss": "mse | cosent (ranking loss plus mse) for regression tasks",
    "seed": "seed of sampling, dropout, head initialisation and PCGrad's order",
    "logging_steps": "write train_log.jsonl (losses, gradient conflicts) every this many steps",
    "eval_strategy": "epoch | steps | no (the end of training is always evaluated)",
    "eval_steps": "evaluate every this many steps when eval_strategy is steps",
    "save_steps": "save a resumable checkpoint-<step>/ every this many steps (0: only at epoch ends)",
    "save_total_limit": "checkpoints to keep",
    "max_bad_steps": "stop after this many non-finite steps in a row",
    "max_train_samples": "use only the first N training rows of each task",
    "max_eval_samples": "use only the first N dev rows of each task",
    "max_predict_samples": "predict only the first N test rows of each task (for quick checks)",
    "report_to": "none | tensorboard", "bf16": "auto (GPU only) | true | false",
    "ddp_mode": "exact (all-reduce per-task gradients, then aggregate) | local (aggregate per rank)",
    "sampling": "fixed-ratio (task_ratio) | proportional | temperature | annealed: samples of each task per step",
    "sampling_temperature": "T of temperature sampling (shares proportional to size^(1/T))",
    "surgery_scope": "global | per-layer: aggregate the whole shared vector or each encoder layer separately",
    "smart_weight": "weight of SMART's smoothness penalty on each task's loss (0: off)",
    "smart_step_size": "SMART's ascent step and perturbation bound (max-norm, on the word embeddings)",
    "smart_noise": "std of SMART's initial Gaussian noise",
    "mlm_steps": "masked-LM pretraining steps on the tasks' training sentences before fine-tuning (0: none)",
    "mlm_learning_rate": "AdamW learning rate of the masked-LM pretraining",
    "mlm_probability": "share of tokens masked in masked-LM pretraining",
    "trust_remote_code": "allow model code from the hub (off unless you set it)",
    "two_step": "stage-2 settings (num_train_epochs, learning_rate, ..., init_from: RUN_DIR, keep_stage1: true)",
}


def _train_parser(sub) -> None:
    import dataclasses

    from mtbert.config import TrainConfig

    lines = ["config keys (set in the YAML file or as --key value; dots nest: --two_step.learning_rate 3e-6):"]
    for f in dataclasses.fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        lines.append(f"  --{f.name:<30} {KEY_HELP.get(f.name, '')} [default: {default}]")
    p = sub.add_parser("train", help="train a run from a YAML config", epilog="\n".join(lines),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="YAML config file (see configs/)")
    p.add_argument("--resume_from_checkpoint", metavar="PATH|last",
                   help="continue from a checkpoint folder, or from the newest one in output_dir")
    p.add_argument("--overwrite_output_dir", action="store_true", help="train into a non-empty output_dir")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtbert", description="Fine-tune one shared encoder on several tasks.")
    parser.add_argument("--version", action="version", version="mtbert 0.1.0")
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)

    p = sub.add_parser("evaluate", help="dev metrics of a run's best model on labeled files")
    p.add_argument("run_dir", help="a run folder (plain or two-step)")
    p.add_argument("--json", metavar="OUT", help="also write the metrics to this JSON file")
    p.add_argument("--task_file", nargs=2, action="append", metavar=("TASK", "FILE"), default=[],
                   help="evaluate TASK on FILE instead of the config's dev file (repeatable)")
    p.add_argument("--sst", metavar="FILE", help="labeled file for task sst")
    p.add_argument("--para", metavar="FILE", help="labeled file for task para")
    p.add_argument("--sts", metavar="FILE", help="labeled file for task sts")

    p = sub.add_parser("predict", help="predictions of a run's model for one task")
    p.add_argument("run_dir", help="a run folder (plain or two-step)")
    p.add_argument("--task", required=True, help="task name")
    p.add_argument("--input", required=True, help="task file, or - to read examples from standard input "
                   "(one per line; pairs tab-separated)")
    p.add_argument("--output", default="-", help="output file (default: standard output)")
    p.add_argument("--format", choices=("cs224n", "csv"), default="cs224n", help="output format")

    p = sub.add_parser("ensemble", help="combine runs' predictions (vote or soft)")
    p.add_argument("members", nargs="+", help="run folders or predictions/ folders")
    p.add_argument("--output_dir", required=True, help="where the ensemble's files go")
    p.add_argument("--mode", choices=("vote", "soft"), default="vote",
                   help="vote: the seed's rules on predictions; soft: average probabilities/values (run folders)")

    p = sub.add_parser("report", help="tables and plots of runs")
    p.add_argument("run_dirs", nargs="+", help="run folders")
    p.add_argument("--output_dir", required=True, help="where report.md and the PNG plots go")

    p = sub.add_parser("bench", help="benchmarks: step, throughput, quality")
    bench = p.add_subparsers(dest="bench", required=True)
    b = bench.add_parser("step", help="seconds per training step of each gradient method")
    b.add_argument("--methods", default="sum,pcgrad",
                   help="comma-separated: aggregators, uncertainty, famo, pcgrad-per-layer, torchjd (for comparison)")
    b.add_argument("--steps", type=int, default=10, help="timed steps per method")
    b.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    b.add_argument("--batch_size", type=int, default=16, help="samples per task per step")
    b.add_argument("--json", metavar="OUT", help="write the results to this JSON file")
    b = bench.add_parser("throughput", help="training and prediction speed against Trainer and CrossEncoder")
    b.add_argument("--json", metavar="OUT", help="write the results to this JSON file")
    b.add_argument("--examples", type=int, default=256, help="examples per measurement")
    b = bench.add_parser("quality", help="the seed's results table on this machine")
    b.add_argument("--output_dir", required=True, help="folder of the table and its runs (finished rows are reused)")
    b.add_argument("--rows", help="comma-separated rows to run (default: all)")
    b.add_argument("--budget", type=float, default=1.0, help="scale every stage's training samples by this")
    b.add_argument("--configs", default="configs/bench", help="folder of the row configs")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("transformers", "accelerate", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1") if not os.environ.get("MTBERT_ONLINE") else None
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
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _is_rank0() -> bool:
    """Under torchrun or accelerate only rank 0 prints results and errors; one process is rank 0."""
    return os.environ.get("RANK", "0") == "0"


def dispatch(args: argparse.Namespace, extra: list[str]) -> int:
    if args.command == "train":
        from mtbert.config import load_config, parse_overrides
        from mtbert.training.run import train

        cfg = load_config(args.config, parse_overrides(extra))
        results = train(cfg, args.resume_from_checkpoint, args.overwrite_output_dir)
        if _is_rank0():
            print(json.dumps(results, indent=2))
        return 0
    if args.command == "evaluate":
        from mtbert.evaluation.finished import evaluate_run

        files = dict(args.task_file)
        for task in ("sst", "para", "sts"):
            if getattr(args, task):
                files[task] = getattr(args, task)
        metrics = evaluate_run(Path(args.run_dir), files)
        print(json.dumps(metrics, indent=2))
        if args.json:
            from mtbert.io import atomic_write_json

            atomic_write_json(args.json, metrics)
        return 0
    if args.command == "predict":
        from mtbert.evaluation.finished import predict_run

        predict_run(Path(args.run_dir), args.task, args.input, args.output, args.format)
        return 0
    if args.command == "ensemble":
        from mtbert.evaluation.ensemble import run_ensemble

        results = run_ensemble([Path(m) for m in args.members], Path(args.output_dir), args.mode)
        print(json.dumps(results, indent=2))
        return 0
    if args.command == "report":
        from mtbert.evaluation.report import build_report

        path = build_report([Path(r) for r in args.run_dirs], Path(args.output_dir))
        print(f"wrote {path}")
        return 0
    if args.command == "bench":
        from mtbert.bench import step as bench

        return bench.main(args)
    raise MtbertError(f"unknown command {args.command}")
