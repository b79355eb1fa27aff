"""Per-task gradient aggregation: a T x P matrix of per-task gradients in, one P-vector update out.

Row t of ``grads`` is task t's gradient of the shared encoder parameters, flattened. Every method but
``sum`` returns a linear combination ``w @ grads`` whose T weights are computed from the T x T Gramian
``grads @ grads.T`` alone: one matrix product on the gradients' device, one copy of the Gramian to the
CPU in float64 (the only host sync), the method's small loops or solver there, then one product
``w @ grads``.

The rows may be stored in bfloat16 (``GradientSurgery(buffer_dtype="bfloat16")``, half the memory). On a CPU
that multiplies bfloat16 matrices natively through oneDNN (AVX512-BF16 or AMX: :func:`_bfloat16_products`), the
Gramian is then one bfloat16 product and ``w @ grads`` one per block of columns, accumulated in float32 and
rounded once to bfloat16 (2^-9 relative per entry: no entry changes sign), reading half the bytes of float32 rows;
the update is float32. Elsewhere (a bfloat16 product is many times slower than float32 on a CPU without bf16
instructions; a GPU converts chunks at little cost) they are accumulated in float32 over column chunks of about
``CHUNK_BYTES``, converted one at a time.

Scale: ``sum``, ``pcgrad`` and ``gradvac`` are on the scale of a SUM of task gradients; ``cagrad``,
``imtl-g``, ``mgda``, ``upgrad`` and ``aligned-mtl`` follow their papers (and torchjd) and are on the
scale of a MEAN (their weights sum to 1, or start from the mean); ``nash-mtl`` has its own scale and
clips the update's norm to 1. Compare learning rates across methods with this in mind.

``sum`` and ``pcgrad`` need only torch. The other methods call torchjd's weightings
(``pip install "torchjd[cagrad,nash-mtl,quadprog-projector]==0.18.0"``), imported when first called;
without it they raise :class:`MissingDependencyError`.

``gradvac`` and ``nash-mtl`` keep state across steps, so they are small classes with ``reset()``.
``AGGREGATORS`` holds one shared instance of each; a training run should take its own from
:func:`make_aggregator`.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any, Protocol

import torch
from torch import Tensor

from mtbert.errors import ConfigError, MtbertError

TORCHJD_INSTALL_HINT = 'pip install "torchjd[cagrad,nash-mtl,quadprog-projector]==0.18.0"'
CHUNK_BYTES = 4 << 20  # float32 bytes of one column chunk of low-precision rows (a few MB: stays in cache)


class Aggregator(Protocol):
    """A gradient method: ``(grads T x P, generator) -> update P``; the generator orders random choices, and
    ``out`` (a P-vector), when given, receives the update (no fresh P-vector: see ``PerTaskGradients``)."""

    def __call__(self, grads: Tensor, generator: torch.Generator | None = None, *,
                 out: Tensor | None = None) -> Tensor: ...


class MissingDependencyError(MtbertError, ImportError):
    """A gradient method needs an optional package (torchjd or one of its solvers) that is not installed."""


# --------------------------------------------------------------------------------------------------
# Shared helpers


def _check_matrix(grads: Tensor) -> None:
    if grads.ndim != 2:
        raise ValueError(f"grads must be a T x P matrix (one row per task), got shape {tuple(grads.shape)}")


def _full_precision(grads: Tensor) -> bool:
    """Whether ``grads`` is float32 or float64 (used as is); else (bfloat16, float16) it is read in float32 chunks."""
    return grads.dtype in (torch.float32, torch.float64)


def _update_dtype(grads: Tensor) -> torch.dtype:
    """The dtype of an update of ``grads``: theirs, or float32 for low-precision rows."""
    return torch.promote_types(grads.dtype, torch.float32)


@functools.cache
def _native_bfloat16(device_type: str) -> bool:
    if device_type != "cpu":  # a GPU converts chunks at little cost; its bfloat16 products may also reduce in
        return False  # bfloat16 (torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction)
    capabilities = torch.cpu.get_capabilities()
    return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))


def _bfloat16_products(grads: Tensor) -> bool:
    """Whether the products of ``grads`` (bfloat16 rows) are taken in bfloat16: on a CPU with bf16 instructions
    (AVX512-BF16, AMX), where oneDNN accumulates them in float32; else (a GPU too) in float32 column chunks."""
    return grads.dtype == torch.bfloat16 and _native_bfloat16(grads.device.type)


def _column_chunks(grads: Tensor) -> Iterator[tuple[int, int, Tensor]]:
    """``(start, end, grads[:, start:end])`` over the columns, each chunk about ``CHUNK_BYTES``: a view in full
    precision, a float32 copy of low-precision rows."""
    width = max(1, CHUNK_BYTES // (4 * max(1, grads.shape[0])))
    for start in range(0, grads.shape[1], width):
        end = min(start + width, grads.shape[1])
        chunk = grads[:, start:end]
        yield start, end, chunk if _full_precision(chunk) else chunk.float()


def _gramian(grads: Tensor) -> Tensor:
    """``grads @ grads.T`` on ``grads``' device: one matrix product in full precision (or in bfloat16 where
    :func:`_bfloat16_products`); else, for low-precision rows, the float32 products of the column chunks summed in
    float64 (no float32 copy of the whole matrix)."""
    _check_matrix(grads)
    if _full_precision(grads):
        return grads @ grads.T
    if _bfloat16_products(grads):
        return (grads @ grads.T).double()
    total = torch.zeros(grads.shape[0], grads.shape[0], dtype=torch.float64, device=grads.device)
    for _, _, chunk in _column_chunks(grads):
        total += (chunk @ chunk.T).double()
    return total


def _gramian_cpu(grads: Tensor) -> Tensor:
    """``grads @ grads.T`` computed where ``grads`` lives (:func:`_gramian`), then copied once to the CPU as float64."""
    gramian_ = _gramian(grads).to(device="cpu", dtype=torch.float64)
    return (gramian_ + gramian_.T) / 2  # exactly symmetric, whatever the matmul's rounding


def _combine(weights: Tensor, grads: Tensor, out: Tensor | None = None) -> Tensor:
    """``weights @ grads`` with the weights cast to the gradients' dtype and device (into ``out`` when given);
    low-precision rows give a float32 update: bfloat16 products over blocks of ``CHUNK_BYTES / 4`` columns
    (:func:`_bfloat16_products`), else float32 chunk by chunk."""
    if not _full_precision(grads):
        out = torch.empty(grads.shape[1], dtype=torch.float32, device=grads.device) if out is None else out
        if _bfloat16_products(grads):  # in column blocks: the bfloat16 result is a small temporary, not a P-vector
            weights = weights.to(device=grads.device, dtype=grads.dtype).unsqueeze(0)
            width = max(1, CHUNK_BYTES // 4)
            for start in range(0, grads.shape[1], width):
                end = min(start + width, grads.shape[1])
                out[start:end].copy_((weights @ grads[:, start:end]).squeeze(0))
            return out
        weights = weights.to(device=grads.device, dtype=torch.float32).unsqueeze(0)
        for start, end, chunk in _column_chunks(grads):
            torch.matmul(weights, chunk, out=out[start:end].unsqueeze(0))
        return out
    weights = weights.to(device=grads.device, dtype=grads.dtype)
    if out is None:
        return weights @ grads
    return torch.matmul(weights.unsqueeze(0), grads, out=out.unsqueeze(0)).squeeze(0)


def _torchjd(method: str) -> ModuleType:
    try:
        import torchjd.aggregation as aggregation
    except ImportError as err:
        raise MissingDependencyError(
            f"gradient method {method!r} needs torchjd, which is not installed: {TORCHJD_INSTALL_HINT}"
        ) from err
    return aggregation


def _make_torchjd(method: str, name: str, *args: Any, **kwargs: Any) -> Any:
    """Instantiate ``torchjd.aggregation.<name>``, turning its missing-solver ImportError into ours."""
    aggregation = _torchjd(method)
    try:
        return getattr(aggregation, name)(*args, **kwargs)
    except ImportError as err:
        raise MissingDependencyError(
            f"gradient method {method!r} needs an optional solver of torchjd ({err}): {TORCHJD_INSTALL_HINT}"
        ) from err


@contextmanager
def _global_rng_from(generator: torch.Generator | None) -> Iterator[None]:
    """Run torchjd code that draws from the global CPU RNG with a seed taken from ``generator``.

    The global RNG state is restored afterwards; with no generator the global RNG is used as is.
    """
    if generator is None:
        yield
        return
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


# --------------------------------------------------------------------------------------------------
# Sum and PCGrad (own code, torch only)


def sum_rows(grads: Tensor, generator: torch.Generator | None = None, *, out: Tensor | None = None) -> Tensor:
    """The plain sum of the task gradients (ordinary summed-loss training); ``generator`` is unused."""
    _check_matrix(grads)
    if not _full_precision(grads):  # in float32, chunk by chunk
        return _combine(torch.ones(grads.shape[0]), grads, out)
    return grads.sum(dim=0) if out is None else torch.sum(grads, dim=0, out=out)


def _pcgrad_coefficients(gramian: Tensor, generator: torch.Generator | None) -> list[list[float]]:
    """Row i: the coefficients of PCGrad's projected g_i' over the ORIGINAL gradients (see :func:`pcgrad`)."""
    m = gramian.detach().to(device="cpu", dtype=torch.float64).tolist()  # the only host sync
    t = len(m)
    coefficients = []
    for i in range(t):
        c = [0.0] * t
        c[i] = 1.0
        for j in torch.randperm(t, generator=generator).tolist():
            if j == i or m[j][j] <= 0.0:
                continue
            dot = sum(c[k] * m[k][j] for k in range(t))  # g_i' . g_j
            if dot < 0.0:
                c[j] -= dot / m[j][j]  # g_i' -= (g_i'.g_j / |g_j|^2) g_j
        coefficients.append(c)
    return coefficients


def pcgrad_weights(gramian: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """PCGrad's update as weights over the original gradients: ``pcgrad(G) == pcgrad_weights(G @ G.T) @ G``.

    Takes the T x T Gramian; returns the T-vector w (sum over tasks of the projection coefficients) in the
    Gramian's dtype and device. Draws the same random orders from ``generator`` as :func:`pcgrad`.
    """
    coefficients = torch.tensor(_pcgrad_coefficients(gramian, generator), dtype=torch.float64)
    return coefficients.sum(dim=0).to(device=gramian.device, dtype=gramian.dtype)


def pcgrad_projected(grads: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """The T x P projected gradients g_i' of PCGrad (their sum is :func:`pcgrad`'s update)."""
    coefficients = torch.tensor(_pcgrad_coefficients(_gramian_cpu(grads), generator), dtype=torch.float64)
    if not _full_precision(grads):
        return torch.stack([_combine(row, grads) for row in coefficients])
    return coefficients.to(device=grads.device, dtype=grads.dtype) @ grads


def pcgrad(grads: Tensor, generator: torch.Generator | None = None, *, out: Tensor | None = None) -> Tensor:
    """PCGrad exactly as Algorithm 1 of Yu et al. 2020, "Gradient Surgery for Multi-Task Learning".

    Paper: https://arxiv.org/abs/2001.06782

    For each task i, start from g_i' = g_i; for each other task j in a random order (a fresh
    ``torch.randperm(T, generator=generator)`` per task i, i itself skipped; the generator must be a CPU
    one): if g_i'.g_j < 0, set g_i' -= (g_i'.g_j / |g_j|^2) g_j, always against the ORIGINAL g_j; tasks with
    g_j = 0 are skipped. Returns the SUM of the g_i', as the official code does (one popular PyTorch port
    averages instead, which is this divided by T).

    Computed through the Gramian: each g_i' is a combination of the original rows, so the loops run on
    T x T coefficients on the CPU (one host sync) and the update is one product ``w @ grads``.
    """
    return _combine(pcgrad_weights(_gramian_cpu(grads), generator), grads, out)


# --------------------------------------------------------------------------------------------------
# Methods from torchjd, called on our Gramian (torchjd's "Weighting" interface, the same method as its
# Aggregator of the same name; on the CPU Gramian there is no per-iteration host sync on a GPU).


def cagrad(grads: Tensor, generator: torch.Generator | None = None, *, c: float = 0.5,
           out: Tensor | None = None) -> Tensor:
    """CAGrad, Liu et al. 2021, "Conflict-Averse Gradient Descent for Multi-task Learning".

    Paper: https://arxiv.org/abs/2110.14048

    Wraps ``torchjd.aggregation.CAGradWeighting(c)`` (cvxpy, Clarabel). Returns g0 + (c |g0| / |g_w|) g_w with
    g0 the MEAN gradient, so |update - g0| = c |g0|; no final rescaling (the official code's ``rescale=0``;
    its default ``rescale=1`` divides by 1 + c^2). c = 0 gives the mean. ``generator`` is unused.
    """
    weighting = _make_torchjd("cagrad", "CAGradWeighting", c=c)
    return _combine(weighting(_gramian_cpu(grads)), grads, out)


def imtl_g(grads: Tensor, generator: torch.Generator | None = None, *, out: Tensor | None = None) -> Tensor:
    """IMTL-G, Liu et al. 2021, "Towards Impartial Multi-task Learning".

    Paper: https://openreview.net/forum?id=IMPnRXEWpvr

    Wraps ``torchjd.aggregation.IMTLGWeighting`` (pseudo-inverse form of arXiv:2406.16232). The weights sum
    to 1 and the update has the same projection on every task's unit gradient. ``generator`` is unused.
    """
    weighting = _make_torchjd("imtl-g", "IMTLGWeighting")
    return _combine(weighting(_gramian_cpu(grads)), grads, out)


def mgda(grads: Tensor, generator: torch.Generator | None = None, *, out: Tensor | None = None) -> Tensor:
    """MGDA (Désidéri 2012) as in Sener & Koltun 2018, "Multi-Task Learning as Multi-Objective Optimization".

    Paper: https://arxiv.org/abs/1810.04650

    Wraps ``torchjd.aggregation.MGDAWeighting`` (Frank-Wolfe; stop at step 1e-5 or 250 steps, the constants of
    Sener & Koltun's MinNormSolver, tighter than torchjd's defaults 1e-3 and 100): the
    (approximately) minimum-norm point of the convex hull of the gradients, weights >= 0 summing to 1, so it
    has a non-negative inner product with every task gradient. ``generator`` is unused.
    """
    weighting = _make_torchjd("mgda", "MGDAWeighting", epsilon=1e-5, max_iters=250)
    return _combine(weighting(_gramian_cpu(grads)), grads, out)


def upgrad(grads: Tensor, generator: torch.Generator | None = None, *, out: Tensor | None = None) -> Tensor:
    """UPGrad, Quinton & Rey 2024, "Jacobian Descent for Multi-Objective Optimization".

    Paper: https://arxiv.org/abs/2406.16232

    Wraps ``torchjd.aggregation.UPGradWeighting`` (quadprog): each gradient is projected onto the dual cone
    of all gradients and the projections are AVERAGED (torchjd's default preference 1/T), so the update has
    a non-negative inner product with every task gradient. ``generator`` is unused.
    """
    weighting = _make_torchjd("upgrad", "UPGradWeighting")
    return _combine(weighting(_gramian_cpu(grads)), grads, out)


def aligned_mtl(grads: Tensor, generator: torch.Generator | None = None, *, out: Tensor | None = None) -> Tensor:
    """Aligned-MTL, Senushkin et al. 2023, "Independent Component Alignment for Multi-Task Learning".

    Paper: https://arxiv.org/abs/2305.19000

    Wraps ``torchjd.aggregation.AlignedMTLWeighting`` (scale "min"): the gradients are aligned to an
    orthogonal system of equal norms sqrt(smallest Gramian eigenvalue), then AVERAGED. ``generator`` is unused.
    """
    weighting = _make_torchjd("aligned-mtl", "AlignedMTLWeighting")
    return _combine(weighting(_gramian_cpu(grads)), grads, out)


class GradVac:
    """GradVac (stateful), Wang et al. 2021, "Gradient Vaccine: Investigating and Improving Multi-task Optimization".

    Paper: https://arxiv.org/abs/2010.05874

    Wraps ``torchjd.aggregation.GradVacWeighting(beta, eps)``, which keeps an EMA of the pairwise cosine
    targets across calls (kept here; :meth:`reset` clears it). Like PCGrad it visits the other tasks in a
    random order and SUMS the corrected gradients; with all targets at 0 (a fresh instance) a correction is
    exactly PCGrad's projection. torchjd draws the order from the global RNG, so ``generator`` seeds it
    (the global RNG state is restored afterwards).
    """

    def __init__(self, beta: float = 0.5, eps: float = 1e-8) -> None:
        self.beta = beta
        self.eps = eps
        self._weighting: Any = None

    def reset(self) -> None:
        """Forget the EMA targets."""
        self._weighting = None

    def __call__(self, grads: Tensor, generator: torch.Generator | None = None, *,
                 out: Tensor | None = None) -> Tensor:
        """The GradVac update for ``grads`` (T x P); updates the EMA targets."""
        if self._weighting is None:
            self._weighting = _make_torchjd("gradvac", "GradVacWeighting", beta=self.beta, eps=self.eps)
        gramian = _gramian_cpu(grads)
        with _global_rng_from(generator):
            weights = self._weighting(gramian)
        return _combine(weights, grads, out)


class NashMTL:
    """Nash-MTL (stateful), Navon et al. 2022, "Multi-Task Learning as a Bargaining Game".

    Paper: https://arxiv.org/abs/2202.01017

    Wraps ``torchjd.aggregation.NashMTL`` (cvxpy, ECOS; torchjd's defaults: update norm clipped to
    ``max_norm`` = 1, weights recomputed every step, 20 solver iterations), which warm-starts from the
    previous step's weights. It is given a T x T factor R with R R^T equal to our Gramian, which yields the
    same weights as the full matrix. Rebuilt when T changes; :meth:`reset` clears the state.
    ``generator`` is unused.
    """

    def __init__(self, max_norm: float = 1.0, update_weights_every: int = 1, optim_niter: int = 20) -> None:
        self.max_norm = max_norm
        self.update_weights_every = update_weights_every
        self.optim_niter = optim_niter
        self._aggregator: Any = None

    def reset(self) -> None:
        """Forget the previous weights."""
        self._aggregator = None

    def __call__(self, grads: Tensor, generator: torch.Generator | None = None, *,
                 out: Tensor | None = None) -> Tensor:
        """The Nash-MTL update for ``grads`` (T x P)."""
        gramian = _gramian_cpu(grads)
        if not bool((gramian.diagonal() > 0.0).any()):
            # all gradients zero: torchjd's solver would divide by 0
            return grads.new_zeros(grads.shape[1], dtype=_update_dtype(grads)) if out is None else out.zero_()
        tasks = gramian.shape[0]
        if self._aggregator is None or self._aggregator.n_tasks != tasks:
            self._aggregator = _make_torchjd(
                "nash-mtl",
                "NashMTL",
                n_tasks=tasks,
                max_norm=self.max_norm,
                update_weights_every=self.update_weights_every,
                optim_niter=self.optim_niter,
            )
        eigenvalues, eigenvectors = torch.linalg.eigh(gramian)
        factor = eigenvectors * eigenvalues.clamp(min=0.0).sqrt()  # factor @ factor.T == gramian
        with warnings.catch_warnings():
            # cvxpy warns on every new problem that Nash-MTL's parametrisation is not DPP; harmless.
            warnings.filterwarnings("ignore", message=".*not DPP.*")
            weights = self._aggregator.weighting(factor)
        return _combine(weights, grads, out)


# --------------------------------------------------------------------------------------------------
# Registry


AGGREGATORS: dict[str, Aggregator] = {
    "sum": sum_rows,
    "pcgrad": pcgrad,
    "cagrad": cagrad,
    "gradvac": GradVac(),
    "imtl-g": imtl_g,
    "mgda": mgda,
    "upgrad": upgrad,
    "aligned-mtl": aligned_mtl,
    "nash-mtl": NashMTL(),
}
"""Method name -> aggregator. The stateful entries (gradvac, nash-mtl) are shared instances: use
:func:`make_aggregator` for a fresh one per training run."""


def make_aggregator(name: str) -> Aggregator:
    """The aggregator called ``name``: a fresh instance for stateful methods, else the function itself."""
    if name not in AGGREGATORS:
        raise ConfigError(f"unknown gradient method {name!r}; choose one of: {', '.join(AGGREGATORS)}")
    aggregator = AGGREGATORS[name]
    if isinstance(aggregator, GradVac | NashMTL):
        return type(aggregator)()
    return aggregator


# --------------------------------------------------------------------------------------------------
# Logging


def diagnose(grads: Tensor, update: Tensor, task_names: list[str]) -> dict[str, Any]:
    """Per-step gradient statistics for logging, from one Gramian and one host sync.

    Returns ``grad_norm`` {task: |g|}, ``cosine`` {"a-b": cos(g_a, g_b)} for each pair a before b in
    ``task_names`` order (0 when either gradient is zero), ``conflict`` {"a-b": cosine < 0}, and
    ``removed_norm`` = |grads.sum(0) - update| (how much the method changed the plain sum).
    """
    _check_matrix(grads)
    if len(task_names) != grads.shape[0]:
        raise ValueError(f"task_names has {len(task_names)} names for {grads.shape[0]} gradient rows")
    squares = sum(((chunk.sum(dim=0) - update[start:end]) ** 2).sum(dtype=torch.float64)  # no P-vector made
                  for start, end, chunk in _column_chunks(grads))
    removed = torch.as_tensor(squares, dtype=torch.float64, device=grads.device).sqrt()
    values = torch.cat([_gramian(grads).double().flatten(), removed.reshape(1).double()])
    values = values.to(device="cpu", dtype=torch.float64).tolist()
    t = len(task_names)
    m = [values[i * t : (i + 1) * t] for i in range(t)]
    norms = [math.sqrt(max(m[i][i], 0.0)) for i in range(t)]
    cosine: dict[str, float] = {}
    for i in range(t):
        for j in range(i + 1, t):
            denominator = norms[i] * norms[j]
            value = m[i][j] / denominator if denominator > 0.0 else 0.0
            cosine[f"{task_names[i]}-{task_names[j]}"] = min(1.0, max(-1.0, value))
    return {
        "grad_norm": dict(zip(task_names, norms, strict=True)),
        "cosine": cosine,
        "conflict": {pair: value < 0.0 for pair, value in cosine.items()},
        "removed_norm": values[-1],
    }
