"""Gradient surgery in a Hugging Face Trainer: `mtbert.MultiTaskTrainer` trains mtbert's `MultiTaskModel` on two
CS224N tasks (SST-5 sentiment and STS similarity) with PCGrad.

    MTBERT_DATA=../shared/data/cs224n python examples/hf_trainer.py --max_steps 200 --output_dir runs/hf
    torchrun --nproc-per-node 2 examples/hf_trainer.py --max_steps 200 --output_dir runs/hf

Everything else is Trainer's: logging (per-task losses and gradient cosines go through `Trainer.log`, so the
console and `--report_to` see them), evaluation, checkpoints and `--resume_from_checkpoint`. Writes the
evaluated model into `--output_dir/model` (loads with `mtbert.MultiTaskModel.from_pretrained`) and its dev
metrics into `--output_dir/metrics.json`.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from transformers import TrainingArguments

import mtbert
from mtbert.data import load_task_data
from mtbert.model import default_backbone, load_encoder
from mtbert.tasks import BUILTIN_TASKS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max_steps", type=int, default=100)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--method", default="pcgrad", help="any mtbert gradient method: sum, pcgrad, cagrad, ...")
    parser.add_argument("--task_ratio", default="1:1", help="batches of SST and STS per step, e.g. 1:2")
    parser.add_argument("--batch_size", type=int, default=16, help="examples of each task per step and process")
    parser.add_argument("--learning_rate", type=float, default=5e-5)
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--max_eval_samples", type=int, default=None)
    parser.add_argument("--save_steps", type=int, default=None, help="checkpoint every N steps (default: at the end)")
    parser.add_argument("--resume_from_checkpoint", default=None)
    parser.add_argument("--report_to", default="none")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    specs = [BUILTIN_TASKS["sst"], BUILTIN_TASKS["sts"]]
    encoder, tokenizer = load_encoder(default_backbone(), dropout=0.1)
    model = mtbert.MultiTaskModel(encoder, specs)
    data = load_task_data(specs, Path(os.environ.get("MTBERT_DATA", "data")), tokenizer, args.max_length, "cross",
                          max_eval_samples=args.max_eval_samples, splits=("train", "dev"))
    training_args = TrainingArguments(
        output_dir=args.output_dir, max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=64, learning_rate=args.learning_rate, warmup_steps=min(10, args.max_steps // 10),
        logging_steps=max(1, min(10, args.max_steps // 2)), save_steps=args.save_steps or args.max_steps,
        save_total_limit=2, report_to=args.report_to, seed=args.seed, use_cpu=not torch.cuda.is_available())
    trainer = mtbert.MultiTaskTrainer(
        model, training_args, processing_class=tokenizer, method=args.method, task_ratio=args.task_ratio,
        train_dataset={s.name: data[s.name].train for s in specs},
        eval_dataset={s.name: data[s.name].dev for s in specs})
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    metrics = trainer.evaluate()  # eval_sst_acc, eval_sts_corr, eval_overall
    trainer.save_model(str(Path(args.output_dir) / "model"))
    if trainer.is_world_process_zero():
        (Path(args.output_dir) / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        print(json.dumps(metrics))


if __name__ == "__main__":
    main()
