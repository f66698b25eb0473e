"""recsys.study.stats: per-user metrics from ranks, bootstrap intervals, paired tests, Holm.

Expected numbers are worked out by hand (in the comments), never by the code under test; the
statistical checks use seeded generators, so every run sees the same data.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from recsys.study.stats import PairedTest, bootstrap_ci, holm, mean_std, paired_test, per_user

RANKS = np.array([1, 2, 3, 10, 11, 100])


# --- per_user -------------------------------------------------------------------------------

def test_per_user_hit_and_recall_at_k():
    expected = [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]  # rank <= 10
    assert per_user(RANKS, "hit@10").tolist() == expected
    assert per_user(RANKS, "recall@10").tolist() == expected  # one target: recall == hit
    assert per_user(RANKS, "hit@1").tolist() == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_per_user_ndcg_at_k():
    # 1/log2(rank + 1): log2(2) = 1, log2(3) = 1.5849625, log2(4) = 2, log2(11) = 3.4594316
    expected = [1.0, 0.6309297536, 0.5, 0.2890648263, 0.0, 0.0]
    got = per_user(RANKS, "ndcg@10")
    assert got.dtype == np.float64 and got.shape == (6,)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_per_user_mrr_with_and_without_cutoff():
    np.testing.assert_allclose(per_user(RANKS, "mrr@10"), [1.0, 0.5, 1 / 3, 0.1, 0.0, 0.0], rtol=1e-6)
    # no '@' (and '@all'): no cutoff, 1/rank for everyone
    full = [1.0, 0.5, 1 / 3, 0.1, 1 / 11, 0.01]
    np.testing.assert_allclose(per_user(RANKS, "mrr"), full, rtol=1e-6)
    np.testing.assert_allclose(per_user(RANKS, "mrr@all"), full, rtol=1e-6)
    # ndcg without cutoff at rank 11 and 100: 1/log2(12) = 1/3.5849625, 1/log2(101) = 1/6.6582115
    np.testing.assert_allclose(per_user(RANKS, "ndcg")[4:], [0.2789429457, 0.1501904], rtol=1e-6)


def test_per_user_rejects_unknown_metric_and_bad_ranks():
    with pytest.raises(ValueError, match="hit.*mrr.*ndcg"):  # lists the registered metrics
        per_user(RANKS, "precision@10")
    with pytest.raises(ValueError):
        per_user(RANKS, "ndcg@0")
    with pytest.raises(ValueError):
        per_user(np.array([0, 1]), "hit@10")
    with pytest.raises(ValueError):
        per_user(np.array([1.5, 2.0]), "hit@10")


# --- holm -----------------------------------------------------------------------------------

def test_holm_hand_worked_example():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02], rtol=1e-12)


def test_holm_caps_at_one_and_edge_cases():
    # 0.6*2 = 1.2 -> 1; 0.7*1 = 0.7 -> running max 1
    assert holm([0.7, 0.6]) == [1.0, 1.0]
    assert holm([]) == []
    assert holm([0.2]) == [0.2]
    with pytest.raises(ValueError):
        holm([0.1, 1.5])


def test_holm_is_monotone_and_never_below_raw():
    rng = np.random.default_rng(1)
    for _ in range(50):
        p = rng.random(rng.integers(2, 12)) ** 3
        adj = np.array(holm(p.tolist()))
        assert np.all(adj >= p) and np.all(adj <= 1.0)
        order = np.argsort(p)
        assert np.all(np.diff(adj[order]) >= 0)  # a smaller raw p never gets a larger adjusted p
        assert np.all(adj <= np.minimum(p * len(p), 1.0) + 1e-12)  # never worse than Bonferroni


# --- mean_std -------------------------------------------------------------------------------

def test_mean_std_over_seeds():
    mean, std = mean_std([0.30, 0.32, 0.34])  # deviations -0.02, 0, 0.02: sqrt(0.0008 / 2) = 0.02
    assert mean == pytest.approx(0.32) and std == pytest.approx(0.02)
    mean, std = mean_std([0.3])
    assert mean == pytest.approx(0.3) and math.isnan(std)  # one seed: spread unknown
    with pytest.raises(ValueError):
        mean_std([])


# --- bootstrap_ci ---------------------------------------------------------------------------

def test_bootstrap_ci_is_deterministic_for_a_seed():
    values = np.random.default_rng(3).random(500)
    assert bootstrap_ci(values, seed=7) == bootstrap_ci(values, seed=7)
    assert bootstrap_ci(values, seed=7) != bootstrap_ci(values, seed=8)
    low, high = bootstrap_ci(values)
    assert low < values.mean() < high
    assert bootstrap_ci([0.25] * 10) == (0.25, 0.25)


def test_bootstrap_ci_width_matches_normal_theory():
    # 2000 Bernoulli(0.3) users: the 95% interval is about mean +- 1.96 * sd / sqrt(n).
    values = (np.random.default_rng(4).random(2000) < 0.3).astype(float)
    low, high = bootstrap_ci(values, level=0.95, n_boot=4000, seed=0)
    expected = 2 * 1.96 * values.std(ddof=1) / math.sqrt(values.size)
    assert high - low == pytest.approx(expected, rel=0.08)
    assert (low + high) / 2 == pytest.approx(values.mean(), abs=0.1 * expected)


def test_bootstrap_ci_covers_true_mean_about_95_percent():
    rng = np.random.default_rng(5)
    covered = 0
    for rep in range(200):
        values = rng.exponential(1.0, size=300)  # skewed, like per-user ndcg; true mean 1
        low, high = bootstrap_ci(values, n_boot=1000, seed=rep)
        covered += low <= 1.0 <= high
    assert 0.88 <= covered / 200 <= 0.99


# --- paired_test ----------------------------------------------------------------------------

def test_paired_test_hand_worked_small_case():
    # d = a - b = [1, 2, 3]: mean 2, sd (ddof=1) 1 -> d_z = 2; t = 2 / (1 / sqrt(3)) = 3.4641, df 2,
    # two-sided p = 1 - t / sqrt(2 + t^2) = 1 - 3.4641 / 3.7417 = 0.07418 (t with 2 df in closed form);
    # Wilcoxon exact: all 3 differences positive, P(W- = 0) = 1/8, two-sided 0.25.
    r = paired_test([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    assert isinstance(r, PairedTest)
    assert (r.n, r.mean_a, r.mean_b) == (3, 2.0, 0.0)
    assert r.diff == pytest.approx(2.0) and r.effect_dz == pytest.approx(2.0)
    assert r.t_p == pytest.approx(0.07418, abs=1e-4)
    assert r.wilcoxon_p == pytest.approx(0.25)


def test_paired_test_diff_is_a_minus_b():
    rng = np.random.default_rng(6)
    b = rng.random(400)
    a = b + 0.05 + rng.normal(0, 0.02, size=400)
    r = paired_test(a, b)
    assert r.diff > 0 and r.effect_dz > 0 and r.mean_a > r.mean_b
    assert 0 < r.diff_ci[0] < r.diff < r.diff_ci[1]
    flipped = paired_test(b, a)
    assert flipped.diff == pytest.approx(-r.diff) and flipped.effect_dz == pytest.approx(-r.effect_dz)
    assert flipped.diff_ci[1] < 0


def test_paired_test_all_differences_zero():
    values = [0.0, 1.0, 0.5, 0.5, 1.0]
    r = paired_test(values, list(values))
    assert (r.diff, r.wilcoxon_p, r.t_p, r.effect_dz) == (0.0, 1.0, 1.0, 0.0)
    assert r.diff_ci == (0.0, 0.0)


def test_paired_test_wilcoxon_drops_ties_like_a_sign_test():
    # hit@k differences: 60 users only A hits, 40 only B, 100 tie. zero_method="wilcox" drops the
    # ties, leaving the sign test on 100 discordant users: z = (60 - 40) / sqrt(100) = 2,
    # two-sided p = 2 * (1 - Phi(2)) = 0.0455003 (McNemar). "zsplit" would give about 0.058.
    a = np.r_[np.ones(60), np.zeros(40), np.ones(50), np.zeros(50)]
    b = np.r_[np.zeros(60), np.ones(40), np.ones(50), np.zeros(50)]
    assert paired_test(a, b).wilcoxon_p == pytest.approx(0.0455003, abs=1e-6)


def test_paired_test_rejects_unpaired_input():
    with pytest.raises(ValueError):
        paired_test([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        paired_test([1.0], [0.0])


# --- the significance bar: power on a real effect, level on seeds of one model ----------------

N_USERS = 2000


def _hits(rng: np.random.Generator, p_a: float, p_b: float) -> tuple[np.ndarray, np.ndarray]:
    """Paired hit@k values: models agree on 70% of users (shared draw), 30% are independent."""
    shared = rng.random(N_USERS)
    own = rng.random(N_USERS)
    agree = rng.random(N_USERS) < 0.7
    a = (shared < p_a).astype(float)
    b = (np.where(agree, shared, own) < p_b).astype(float)
    return a, b


def _ndcg(rng: np.random.Generator, boost: float) -> tuple[np.ndarray, np.ndarray]:
    """Paired ndcg@10 values from geometric ranks; users differ in difficulty, A's hit chance
    per position is ``boost`` times B's."""
    p = rng.uniform(0.02, 0.3, size=N_USERS)
    a = per_user(rng.geometric(np.minimum(p * boost, 1.0)), "ndcg@10")
    b = per_user(rng.geometric(p), "ndcg@10")
    return a, b


def _rejections(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    results = [paired_test(a, b, n_boot=1) for a, b in pairs]  # the interval is not used here
    return (
        float(np.mean([r.wilcoxon_p < 0.05 for r in results])),
        float(np.mean([r.t_p < 0.05 for r in results])),
    )


@pytest.mark.parametrize("kind", ["hit", "ndcg"])
def test_paired_tests_detect_a_real_effect(kind):
    rng = np.random.default_rng(10)
    pairs = [_hits(rng, 0.35, 0.30) if kind == "hit" else _ndcg(rng, 1.25) for _ in range(50)]
    wilcoxon_power, t_power = _rejections(pairs)
    assert wilcoxon_power >= 0.9 and t_power >= 0.9


@pytest.mark.parametrize("kind", ["hit", "ndcg"])
def test_paired_tests_hold_their_level_on_seeds_of_one_model(kind):
    rng = np.random.default_rng(11)
    pairs = [_hits(rng, 0.30, 0.30) if kind == "hit" else _ndcg(rng, 1.0) for _ in range(200)]
    wilcoxon_rate, t_rate = _rejections(pairs)
    assert wilcoxon_rate <= 0.10 and t_rate <= 0.10
