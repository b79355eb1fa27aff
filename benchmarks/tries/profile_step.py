"""Where the time of 16 training steps goes (`bench throughput`'s mtbert loop on SST), by torch operator.

    MTBERT_DATA=../shared/data/cs224n python benchmarks/tries/profile_step.py sst
"""

from __future__ import annotations

import sys

import torch
from common import DATA, N
from torch.profiler import profile

from mtbert.bench.throughput import mtbert_trainer, sample_examples
from mtbert.model import default_backbone
from mtbert.tasks import BUILTIN_TASKS

GEMMS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def main(task: str) -> None:
    spec = BUILTIN_TASKS[task]
    run = mtbert_trainer(spec, default_backbone(), sample_examples(DATA / spec.train_file, spec, N, shuffle=True),
                         16, 128, torch.device("cpu"))
    run(2)
    with profile() as prof:
        run(16)
    rows = prof.key_averages()
    total = sum(r.self_cpu_time_total for r in rows)
    gemm = sum(r.self_cpu_time_total for r in rows if r.key in GEMMS)
    print(f"16 steps: {total / 1e6:.2f} s of operator time, matrix products {gemm / total:.1%}")
    print(rows.table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "sst")
