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


def test_method_options_reach_the_method_and_wrong_ones_are_refused():
    """`method_options` (the config key) go to the aggregator (cagrad's c) or to FAMO; each is checked as the
    public API checks them."""
    from mtbert.config import METHODS as CONFIG_METHODS
    from mtbert.errors import ConfigError
    from mtbert.methods.method import METHODS, check_method_options, make_method

    assert set(CONFIG_METHODS) == set(METHODS)  # the config names exactly the methods there are
    needs_torchjd("cagrad")
    default, chosen = (_grads_with("cagrad", options) for options in ({}, {"c": 0.4}))
    reference = _grads_with("cagrad", {"c": 0.4}, reference=True)
    torch.testing.assert_close(chosen, reference)
    assert not torch.allclose(default, chosen)
    famo = make_method("famo", nn.Linear(2, 1), ["a", "b"], options={"lr": 0.5})
    assert famo.weighting.optimizer.param_groups[0]["lr"] == 0.5
    check_method_options("nash-mtl", {"max_norm": 2.0, "update_weights_every": 3})
    for method, options, message in [
            ("pcgrad", {"c": 0.4}, r"method_options: gradient method 'pcgrad' has no option 'c' \(its options: none"),
            ("cagrad", {"c": "big"}, "method_options: gradient method 'cagrad': option 'c' must be a number"),
            ("sum", {"c": 0.4}, "method_options: gradient method 'sum' has no option 'c'"),
            ("uncertainty", {"lr": 1.0}, "method_options: gradient method 'uncertainty' has no option 'lr'"),
            ("famo", {"beta": 1.0}, r"method_options: gradient method 'famo' has no option 'beta' \(its options: lr, "
                                    "weight_decay, eps\\)"),
            ("nash-mtl", {"optim_niter": 2.5}, "option 'optim_niter' must be an integer, not 2.5")]:
        with pytest.raises(ConfigError, match=message):
            check_method_options(method, options)
        with pytest.raises(ConfigError, match=message):
            make_method(method, nn.Linear(2, 1), ["a", "b"], options=options)


def _grads_with(name: str, options: dict, reference: bool = False) -> torch.Tensor:
    """The gradient a Method with `options` writes (or, with `reference`, the aggregator of the public API)."""
    from mtbert.methods.surgery import make_method_aggregator

    torch.manual_seed(0)
    model = nn.Linear(6, 1)
    x, targets = torch.randn(3, 8, 6), torch.randn(3, 8, 1)
    if reference:
        rows = []
        for i in range(3):
            model.zero_grad()
            ((model(x[i]) - targets[i]) ** 2).sum().div(8).backward()
            rows.append(torch.cat([p.grad.view(-1) for p in model.parameters()]))
        return make_method_aggregator(name, options)(torch.stack(rows), generator=torch.Generator().manual_seed(0))

    def objective(task: str, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        loss = ((model(x[int(task)]) - targets[int(task)]) ** 2).sum()
        return loss, loss

    method = Method(name, model, ["0", "1", "2"], seed=0, options=options)
    method.backward({t: {"labels": torch.zeros(8)} for t in "012"}, {t: 1 / 8 for t in "012"}, objective)
    return torch.cat([p.grad.view(-1) for p in model.parameters()])
