"""mtbert: fine-tune one shared encoder on several NLP tasks at once.

The Python API (its names are imported when first used, so `import mtbert` stays light):

- `train(config, **overrides) -> dict`: train a run from a preset name, a YAML file, a mapping or a `TrainConfig`.
- `TrainConfig`: every setting of a run, checked on construction (a bad value raises `ConfigError`).
- `MultiTaskModel`: the trained model; `MultiTaskModel.from_pretrained(folder_or_hub_id)`, `model.predict(task, texts)`.
- `GradientSurgery`, `MultiTaskTrainer`: gradient surgery in your own loop, or in a `transformers.Trainer`.
- `ConfigError`, `MtbertError`: what a bad input raises (one sentence naming the key, file or line).
"""

from mtbert.errors import ConfigError, MtbertError

_LAZY = {
    "train": ("mtbert.api", "train"),
    "TrainConfig": ("mtbert.config", "TrainConfig"),
    "MultiTaskModel": ("mtbert.model", "MultiTaskModel"),
    "TaskPredictions": ("mtbert.model.inference", "TaskPredictions"),
    "GradientSurgery": ("mtbert.methods.surgery", "GradientSurgery"),
    "MultiTaskTrainer": ("mtbert.integrations.trainer", "MultiTaskTrainer"),
}


def __getattr__(name: str):
    if name == "__version__":
        from mtbert.distribution import version

        return version()
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'mtbert' has no attribute {name!r}")


__all__ = ["ConfigError", "GradientSurgery", "MtbertError", "MultiTaskModel", "MultiTaskTrainer", "TaskPredictions",
           "TrainConfig", "__version__", "train"]
