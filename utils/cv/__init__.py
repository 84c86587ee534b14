"""Cross-validation of variants over grouped folds and seeds (``scripts/cross_validate.py``).

* :mod:`utils.cv.folds`: outer folds and inner validation splits;
* :mod:`utils.cv.jobs`: one (variant, fold, seed) job and its files;
* :mod:`utils.cv.experiment`: validation, running (slices, workers), aggregation;
* :mod:`utils.cv.summary`: results.csv and summary.json (t and Nadeau-Bengio intervals);
* :mod:`utils.cv.report`: figures and the console table.

The protocol is described in ``docs/evaluation.md``.
"""
