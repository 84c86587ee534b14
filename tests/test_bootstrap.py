"""Bootstrap intervals against independent computations (scikit-learn metrics, scipy.stats.bootstrap)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import mean_absolute_error, r2_score

from utils.bootstrap import bootstrap_report, resample_indices


def _data(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.uniform(0.2, 0.8, size=(n, 5))
    p = 0.6 * y + 0.2 + rng.normal(0, 0.08, size=(n, 5))
    return y, p


def test_clip_bootstrap_equals_a_loop_over_the_same_resamples():
    """Same resample indices, metric by scikit-learn, percentile by numpy: the same bounds."""
    y, p = _data()
    report = bootstrap_report(y, p, n_resamples=200, seed=7)
    idx = resample_indices(len(y), 200, 7)
    r2 = np.array([r2_score(y[i], p[i], multioutput="raw_values") for i in idx])
    mae_mean = np.array([mean_absolute_error(y[i], p[i]) for i in idx])  # uniform mean over traits
    low, high = np.percentile(r2, [2.5, 97.5], axis=0)
    for j, trait in enumerate(report["per_trait"]):
        assert report["per_trait"][trait]["r_squared"] == pytest.approx([low[j], high[j]], rel=1e-9)
    assert report["overall"]["mae"] == pytest.approx(list(np.percentile(mae_mean, [2.5, 97.5])), rel=1e-9)
    assert report["resampled_unit"] == "clip" and report["n_units"] == len(y)


def test_group_bootstrap_resamples_whole_groups():
    """With groups, each resample is a union of whole groups drawn with replacement."""
    y, p = _data(48)
    groups = np.repeat([f"g{k}" for k in range(12)], 4)
    report = bootstrap_report(y, p, groups=groups, n_resamples=150, seed=3)
    labels = np.unique(groups)
    idx = resample_indices(len(labels), 150, 3)
    members = [np.flatnonzero(groups == g) for g in labels]
    r2 = np.array([r2_score(y[rows], p[rows], multioutput="raw_values") for rows in
                   (np.concatenate([members[k] for k in draw]) for draw in idx)])
    low, high = np.percentile(r2, [2.5, 97.5], axis=0)
    assert report["per_trait"]["openness"]["r_squared"] == pytest.approx([low[0], high[0]], rel=1e-9)
    assert report["resampled_unit"] == "group" and report["n_units"] == 12


def test_agrees_with_scipy_bootstrap_percentile():
    """scipy.stats.bootstrap (its own resamples) gives nearly the same percentile interval."""
    y, p = _data(200, seed=1)
    ours = bootstrap_report(y, p, n_resamples=4000, seed=0)["per_trait"]["openness"]["mae"]
    res = stats.bootstrap(
        (y[:, 0], p[:, 0]),
        lambda a, b: np.mean(np.abs(a - b)),
        paired=True,
        vectorized=False,
        n_resamples=4000,
        method="percentile",
        random_state=np.random.default_rng(1),
    )
    width = res.confidence_interval.high - res.confidence_interval.low
    assert ours[0] == pytest.approx(res.confidence_interval.low, abs=0.1 * width)
    assert ours[1] == pytest.approx(res.confidence_interval.high, abs=0.1 * width)


def test_seeded_and_undefined_metrics_are_nan():
    y, p = _data(30)
    a = bootstrap_report(y, p, n_resamples=50, seed=5)
    b = bootstrap_report(y, p, n_resamples=50, seed=5)
    c = bootstrap_report(y, p, n_resamples=50, seed=6)
    assert a == b and a != c
    constant = np.full_like(y, 0.5)
    d = bootstrap_report(y, constant, n_resamples=50)
    assert all(np.isnan(d["per_trait"]["openness"]["pearson"]))  # Pearson of a constant: undefined


def test_interval_covers_the_truth_most_of_the_time():
    """Coverage: about 95% of intervals from fresh samples contain the population MAE."""
    rng = np.random.default_rng(11)
    hits = 0
    trials = 120
    for t in range(trials):
        y = rng.uniform(0, 1, size=(80, 5))
        p = y + rng.normal(0, 0.1, size=(80, 5))  # population MAE = 0.1 * sqrt(2 / pi)
        low, high = bootstrap_report(y, p, n_resamples=300, seed=t)["per_trait"]["openness"]["mae"]
        hits += low <= 0.1 * np.sqrt(2 / np.pi) <= high
    assert 0.85 <= hits / trials <= 0.99
