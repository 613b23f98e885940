"""The reconstruction criteria's arithmetic (npcaffe.pruning.structured.reconstruction): ThiNet's
greedy order against exhaustive subset search and its rescaling against np.linalg.lstsq; the
LASSO's coordinate descent against its KKT conditions and a brute-force search over supports and
signs; the selection recovering planted channels."""
import itertools

import numpy as np
import pytest

from npcaffe.errors import NpcaffeError
from npcaffe.pruning.structured import reconstruction as rc


def _contributions(seed=0, samples=200, channels=7):
    rng = np.random.default_rng(seed)
    # channels of different sizes and some correlation, so that the order is not trivial
    base = rng.normal(size=(samples, channels)) * rng.uniform(0.2, 2.0, channels)
    return base + 0.5 * rng.normal(size=(samples, 1))


def _exhaustive_best(x, count):
    best = min(itertools.combinations(range(x.shape[1]), count), key=lambda s: rc.removal_cost(x, s))
    return set(best), rc.removal_cost(x, best)


@pytest.mark.parametrize("seed", range(5))
def test_thinet_first_pick_is_the_exhaustive_best_single_channel(seed):
    x = _contributions(seed)
    order = rc.thinet_removal_order(x)
    best, _ = _exhaustive_best(x, 1)
    assert {order[0]} == best
    assert sorted(order) == list(range(x.shape[1]))


@pytest.mark.parametrize("seed", range(3))
def test_thinet_greedy_follows_its_definition_and_is_never_below_the_exhaustive_optimum(seed):
    x = _contributions(seed)
    order = rc.thinet_removal_order(x)
    removed = []
    for step in range(x.shape[1]):
        # the definition, from scratch: the channel whose joining leaves the smallest ||Σ x̂||²
        left = [c for c in range(x.shape[1]) if c not in removed]
        removed.append(min(left, key=lambda c: rc.removal_cost(x, removed + [c])))
        assert order[step] == removed[-1]
    for count in (2, 3, 4):
        _, optimum = _exhaustive_best(x, count)
        assert rc.removal_cost(x, order[:count]) >= optimum - 1e-9


def test_thinet_greedy_removes_the_planted_weak_channels_first():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 6)) * 3
    x[:, 4] = 0.01 * rng.normal(size=300)     # channels contributing almost nothing
    x[:, 2] = 0.05 * rng.normal(size=300)
    order = rc.thinet_removal_order(x)
    assert list(order[:2]) == [4, 2]


def test_thinet_scales_are_lstsq_of_the_unpruned_output():
    x = _contributions(1)
    kept = [0, 3, 4, 6]
    expected, *_ = np.linalg.lstsq(x[:, kept], x.sum(axis=1), rcond=None)
    np.testing.assert_allclose(rc.thinet_scales(x, kept), expected, rtol=1e-12, atol=1e-12)
    # keeping everything reproduces the output exactly: every scale 1
    np.testing.assert_allclose(rc.thinet_scales(x, range(x.shape[1])), np.ones(x.shape[1]), rtol=1e-9)


def _lasso_problem(seed=0, samples=400, channels=6):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(samples, channels)) + 0.3 * rng.normal(size=(samples, 1))
    y = z @ rng.normal(size=channels) + 0.5 * rng.normal(size=samples)
    return z.T @ z / samples, z.T @ y / samples


def _kkt_violation(gram, corr, lam, beta):
    grad = gram @ beta - corr
    active = beta != 0
    worst = np.abs(grad[active] + lam * np.sign(beta[active])).max(initial=0.0)
    return max(worst, np.max(np.abs(grad[~active]) - lam, initial=0.0))


def _lasso_brute_force(gram, corr, lam):
    """The minimiser by trying every support S and sign pattern s: β_S = G_SS⁻¹(q_S - λ s), kept
    when its signs are s; the best objective among those (the optimum is one of them)."""
    channels = len(corr)
    best, best_value = np.zeros(channels), rc.lasso_objective(gram, corr, lam, np.zeros(channels))
    for size in range(1, channels + 1):
        for support in itertools.combinations(range(channels), size):
            s_idx = list(support)
            for signs in itertools.product((-1.0, 1.0), repeat=size):
                b_s = np.linalg.solve(gram[np.ix_(s_idx, s_idx)], corr[s_idx] - lam * np.array(signs))
                if np.all(np.sign(b_s) == signs):
                    beta = np.zeros(channels)
                    beta[s_idx] = b_s
                    value = rc.lasso_objective(gram, corr, lam, beta)
                    if value < best_value:
                        best, best_value = beta, value
    return best


@pytest.mark.parametrize("seed,fraction", [(0, 0.05), (1, 0.2), (2, 0.5), (3, 0.9)])
def test_lasso_meets_kkt_and_equals_the_brute_force_minimiser(seed, fraction):
    gram, corr = _lasso_problem(seed)
    lam = fraction * rc.lasso_lambda_max(corr)
    beta = rc.lasso(gram, corr, lam)
    assert _kkt_violation(gram, corr, lam, beta) < 1e-8
    np.testing.assert_allclose(beta, _lasso_brute_force(gram, corr, lam), atol=1e-7)


def test_lasso_is_zero_from_lambda_max_on_and_least_squares_at_zero():
    gram, corr = _lasso_problem(4)
    assert not rc.lasso(gram, corr, rc.lasso_lambda_max(corr)).any()
    assert rc.lasso(gram, corr, 0.999 * rc.lasso_lambda_max(corr)).any()
    np.testing.assert_allclose(rc.lasso(gram, corr, 0.0), np.linalg.solve(gram, corr), rtol=1e-7)


def test_lasso_select_recovers_planted_channels():
    rng = np.random.default_rng(7)
    samples, channels = 2000, 20
    z = rng.normal(size=(samples, channels)) * rng.uniform(0.5, 2.0, channels)
    planted = [1, 4, 9, 13, 17]
    y = z[:, planted] @ rng.uniform(0.7, 1.5, len(planted)) + 0.05 * rng.normal(size=samples)
    kept, beta, lam = rc.lasso_select(z.T @ z / samples, z.T @ y / samples, keep=len(planted))
    assert list(kept) == planted
    assert np.count_nonzero(beta) == len(planted) and lam > 0


def test_lasso_select_keeps_at_most_the_count_asked():
    gram, corr = _lasso_problem(5, channels=12)
    for keep in range(0, 13):
        kept, beta, _ = rc.lasso_select(gram, corr, keep)
        assert len(kept) <= keep and np.count_nonzero(beta) == len(kept)
    with pytest.raises(NpcaffeError, match="cannot keep 13 of 12"):
        rc.lasso_select(gram, corr, 13)


def test_least_squares_from_normal_equations_equals_lstsq():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(300, 12))
    x[:, 5] = x[:, 2]                       # rank-deficient: the minimum-norm solution
    y = rng.normal(size=(300, 4))
    expected, *_ = np.linalg.lstsq(x, y, rcond=None)
    np.testing.assert_allclose(rc.least_squares(x.T @ x, x.T @ y), expected, atol=1e-8)
