"""mtbert from Python: `mtbert.train` runs a training job from a config and keyword overrides.

```python
import mtbert

results = mtbert.train("quick", max_steps=10, method="cagrad")   # a preset, a YAML path, a mapping or a TrainConfig
model = mtbert.MultiTaskModel.from_pretrained("runs/quick/best")
model.predict("sst", ["A gripping, funny film.", "Dull."]).labels
```
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from mtbert.config import TrainConfig, build_config, load_config, merge
from mtbert.errors import ConfigError
from mtbert.presets import config_path


def train(config: TrainConfig | Mapping[str, Any] | str | os.PathLike[str], *,
          resume_from_checkpoint: str | None = None, overwrite_output_dir: bool = False,
          **overrides: Any) -> dict[str, Any]:
    """Train a run and return its results (the dev metrics of its best model, as `results.json` holds them).

    `config` is a `TrainConfig`, a mapping of config keys, a YAML file or a preset's name (`quick`, `smoke`,
    `paper/pcgrad`, ...: `mtbert presets`); `overrides` are config keys as keywords (`max_steps=10`, a mapping
    such as `two_step={"learning_rate": 1e-5}` merges into the config's). `resume_from_checkpoint` and
    `overwrite_output_dir` are `mtbert train`'s options. A bad key or value raises `ConfigError` in one sentence,
    before anything is written.
    """
    from mtbert.training.run import train as run_training

    cfg = resolve_config(config, **overrides)
    return run_training(cfg, resume_from_checkpoint, overwrite_output_dir)


def resolve_config(config: TrainConfig | Mapping[str, Any] | str | os.PathLike[str],
                   **overrides: Any) -> TrainConfig:
    """The validated `TrainConfig` that `train(config, **overrides)` runs."""
    if isinstance(config, TrainConfig):
        return build_config(merge(config.to_dict(), overrides))
    if isinstance(config, Mapping):
        return build_config(merge(dict(config), overrides))
    if isinstance(config, str | os.PathLike):
        return load_config(config_path(config), overrides)
    raise ConfigError(f"config: give a TrainConfig, a mapping, a YAML file or a preset name, not "
                      f"{type(config).__name__}")
