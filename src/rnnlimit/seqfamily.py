"""The kernel family of the one-call sequence estimators (docs/model.md §6 with dilated windows).

For each input representation ``r`` of a set of series (see :data:`REPRESENTATIONS`) and each
dilation ``δ`` of :func:`rnnlimit.seqpool.dilations`, ``P_δ`` diagonal units read the delay
embedding ``X̃_k = (X_k, X_{k-δ}, ..., X_{k-(m-1)δ})`` (``m = window``) through
``H_k = σ(w·X̃_k + b H_{k-1} + u)``, ``w ~ N(0, σ_w²/m · I)``, ``b`` of the log-time law (rates
``1 - 1/τ``, ``τ`` log-uniform on ``[1, tau_max]``: several recurrence rates at once), and their
pooled readouts ``q`` (ppv, mean, the ppv of ``S`` consecutive parts ``seg``, and max;
:mod:`rnnlimit.seqpool`) over all ``δ`` give the raw features ``Φ_{r,q}``.

A candidate kernel is a pair (representations ``R``, readouts ``Q``). With
``normalize="pool"`` (the default) each block ``Φ_{r,q}`` is divided by its row norm and by
``√|Q|``, and the representations' features are concatenated and scaled by ``1/√|R|``, so that

    K = (1/|R|) Σ_{r∈R} (1/|Q|) Σ_{q∈Q} cos-kernel of Φ_{r,q},

the mean of the cosine-normalised NNGP kernels of the readouts and representations: each
weighs the same whatever its scale (``"all"``: one norm over each representation's row, where
a readout with large entries dominates; ``"block"``: one norm per readout and dilation). The
estimators choose the candidate by leave-one-out: each representation alone and their mean,
each with ``pools`` and with ``pools + optional_pools``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
from scipy.stats import qmc

from rnnlimit.datasets import channel_stats, standardize, znormalize
from rnnlimit.errors import ParameterError, check_choice, check_int, check_range
from rnnlimit.omega import Omega, OmegaLaw
from rnnlimit.seqpool import (
    POOLS,
    delay_embed,
    dilations,
    first_difference,
    pool_width,
    pooled_features,
)

#: ``series``: each series z-normalised per channel over its true length; ``diff``: the first
#: difference of that; ``level``: standardised per channel with the training set's statistics
#: (keeps each series' level and amplitude).
REPRESENTATIONS: tuple[str, ...] = ("series", "diff", "level")
NORMALIZATIONS: tuple[str, ...] = ("pool", "all", "block")
Progress = Callable[[str, int, int], None] | None
#: raw features of one representation: readout -> one (n, P_δ·width) array per dilation
RawFeatures = dict[str, list[np.ndarray]]
#: a candidate kernel: (representations, readouts)
Candidate = tuple[tuple[str, ...], tuple[str, ...]]


@dataclass(frozen=True)
class KernelFamily:
    """Parameters of the kernel family shared by :class:`~rnnlimit.estimators.RNNKernelClassifier`
    and :class:`~rnnlimit.estimators.RNNKernelRegressor` (see the module docstring).

    ``n_theta``: ω samples per representation, split over the dilations (a power of two per
    dilation, at least 16). ``window``: ``m``. ``pools``: readouts of every candidate
    (:data:`POOLS`); ``optional_pools``: readouts the leave-one-out choice may add (ppv, mean,
    seg always and max optional were chosen over ppv/max/mean on the DEV2 pool, see
    benchmarks/RESULTS.md). ``segments``: ``S``, the parts of ``seg``. ``normalize``: how rows
    are normalised (see the module docstring). ``representations``: the
    candidate inputs; the estimators choose among each alone and their mean by leave-one-out.
    ``sigma_w``, ``sigma_u``, ``b_max``, ``tau_max``, ``activation``: the law of ω
    (:class:`rnnlimit.omega.OmegaLaw` with ``b_law="logtime"``; ``w``'s sd is
    ``sigma_w/√window``; 2 was chosen over 1, 3, 4 on the development pool, see
    benchmarks/dev_selection.py). ``max_dilations``: at most this many ``δ = 1, 2, 4, ...``.
    """

    n_theta: int = 2048
    window: int = 9
    pools: tuple[str, ...] = ("ppv", "mean", "seg")
    optional_pools: tuple[str, ...] = ("max",)
    segments: int = 4
    normalize: str = "pool"
    representations: tuple[str, ...] = REPRESENTATIONS
    sigma_w: float = 2.0
    sigma_u: float = 1.0
    b_max: float = 0.5
    tau_max: float = 100.0
    activation: str = "erf"
    max_dilations: int = 32

    def __post_init__(self) -> None:
        check_int("n_theta", self.n_theta, 16)
        check_int("window", self.window, 1)
        check_int("max_dilations", self.max_dilations, 1)
        check_int("segments", self.segments, 1)
        check_choice("normalize", self.normalize, NORMALIZATIONS)
        if not self.pools or any(p not in POOLS for p in self.pools):
            raise ParameterError("pools", f"must be a non-empty tuple of {POOLS}")
        if len(set(self.pools)) != len(self.pools):
            raise ParameterError("pools", f"must be distinct names of {POOLS}")
        extra = self.optional_pools
        if any(p not in POOLS or p in self.pools for p in extra) or len(set(extra)) != len(extra):
            raise ParameterError(
                "optional_pools", f"must be distinct names of {POOLS} not in pools {self.pools}"
            )
        if not self.representations or len(set(self.representations)) != len(self.representations):
            raise ParameterError("representations", f"must be distinct names of {REPRESENTATIONS}")
        for r in self.representations:
            check_choice("representations", r, REPRESENTATIONS)
        check_range("sigma_w", self.sigma_w, 0.0, low_open=True)
        self.law()  # validates sigma_u, b_max, tau_max and activation

    def law(self) -> OmegaLaw:
        """Law of ω (``w``'s sd is ``sigma_w/√window``: the window, not the channel count, sets
        the scale of the filter)."""
        return OmegaLaw(
            sigma_w=self.sigma_w / math.sqrt(self.window), sigma_u=self.sigma_u,
            b_max=self.b_max, b_law="logtime", tau_max=self.tau_max, activation=self.activation,
        )  # fmt: skip

    @property
    def all_pools(self) -> tuple[str, ...]:
        """Every readout a candidate may use: ``pools + optional_pools``."""
        return tuple(self.pools) + tuple(self.optional_pools)

    def candidates(self) -> list[Candidate]:
        """Candidate kernels: each representation alone, then the mean of all of them, first
        with ``pools`` and then with ``all_pools`` (on equal scores the first listed wins)."""
        singles = [(r,) for r in self.representations]
        reps = singles + ([tuple(self.representations)] if len(singles) > 1 else [])
        readouts = [tuple(self.pools)] + ([self.all_pools] if self.optional_pools else [])
        return [(r, q) for q in readouts for r in reps]

    def draw(self, seed: int, channels: int, length: int) -> list[tuple[int, Omega]]:
        """``(δ, ω samples)`` per dilation (spans fitting ``length``), the same for every
        representation."""
        dils = dilations(length, self.window, self.max_dilations)
        per = max(16, 2 ** round(math.log2(self.n_theta / len(dils))))
        law, dim = self.law(), channels * self.window
        groups = []
        # one scrambled Sobol set per dilation, seeded from numpy (no JAX compilation)
        for d, child in zip(dils, np.random.SeedSequence(seed).spawn(len(dils)), strict=True):
            points = qmc.Sobol(
                d=dim + 2, scramble=True, seed=np.random.default_rng(child)
            ).random_base2(int(math.log2(per)))
            w, b, u = law.transform(points, dim)
            groups.append((d, Omega(*(jnp.asarray(a, jnp.float32) for a in (w, b, u)))))
        return groups


@dataclass(frozen=True)
class Preprocessing:
    """What a representation needs from the training set: its per-channel statistics."""

    mean: np.ndarray
    sd: np.ndarray

    @classmethod
    def of(cls, xs: np.ndarray, lengths: np.ndarray) -> Preprocessing:
        return cls(*channel_stats(xs, lengths))

    def apply(self, rep: str, xs: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        if rep == "level":
            return standardize(xs, lengths, self.mean, self.sd)
        z = znormalize(xs, lengths)
        return first_difference(z, lengths) if rep == "diff" else z


def family_features(
    family: KernelFamily,
    groups: list[tuple[int, Omega]],
    prep: Preprocessing,
    rep: str,
    xs: np.ndarray,
    lengths: np.ndarray,
    *,
    pools: tuple[str, ...] | None = None,
    workers: int | None = None,
    progress: Progress = None,
    done: int = 0,
    total: int = 0,
) -> RawFeatures:
    """Raw features ``Φ_{r,q}`` of representation ``rep`` for the readouts ``pools`` (default
    ``family.all_pools``), one float64 array per dilation (not yet normalised: see
    :func:`candidate_features`)."""
    pools = family.all_pools if pools is None else tuple(pools)
    x = prep.apply(rep, xs, lengths)
    out: RawFeatures = {q: [] for q in pools}
    for i, (d, omega) in enumerate(groups):
        emb = delay_embed(x, d, family.window).astype(np.float32)
        phi = pooled_features(
            omega,
            emb,
            lengths,
            activation_name=family.activation,
            pools=pools,
            segments=family.segments,
            workers=workers,
        )
        widths = [pool_width(q, family.segments) * omega.b.shape[0] for q in pools]
        for q, block in zip(pools, np.split(phi, np.cumsum(widths)[:-1], axis=1), strict=True):
            out[q].append(block.astype(np.float64))
        if progress is not None:
            progress("features", done + i + 1, total)
    return out


def candidate_features(
    family: KernelFamily, raw: dict[str, RawFeatures], candidate: Candidate
) -> np.ndarray:
    """Features ``Φ`` of a candidate kernel ``(R, Q)``, normalised as ``family.normalize``
    says (module docstring): ``Φ Φᵀ`` is the candidate's kernel."""
    reps, pools = candidate
    out = []
    for r in reps:
        if family.normalize == "all":
            parts = [np.concatenate([b for q in pools for b in raw[r][q]], axis=1)]
        elif family.normalize == "pool":
            parts = [np.concatenate(raw[r][q], axis=1) for q in pools]
        else:
            parts = [b for q in pools for b in raw[r][q]]
        for part in parts:
            norm = np.linalg.norm(part, axis=1, keepdims=True)
            out.append(part / np.where(norm > 0.0, norm, 1.0) / math.sqrt(len(parts) * len(reps)))
    return np.concatenate(out, axis=1)
