"""The multi-task model: a shared Hugging Face encoder with one head per task, saved and loaded as a folder."""

from mtbert.model.multitask import (
    CONFIG_FILE,
    ENCODER_DIR,
    HEADS_FILE,
    MultiTaskModel,
    TaskHead,
    cosent_loss,
    decide,
    default_backbone,
    load_encoder,
    load_tokenizer,
    task_loss,
)

__all__ = ["CONFIG_FILE", "ENCODER_DIR", "HEADS_FILE", "MultiTaskModel", "TaskHead", "cosent_loss", "decide",
           "default_backbone", "load_encoder", "load_tokenizer", "task_loss"]
