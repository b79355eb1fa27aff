"""Gradient surgery in a plain Accelerate loop: your own model (one shared encoder, a head per task), two CS224N
tasks (SST-5 sentiment and STS similarity), PCGrad from `mtbert.GradientSurgery`.

    MTBERT_DATA=../shared/data/cs224n python examples/accelerate_loop.py --max_steps 200 --output_dir runs/acc
    accelerate launch --multi_gpu --num_processes 2 examples/accelerate_loop.py --max_steps 200 --output_dir runs/acc

Each step takes a batch of each task, runs one backward per task (inside `no_sync`, so that DDP does not
all-reduce each one), and `surgery.collect(task)` moves the encoder's gradient aside; `surgery.apply()` averages
the per-task gradients over the processes, applies PCGrad and writes the update into `.grad`. Every process takes
its own share of each batch, so N processes train as one process with N times the batch. Writes
`model.safetensors` and `train_log.jsonl` (losses and gradient cosines) into `--output_dir`.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn
from transformers import AutoModel, AutoTokenizer

import mtbert
from mtbert.data import read_task_file
from mtbert.model import default_backbone
from mtbert.tasks import BUILTIN_TASKS


class SharedEncoderModel(nn.Module):
    """A Hugging Face encoder shared by two heads; `forward(task, batch)` returns the task's mean loss."""

    def __init__(self, backbone: str) -> None:
        super().__init__()
        self.encoder = AutoModel.from_pretrained(backbone)
        hidden = self.encoder.config.hidden_size
        self.heads = nn.ModuleDict({"sst": nn.Linear(hidden, 5), "sts": nn.Linear(hidden, 1)})

    def forward(self, task: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        out = self.heads[task](self.encoder(**inputs).last_hidden_state[:, 0])
        if task == "sst":
            return F.cross_entropy(out, batch["labels"].long())
        return F.mse_loss(out.squeeze(-1), batch["labels"])


def read_tasks(data_dir: Path) -> dict[str, list]:
    """The training examples of SST (one sentence) and STS (a sentence pair), read and checked by mtbert."""
    return {task: read_task_file(data_dir / BUILTIN_TASKS[task].train_file, BUILTIN_TASKS[task]).examples
            for task in ("sst", "sts")}


def draw(examples: list, tokenizer, step: int, batch_size: int, accelerator: Accelerator, seed: int,
         max_length: int) -> dict[str, torch.Tensor]:
    """This process's share of step `step`'s batch: all processes draw the same batch_size x N examples."""
    generator = torch.Generator().manual_seed(seed * 100_003 + step)
    picked = torch.randint(len(examples), (batch_size * accelerator.num_processes,), generator=generator)
    mine = [examples[i] for i in picked[accelerator.process_index * batch_size :][:batch_size].tolist()]
    texts = [e.texts for e in mine]
    encoded = tokenizer([t[0] for t in texts], [t[1] for t in texts] if len(texts[0]) > 1 else None,
                        padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    encoded["labels"] = torch.tensor([e.label for e in mine], dtype=torch.float)
    return {k: v.to(accelerator.device) for k, v in encoded.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max_steps", type=int, default=100)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--method", default="pcgrad", help="any mtbert gradient method: sum, pcgrad, cagrad, ...")
    parser.add_argument("--batch_size", type=int, default=16, help="examples of each task per step and process")
    parser.add_argument("--learning_rate", type=float, default=5e-5)
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    torch.manual_seed(args.seed)
    backbone = default_backbone()
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    data = read_tasks(Path(os.environ.get("MTBERT_DATA", "data")))
    model = SharedEncoderModel(backbone)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    model, optimizer = accelerator.prepare(model, optimizer)
    core = accelerator.unwrap_model(model)
    surgery = mtbert.GradientSurgery(core.encoder.named_parameters(), method=args.method, seed=args.seed,
                                     embedding=core.encoder.get_input_embeddings().weight,
                                     other_params=core.heads.parameters())
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    log = (output_dir / "train_log.jsonl").open("w") if accelerator.is_main_process else None
    model.train()
    for step in range(1, args.max_steps + 1):
        batches = {task: draw(examples, tokenizer, step, args.batch_size, accelerator, args.seed, args.max_length)
                   for task, examples in data.items()}
        surgery.begin_step([batch["input_ids"] for batch in batches.values()])  # the embedding rows to keep
        losses = {}
        for task, batch in batches.items():
            with accelerator.no_sync(model):
                loss = model(task, batch)
                accelerator.backward(loss)
            surgery.collect(task)
            losses[task] = loss.item()
        stats = surgery.apply()  # all-reduce of the per-task gradients, PCGrad, `.grad` written
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if log is not None:
            log.write(json.dumps({"step": step, "loss": losses, "cosine": stats["cosine"],
                                  "removed_norm": stats["removed_norm"]}) + "\n")
            accelerator.print(f"step {step}: loss {losses}, cosine {stats['cosine']}")
    if log is not None:
        log.close()
    accelerator.wait_for_everyone()
    accelerator.save_model(model, output_dir)


if __name__ == "__main__":
    main()
