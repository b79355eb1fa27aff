"""Task sampling strategies: how many samples of each task a training step takes.

Every strategy keeps the step's total at (number of active tasks) x per_device_train_batch_size, and
gives every active task at least one sample, so a step always has a batch from each task.

- `fixed-ratio`: `task_ratio` as given (the CS224N report's scheme; 1:1:1 by default).
- `proportional`: shares proportional to the training-set sizes.
- `temperature`: shares proportional to size^(1/T) (T = `sampling_temperature`; T=1 is proportional,
  large T tends to uniform), as in multilingual BERT and Stickland & Murray 2019 (PALs,
  https://arxiv.org/abs/1902.02671).
- `annealed`: PALs' annealed sampling, size^alpha with alpha = 1 - 0.8 (e - 1) / (E - 1) going from
  proportional in the first epoch to nearly uniform in the last.

With `tasks_per_step: k`, `tasks_of_step` draws which k of the active tasks a step trains.
"""

from __future__ import annotations

import numpy as np

SAMPLING_STRATEGIES = ("fixed-ratio", "proportional", "temperature", "annealed")


def sampling_alpha(strategy: str, temperature: float, epoch: int, num_epochs: int) -> float:
    """The exponent of the dataset size in the task shares (epoch counts from 1)."""
    if strategy == "proportional":
        return 1.0
    if strategy == "temperature":
        return 1.0 / temperature
    if strategy == "annealed":
        return 1.0 - 0.8 * (epoch - 1) / max(num_epochs - 1, 1)
    raise ValueError(f"no size exponent for sampling strategy {strategy}")


def samples_per_step(strategy: str, sizes: dict[str, int], ratios: dict[str, int], unit: int,
                     temperature: float = 2.0, epoch: int = 1, num_epochs: int = 1) -> dict[str, int]:
    """Samples of each active task in one step under the strategy (tasks with ratio 0 stay out)."""
    active = [t for t in sizes if ratios.get(t, 1) > 0]
    if strategy == "fixed-ratio":
        return {t: ratios.get(t, 1) * unit for t in active}
    alpha = sampling_alpha(strategy, temperature, epoch, num_epochs)
    weights = {t: float(sizes[t]) ** alpha for t in active}
    total = unit * len(active)
    shares = {t: w / sum(weights.values()) * total for t, w in weights.items()}
    counts = {t: max(1, int(share)) for t, share in shares.items()}
    # hand out the remaining samples by largest remainder, so the total is exact
    for t in sorted(active, key=lambda t: shares[t] - int(shares[t]), reverse=True):
        if sum(counts.values()) >= total:
            break
        counts[t] += 1
    while sum(counts.values()) > total:  # the max(1, .) floor can overshoot for tiny tasks
        largest = max(counts, key=counts.get)
        counts[largest] -= 1
    return counts


def tasks_of_step(per_step: dict[str, int], k: int, seed: int, step: int) -> list[str]:
    """The k tasks step `step` trains: drawn without replacement with chances proportional to their samples per
    step (the strategy's shares), from a generator seeded by (seed, step) alone, so that every rank draws the same
    tasks and a resumed run the same as an uninterrupted one. In `per_step`'s order."""
    names = list(per_step)
    if k >= len(names):
        return names
    weights = np.array([per_step[t] for t in names], dtype=np.float64)
    chosen = np.random.default_rng([seed, step]).choice(len(names), size=k, replace=False, p=weights / weights.sum())
    return [names[i] for i in sorted(chosen)]
