"""Training: one stage of multi-task training, two-step fine-tuning, checkpoints and the run log."""
