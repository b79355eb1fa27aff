"""Shared by the tests of every gradient method: small gradient matrices, tolerances, and the properties each
aggregator is checked for (finite output of the right shape, positive scaling, task-order invariance, no conflict).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtbert.methods.aggregators import AGGREGATORS

Aggregate = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]


F64 = torch.float64


# The methods that call torchjd (everything but sum and pcgrad), the solvers some of them need (torchjd's extras
# cagrad, nash-mtl, quadprog-projector), and those that run a cvxpy solver (slow-ish).
TORCHJD_METHODS = [name for name in AGGREGATORS if name not in ("sum", "pcgrad")]


SOLVER_MODULES = {"cagrad": ("cvxpy", "clarabel"), "nash-mtl": ("cvxpy", "ecos"), "upgrad": ("qpsolvers", "quadprog")}


SOLVER_METHODS = {"cagrad", "nash-mtl"}


# The figures on the fixed matrix of torchjd's docs, J = [[-4, 1, 1], [6, 1, 1]].
J = [[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=F64)


def needs_torchjd(name: str) -> None:
    """Skip unless torchjd and the solvers of method ``name`` are installed."""
    if name in TORCHJD_METHODS:
        pytest.importorskip("torchjd")
    for module in SOLVER_MODULES.get(name, ()):
        pytest.importorskip(module)


DYADIC = st.integers(-640, 640).map(lambda k: k / 64)


POSITIVE = st.integers(1, 640).map(lambda k: k / 64)


@st.composite
def matrices(
    draw: st.DrawFn, elements: st.SearchStrategy[float] = DYADIC, tasks: tuple[int, int] = (2, 5)
) -> torch.Tensor:
    n_tasks = draw(st.integers(*tasks))
    n_params = draw(st.integers(1, 20))
    values = draw(st.lists(elements, min_size=n_tasks * n_params, max_size=n_tasks * n_params))
    return torch.tensor(values, dtype=F64).reshape(n_tasks, n_params)


@st.composite
def generic_matrices(draw: st.DrawFn) -> torch.Tensor:
    n_tasks = draw(st.integers(2, 5))
    n_params = draw(st.integers(n_tasks, 20))
    g = gen(draw(st.integers(0, 2**31 - 1)))
    scales = torch.rand(n_tasks, 1, generator=g, dtype=F64) * 10 + 0.1
    return torch.randn(n_tasks, n_params, generator=g, dtype=F64) * scales


SEEDS = st.integers(0, 2**31 - 1)


FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


SLOW = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float) -> None:
    """|actual - expected| <= atol + rtol |expected| elementwise (torch.testing's first call costs 1.7 s to import)."""
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.allclose(actual, expected.to(actual.dtype), rtol=rtol, atol=atol), f"{actual} != {expected}"


def scale_of(grads: torch.Tensor) -> float:
    """The trace of the Gramian (squared Frobenius norm): the natural unit of inner products between rows."""
    return float(grads.pow(2).sum()) + 1e-300


def settings_for(name: str) -> settings:
    # Solvers (cvxpy) and MGDA's 250 Frank-Wolfe steps of tiny torch ops cost 20-50 ms a call: fewer examples.
    return SLOW if name in SOLVER_METHODS | {"mgda"} else settings(max_examples=15, deadline=None)


def check_finite_with_the_right_shape(make: Callable[[], Aggregate], name: str) -> None:
    """A P-vector of finite float64 values for every matrix."""

    @settings_for(name)
    @given(grads=matrices(), seed=SEEDS)
    def check(grads: torch.Tensor, seed: int) -> None:
        out = make()(grads, gen(seed))
        assert out.shape == (grads.shape[1],) and out.dtype == F64
        assert torch.isfinite(out).all()

    check()


def check_scales_with_the_gradients(make: Callable[[], Aggregate], name: str) -> None:
    """aggregate(c G) = c aggregate(G) for c > 0."""

    @settings_for(name)
    @given(grads=generic_matrices(), seed=SEEDS, c=st.floats(0.1, 10.0))
    def check(grads: torch.Tensor, seed: int, c: float) -> None:
        scaled = make()(c * grads, gen(seed))
        out = make()(grads, gen(seed))
        assert_close(scaled, c * out, rtol=1e-5, atol=1e-6 * c * math.sqrt(scale_of(grads)))

    check()


def check_ignores_the_order_of_the_tasks(make: Callable[[], Aggregate], name: str, rtol: float = 1e-6) -> None:
    """The same update whatever the order of the rows."""

    @settings_for(name)
    @given(grads=generic_matrices(), seed=SEEDS)
    def check(grads: torch.Tensor, seed: int) -> None:
        permutation = torch.randperm(grads.shape[0], generator=gen(seed))
        out = make()(grads, None)
        permuted = make()(grads[permutation], None)
        assert_close(permuted, out, rtol=rtol, atol=rtol * math.sqrt(scale_of(grads)))

    check()


def check_leaves_no_conflict(make: Callable[[], Aggregate], name: str, tolerance: float) -> None:
    """The update's inner product with every task gradient is non-negative (up to `tolerance` x the scale)."""

    @settings_for(name)
    @given(grads=generic_matrices())
    def check(grads: torch.Tensor) -> None:
        out = make()(grads, None)
        assert (grads @ out).min() >= -tolerance * scale_of(grads)

    check()
