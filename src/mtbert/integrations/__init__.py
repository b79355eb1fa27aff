"""mtbert inside other libraries' training loops: `MultiTaskTrainer`, a `transformers.Trainer` with gradient surgery.

Imported lazily (`from mtbert.integrations.trainer import MultiTaskTrainer`, or `mtbert.MultiTaskTrainer`), so that
`import mtbert` does not import transformers' Trainer.
"""

__all__ = ["MultiTaskTrainer"]


def __getattr__(name: str):
    if name == "MultiTaskTrainer":
        from mtbert.integrations.trainer import MultiTaskTrainer

        return MultiTaskTrainer
    raise AttributeError(name)
