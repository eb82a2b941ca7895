"""What a study may claim from its numbers: rate verdicts, solver-error warnings, divergence.

Pure numpy and plain data, shared by :mod:`rnnlimit.compare` (which stores the verdicts and
warnings in ``results.json``) and :mod:`rnnlimit.report` (which reads them, or recomputes them
for older run directories). Three rules keep a report honest:

- **Divergence.** Targets lie in ``[-1, 1]^m``; an output, a limit ``h_t`` or an error beyond
  :data:`RUNAWAY` in size (or non-finite) is a run that diverged, whatever raised or did not
  raise on the way. A diverged run gives no error, no rate, no contraction claim.
- **Rate verdict.** The slope of ``log error`` against ``log N`` is called consistent with the
  theory's ``N^(-1/2)`` only when its 95% confidence interval contains −1/2 *and* is narrower
  than :data:`MAX_CI_WIDTH`, from at least :data:`MIN_WIDTHS` widths; a CI that excludes −1/2
  is inconsistent; anything else is inconclusive, with the reason (CI width, widths, seeds).
- **Solver error.** A part of the limit solver's error estimate (``dt``, ``M``, ``basis``,
  ``lag``) above :data:`WARN_FRACTION` of the limit's own scale (the largest over t of the RMS
  of ``h_t`` over the evaluation points) is named with its remedy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

from rnnlimit.errors import DIVERGENCE_BOUND, ParameterError

#: Size beyond which an output, ``h_t`` or an error counts as runaway growth: the bound at which
#: the limit solver stops too (:data:`rnnlimit.errors.DIVERGENCE_BOUND`).
RUNAWAY = DIVERGENCE_BOUND
#: Widest 95% CI of a slope that still supports a verdict: wider, and it cannot tell −1/2 from
#: −1/4 or −3/4.
MAX_CI_WIDTH = 0.5
#: Fewest distinct widths for a rate verdict.
MIN_WIDTHS = 3
#: A solver error part above this fraction of the limit's scale gets a warning.
WARN_FRACTION = 0.1
#: Why the distance to the other gradient's limit gets no rate verdict.
OTHER_LIMIT_REASON = (
    "the networks converge to the limit of their own gradient; their distance to the other "
    "gradient's limit can only fall to about the gap between the two limits"
)
#: What lowers each part of the solver's error.
REMEDIES: dict[str, str] = {
    "dt": "lower limit.dt (Heun's error falls like dt^2)",
    "M": "raise limit.M (the sampling error falls like M^-1/2)",
    "basis": "raise limit.grid (grid basis) or limit.n_features (feature basis)",
    "lag": "raise limit.chain_steps (the particles lag behind π_t)",
}


def runaway(values: Any) -> bool:
    """Whether ``values`` hold a non-finite entry or one beyond :data:`RUNAWAY` in size."""
    v = np.asarray(values, dtype=float)
    return bool(v.size) and not bool(np.all(np.abs(v) <= RUNAWAY))


def first_runaway(values: Any) -> int | None:
    """Index (along the first axis) of the first slice of ``values`` that is runaway."""
    v = np.asarray(values, dtype=float)
    if v.ndim == 0:
        v = v[None]
    bad = ~np.all(np.abs(v.reshape(len(v), -1)) <= RUNAWAY, axis=1)
    return int(np.argmax(bad)) if bad.any() else None


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def rate_verdict(rate: dict[str, Any], n_widths: int, n_seeds: int) -> dict[str, str]:
    """``{"verdict", "reason"}`` for a fitted rate (:func:`rnnlimit.compare.fit_rate`).

    ``verdict`` is ``"consistent"``, ``"inconsistent"``, ``"inconclusive"`` or ``"none"`` (no
    slope at all); ``reason`` says why in words (CI, its width, widths, seeds, runs).
    """
    slope = _finite(rate.get("slope"))
    n = int(rate.get("n_points") or 0)
    runs = f"{n} runs: {n_widths} widths × {n_seeds} seed{'s' if n_seeds != 1 else ''}"
    if slope is None:
        return dict(verdict="none", reason=f"no slope: fewer than 2 widths to fit; {runs}")
    lo, hi = (_finite(v) for v in [*(rate.get("ci95") or []), None, None][:2])
    one_seed = " with one seed per width, the seed-to-seed scatter is barely sampled;" * (
        n_seeds == 1
    )
    if n_widths < MIN_WIDTHS:
        return dict(
            verdict="inconclusive",
            reason=f"only {n_widths} widths, a verdict needs at least {MIN_WIDTHS}; {runs};"
            f"{one_seed} add widths",
        )
    if lo is None or hi is None:
        return dict(verdict="inconclusive", reason=f"no confidence interval; {runs}")
    width = hi - lo
    if not lo <= -0.5 <= hi:
        return dict(
            verdict="inconsistent",
            reason=f"the CI excludes -0.5; {runs}",
        )
    if width > MAX_CI_WIDTH:
        return dict(
            verdict="inconclusive",
            reason=f"the CI is {width:.2f} wide, more than {MAX_CI_WIDTH}; {runs}, "
            f"{max(n - 2, 0)} degree{'s' if n != 3 else ''} of freedom;{one_seed} "
            "add seeds or widths",
        )
    return dict(
        verdict="consistent",
        reason=f"the CI contains -0.5 and is {width:.2f} wide; {runs}",
    )


def verdict_sentence(verdict: str) -> str:
    """The verdict as the report words it."""
    return {
        "consistent": "consistent with the theoretical N^-0.5",
        "inconsistent": "NOT consistent with the theoretical N^-0.5",
        "inconclusive": "inconclusive",
        "none": "no rate",
        "not_tested": "no verdict",
    }.get(verdict, verdict)


def limit_scale(h: Any) -> float | None:
    """The limit's own scale: the largest over t of the RMS of ``h_t`` over points and outputs
    (``h`` is ``(R, n, m)``); ``None`` when ``h`` is empty or runaway."""
    h = np.asarray(h, dtype=float)
    if not h.size or runaway(h):
        return None
    return float(np.sqrt(np.mean(h.reshape(len(h), -1) ** 2, axis=1)).max())


def solver_warnings(error: dict[str, Any], scale: float | None, loss_T: float | None) -> list[str]:
    """One warning per part of the solver's error estimate that is large against the limit's
    scale (or not finite), naming the part and the remedy."""
    out = []
    for part, remedy in REMEDIES.items():
        if part not in error:
            continue
        v = _finite(error[part])
        if v is None or v > RUNAWAY:
            out.append(
                f"the limit solver's {part} refinement diverged (its error is not a number): "
                f"its error estimate is unavailable; {remedy}"
            )
        elif scale is not None and v > WARN_FRACTION * scale:
            against = f"{v / scale:.0%} of the limit's scale (max over t of the RMS of h_t, "
            against += f"{scale:.3g}"
            if loss_T is not None and loss_T > 0:
                against += f"; the RMS residual sqrt(2 L(T)) is {math.sqrt(2 * loss_T):.3g}"
            out.append(
                f"the limit solver's {part} error {v:.3g} is {against}): the limit is not "
                f"resolved; {remedy}"
            )
    return out


def fit_rate(Ns: Any, errors: Any) -> dict[str, Any]:
    """Least-squares fit ``log e = log C + slope · log N`` over the finite positive points.

    Returns ``slope``, ``ci95`` (t-distribution, n−2 degrees of freedom; NaN for n ≤ 2),
    ``stderr``, ``intercept = C`` (so ``e ≈ C N^slope``), ``log_intercept`` and ``n_points``.
    """
    N, e = np.asarray(Ns, float).ravel(), np.asarray(errors, float).ravel()
    if N.shape != e.shape:
        raise ParameterError("errors", f"must match Ns in length ({N.size}), got {e.size}")
    ok = np.isfinite(N) & np.isfinite(e) & (N > 0) & (e > 0)
    x, y = np.log(N[ok]), np.log(e[ok])
    n = int(x.size)
    nan = float("nan")
    out: dict[str, Any] = dict(slope=nan, ci95=[nan, nan], stderr=nan, intercept=nan)
    out.update(log_intercept=nan, n_points=n)
    sxx = float(np.sum((x - x.mean()) ** 2)) if n else 0.0
    if n < 2 or sxx <= 0.0:
        return out
    slope = float(np.sum((x - x.mean()) * (y - y.mean())) / sxx)
    a = float(y.mean() - slope * x.mean())
    out.update(slope=slope, intercept=float(np.exp(a)), log_intercept=a)
    if n > 2:
        resid = y - (a + slope * x)
        se = float(np.sqrt(np.sum(resid**2) / (n - 2) / sxx))
        q = float(stats.t.ppf(0.975, n - 2))
        out.update(stderr=se, ci95=[slope - q * se, slope + q * se])
    return out


def study_rates(
    tasks: list[dict[str, Any]], metrics: tuple[str, ...], floor: float | None, prefix: str = ""
) -> dict[str, dict[str, Any]]:
    """:func:`fit_rate` of each metric (``prefix + metric``: ``other_`` for the distance to the
    other gradient's limit) over the tasks that did not diverge, with the limit's own error
    ``floor`` (below which no rate can be seen), the diverged tasks it left out (``excluded``)
    and the verdict (:func:`rnnlimit.verdicts.rate_verdict`: ``verdict``, ``verdict_reason``)."""
    ok = [t for t in tasks if t.get("diverged_at") is None]
    left_out = [[t["N"], t["seed"]] for t in tasks if t.get("diverged_at") is not None]
    rates = {}
    for m in (prefix + m for m in metrics):
        vals = [np.nan if t.get(m) is None else t[m] for t in ok]
        used = [t for t, v in zip(ok, vals, strict=True) if np.isfinite(v) and v > 0]
        fit = fit_rate([t["N"] for t in ok], vals)
        n_widths, n_seeds = len({t["N"] for t in used}), len({t["seed"] for t in used})
        v = rate_verdict(fit, n_widths, n_seeds)
        if prefix:  # no theory says the networks converge to the other gradient's limit
            v = dict(verdict="not_tested", reason=OTHER_LIMIT_REASON)
        rates[m] = dict(
            metric=m, **fit, floor=floor, n_widths=n_widths, n_seeds=n_seeds, excluded=left_out,
            verdict=v["verdict"], verdict_reason=v["reason"],
        )  # fmt: skip
    return rates
