"""mtbert: fine-tune one shared encoder on several NLP tasks at once."""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "MultiTaskModel":
        from mtbert.model import MultiTaskModel

        return MultiTaskModel
    if name == "GradientSurgery":
        from mtbert.methods.surgery import GradientSurgery

        return GradientSurgery
    if name == "MultiTaskTrainer":
        from mtbert.integrations.trainer import MultiTaskTrainer

        return MultiTaskTrainer
    raise AttributeError(name)


__all__ = ["GradientSurgery", "MultiTaskModel", "MultiTaskTrainer", "__version__"]
