"""The arithmetic of the reconstruction criteria, on sampled problems: ThiNet's greedy channel
selection and rescaling, and He et al.'s LASSO channel selection with its least-squares fit.

No nets here: the samples come from npcaffe.pruning.structured.sampling.  A consumer layer (the
layer after the channels in question) computes, at one sampled output value (an image, an output
position and one output unit f),

    y = Σ_c x̂_c + b,    x̂_c = Σ_k W[f, c, k] x[c, k]

(k over the kernel window of input channel c; for an InnerProduct over the H×W inputs of channel
c); x̂_c is channel c's *contribution*.  Pruning channel c removes x̂_c from every y.

ThiNet (Luo, Wu & Lin, ICCV 2017).  Given m samples (rows) of the contributions X̂ (m × C),
find the set T of channels to remove that changes the output least,
    min_T Σ_i (Σ_{c∈T} x̂_ic)²   with |T| = the number to remove,
greedily: T grows one channel at a time, each time by the channel that leaves the smallest
value (`thinet_removal_order`; the whole order, so that any ratio is one prefix of it).  Then
the kept channels S are rescaled, ŵ = argmin_w Σ_i (ŷ_i - Σ_{c∈S} w_c x̂_ic)², ŷ_i = Σ_c x̂_ic
the unpruned output without bias (`thinet_scales`), and every weight of channel c in the
consumer is multiplied by ŵ_c.

LASSO channel selection (He, Zhang & Sun, ICCV 2017, "Channel Pruning for Accelerating Very
Deep Neural Networks").  With Z_c the contribution of channel c to *all* n outputs at the
sampled positions (flattened to one column of M = samples × n entries) and y the outputs to
reproduce (the unpruned net's, bias excluded),
    min_β (1/2M) ||y - Σ_c β_c Z_c||² + λ ||β||₁,
and λ raised until at most the wanted number of β_c are nonzero (`lasso_select`); those
channels are kept.  Then the consumer's weights on the kept channels are refitted by least
squares, W' = argmin ||Y - X' W'ᵀ||² (`least_squares`), X' the kept channels' inputs.  The
coordinate descent (`lasso`) works on the Gram matrix G = ZᵀZ / M and q = Zᵀy / M only, which
the sampler accumulates batch by batch, so the M × C matrix is never stored.
"""
import numpy as np

from ...errors import NpcaffeError


# -- ThiNet -----------------------------------------------------------------------------------
def thinet_removal_order(contributions):
    """ThiNet's greedy order: channel indices, the first removed first (the last is the one kept
    longest).  `contributions`: (m samples, C channels).

    Step t adds to the removed set T the channel c minimising ||s + x̂_c||², s = Σ_{j∈T} x̂_j,
    i.e. 2 s·x̂_c + ||x̂_c||² (ties: the lower index)."""
    x = np.asarray(contributions, np.float64)
    if x.ndim != 2:
        raise NpcaffeError(f"ThiNet: contributions must be (samples, channels), got shape {x.shape}")
    gram = x.T @ x                      # gram[c, d] = x̂_c · x̂_d
    channels = x.shape[1]
    removed_sum = np.zeros(channels)    # s · x̂_c for every c, updated as T grows
    left = np.ones(channels, bool)
    order = []
    for _ in range(channels):
        cost = np.where(left, 2 * removed_sum + np.diag(gram), np.inf)
        c = int(np.argmin(cost))
        order.append(c)
        left[c] = False
        removed_sum += gram[c]
    return np.array(order, int)


def removal_cost(contributions, removed):
    """Σ_i (Σ_{c∈removed} x̂_ic)²: the squared change of the outputs when `removed` go."""
    x = np.asarray(contributions, np.float64)
    return float(np.sum(x[:, list(removed)].sum(axis=1) ** 2))


def thinet_scales(contributions, kept):
    """ŵ (one scale per kept channel, in `kept`'s order): the least-squares fit of the unpruned
    outputs ŷ = Σ_c x̂_c by the kept channels' contributions (np.linalg.lstsq, so a rank-deficient
    sample gets the minimum-norm fit)."""
    x = np.asarray(contributions, np.float64)
    target = x.sum(axis=1)
    scales, *_ = np.linalg.lstsq(x[:, list(kept)], target, rcond=None)
    return scales


# -- LASSO -------------------------------------------------------------------------------------
def soft_threshold(value, lam):
    return np.sign(value) * max(abs(value) - lam, 0.0)


def lasso(gram, corr, lam, beta=None, tol=1e-10, max_sweeps=10000):
    """β minimising ½ βᵀGβ - qᵀβ + λ||β||₁ (= (1/2M)||y - Zβ||² + λ||β||₁ up to a constant, with
    G = ZᵀZ/M, q = Zᵀy/M) by cyclic coordinate descent from `beta` (a warm start) or zero.

    A channel with G_cc = 0 (a channel that contributes nothing) stays at 0.  Sweeps stop when no
    coordinate moves by more than tol × (1 + max |β|)."""
    g = np.asarray(gram, np.float64)
    q = np.asarray(corr, np.float64)
    if g.ndim != 2 or g.shape[0] != g.shape[1] or q.shape != (g.shape[0],):
        raise NpcaffeError(f"LASSO: the Gram matrix must be C x C and the correlations C long, got {g.shape} "
                           f"and {q.shape}")
    if lam < 0:
        raise NpcaffeError(f"LASSO: lambda must be >= 0, got {lam}")
    b = np.zeros(len(q)) if beta is None else np.array(beta, np.float64)
    diag = np.diag(g)
    grad = g @ b - q                      # gradient of the smooth part, kept current
    for _ in range(max_sweeps):
        largest_step = 0.0
        for c in range(len(q)):
            if diag[c] <= 0:
                continue
            rho = diag[c] * b[c] - grad[c]  # q_c - Σ_{d≠c} G_cd β_d
            new = soft_threshold(rho, lam) / diag[c]
            step = new - b[c]
            if step:
                grad += g[:, c] * step
                b[c] = new
                largest_step = max(largest_step, abs(step))
        if largest_step <= tol * (1.0 + np.abs(b).max()):
            break
    return b


def lasso_lambda_max(corr):
    """The smallest λ at which β = 0 is the LASSO's solution: max_c |q_c|."""
    return float(np.abs(np.asarray(corr, np.float64)).max())


def lasso_select(gram, corr, keep, steps=60):
    """He et al.'s selection: λ raised until at most `keep` coefficients are nonzero.

    Bisection on log λ between λ_max·1e-8 and λ_max (where β = 0) for the smallest λ whose
    solution has at most `keep` nonzeros (the count is not monotone in λ in general; bisection
    finds one such crossing).  Returns (kept channel indices sorted, β at that λ, λ)."""
    q = np.asarray(corr, np.float64)
    channels = len(q)
    if not 0 <= keep <= channels:
        raise NpcaffeError(f"LASSO: cannot keep {keep} of {channels} channels")
    if keep == channels:
        beta = lasso(gram, q, 0.0)
        return np.arange(channels), beta, 0.0
    high = lasso_lambda_max(q)
    if high == 0:
        return np.arange(0), np.zeros(channels), 0.0
    low = high * 1e-8
    beta_low = lasso(gram, q, low)
    if np.count_nonzero(beta_low) <= keep:
        return np.flatnonzero(beta_low), beta_low, low
    beta_high = np.zeros(channels)
    warm = beta_low
    for _ in range(steps):
        mid = np.sqrt(low * high)
        beta = lasso(gram, q, mid, beta=warm)
        if np.count_nonzero(beta) <= keep:
            high, beta_high = mid, beta
            if np.count_nonzero(beta) == keep:
                break
        else:
            low, warm = mid, beta
    return np.flatnonzero(beta_high), beta_high, high


def lasso_objective(gram, corr, lam, beta):
    """½ βᵀGβ - qᵀβ + λ||β||₁ (the LASSO's objective without its constant ||y||²/2M)."""
    b = np.asarray(beta, np.float64)
    return float(0.5 * b @ np.asarray(gram) @ b - np.asarray(corr) @ b + lam * np.abs(b).sum())


# -- least squares -----------------------------------------------------------------------------
def least_squares(xtx, xty):
    """W' (K × n) minimising ||Y - X W'||² from the normal equations' XᵀX (K × K) and XᵀY (K × n);
    the minimum-norm solution when XᵀX is singular (it equals np.linalg.lstsq(X, Y)'s)."""
    solution, *_ = np.linalg.lstsq(np.asarray(xtx, np.float64), np.asarray(xty, np.float64), rcond=None)
    return solution
