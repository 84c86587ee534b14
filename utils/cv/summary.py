"""results.csv and summary.json from the finished jobs' results.

* ``results.csv``: long form, columns exactly
  :data:`utils.constants.CV_RESULTS_COLUMNS` (``variant,fold,seed,trait,
  metric,value``); traits are the five names plus ``mean`` (the uniform
  trait average), metrics :data:`utils.constants.CV_METRICS`.
* ``summary.json``: per variant, trait and metric, the fold values (each
  first averaged over seeds) summarized by mean, sd, n_folds and a Student's
  t 95% interval over the K fold values; and the paired comparison of every
  variant with the reference, whose interval uses the Nadeau-Bengio
  corrected variance (1/K + n_test/n_train) because the K training sets
  overlap.

Everything here is computed from the rows of ``results.csv`` (the test
recomputes it from the file with scipy).
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from typing import Any

import numpy as np
from scipy import stats

from utils import constants as C

TRAIT_NAMES: tuple[str, ...] = (*C.TRAITS, "mean")
# results.csv metric name -> utils.metrics.METRIC_NAMES key
METRIC_KEYS = {"r2": "r_squared", "mae": "mae", "mse": "mse", "pearson": "pearson", "ccc": "ccc", "accuracy": "accuracy"}
LOWER_IS_BETTER = ("mae", "mse")

Row = tuple[str, int, int, str, str, float]


def result_rows(result: dict[str, Any]) -> list[Row]:
    """The results.csv rows of one job result (``cv_result.json``)."""
    report = result["metrics"]
    rows: list[Row] = []
    for trait in TRAIT_NAMES:
        values = report["overall"] if trait == "mean" else report["per_trait"][trait]
        for metric in C.CV_METRICS:
            value = values[METRIC_KEYS[metric]]
            rows.append((result["variant"], int(result["fold"]), int(result["seed"]), trait, metric,
                         math.nan if value is None else float(value)))
    return rows


def results_csv(rows: list[Row]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(C.CV_RESULTS_COLUMNS)
    writer.writerows(rows)
    return buffer.getvalue()


def read_results_csv(text: str) -> list[Row]:
    reader = csv.DictReader(io.StringIO(text))
    return [(r["variant"], int(r["fold"]), int(r["seed"]), r["trait"], r["metric"], float(r["value"])) for r in reader]


def fold_values(rows: list[Row]) -> dict[tuple[str, str, str], dict[int, float]]:
    """(variant, trait, metric) -> fold -> value averaged over the seeds."""
    acc: dict[tuple[str, str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for variant, fold, _seed, trait, metric, value in rows:
        acc[(variant, trait, metric)][fold].append(value)
    return {key: {f: float(np.mean(v)) for f, v in sorted(folds.items())} for key, folds in acc.items()}


def t_interval(values: np.ndarray, level: float = C.CONFIDENCE_LEVEL) -> dict[str, Any]:
    """Mean, sd and the Student's t interval of the mean of ``values`` (NaN-free)."""
    v = np.asarray(values, dtype=np.float64)
    k = len(v)
    mean = float(v.mean()) if k else math.nan
    sd = float(v.std(ddof=1)) if k > 1 else math.nan
    if k > 1 and np.isfinite(sd):
        half = float(stats.t.ppf(0.5 + level / 2, k - 1)) * sd / math.sqrt(k)
        ci = [mean - half, mean + half]
    else:
        ci = [math.nan, math.nan]
    return {"mean": mean, "sd": sd, "n_folds": k, "ci95": ci}


def corrected_paired_interval(
    differences: np.ndarray, test_train_ratio: float, level: float = C.CONFIDENCE_LEVEL
) -> dict[str, Any]:
    """Nadeau-Bengio corrected resampled t: variance of the mean difference is (1/K + n_test/n_train) s²."""
    d = np.asarray(differences, dtype=np.float64)
    k = len(d)
    mean = float(d.mean()) if k else math.nan
    out: dict[str, Any] = {"mean_difference": mean, "n_folds": k, "ci95": [math.nan, math.nan], "p_value": math.nan}
    if k < 2:
        return out
    sd = float(d.std(ddof=1))
    factor = 1.0 / k + test_train_ratio
    se = math.sqrt(factor) * sd
    out.update(sd=sd, correction_factor=factor, standard_error=se)
    if se > 0:
        half = float(stats.t.ppf(0.5 + level / 2, k - 1)) * se
        out["ci95"] = [mean - half, mean + half]
        out["p_value"] = float(2 * stats.t.sf(abs(mean) / se, k - 1))
    elif mean == 0.0:
        out["ci95"] = [0.0, 0.0]
    out["within_noise"] = bool(out["ci95"][0] <= 0.0 <= out["ci95"][1]) if np.isfinite(out["ci95"][0]) else None
    return out


def summarize_variants(values: dict[tuple[str, str, str], dict[int, float]], variants: list[str]) -> dict[str, Any]:
    """variant -> trait -> metric -> {mean, sd, n_folds, ci95} over the seed-averaged fold values."""
    out: dict[str, Any] = {}
    for variant in variants:
        out[variant] = {}
        for trait in TRAIT_NAMES:
            out[variant][trait] = {}
            for metric in C.CV_METRICS:
                folds = values.get((variant, trait, metric), {})
                finite = np.array([v for v in folds.values() if np.isfinite(v)])
                out[variant][trait][metric] = t_interval(finite)
    return out


def compare_variants(
    values: dict[tuple[str, str, str], dict[int, float]], variants: list[str], reference: str, ratio: float
) -> dict[str, Any]:
    """variant -> trait -> metric -> paired difference (variant minus reference) over the folds."""
    out: dict[str, Any] = {}
    for variant in variants:
        if variant == reference:
            continue
        out[variant] = {}
        for trait in TRAIT_NAMES:
            out[variant][trait] = {}
            for metric in C.CV_METRICS:
                a = values.get((variant, trait, metric), {})
                b = values.get((reference, trait, metric), {})
                folds = sorted(f for f in set(a) & set(b) if np.isfinite(a[f]) and np.isfinite(b[f]))
                out[variant][trait][metric] = corrected_paired_interval(
                    np.array([a[f] - b[f] for f in folds]), ratio
                )
    return out


def build_summary(
    rows: list[Row], variants: list[str], reference: str, fold_sizes: dict[int, tuple[int, int]],
    protocol: dict[str, Any], leakage: dict[str, Any],
) -> dict[str, Any]:
    """The content of summary.json; ``fold_sizes`` is fold -> (n_train, n_test)."""
    values = fold_values(rows)
    ratio = float(np.mean([n_test / n_train for n_train, n_test in fold_sizes.values()]))
    return {
        "protocol": protocol,
        "leakage": leakage,
        "definitions": {
            "fold value": "each (variant, fold) value is the metric on the test fold, averaged over the seeds",
            "mean, sd": "mean and sample standard deviation (ddof=1) of the K fold values",
            "ci95": "Student's t 95% interval of the mean over the K fold values: mean +- t(0.975, K-1) sd / sqrt(K)",
            "traits": "the five traits and 'mean', the uniform average of the five per-trait values",
            "lower_is_better": list(LOWER_IS_BETTER),
        },
        "variants": summarize_variants(values, variants),
        "comparisons": {
            "reference": reference,
            "definition": "per fold: variant minus reference (both averaged over seeds); mean over the K folds",
            "method": "Nadeau-Bengio corrected resampled t interval (Nadeau & Bengio 2003): the variance of the "
            "mean paired difference is (1/K + n_test/n_train) * s^2 instead of s^2/K, because the K training "
            "sets overlap and the fold differences are not independent; t quantile with K-1 degrees of freedom",
            "n_test_over_n_train": ratio,
            "variants": compare_variants(values, variants, reference, ratio),
        },
    }
