"""`Method.backward` with a float16 gradient scaler: the buffer is unscaled before it is aggregated."""

from __future__ import annotations

import pytest
import torch
from helpers.aggregator_properties import needs_torchjd
from torch import nn

from mtbert.methods.method import Method


def _grads_after_backward(name: str, grad_scale: float | None) -> torch.Tensor:
    torch.manual_seed(0)
    model = nn.Linear(6, 1)
    x = torch.randn(3, 8, 6)
    targets = torch.randn(3, 8, 1)

    def objective(task: str, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        i = int(task)
        loss = ((model(x[i]) - targets[i]) ** 2).sum()
        return loss, loss

    method = Method(name, model, ["0", "1", "2"], seed=0)
    batches = {t: {"labels": torch.zeros(8)} for t in ("0", "1", "2")}
    scaler = torch.amp.GradScaler("cpu", init_scale=grad_scale) if grad_scale is not None else None
    method.backward(batches, {t: 1 / 8 for t in batches}, objective, scaler=scaler)
    return torch.cat([p.grad.view(-1) for p in model.parameters()])


# Nash-MTL's update does not scale with the gradients (scaling every task gradient by s scales its weights by
# 1/s), so aggregating the scaled buffer would give the unscaled update; unscaled first, .grad is s x the update.
@pytest.mark.parametrize("name", ["pcgrad", "nash-mtl"])
def test_a_scaled_backward_leaves_grad_scaled_by_exactly_the_gradient_scale(name):
    needs_torchjd(name)
    plain, scaled = _grads_after_backward(name, None), _grads_after_backward(name, 1024.0)
    assert plain.abs().max() > 0
    torch.testing.assert_close(scaled, 1024.0 * plain, rtol=1e-4, atol=1e-6)


def test_an_overflowed_buffer_writes_nan_so_that_the_scaler_skips_the_step():
    grads = _grads_after_backward("pcgrad", float("inf"))  # every parameter of the toy model is shared
    assert torch.isnan(grads).all()
