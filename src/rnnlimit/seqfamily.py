"""The kernel family of the one-call sequence estimators (docs/model.md §6 with dilated windows).

For each input representation ``r`` of a set of series (see :data:`REPRESENTATIONS`) and each
dilation ``δ`` of :func:`rnnlimit.seqpool.dilations`, ``P_δ`` diagonal units read the delay
embedding ``X̃_k = (X_k, X_{k-δ}, ..., X_{k-(m-1)δ})`` (``m = window``) through
``H_k = σ(w·X̃_k + b H_{k-1} + u)``, ``w ~ N(0, σ_w²/m · I)``, ``b`` of the log-time law (rates
``1 - 1/τ``, ``τ`` log-uniform on ``[1, tau_max]``: several recurrence rates at once), and their
pooled readouts (ppv, max, mean; :mod:`rnnlimit.seqpool`) concatenated over ``δ`` give the
features ``Φ_r``. Each row is divided by its norm, so that ``K_r = Φ_r Φ_rᵀ`` is the
cosine-normalised NNGP kernel of the pooled readouts, averaged over the dilations.
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
from rnnlimit.seqpool import POOLS, delay_embed, dilations, first_difference, pooled_features

#: ``series``: each series z-normalised per channel over its true length; ``diff``: the first
#: difference of that; ``level``: standardised per channel with the training set's statistics
#: (keeps each series' level and amplitude).
REPRESENTATIONS: tuple[str, ...] = ("series", "diff", "level")
Progress = Callable[[str, int, int], None] | None


@dataclass(frozen=True)
class KernelFamily:
    """Parameters of the kernel family shared by :class:`~rnnlimit.estimators.RNNKernelClassifier`
    and :class:`~rnnlimit.estimators.RNNKernelRegressor` (see the module docstring).

    ``n_theta``: ω samples per representation, split over the dilations (a power of two per
    dilation, at least 16). ``window``: ``m``. ``pools``: readouts. ``representations``: the
    candidate inputs; the estimators choose among each alone and their mean by leave-one-out.
    ``sigma_w``, ``sigma_u``, ``b_max``, ``tau_max``, ``activation``: the law of ω
    (:class:`rnnlimit.omega.OmegaLaw` with ``b_law="logtime"``; ``w``'s sd is
    ``sigma_w/√window``; 2 was chosen over 1, 3, 4 on the development pool, see
    benchmarks/dev_selection.py). ``max_dilations``: at most this many ``δ = 1, 2, 4, ...``.
    """

    n_theta: int = 2048
    window: int = 9
    pools: tuple[str, ...] = POOLS
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
        if not self.pools or any(p not in POOLS for p in self.pools):
            raise ParameterError("pools", f"must be a non-empty tuple of {POOLS}")
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

    def candidates(self) -> list[tuple[str, ...]]:
        """Candidate kernels: each representation alone, then the mean of all of them."""
        singles = [(r,) for r in self.representations]
        return singles + ([tuple(self.representations)] if len(singles) > 1 else [])

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
    workers: int | None = None,
    progress: Progress = None,
    done: int = 0,
    total: int = 0,
) -> np.ndarray:
    """Row-normalised features ``Φ_r`` (n, F) of representation ``rep`` (float64)."""
    x = prep.apply(rep, xs, lengths)
    blocks = []
    for i, (d, omega) in enumerate(groups):
        emb = delay_embed(x, d, family.window).astype(np.float32)
        blocks.append(
            pooled_features(omega, emb, lengths, activation_name=family.activation,
                            pools=family.pools, workers=workers)
        )  # fmt: skip
        if progress is not None:
            progress("features", done + i + 1, total)
    phi = np.concatenate(blocks, axis=1).astype(np.float64)
    norm = np.linalg.norm(phi, axis=1, keepdims=True)
    return phi / np.where(norm > 0.0, norm, 1.0)


def candidate_features(blocks: dict[str, np.ndarray], reps: tuple[str, ...]) -> np.ndarray:
    """Features of the mean of the kernels of ``reps``: the concatenation scaled by ``1/√R``."""
    return np.concatenate([blocks[r] for r in reps], axis=1) / math.sqrt(len(reps))
