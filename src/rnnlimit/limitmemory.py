"""The memory of a limit call (base solve and refinements), estimated before any work is done.

A call of :class:`~rnnlimit.limit.LimitSolver` runs the base solve and the refined solves of the
error estimate side by side, on up to ``workers`` threads. What one solve holds at its peak:

* grid basis: the node Gram ``A(z_i, z_j)`` (``G² · 8`` bytes), held up to three times (the
  tiled numpy result, the device array, the contiguous copy the native stages read), plus the
  tile intermediates of :func:`rnnlimit.kernels.gram` while it is built;
* feature basis: ``φ(Z)`` of the particles ``(M, F·(D+2))`` inside a stage (and its product);
* Nyström basis: ``A_CC`` and its inverse ``(P, P)``, the float32 particle block ``(M, P)``;
* every basis: the design matrix at the evaluation points ``(n_eval, size)`` (device and host
  copies), the Lipschitz grid's kernel rows ``(n_lip, size)`` with their tangents, the RTRL traces
  ``M · size · m²``, one segment of particle paths.

Paths shared between solves live in stores counted once. The peak of a call is a fixed runtime
allowance, the stores and the ``workers`` largest solves. :func:`fit_budget` keeps it under
``memory_budget_gb``: first by running the solves one at a time, then by a smaller basis
refinement, else a :class:`~rnnlimit.errors.ParameterError` naming the budget, the estimate and
the remedies.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from rnnlimit.drift import trace_bytes
from rnnlimit.errors import ParameterError
from rnnlimit.kernels import DEFAULT_MAX_MEMORY_BYTES
from rnnlimit.limitsteps import SEGMENT_BYTES, STORE_BYTES, PathStore

GB = 1 << 30
#: Copies of the node Gram a grid solve holds at once (see the module docstring).
GRAM_COPIES = 3
#: What a call needs besides its arrays (compiled stages, the XLA runtime's buffers): the
#: resident-set growth of a d = 1, m = 2, grid 9 solve whose arrays are ~70 MB was ~200 MB.
RUNTIME_BYTES = 256 << 20


def lipschitz_points(D: int) -> int:
    """Points of the Lipschitz grid of :func:`rnnlimit.memory.lipschitz_fn` (``n_grid = 11``)."""
    return (11 if D <= 3 else 5) ** D


def solve_bytes(problem: Any, numerics: Any, basis: Any, n_eval: int, itemsize: int = 8) -> int:
    """Peak bytes of one solve's own arrays (see the module docstring)."""
    k = problem.kernel
    D, size, M = k.d + k.m, basis.size, numerics.M
    if basis.kind == "grid":
        own = GRAM_COPIES * size * size * itemsize + min(DEFAULT_MAX_MEMORY_BYTES, size * size * 16)
    elif basis.kind == "features":
        own = 2 * M * size * itemsize
    else:
        own = 3 * size * size * itemsize + 3 * M * size * 4
    design = 2 * n_eval * size * itemsize + 3 * lipschitz_points(D) * size * itemsize
    traces = trace_bytes(problem.gradient, basis, M, k.m, itemsize)
    particles = 8 * M * (D + k.m) * itemsize
    return int(own + design + traces + particles + SEGMENT_BYTES)


def store_bytes(problem: Any, solves: list[Any], itemsize: int = 8) -> int:
    """Shared path stores (one per group with the same M, seed and burn-in, ≤ ``STORE_BYTES``)."""
    groups: dict[tuple, list] = {}
    for s in solves:
        n = s.numerics
        groups.setdefault((n.M, n.seed, n.burn_in), []).append(n)
    D = problem.kernel.d + problem.kernel.m
    total = 0
    for (M, _, burn_in), members in groups.items():
        steps = max(n.total_chain_steps for n in members)
        size = PathStore.nbytes(M, D, burn_in, steps, itemsize)
        total += size if len(members) > 1 and size <= STORE_BYTES else 0
    return total


def peak_bytes(problem: Any, solves: list[Any], n_eval: int, workers: int) -> int:
    """Estimated peak of a call: the runtime, the stores and the ``workers`` largest solves."""
    each = sorted((solve_bytes(problem, s.numerics, s.basis, n_eval) for s in solves), reverse=True)
    return RUNTIME_BYTES + store_bytes(problem, solves) + sum(each[: max(1, workers)])


@dataclass(frozen=True)
class Fit:
    """A plan that fits the budget: the solves, the threads to run them on, notes for results."""

    solves: list[Any]
    workers: int
    estimate: int
    notes: tuple[str, ...] = ()


def _coarser(basis: Any, fraction: float) -> Any | None:
    """A basis refinement between ``basis`` and ``basis.refined()`` (``fraction`` of the way),
    or ``None`` when there is none strictly finer than ``basis``."""
    fine = basis.refined()
    name = {"grid": "n_axis", "features": "n_features", "nystrom": "n_inducing"}[basis.kind]
    lo, hi = getattr(basis, name), getattr(fine, name)
    n = int(lo + fraction * (hi - lo))
    return replace(basis, **{name: n}) if n > lo else None


def fit_budget(problem: Any, solves: list[Any], n_eval: int, workers: int, budget_gb: float) -> Fit:
    """Keep the call within ``budget_gb``: run side by side if it fits, else one at a time,
    else with a smaller basis refinement (its ``basis`` error then compares with a grid less
    than twice as fine), else raise a :class:`ParameterError` naming ``memory_budget_gb``."""
    budget = budget_gb * GB
    peak = peak_bytes(problem, solves, n_eval, workers)
    if peak <= budget:
        return Fit(solves, workers, peak)
    alone = peak_bytes(problem, solves, n_eval, 1)
    if alone <= budget:
        note = (
            f"solves run one at a time: side by side they would need {peak / GB:.1f} GB, over "
            f"the {budget_gb:g} GB memory budget"
        )
        return Fit(solves, 1, alone, (note,))
    names = [s.name for s in solves]
    if "basis" in names:
        i = names.index("basis")
        job = solves[i]
        base = next(s for s in solves if s.name is None)
        for fraction in np.linspace(0.9, 0.1, 9):
            finer = _coarser(base.basis, float(fraction))
            if finer is None:
                break
            trial = [*solves[:i], replace(job, basis=finer), *solves[i + 1 :]]
            need = peak_bytes(problem, trial, n_eval, 1)
            if need <= budget:
                note = (
                    f"basis refinement {finer.size} instead of {base.basis.refined().size} "
                    f"(size of the basis) to stay within the {budget_gb:g} GB memory budget; "
                    "solves run one at a time"
                )
                if base.basis.kind == "grid":  # O(Δz²): the gap sees 1 − (Δz'/Δz)² of it
                    seen = 1.0 - ((base.basis.n_axis - 1) / (finer.n_axis - 1)) ** 2
                    note += f"; the basis error shown is about {seen:.0%} of the grid's error"
                return Fit(trial, 1, need, (note,))
    sizes = {s.name or "base": solve_bytes(problem, s.numerics, s.basis, n_eval) for s in solves}
    largest = max(sizes, key=lambda n: sizes[n])
    raise ParameterError(
        "memory_budget_gb",
        f"this solve with its error estimate needs about {alone / GB:.1f} GB even one solve at "
        f"a time (the largest, {largest!r}: {sizes[largest] / GB:.1f} GB), over the budget of "
        f"{budget_gb:g} GB: raise memory_budget_gb, or lower grid / n_features / n_inducing / "
        "M, or leave 'basis' out of estimate_error",
    )
