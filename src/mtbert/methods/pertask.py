"""The per-task buffer's former home: `PerTaskGradients` and `aggregate_per_layer` live in `mtbert.methods.surgery`,
the one gradient-surgery engine; these names keep working."""

from mtbert.methods.surgery import PerTaskGradients, aggregate_per_layer

__all__ = ["PerTaskGradients", "aggregate_per_layer"]
