"""The commented example experiment that ``rnnlimit config --example`` prints: every key of
:class:`rnnlimit.config.ExperimentConfig` at its default (the docs/model.md §5 setting), with what
it
means. Plain text, so this module imports nothing; :mod:`rnnlimit.config` re-exports
:func:`example_config_toml`.
"""

from __future__ import annotations


def example_config_toml() -> str:
    """A commented example experiment (the docs/model.md §5 setting) that
    :func:`rnnlimit.config.load_config` reads."""
    return _EXAMPLE


_EXAMPLE = """\
# rnnlimit experiment: a wide output-feedback RNN trained online on one ergodic stream,
# compared with its infinite-width limit (docs/model.md). Every key is optional; these are the
# defaults, i.e. the setting of `rnnlimit demo` (docs/model.md §5). Unknown keys are rejected.

[stream]
chain = "ar1"        # "ar1" (clipped AR(1)), "var1" (rho = d×d matrix) or "finite" (P, values)
                     # or "recorded": a [stream.recording] table (docs/recorded-data.md)
d = 1                # input dimension: X_k in [-1, 1]^d
rho = 0.6            # X_{k+1} = clip(rho X_k + noise ξ_k, -1, 1), |rho| < 1
noise = 1.0          # §5 leaves the AR(1) noise level open; 1.0 is this package's choice
# P = [[0.9, 0.1], [0.2, 0.8]]   # finite chain: transition matrix ...
# values = [[-0.5], [0.5]]       # ... and the value of each state (one row per state)
target = "filter"    # "filter": Y_k = a Y_{k-1} + (1-a) f(X_k); "memoryless": f(X_k);
                     # "lag": Y_k = X_{k-lag}
a = 0.6              # filter coefficient, in [0, 1)
f = "sin2"           # sin2 = sin(2x); also sin, cos, tanh, identity, square
lag = 1
m = 1                # output dimension (m <= d; f acts on the first m inputs)
burn_in = 200        # chain steps discarded before the stream starts

[network]
activation = "erf"   # erf, tanh or relu
sigma_w = 1.0        # ω = (w, b, u) ~ N(0, diag(σ_w², σ_b², σ_u²))
sigma_b = 1.0
sigma_u = 1.0
beta = 0.5           # g^N = N^(-β) Σ c^i H^i, β in [0.5, 1)
c_init = "rademacher"  # or "gaussian"
antisymmetric = true # units in pairs (c, ω), (-c, ω): g^N ≡ 0 at k = 0 (widths must be even)
clip = "hard"        # ψ: "hard" clip into [-1, 1] or "smooth" (tanh)

[training]
alpha = 1.0          # η_N = α N^(2β - 2)
gradient = "truncated"  # or "rtrl" (exact gradient through the memory); the networks are
                        # compared with the limit of their own gradient (§4 or §4b)
dtype = "float64"    # or "float32"
T = 3.0              # horizon in t = k/N: K = round(T N) steps
# window = 100       # steps per loss window (default N // 10)

[limit]
dt = 0.05            # time step of the limit ODE (should divide the record spacing)
M = 2048             # particles of the chain (X, S, Y) that sample π_t
chain_steps = 8      # chain steps per stage
burn_in = 200
grid = 17            # grid nodes per axis (grid representation)
n_features = 2048    # random features (feature representation)
n_inducing = 256     # inducing points (Nyström representation, the default for d + m > 3)
memory_budget_gb = 4.0   # a solve with its error estimate stays under this (GB)
scheme = "heun"      # or "euler"
representation = "auto"  # "grid", "features", "nystrom" or "auto"
seed = 0
estimate_error = true    # re-solve with dt/2, 2M, a finer basis, 2x chain steps: the floor
both_gradients = false   # also solve the other gradient's limit (§4 / §4b) and report the gap

[study]
# the demo's study: 8 runs over a factor 64 in N. Training costs about K = T N steps per run;
# N = 16000 takes a few seconds on one core. Fewer seeds or widths widen the rate's CI.
widths = [250, 1000, 4000, 16000]
seeds = [0, 1]       # network init uses seed s, the stream uses key stream_seed + s
eval_grid = 9        # eval_grid^(d+m) points on [-1, 1]^(d+m)
n_times = 31         # record times linspace(0, T, n_times)
# l2_times = [0.5, 1.0, 3.0]  # times of the L²(π_t) distance (default: 7 equally spaced in (0, T])
n_pi = 200           # samples of π_t per l2 time
stream_seed = 0
"""
