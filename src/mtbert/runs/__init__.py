"""The run folder: where every file of a run lives."""
