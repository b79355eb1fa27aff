"""How far a bfloat16 per-task buffer (`surgery_buffer_dtype: bfloat16`) moves PCGrad's update, on real gradients.

    MTBERT_DATA=../shared/data/cs224n python benchmarks/buffer_precision.py --tasks 3,16 --steps 4 --json OUT

The T tasks of `mtbert bench scaling` (SST, Quora and STS in turn, each its own head and share of the file) train
with PCGrad on all-MiniLM-L6-v2, 64 samples a step spread over the tasks. At each step the engine's float32 rows G
are taken as they are and rounded to bfloat16 as a bfloat16 buffer stores them (`copy_`: round to nearest even);
PCGrad runs on both with the same random orders, and the report gives per step: the relative error of the update
|u16 - u32| / |u32|, their cosine, and the task pairs whose conflict decision (the sign of g_i.g_j) differs, with
their float32 cosine. The model then steps with the float32 update (so the steps are those of float32 training).
"""

from __future__ import annotations

import argparse
import json
import subprocess
from dataclasses import replace
from pathlib import Path

import torch

from mtbert.bench.machine import machine
from mtbert.bench.scaling import scaled_model
from mtbert.methods.aggregators import _gramian, pcgrad
from mtbert.methods.method import Method, plain_objective
from mtbert.training.optim import make_optimizer


def precision(count: int, steps: int, samples_per_step: int = 64) -> list[dict]:
    """Per step at T = `count`: the bfloat16 buffer's PCGrad update against the float32 buffer's."""
    cfg, model, names, batches_of = scaled_model(count)
    optimizer = make_optimizer(model, replace(cfg, learning_rate=2e-5), torch.device("cpu"))
    objective = plain_objective(model, torch.device("cpu"))
    method = Method("pcgrad", model, names)
    captured: dict[str, torch.Tensor] = {}
    aggregate = method.surgery.aggregate

    def capture(grads: torch.Tensor, generator: torch.Generator | None = None, *, out=None) -> torch.Tensor:
        captured["grads"] = grads.clone()
        captured["state"] = generator.get_state()
        return aggregate(grads, generator=generator, out=out)

    method.surgery.aggregate = capture
    model.train()
    out = []
    for _ in range(steps):
        per_task = samples_per_step // count
        batches = batches_of(names, per_task)
        method.backward(batches, {t: 1.0 / len(b["labels"]) for t, b in batches.items()}, objective)
        full, state = captured.pop("grads"), captured.pop("state")
        half = torch.empty_like(full, dtype=torch.bfloat16).copy_(full)  # as the bfloat16 buffer stores the rows
        updates = []
        for rows in (full, half):
            generator = torch.Generator()
            generator.set_state(state)
            updates.append(pcgrad(rows, generator).double())
        u32, u16 = updates
        g32, g16 = _gramian(full).double(), _gramian(half).double()
        norms = g32.diagonal().sqrt()
        flipped = [{"pair": f"{names[i]}-{names[j]}", "cosine_fp32": round(float(g32[i, j] / norms[i] / norms[j]), 6)}
                   for i in range(count) for j in range(i + 1, count) if bool(g32[i, j] < 0) != bool(g16[i, j] < 0)]
        cosines = (g32 / norms[:, None] / norms[None, :])[torch.triu_indices(count, count, 1).unbind()]
        out.append({"relative_error": float((u16 - u32).norm() / u32.norm()),
                    "cosine": float(u16 @ u32 / u16.norm() / u32.norm()),
                    "pairs": count * (count - 1) // 2, "conflicts_fp32": int((cosines < 0).sum()),
                    "smallest_abs_cosine_fp32": float(cosines.abs().min()),
                    "gramian_relative_error": float((g16 - g32).norm() / g32.norm()),
                    "flipped_decisions": flipped})
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="3,16", help="comma-separated numbers of tasks")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    result = {"benchmark": "buffer_precision", "commit": commit, **machine(),
              "tasks": {t: precision(int(t), args.steps) for t in args.tasks.split(",")}}
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
