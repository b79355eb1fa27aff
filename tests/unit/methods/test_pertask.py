"""Tests of mtbert.methods.pertask: per-layer groups of the per-task buffer."""

from __future__ import annotations

import torch


def test_per_layer_pcgrad_equals_global_pcgrad_per_group():
    from mtbert.methods.aggregators import pcgrad
    from mtbert.methods.pertask import aggregate_per_layer

    grads = torch.randn(3, 10, dtype=torch.float64)
    groups = [[(0, 4), (8, 10)], [(4, 8)]]
    update = aggregate_per_layer(pcgrad, grads, groups, torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(0)
    first = pcgrad(grads[:, [0, 1, 2, 3, 8, 9]], generator)
    second = pcgrad(grads[:, 4:8], generator)
    torch.testing.assert_close(update[[0, 1, 2, 3, 8, 9]], first)
    torch.testing.assert_close(update[4:8], second)

