"""Statistics for ``recsys study``: per-user metrics from saved ranks, intervals and paired tests.

A study trains every model with several seeds and saves, per run, the rank (1 = best) of each
test user's held-out target; the test users are the same, in the same order, for every model.
From those ranks this module gives:

* :func:`per_user`: per-user metric values, computed by the engine's registered metric functions
  (so a study reports exactly the numbers training logged);
* :func:`bootstrap_ci`: a percentile bootstrap interval of the mean over users;
* :func:`mean_std`: mean and spread of one number over seeds;
* :func:`paired_test`: Wilcoxon signed-rank and paired t tests of two models over the same users;
* :func:`holm`: Holm-Bonferroni adjustment when several comparisons are reported together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import numpy.typing as npt
import torch

from recsys.metrics import parse_metric

ArrayLike = npt.ArrayLike
FloatArray = npt.NDArray[np.float64]

#: How :func:`paired_test` treats users whose two values are equal (see its docstring).
WILCOXON_ZERO_METHOD = "wilcox"

# Largest number of resampled indices drawn at once by the bootstrap (bounds its memory: ~32 MB).
_BOOT_CHUNK_ELEMENTS = 4_000_000


def _as_1d(values: ArrayLike, what: str) -> FloatArray:
    """``values`` as a 1-D float64 array; anything else is a caller's mistake, so raise."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional, got shape {arr.shape}")
    return arr


def per_user(ranks: np.ndarray, metric: str) -> FloatArray:
    """Per-user values of ``metric`` from the targets' ranks, as the engine computes them.

    ranks: (U,) integers >= 1, the rank of each user's held-out target (1 = best).
    metric: ``"name@k"`` (e.g. ``"ndcg@10"``), ``"name@all"`` or ``"name"`` (both: no cutoff);
    ``name`` is any registered metric (:func:`recsys.get_metrics`: hit, ndcg, mrr, recall, ...).
    Returns (U,) float64. The registered function is called on the ranks as an int64 tensor, as
    during evaluation, so a study and a training run can never disagree on a metric's definition.
    Raises ValueError for an unknown metric, a bad cutoff, or ranks that are not integers >= 1.
    """
    # Imported here: plugin discovery is only needed once a metric is actually asked for.
    from recsys.plugins import get_metrics

    if "@" in metric:
        # The engine's parser, so "ndcg@10" / "mrr@all" mean here what they mean in a config.
        ((_, name, k),) = parse_metric(metric, ())
    else:
        name, k = metric, None
    registered = get_metrics()
    if name not in registered:
        raise ValueError(f"unknown metric {name!r} in {metric!r}; registered metrics: {sorted(registered)}")

    arr = np.asarray(ranks)
    if arr.ndim != 1:
        raise ValueError(f"ranks must be one-dimensional, got shape {arr.shape}")
    # Ranks are counts: a float rank (e.g. 2.5) or a rank < 1 means the file is not what we think.
    if arr.size and (not np.all(np.mod(arr, 1) == 0) or arr.min() < 1):
        raise ValueError("ranks must be integers >= 1 (1 = best)")
    values = registered[name].obj(torch.from_numpy(arr.astype(np.int64)), k)
    return values.detach().cpu().numpy().astype(np.float64)


def bootstrap_ci(values: ArrayLike, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` over users.

    values: (U,) per-user values (U >= 1). Users are resampled with replacement ``n_boot`` times;
    the interval is the ((1 - level) / 2, (1 + level) / 2) quantiles of the resampled means.
    Deterministic for a given ``seed`` (a fresh ``numpy.random.default_rng(seed)``).
    Returns (low, high) as floats; a constant ``values`` gives (c, c).
    """
    arr = _as_1d(values, "values")
    if arr.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    n = arr.size
    # Vectorised over resamples, but in chunks so that 2000 x (100k users) indices never sit in
    # memory at once; the chunks are drawn in order from one generator, so a seed fixes the result.
    rows = max(1, _BOOT_CHUNK_ELEMENTS // n)
    means = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, rows):
        stop = min(n_boot, start + rows)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = arr[idx].mean(axis=1)
    alpha = 1.0 - level
    low, high = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


def mean_std(values_over_seeds: ArrayLike) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) of one number over seeds.

    values_over_seeds: (S,) one value per seed (e.g. each run's ndcg@10), S >= 1.
    With a single seed the spread is unknown, so the std is ``nan`` (not 0.0, which would claim
    the model is perfectly stable); a report should print it as "n/a".
    """
    arr = _as_1d(values_over_seeds, "values_over_seeds")
    if arr.size == 0:
        raise ValueError("mean_std needs at least one value")
    mean = float(arr.mean())
    std = float(arr.std(ddof=1)) if arr.size > 1 else math.nan
    return mean, std


@dataclass(frozen=True)
class PairedTest:
    """Comparison of models A and B over the same users (see :func:`paired_test`)."""

    n: int  #: number of users
    mean_a: float  #: mean of A's per-user values
    mean_b: float  #: mean of B's per-user values
    diff: float  #: mean of (a - b): > 0 means A is better on a higher-is-better metric
    wilcoxon_p: float  #: two-sided Wilcoxon signed-rank p-value on a - b
    t_p: float  #: two-sided paired t-test p-value
    effect_dz: float  #: Cohen's d_z: mean(a - b) / std(a - b, ddof=1)
    diff_ci: tuple[float, float]  #: bootstrap interval of mean(a - b) over users


def paired_test(a: ArrayLike, b: ArrayLike, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> PairedTest:
    """Paired comparison of two models' per-user values over the SAME users in the same order.

    a, b: (U,) per-user metric values (e.g. from :func:`per_user`), U >= 2; user i of ``a`` is
    user i of ``b``. Pairing removes the between-user variance (easy users are easy for every
    model), which is what makes small differences detectable.

    * ``wilcoxon_p``: :func:`scipy.stats.wilcoxon`, two-sided, with ``zero_method="wilcox"``:
      users with a - b == 0 are dropped before ranking. A tie carries no information on which
      model is better, and for 0/1 metrics (hit@k) this makes the test exactly the sign test on
      the discordant users (McNemar's test), the standard paired test for hit rates; "zsplit" or
      "pratt" would let the many tied users of a hit metric dilute the signal. When every
      difference is zero there is nothing to test and p = 1.0.
    * ``t_p``: :func:`scipy.stats.ttest_rel`, two-sided; p = 1.0 when every difference is zero,
      and 0.0 when every difference is the same non-zero number (t is infinite).
    * ``effect_dz``: Cohen's d_z = mean(a - b) / std(a - b, ddof=1); 0.0 when that std is 0.
    * ``diff_ci``: :func:`bootstrap_ci` of a - b (``level``, ``n_boot``, ``seed``).
    """
    # scipy is needed only here and is not an engine dependency: import it when a test is run.
    from scipy import stats

    xa, xb = _as_1d(a, "a"), _as_1d(b, "b")
    if xa.size != xb.size:
        raise ValueError(f"a and b must hold the same users: got {xa.size} and {xb.size} values")
    if xa.size < 2:
        raise ValueError(f"a paired test needs at least 2 users, got {xa.size}")
    d = xa - xb
    n = int(d.size)
    mean_d = float(d.mean())
    sd_d = float(d.std(ddof=1))

    if not np.any(d != 0):
        # Identical models on every user: scipy would fail or warn; "no evidence" is p = 1.
        wilcoxon_p = 1.0
    else:
        wilcoxon_p = float(stats.wilcoxon(d, zero_method=WILCOXON_ZERO_METHOD, alternative="two-sided").pvalue)

    if sd_d == 0.0:
        # Constant differences: t = 0/0 (all zero -> no evidence) or +-inf (same shift for all).
        t_p = 1.0 if mean_d == 0.0 else 0.0
    else:
        t_p = float(stats.ttest_rel(xa, xb, alternative="two-sided").pvalue)

    effect_dz = mean_d / sd_d if sd_d > 0.0 else 0.0
    return PairedTest(
        n=n,
        mean_a=float(xa.mean()),
        mean_b=float(xb.mean()),
        diff=mean_d,
        wilcoxon_p=wilcoxon_p,
        t_p=t_p,
        effect_dz=effect_dz,
        diff_ci=bootstrap_ci(d, level=level, n_boot=n_boot, seed=seed),
    )


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order of ``pvalues``.

    pvalues: (m,) raw p-values in [0, 1]. Sorted ascending as p_(1) <= ... <= p_(m), the adjusted
    value of p_(i) is max over j <= i of min(1, (m - j + 1) * p_(j)): the running max keeps the
    step-down procedure monotone (a smaller raw p never gets a larger adjusted p), the min caps at 1.
    Rejecting adjusted p <= alpha controls the family-wise error rate at alpha. Empty -> [].
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"pvalues must be one-dimensional, got shape {p.shape}")
    if p.size == 0:
        return []
    if np.any(np.isnan(p)) or np.any(p < 0.0) or np.any(p > 1.0):
        raise ValueError("p-values must be numbers in [0, 1]")
    m = p.size
    order = np.argsort(p, kind="stable")  # stable: equal p-values keep a well-defined order
    scaled = (m - np.arange(m)) * p[order]  # (m - j + 1) * p_(j) with j = 1..m
    adjusted_sorted = np.minimum(np.maximum.accumulate(scaled), 1.0)
    adjusted = np.empty(m, dtype=np.float64)
    adjusted[order] = adjusted_sorted
    return [float(x) for x in adjusted]
