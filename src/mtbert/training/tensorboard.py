"""Optional TensorBoard logging (`report_to: tensorboard`): every number of the training log as a scalar.

`metrics.jsonl` and `train_log.jsonl` are always written; this mirrors them under `<run>/tensorboard/` for
`tensorboard --logdir runs`. Needs the `tensorboard` extra (`pip install "mtbert[tensorboard]"`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mtbert.errors import MtbertError


def open_writer(report_to: str, output_dir: Path) -> Any | None:
    """A SummaryWriter on `output_dir/tensorboard` when `report_to` is tensorboard, else None."""
    if report_to != "tensorboard":
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise MtbertError('report_to: tensorboard needs the tensorboard package '
                          '(pip install "mtbert[tensorboard]")') from None
    return SummaryWriter(log_dir=str(output_dir / "tensorboard"))


def log_scalars(writer: Any | None, record: dict[str, Any], step: int, prefix: str = "") -> None:
    """Write every number in a (nested) log record as a scalar named by its keys (`cosine/sst-para`)."""
    if writer is None:
        return
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            log_scalars(writer, value, step, prefix=f"{name}/")
        elif isinstance(value, bool):
            writer.add_scalar(name, float(value), step)
        elif isinstance(value, int | float) and key != "step":
            writer.add_scalar(name, value, step)
