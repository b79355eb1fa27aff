"""mtbert: fine-tune one shared encoder on several NLP tasks at once."""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "MultiTaskModel":
        from mtbert.model import MultiTaskModel

        return MultiTaskModel
    raise AttributeError(name)


__all__ = ["MultiTaskModel", "__version__"]
