"""Tests of mtbert.methods.aggregators: hand-worked PCGrad values, properties, torchjd methods."""

from __future__ import annotations

import ast
import math
import sys
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from helpers.aggregator_properties import (
    F64,
    FAST,
    POSITIVE,
    SEEDS,
    TORCHJD_METHODS,
    J,
    assert_close,
    check_finite_with_the_right_shape,
    check_ignores_the_order_of_the_tasks,
    check_leaves_no_conflict,
    check_scales_with_the_gradients,
    gen,
    generic_matrices,
    matrices,
    needs_torchjd,
    scale_of,
    t,
)
from hypothesis import given
from hypothesis import strategies as st

import mtbert.methods.aggregators as gradients
from mtbert.errors import ConfigError
from mtbert.methods.aggregators import (
    AGGREGATORS,
    GradVac,
    MissingDependencyError,
    NashMTL,
    diagnose,
    make_aggregator,
    pcgrad,
    pcgrad_projected,
    pcgrad_weights,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny matrices: intra-op threads only add wake-up latency (10-100x on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)








def naive_pcgrad(rows: list[list[float]], generator: torch.Generator) -> list[list[float]]:
    """Algorithm 1 of Yu et al. 2020 on plain Python lists, drawing the same orders as mtbert (randperm(T) per task)."""

    def dot(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    projected = []
    for i in range(len(rows)):
        g = list(rows[i])
        for j in torch.randperm(len(rows), generator=generator).tolist():
            norm2 = dot(rows[j], rows[j])
            if j == i or norm2 == 0.0:
                continue
            d = dot(g, rows[j])
            if d < 0.0:
                g = [a - d / norm2 * b for a, b in zip(g, rows[j], strict=True)]
        projected.append(g)
    return projected


# --------------------------------------------------------------------------------------------------
# Strategies: small T x P float64 matrices. Entries are multiples of 1/64 in [-10, 10], so that zeros, ties and
# exactly orthogonal rows occur; "generic" matrices are Gaussian with P >= T, so full row rank almost surely.













# --------------------------------------------------------------------------------------------------
# PCGrad: values worked out by hand


def test_pcgrad_two_conflicting_tasks_by_hand() -> None:
    # g1.g2 = -1: g1' = g1 - (-1/2) g2 = [1/2, 1/2]; g2' = g2 - (-1/1) g1 = [0, 1]; the plain sum is [0, 1].
    grads = t([[1, 0], [-1, 1]])
    assert pcgrad_projected(grads, gen(0)).tolist() == [[0.5, 0.5], [0.0, 1.0]]
    assert pcgrad(grads, gen(0)).tolist() == [0.5, 1.5]
    assert pcgrad_weights(grads @ grads.T, gen(0)).tolist() == [2.0, 1.5]  # (g1 + g2/2) + (g2 + g1)


def test_pcgrad_two_agreeing_tasks_is_the_sum() -> None:
    grads = t([[1, 0], [1, 1]])
    assert pcgrad(grads, gen(0)).tolist() == [2.0, 1.0]
    assert pcgrad_projected(grads, gen(0)).tolist() == grads.tolist()


def test_pcgrad_figure_1_each_gradient_lands_on_the_others_normal_plane() -> None:
    # Figure 1 of the paper: g1 = [2, 0], g2 = [-1, 1], g1.g2 = -2 < 0.
    # g1' = g1 + (2/2) g2 = [1, 1] (orthogonal to g2), g2' = g2 + (2/4) g1 = [0, 1] (orthogonal to g1).
    g1, g2 = [2.0, 0.0], [-1.0, 1.0]
    projected = pcgrad_projected(t([g1, g2]), gen(0))
    assert projected.tolist() == [[1.0, 1.0], [0.0, 1.0]]
    assert float(projected[0] @ t([g2])[0]) == 0.0
    assert float(projected[1] @ t([g1])[0]) == 0.0
    assert pcgrad(t([g1, g2]), gen(0)).tolist() == [1.0, 2.0]


THREE_TASKS = [[2.0, 0.0, 0.0], [-1.0, 1.0, 0.0], [-1.0, -2.0, 1.0]]  # every pair conflicts; every order matters


@pytest.mark.parametrize(
    ("seed", "orders", "expected_rows"),
    [
        # Seed 0: task 0 visits 2 then 1, task 1 visits 2 then 0, task 2 visits 1 then 0. By hand, task 0:
        # g1 + (2/6) g3 = [5/3, -2/3, 1/3], then its dot with g2 is -7/3, so add (7/6) g2 = [1/2, 1/2, 1/3].
        (0, [[2, 0, 1], [2, 1, 0], [1, 2, 0]], [["1/2", "1/2", "1/3"], ["0", "2/3", "1/6"], ["0", "-3/2", "1"]]),
        # Seed 1: the reverse order for tasks 0 and 1 (1 then 2, 0 then 2) gives other rows.
        (1, [[1, 2, 0], [0, 1, 2], [1, 2, 0]], [["1/2", "0", "1/2"], ["-1/3", "1/3", "1/3"], ["0", "-3/2", "1"]]),
    ],
)
def test_pcgrad_three_tasks_pinned_and_equal_to_the_naive_loop(
    seed: int, orders: list[list[int]], expected_rows: list[list[str]]
) -> None:
    g = gen(seed)
    drawn = [torch.randperm(3, generator=g).tolist() for _ in range(3)]
    assert drawn == orders, "torch.randperm drew other orders for this seed: re-derive the pinned values"
    expected = t([[float(Fraction(x)) for x in row] for row in expected_rows])
    projected = pcgrad_projected(t(THREE_TASKS), gen(seed))
    assert_close(projected, expected, rtol=0, atol=1e-12)
    assert_close(projected, t(naive_pcgrad(THREE_TASKS, gen(seed))), rtol=0, atol=1e-12)
    assert_close(pcgrad(t(THREE_TASKS), gen(seed)), expected.sum(0), rtol=0, atol=1e-12)


def test_pcgrad_skips_zero_gradients_and_keeps_dtype_and_device() -> None:
    grads = torch.tensor([[0.0, 0.0], [1.0, 0.0], [-1.0, 1.0]], dtype=torch.float32)
    out = pcgrad(grads, gen(0))
    assert out.dtype == torch.float32 and out.device == grads.device
    # The zero row neither moves nor is projected on; the other two are the first hand example.
    assert out.tolist() == [0.5, 1.5]


def test_pcgrad_rejects_a_vector() -> None:
    with pytest.raises(ValueError, match="T x P matrix"):
        pcgrad(torch.ones(3))


def test_pcgrad_without_a_generator_uses_the_global_rng() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        first = pcgrad(t(THREE_TASKS))
        torch.manual_seed(7)
        second = pcgrad(t(THREE_TASKS))
    assert torch.equal(first, second)


# --------------------------------------------------------------------------------------------------
# PCGrad: properties on random matrices


@FAST
@given(grads=matrices(), seed=SEEDS)
def test_pcgrad_is_finite_with_the_right_shape(grads: torch.Tensor, seed: int) -> None:
    out = pcgrad(grads, gen(seed))
    assert out.shape == (grads.shape[1],)
    assert out.dtype == F64
    assert torch.isfinite(out).all()


@FAST
@given(grads=matrices(elements=POSITIVE), seed=SEEDS)
def test_pcgrad_is_the_sum_when_no_pair_conflicts(grads: torch.Tensor, seed: int) -> None:
    assert torch.equal(pcgrad(grads, gen(seed)), grads.sum(0))


@FAST
@given(grads=matrices(tasks=(2, 2)), seed=SEEDS)
def test_pcgrad_two_tasks_projected_gradients_no_longer_conflict(grads: torch.Tensor, seed: int) -> None:
    projected = pcgrad_projected(grads, gen(seed))
    tolerance = 1e-12 * scale_of(grads)
    assert float(projected[0] @ grads[1]) >= -tolerance
    assert float(projected[1] @ grads[0]) >= -tolerance


@FAST
@given(grads=matrices(), seed=SEEDS, c=st.floats(0.01, 100.0))
def test_pcgrad_scales_with_the_gradients(grads: torch.Tensor, seed: int, c: float) -> None:
    assert_close(
        pcgrad(c * grads, gen(seed)),
        c * pcgrad(grads, gen(seed)),
        rtol=1e-9,
        atol=1e-9 * c * math.sqrt(scale_of(grads)),
    )


@FAST
@given(grads=matrices(), seed=SEEDS)
def test_pcgrad_same_seed_same_output(grads: torch.Tensor, seed: int) -> None:
    assert torch.equal(pcgrad(grads, gen(seed)), pcgrad(grads, gen(seed)))


@FAST
@given(grads=matrices(), seed=SEEDS)
def test_pcgrad_gramian_version_equals_the_naive_loop(grads: torch.Tensor, seed: int) -> None:
    naive = t(naive_pcgrad(grads.tolist(), gen(seed)))
    atol = 1e-9 * math.sqrt(scale_of(grads))
    assert_close(pcgrad_projected(grads, gen(seed)), naive, rtol=1e-9, atol=atol)
    assert_close(pcgrad(grads, gen(seed)), naive.sum(0), rtol=1e-9, atol=atol)
    assert_close(pcgrad_weights(grads @ grads.T, gen(seed)) @ grads, naive.sum(0), rtol=1e-9, atol=atol)


@FAST
@given(grads=matrices(tasks=(2, 2)))
def test_pcgrad_agrees_with_torchjd_on_two_tasks(grads: torch.Tensor) -> None:
    aggregation = pytest.importorskip("torchjd.aggregation")
    # torchjd's PCGradWeighting adds up the projected rows' coefficients, i.e. it SUMS like the official code and
    # like us (no factor T to undo). With two tasks there is one possible order, so no RNG needs aligning.
    assert_close(pcgrad(grads), aggregation.PCGrad()(grads), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_pcgrad_agrees_with_torchjd_on_three_tasks_with_the_same_orders(seed: int) -> None:
    aggregation = pytest.importorskip("torchjd.aggregation")
    # torchjd draws torch.randperm(T) per task from the global RNG, we from our generator: same seed, same orders.
    grads = torch.randn(3, 6, generator=gen(100 + seed), dtype=F64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        expected = aggregation.PCGrad()(grads)
    assert_close(pcgrad(grads, gen(seed)), expected, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# Every aggregator: shared properties


def test_registry_has_the_pinned_names() -> None:
    assert set(AGGREGATORS) == {
        "sum", "pcgrad", "cagrad", "gradvac", "imtl-g", "mgda", "upgrad", "aligned-mtl", "nash-mtl",
    }  # fmt: skip
    assert AGGREGATORS["pcgrad"] is pcgrad


def test_make_aggregator_gives_fresh_stateful_instances_and_rejects_unknown_names() -> None:
    assert make_aggregator("pcgrad") is pcgrad
    first, second = make_aggregator("gradvac"), make_aggregator("gradvac")
    assert isinstance(first, GradVac) and first is not second and first is not AGGREGATORS["gradvac"]
    assert isinstance(make_aggregator("nash-mtl"), NashMTL)
    with pytest.raises(ConfigError, match="unknown gradient method 'pcgard'; choose one of: sum, pcgrad"):
        make_aggregator("pcgard")




# cvxpy warns "Solution may be inaccurate" when nash-mtl meets a degenerate (e.g. rank-1) matrix; still finite.
@pytest.mark.filterwarnings("ignore:Solution may be inaccurate")
@pytest.mark.parametrize("name", list(AGGREGATORS))
def test_aggregator_output_is_finite_with_the_right_shape(name: str) -> None:
    needs_torchjd(name)
    check_finite_with_the_right_shape(lambda: make_aggregator(name), name)


@pytest.mark.parametrize("name", list(AGGREGATORS))
def test_aggregator_keeps_float32(name: str) -> None:
    needs_torchjd(name)
    grads = torch.tensor(J, dtype=torch.float32)
    out = make_aggregator(name)(grads, gen(0))
    assert out.dtype == torch.float32 and out.shape == (3,)


# Positive scaling: every method but nash-mtl (which normalises the Gramian and clips the update to norm 1).
@pytest.mark.parametrize("name", [name for name in AGGREGATORS if name != "nash-mtl"])
def test_aggregator_scales_with_the_gradients(name: str) -> None:
    needs_torchjd(name)
    check_scales_with_the_gradients(lambda: make_aggregator(name), name)


# Permutation invariance of the output: not pcgrad and gradvac, whose random task order makes them invariant only in
# distribution; nash-mtl's iterative solver stops at a tolerance, so it is checked on one matrix further down.
@pytest.mark.parametrize("name", [name for name in AGGREGATORS if name not in ("pcgrad", "gradvac", "nash-mtl")])
def test_aggregator_ignores_the_order_of_the_tasks(name: str) -> None:
    needs_torchjd(name)
    check_ignores_the_order_of_the_tasks(lambda: make_aggregator(name), name)


# No remaining conflict: the update has a non-negative inner product with every task gradient. MGDA's is exact;
# nash-mtl's solver (cvxpy, stopped at a tolerance) reaches its optimum, where g_i . update = 1 / alpha_i > 0, only
# approximately: a hypothesis-found matrix with one large row gave -1.9e-4 x the scale, so it gets 1e-3.
@pytest.mark.parametrize(("name", "tolerance"), [("mgda", 1e-9), ("nash-mtl", 1e-3)])
def test_aggregator_leaves_no_conflict(name: str, tolerance: float) -> None:
    needs_torchjd(name)
    check_leaves_no_conflict(lambda: make_aggregator(name), name, tolerance)


@FAST
@given(grads=matrices())
def test_upgrad_leaves_no_conflict_up_to_torchjds_regularisation(grads: torch.Tensor) -> None:
    needs_torchjd("upgrad")
    import torchjd.aggregation as aggregation

    # torchjd solves the projection on the trace-normalised Gramian plus reg_eps = 1e-4 times the identity, so the
    # KKT conditions give g_i . update >= -1e-4 * trace * w_i for the weights w; exact when reg_eps is 0.
    gramian = grads @ grads.T
    weights = aggregation.UPGradWeighting()(gramian)
    out = gradients.upgrad(grads)
    assert_close(out, weights @ grads, rtol=1e-12, atol=1e-12)
    slack = 1e-4 * scale_of(grads) * weights.clamp(min=0) + 1e-9 * scale_of(grads)
    assert (grads @ out >= -slack).all()


# --------------------------------------------------------------------------------------------------
# Every aggregator: one pinned value on J, then one known property each


@pytest.mark.parametrize(
    ("name", "expected", "rtol"),
    [
        ("sum", [2.0, 2.0, 2.0], 0.0),
        ("pcgrad", [100 / 171, 650 / 171, 650 / 171], 1e-12),  # worked out by hand: g1.g2 = -22, |g1|^2 18, |g2|^2 38
        ("gradvac", [100 / 171, 650 / 171, 650 / 171], 1e-7),  # a fresh GradVac with two tasks is PCGrad (see below)
        ("mgda", [0.0, 1.0, 1.0], 1e-9),  # min-norm point 0.6 g1 + 0.4 g2, by hand
        ("upgrad", [0.2929020002, 1.9003520780, 1.9003520780], 1e-8),  # torchjd's docs: [0.2929, 1.9004, 1.9004]
        ("imtl-g", [0.0766968306, 1.0, 1.0], 1e-8),
        ("cagrad", [0.1835034204, 1.2041241479, 1.2041241479], 1e-6),
        ("aligned-mtl", [0.2132787460, 0.9673329838, 0.9673329838], 1e-8),
        ("nash-mtl", [0.0541532486, 0.7060691983, 0.7060691983], 1e-4),
    ],
)
def test_aggregator_pinned_value(name: str, expected: list[float], rtol: float) -> None:
    needs_torchjd(name)
    assert_close(make_aggregator(name)(t(J), gen(0)), t([expected])[0], rtol=rtol, atol=1e-9)


def test_cagrad_stays_at_distance_c_norm_of_the_mean() -> None:
    needs_torchjd("cagrad")
    for seed in range(3):
        grads = torch.randn(3, 8, generator=gen(seed), dtype=F64)
        mean = grads.mean(0)
        for c in (0.0, 0.4, 0.9):
            distance = torch.linalg.vector_norm(gradients.cagrad(grads, c=c) - mean)
            assert float(distance) == pytest.approx(c * float(torch.linalg.vector_norm(mean)), rel=1e-6, abs=1e-9)


@FAST
@given(grads=generic_matrices())
def test_imtl_g_projects_equally_on_every_unit_gradient(grads: torch.Tensor) -> None:
    pytest.importorskip("torchjd")
    out = gradients.imtl_g(grads)
    projections = grads @ out / torch.linalg.vector_norm(grads, dim=1)
    assert_close(projections, projections[0].expand_as(projections), rtol=1e-6, atol=1e-9)


@FAST
@given(grads=generic_matrices())
def test_mgda_is_the_min_norm_point_of_the_convex_hull(grads: torch.Tensor) -> None:
    pytest.importorskip("torchjd")
    # Optimality of the minimum-norm point d of the hull: g_i . d >= |d|^2 for every i (up to Frank-Wolfe's stop).
    out = gradients.mgda(grads)
    assert (grads @ out >= out @ out - 1e-3 * scale_of(grads)).all()


def test_upgrad_with_two_tasks_is_half_of_pcgrad() -> None:
    needs_torchjd("upgrad")
    # Known equivalence (Quinton & Rey 2024): on two rows PCGrad equals UPGrad with a SUM preference; ours averages.
    # torchjd regularises its QP (reg_eps 1e-4 on the normalised Gramian), hence the 1e-3 tolerance.
    for rows in (J, [[1.0, 0.0], [-1.0, 1.0]], [[2.0, 0.0], [-1.0, 1.0]]):
        assert_close(2 * gradients.upgrad(t(rows)), pcgrad(t(rows)), rtol=1e-3, atol=1e-3)


def test_aligned_mtl_gives_orthogonal_tasks_equal_unit_contributions() -> None:
    pytest.importorskip("torchjd")
    # Orthogonal rows of norms 3, 1, 2: B = diag(n_min / n_i), so the update is (n_min / T) * sum of unit vectors.
    grads = t([[3, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 2]])
    assert_close(gradients.aligned_mtl(grads), t([[1 / 3, 1 / 3, 0, 1 / 3]])[0], rtol=1e-9, atol=1e-12)


def test_gradvac_is_pcgrad_on_a_fresh_instance_then_keeps_its_targets() -> None:
    pytest.importorskip("torchjd")
    # With the EMA targets at 0, GradVac's correction of a negative cosine is PCGrad's projection.
    grads = t([[1, 0], [-1, 1]])
    aggregator = GradVac()
    assert_close(aggregator(grads, gen(0)), pcgrad(grads), rtol=1e-7, atol=1e-7)
    # After a step the target of that pair is beta * cos = -0.354, so the same matrix is corrected less.
    second = aggregator(grads, gen(0))
    assert not torch.allclose(second, pcgrad(grads), rtol=1e-3, atol=1e-3)
    aggregator.reset()
    assert_close(aggregator(grads, gen(0)), pcgrad(grads), rtol=1e-7, atol=1e-7)
    # The shared registry instance is not touched by a fresh one.
    assert AGGREGATORS["gradvac"] is not aggregator


def test_gradvac_seeds_torchjds_global_rng_from_our_generator_and_restores_it() -> None:
    pytest.importorskip("torchjd")
    grads = torch.randn(4, 6, generator=gen(5), dtype=F64)
    before = torch.get_rng_state()
    first = GradVac()(grads, gen(3))
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(GradVac()(grads, gen(3)), first)


def test_nash_mtl_orthogonal_tasks_zero_gradients_and_task_order() -> None:
    needs_torchjd("nash-mtl")
    # Orthogonal rows: the bargaining solution alpha_i |g_i|^2 alpha_i = 1 gives alpha_i proportional to 1/|g_i|,
    # so the update is along the sum of unit vectors, clipped to norm max_norm = 1.
    grads = t([[3, 0, 0], [0, 1, 0]])
    assert_close(NashMTL()(grads), t([[1, 1, 0]])[0] / math.sqrt(2), rtol=1e-3, atol=1e-3)
    assert NashMTL()(torch.zeros(3, 4, dtype=F64)).tolist() == [0.0] * 4
    # The order of the tasks does not matter, up to the solver's stopping tolerance.
    grads = torch.randn(3, 5, generator=gen(11), dtype=F64)
    assert_close(NashMTL()(grads.flip(0)), NashMTL()(grads), rtol=1e-3, atol=1e-3)


# --------------------------------------------------------------------------------------------------
# Optional dependency handling


def test_import_does_not_load_torchjd() -> None:
    tree = ast.parse(Path(gradients.__file__).read_text(encoding="utf-8"))
    top_level = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    names = [alias.name for node in top_level if isinstance(node, ast.Import) for alias in node.names]
    names += [node.module or "" for node in top_level if isinstance(node, ast.ImportFrom)]
    assert not [name for name in names if name.split(".")[0] in ("torchjd", "cvxpy", "numpy", "scipy")]


def test_without_torchjd_sum_and_pcgrad_work_and_the_others_say_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "torchjd", None)
    monkeypatch.setitem(sys.modules, "torchjd.aggregation", None)
    grads = t(J)
    assert AGGREGATORS["sum"](grads).tolist() == [2.0, 2.0, 2.0]
    assert pcgrad(grads).shape == (3,)
    for name in TORCHJD_METHODS:
        with pytest.raises(MissingDependencyError, match=f"gradient method '{name}' needs torchjd") as caught:
            make_aggregator(name)(grads)
        assert isinstance(caught.value, ImportError)


def test_missing_solver_is_reported_as_missing_dependency(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torchjd")
    import torchjd._mixins

    monkeypatch.setattr(torchjd._mixins, "find_spec", lambda name: None)
    with pytest.raises(MissingDependencyError, match="'cagrad' needs an optional solver of torchjd"):
        gradients.cagrad(t(J))


# --------------------------------------------------------------------------------------------------
# diagnose


def test_diagnose_on_a_hand_matrix() -> None:
    # |a| = 1, |b| = sqrt 2, c = 0; cos(a, b) = -1/sqrt 2; the sum is [0, 1], so |sum - [1, 1]| = 1.
    stats = diagnose(t([[1, 0], [-1, 1], [0, 0]]), t([[1, 1]])[0], ["a", "b", "c"])
    assert stats["grad_norm"] == pytest.approx({"a": 1.0, "b": math.sqrt(2), "c": 0.0})
    assert list(stats["cosine"]) == ["a-b", "a-c", "b-c"]
    assert stats["cosine"] == pytest.approx({"a-b": -1 / math.sqrt(2), "a-c": 0.0, "b-c": 0.0})
    assert stats["conflict"] == {"a-b": True, "a-c": False, "b-c": False}
    assert stats["removed_norm"] == pytest.approx(1.0)


def test_diagnose_of_pcgrads_update_reports_what_it_removed() -> None:
    grads = t([[1, 0], [-1, 1]])
    stats = diagnose(grads, pcgrad(grads), ["x", "y"])
    assert stats["removed_norm"] == pytest.approx(math.sqrt(0.5))  # |[0, 1] - [1/2, 3/2]|
    assert all(isinstance(value, float) for value in stats["grad_norm"].values())


def test_diagnose_needs_one_name_per_row() -> None:
    with pytest.raises(ValueError, match="task_names has 1 names for 2 gradient rows"):
        diagnose(t([[1, 0], [0, 1]]), t([[1, 1]])[0], ["a"])


def test_mtbert_gradients_re_exports_every_public_name_of_the_aggregators():
    import mtbert.gradients
    from mtbert.gradients import AGGREGATORS, make_aggregator, pcgrad  # noqa: F401 - the import is the check
    from mtbert.methods import aggregators

    public = {n for n, v in vars(aggregators).items() if not n.startswith("_") and getattr(v, "__module__", None)
              == aggregators.__name__} | {"AGGREGATORS", "TORCHJD_INSTALL_HINT"}
    assert public <= set(mtbert.gradients.__all__)
    assert all(getattr(mtbert.gradients, n) is getattr(aggregators, n) for n in mtbert.gradients.__all__)
