"""Gradient methods: per-task gradient aggregators, the per-task buffer, loss weightings, and the Method object."""
