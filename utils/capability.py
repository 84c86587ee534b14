"""Capability suite: what each model learns from each kind of planted signal.

For every generated set (:data:`SUITE_SETS`, one kind of fusion signal each),
every training size N and every seed, the suite

* generates ``max(N) + n_test`` clips with :mod:`utils.synthetic` (``seed`` =
  the run seed, so seeds differ in data *and* initialization); the last
  ``n_test`` clips are the held-out test set, the first N the training files,
* trains each network variant (a fusion mode of :func:`models.cross_attention.build_model`)
  on a seeded 80/20 split of the N training clips, early stopping on the 20%,
  and scores the restored best-epoch model on the test clips,
* fits ridge on pooled, standardized features (:func:`utils.synthetic.ridge_baseline`)
  on all N training clips (its penalty is chosen by leave-one-out inside them),
* scores the Bayes predictor (the noise ceiling) on the test clips.

Every row is appended to ``results.jsonl`` as soon as it exists, so an
interrupted suite continues where it stopped. :func:`summarize` turns the rows
into means with t intervals over seeds, and paired differences (same data,
same seed) of the default model against each baseline.

No TensorFlow at import time (the script's ``--help`` stays fast).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from utils.constants import TRAITS
from utils.history import keeps_start
from utils.synthetic import SyntheticData, SyntheticSpec, generate, noise_ceiling, ridge_baseline

logger = logging.getLogger(__name__)

SMALL_SHAPES: dict[str, int] = {"static_tokens": 8, "static_dim": 24, "dynamic_tokens": 8, "dynamic_dim": 24}
# The planted-signal sets: overrides of SyntheticSpec (default shapes static 16 x 64,
# dynamic 16 x 128; signal fractions 0.3 / 0.3 / 0.4; noise 0.35).
SUITE_SETS: dict[str, dict[str, Any]] = {
    "pooled": {"static_fraction": 0.5, "dynamic_fraction": 0.5, "interaction_fraction": 0.0},
    "product": {"interaction": "product"},
    "cue_segment": {"interaction": "cue_segment"},
    "attention": {"interaction": "attention"},
    # the same kinds with the data_sample shapes (static 8 x 24, dynamic 8 x 24): fewer
    # directions to find, so the structure is learnable from thousands of clips
    "product_small": {"interaction": "product", **SMALL_SHAPES},
    "cue_segment_small": {"interaction": "cue_segment", **SMALL_SHAPES},
    # data_sample/'s design: small shapes, 60% cue-selected segment, 20% noise
    "cue_segment_sample": {
        "interaction": "cue_segment",
        "static_fraction": 0.2,
        "dynamic_fraction": 0.2,
        "interaction_fraction": 0.6,
        "noise_fraction": 0.2,
        **SMALL_SHAPES,
    },
}
SET_DESCRIPTIONS: dict[str, str] = {
    "pooled": "pooled parts only (linear + centred square of each pooled stream)",
    "product": "pooled parts + 40% pooled-static x pooled-dynamic product",
    "cue_segment": "pooled parts + 40% static cue selects a dynamic segment (by position)",
    "attention": "pooled parts + 40% third-order content attention (the seed's generator)",
    "product_small": "as product, with static 8 x 24 and dynamic 8 x 24 tokens",
    "cue_segment_small": "as cue_segment, with static 8 x 24 and dynamic 8 x 24 tokens",
    "cue_segment_sample": "data_sample/'s design: small shapes, 20/20% pooled parts, 60% cue-selected segment, noise 0.2",
}
# ridge: fitted on all N training clips; ridge_train: on the same 80% the networks train on.
BASELINES: tuple[str, ...] = ("ridge", "ridge_train", "ceiling")
RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.json"
FIGURE_FILE = "capability_learning_curves.png"
DEFAULT_VARIANTS: tuple[str, ...] = ("pooled_query", "concat", "ridge", "ridge_train", "ceiling")


@dataclasses.dataclass(frozen=True)
class FitSettings:
    """How each network is trained (Keras ``fit`` with the toolkit's loss and optimizer)."""

    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 1e-3
    patience: int = 10  # early stopping on validation loss, best weights restored (the toolkit's default)
    lr_factor: float = 0.5  # ReduceLROnPlateau, as the training script's "plateau" schedule
    lr_patience: int = 3
    min_lr: float = 1e-6
    max_epochs: int = 200
    val_fraction: float = 0.2
    jit_compile: bool = True
    # epoch 0 is a candidate, as in the training script (utils.training.score_start): the model as built
    # (the ridge start of the default) is kept when no epoch has a lower validation loss
    keep_start: bool = True
    # after early stopping chose the epoch count on the 80/20 split, train again on all N training clips
    # for that many epochs at the same learning rates (the model as built from all N when it was epoch 0),
    # as scikit-learn's searches refit on all rows; ridge is fitted on all N too
    refit: bool = False


@dataclasses.dataclass(frozen=True)
class SuitePlan:
    """Which sets, sizes, seeds and variants; one row per (set, N, seed, variant)."""

    sets: tuple[str, ...] = tuple(SUITE_SETS)
    sizes: tuple[int, ...] = (2000, 6000)
    seeds: tuple[int, ...] = (0, 1, 2)
    variants: tuple[str, ...] = DEFAULT_VARIANTS
    n_test: int = 2000
    fit: FitSettings = FitSettings()
    model_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    noise_fraction: float | None = None  # None: each set's own (SUITE_SETS, else the generator default)

    def __post_init__(self) -> None:
        from utils.constants import FUSION_MODES

        unknown = [s for s in self.sets if s not in SUITE_SETS]
        if unknown:
            raise ValueError(f"unknown set(s) {unknown}; expected some of {tuple(SUITE_SETS)}")
        bad = [v for v in self.variants if v not in FUSION_MODES and v not in BASELINES]
        if bad:
            raise ValueError(f"unknown variant(s) {bad}; expected fusion modes {FUSION_MODES} or {BASELINES}")
        if self.noise_fraction is not None and not 0.0 <= self.noise_fraction < 1.0:
            raise ValueError(f"expected noise_fraction in [0, 1), found {self.noise_fraction}")
        if not self.sizes or min(self.sizes) < 20 or self.n_test < 10:
            raise ValueError(f"expected sizes >= 20 and n_test >= 10, found {self.sizes} and {self.n_test}")


def suite_spec(name: str, n_samples: int, seed: int, noise_fraction: float | None = None) -> SyntheticSpec:
    """The generator settings of set ``name`` (sample shapes; ``noise_fraction`` overrides the set's)."""
    overrides = dict(SUITE_SETS[name])
    if noise_fraction is not None:
        overrides["noise_fraction"] = noise_fraction
    return SyntheticSpec(n_samples=n_samples, seed=seed, **overrides)


def _r2(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import r2_score

    values = r2_score(labels, predictions, multioutput="raw_values")
    return {**{t: float(v) for t, v in zip(TRAITS, values)}, "mean": float(np.mean(values))}


def _compiled_model(config: Any, arrays: dict[str, np.ndarray], labels: np.ndarray, rows: np.ndarray, fit: FitSettings) -> Any:
    """The model as built from ``rows`` (statistics, prior, ridge start), compiled as the suite trains it."""
    import keras

    from models.cross_attention import build_model_for_data

    model = build_model_for_data(config, arrays["static"], arrays["dynamic"], labels, rows)
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=fit.learning_rate, weight_decay=fit.weight_decay),
        loss=keras.losses.MeanSquaredError(),
        jit_compile=fit.jit_compile,
    )
    return model


def _refit_all_rows(
    config: Any, arrays: dict[str, np.ndarray], labels: np.ndarray, rows: np.ndarray, fit: FitSettings,
    epochs: int, rates: list[float], seed: int,
) -> Any:
    """The chosen network again, on all ``rows``: built from them, then ``epochs`` epochs at ``rates``."""
    import keras

    keras.utils.set_random_seed(seed)
    model = _compiled_model(config, arrays, labels, rows, fit)
    if epochs:
        schedule = keras.callbacks.LearningRateScheduler(lambda e, lr: rates[e] if e < len(rates) else lr)
        model.fit([arrays["static"][rows], arrays["dynamic"][rows]], labels[rows], batch_size=fit.batch_size,
                  epochs=epochs, callbacks=[schedule], verbose=0)
    return model


def fit_network(
    fusion: str,
    data: SyntheticData,
    train_rows: np.ndarray,
    test_rows: np.ndarray,
    seed: int,
    fit: FitSettings,
    model_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train one fusion mode on ``train_rows`` (80/20 early-stopping split) and score it on ``test_rows``.

    With ``fit.refit`` the network scored is :func:`_refit_all_rows` with the chosen epoch count.
    """
    import keras

    from models.config import ModelConfig
    from utils.data import split_indices

    keras.utils.set_random_seed(seed)
    inner_train, inner_val = split_indices(len(train_rows), fit.val_fraction, seed)
    tr, va = train_rows[inner_train], train_rows[inner_val]
    arrays = {name: np.asarray(getattr(data, name), dtype="float32") for name in ("static", "dynamic")}
    config = ModelConfig(**{**(model_overrides or {}), "fusion": fusion})
    model = _compiled_model(config, arrays, data.labels, tr, fit)
    validation = ([arrays["static"][va], arrays["dynamic"][va]], data.labels[va])
    start_loss, start_weights = math.inf, None
    if fit.keep_start:
        start_loss = float(model.evaluate(*validation, batch_size=fit.batch_size, verbose=0))
        start_weights = model.get_weights()
    callbacks = [
        keras.callbacks.EarlyStopping(
            patience=fit.patience, restore_best_weights=True, baseline=start_loss if fit.keep_start else None
        ),
        keras.callbacks.ReduceLROnPlateau(factor=fit.lr_factor, patience=fit.lr_patience, min_lr=fit.min_lr),
    ]
    start = time.perf_counter()
    history = model.fit(
        [arrays["static"][tr], arrays["dynamic"][tr]],
        data.labels[tr],
        validation_data=validation,
        batch_size=fit.batch_size,
        epochs=fit.max_epochs,
        callbacks=callbacks,
        verbose=0,
    )
    val_loss = history.history["val_loss"]
    best_epoch = int(np.argmin(val_loss)) + 1
    if start_weights is not None and keeps_start(min(val_loss), start_loss):
        model.set_weights(start_weights)  # no epoch beat the model as built: keep it (best epoch 0)
        best_epoch = 0
    if fit.refit:
        rates = [float(r) for r in history.history.get("learning_rate", [fit.learning_rate] * len(val_loss))]
        model = _refit_all_rows(config, arrays, data.labels, train_rows, fit, best_epoch, rates, seed)
    seconds = time.perf_counter() - start
    predictions = model.predict([arrays["static"][test_rows], arrays["dynamic"][test_rows]], verbose=0)
    train_predictions = model.predict([arrays["static"][tr], arrays["dynamic"][tr]], verbose=0)
    keras.backend.clear_session()
    return {
        "r2": _r2(data.labels[test_rows], predictions),
        "train_r2": _r2(data.labels[tr], train_predictions)["mean"],
        "best_epoch": best_epoch,
        "epochs": len(val_loss),
        "seconds": round(seconds, 1),
        **({"refit_rows": len(train_rows)} if fit.refit else {}),
    }


def _row_key(row: dict[str, Any]) -> tuple[str, int, int, str]:
    return (row["set"], int(row["n"]), int(row["seed"]), row["variant"])


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a ``results.jsonl`` (empty when the file does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _append_row(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")
        fh.flush()


def _evaluate(
    variant: str,
    data: SyntheticData,
    train_rows: np.ndarray,
    test_rows: np.ndarray,
    seed: int,
    plan: SuitePlan,
) -> dict[str, Any]:
    if variant == "ceiling":
        return {"r2": noise_ceiling(data.labels[test_rows], data.signal[test_rows])}
    if variant == "ridge":
        return {"r2": ridge_baseline(data.static, data.dynamic, data.labels, train_rows, test_rows)}
    if variant == "ridge_train":
        from utils.data import split_indices

        inner_train, _ = split_indices(len(train_rows), plan.fit.val_fraction, seed)
        return {
            "r2": ridge_baseline(data.static, data.dynamic, data.labels, train_rows[inner_train], test_rows)
        }
    return fit_network(variant, data, train_rows, test_rows, seed, plan.fit, plan.model_overrides)


def run_suite(plan: SuitePlan, output_dir: str | Path) -> list[dict[str, Any]]:
    """Run every (set, N, seed, variant) not yet in ``output_dir/results.jsonl``; return all rows."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / RESULTS_FILE
    for name in plan.sets:
        for seed in plan.seeds:
            done = {_row_key(r) for r in read_rows(path)}  # re-read: several suites may share the folder
            todo = [(n, v) for n in plan.sizes for v in plan.variants if (name, n, seed, v) not in done]
            if not todo:
                continue
            data = generate(suite_spec(name, max(plan.sizes) + plan.n_test, seed, plan.noise_fraction))
            test_rows = np.arange(max(plan.sizes), max(plan.sizes) + plan.n_test)
            for n, variant in todo:
                result = _evaluate(variant, data, np.arange(n), test_rows, seed, plan)
                row = {"set": name, "n": n, "seed": seed, "variant": variant, **result}
                _append_row(path, row)
                logger.info("%s N=%d seed=%d %s: test R² %.3f", name, n, seed, variant, row["r2"]["mean"])
    return read_rows(path)


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided t interval of the mean (``nan`` bounds for one value)."""
    from scipy import stats

    x = np.asarray(values, dtype="float64")
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half


def summarize(
    rows: Iterable[dict[str, Any]],
    default: str = "pooled_query",
    baselines: Sequence[str] = ("ridge", "concat"),
) -> dict[str, Any]:
    """Per (set, N): each variant's mean test R² with a 95% t interval over seeds, and the
    paired differences ``default - baseline`` (and ``default - max(baselines)``) over seeds."""
    table: dict[tuple[str, int], dict[str, dict[int, float]]] = {}
    for r in rows:
        table.setdefault((r["set"], int(r["n"])), {}).setdefault(r["variant"], {})[int(r["seed"])] = r["r2"][
            "mean"
        ]
    summary: dict[str, Any] = {}
    for (name, n), by_variant in sorted(table.items()):
        entry: dict[str, Any] = {"variants": {}, "differences": {}}
        for variant, by_seed in by_variant.items():
            entry["variants"][variant] = dict(
                zip(("mean", "low", "high"), t_interval(list(by_seed.values())))
            )
            entry["variants"][variant]["seeds"] = len(by_seed)
        present = [b for b in baselines if b in by_variant]
        if default in by_variant and present:
            seeds = sorted(set(by_variant[default]).intersection(*(by_variant[b] for b in present)))
            for b in [*present, "best"]:
                other = [
                    max(by_variant[p][s] for p in present) if b == "best" else by_variant[b][s] for s in seeds
                ]
                diffs = [by_variant[default][s] - o for s, o in zip(seeds, other)]
                entry["differences"][b] = dict(zip(("mean", "low", "high"), t_interval(diffs)))
                entry["differences"][b]["seeds"] = len(diffs)
        if default in by_variant and "ridge_train" in by_variant:  # ridge on the networks' own rows
            seeds = sorted(set(by_variant[default]) & set(by_variant["ridge_train"]))
            diffs = [by_variant[default][s] - by_variant["ridge_train"][s] for s in seeds]
            entry["differences"]["ridge_train"] = dict(zip(("mean", "low", "high"), t_interval(diffs)))
            entry["differences"]["ridge_train"]["seeds"] = len(diffs)
        summary[f"{name}/{n}"] = {"set": name, "n": n, **entry}
    return summary


# ---------------------------------------------------------------------------
# Reporting: markdown table, learning-curve figure


def section_markers(name: str = "main") -> tuple[str, str]:
    """The comment lines around the suite section ``name`` of a markdown file."""
    return (
        f"<!-- capability-suite:{name}:begin (written by scripts/capability_suite.py) -->",
        f"<!-- capability-suite:{name}:end -->",
    )


VARIANT_LABELS: dict[str, str] = {
    "pooled_query": "pooled-query attention (default)",
    "cross_attention": "bidirectional token cross-attention",
    "concat": "concat (no attention)",
    "ridge": "ridge, pooled features (all N)",
    "ridge_train": "ridge, pooled features (same 80%)",
    "ceiling": "noise ceiling",
}
VARIANT_COLORS: dict[str, str] = {
    "pooled_query": "#332288",
    "cross_attention": "#CC6677",
    "concat": "#44AA99",
    "ridge": "#DDCC77",
    "ridge_train": "#AA8800",
    "ceiling": "#1A1A1A",
}


def _cell(stats: dict[str, float] | None, signed: bool = False) -> str:
    if not stats:
        return "–"
    fmt = "{:+.3f}" if signed else "{:.3f}"
    if math.isnan(stats["low"]):
        return fmt.format(stats["mean"])
    return f"{fmt.format(stats['mean'])} [{fmt.format(stats['low'])}, {fmt.format(stats['high'])}]"


def _variant_order(summary: dict[str, Any]) -> list[str]:
    present = {v for e in summary.values() for v in e["variants"]}
    order = ["ceiling", "ridge", "ridge_train", "concat", "cross_attention", "pooled_query"]
    return [v for v in order if v in present] + sorted(present - set(order))


def suite_markdown(
    summary: dict[str, Any],
    plan: SuitePlan,
    command: str,
    figure: Path | None,
    default: str = "pooled_query",
    section: str = "main",
) -> str:
    """The suite section: settings, the table (mean [95% t interval] over seeds) and the figure link."""
    variants = _variant_order(summary)
    header = ["set", "N"] + [VARIANT_LABELS.get(v, v) for v in variants]
    header += [f"{default} − ridge", f"{default} − ridge (same 80%)", f"{default} − concat"]
    header += [f"{default} − max(ridge, concat)"]
    begin, end = section_markers(section)
    lines = [
        begin,
        "",
        "Made by:",
        "",
        "```",
        command,
        "```",
        "",
        f"Test R² (mean of the five traits) on {plan.n_test} held-out clips per set and seed; "
        f"mean [95% t interval] over seeds {', '.join(map(str, plan.seeds))} (each seed draws its own data "
        "set and initialization); the differences are paired (same data, same seed). Networks: "
        f"80/20 split of the N training clips for early stopping (patience {plan.fit.patience}"
        f"{', the model as built a candidate as epoch 0' if plan.fit.keep_start else ''}"
        f"{'; then trained again on all N clips for the chosen number of epochs at the same learning rates (refit)' if plan.fit.refit else ''}), AdamW "
        f"lr {plan.fit.learning_rate:g}, weight decay {plan.fit.weight_decay:g}, batch {plan.fit.batch_size}, "
        f"plateau schedule; model settings: ModelConfig defaults{_overrides(plan)}. "
        "Ridge is fitted on all N training clips.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for entry in summary.values():
        cells = [entry["set"], f"{entry['n']:,}"]
        cells += [_cell(entry["variants"].get(v)) for v in variants]
        cells += [
            _cell(entry["differences"].get(k), signed=True)
            for k in ("ridge", "ridge_train", "concat", "best")
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Sets:", ""]
    lines += [f"- `{name}`: {SET_DESCRIPTIONS[name]}" for name in plan.sets]
    if figure is not None:
        lines += ["", f"![Learning curves of the capability suite]({_relative_link(figure)})"]
    lines += ["", end]
    return "\n".join(lines)


def _overrides(plan: SuitePlan) -> str:
    if not plan.model_overrides:
        return ""
    return " except " + ", ".join(f"{k}={v}" for k, v in sorted(plan.model_overrides.items()))


def _relative_link(figure: Path) -> str:
    parts = Path(figure).parts
    return str(Path(*parts[1:])) if parts and parts[0] == "docs" else str(figure)


def replace_markdown_section(path: Path, section: str, name: str = "main") -> None:
    """Put ``section`` between the markers of suite section ``name`` in ``path`` (appended when absent)."""
    from utils.io import write_text

    begin, end = section_markers(name)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1]
        text = head + section + tail
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section + "\n"
    write_text(path, text)


def plot_learning_curves(summary: dict[str, Any], path: Path) -> Path:
    """One panel per set: test R² against N for each variant, 95% intervals as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from utils.plotting import save

    sets = list(dict.fromkeys(e["set"] for e in summary.values()))
    variants = _variant_order(summary)
    fig, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 4.2), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], sets):
        entries = sorted((e for e in summary.values() if e["set"] == name), key=lambda e: e["n"])
        sizes = [e["n"] for e in entries]
        for v in variants:
            stats = [e["variants"].get(v) for e in entries]
            if not any(stats):
                continue
            mean = np.array([s["mean"] if s else np.nan for s in stats])
            low = np.array([s["low"] if s else np.nan for s in stats])
            high = np.array([s["high"] if s else np.nan for s in stats])
            err = np.nan_to_num(np.vstack([mean - low, high - mean]))
            style = {"ls": "--"} if v == "ceiling" else {"marker": "o"}
            ax.errorbar(
                sizes,
                mean,
                yerr=err,
                capsize=3,
                color=VARIANT_COLORS.get(v),
                label=VARIANT_LABELS.get(v, v),
                **style,
            )
        ax.set_xscale("log")
        ax.set_xticks(sizes, [f"{n:,}" for n in sizes])
        ax.minorticks_off()
        ax.set_title(f"{name}", fontsize=11)
        ax.set_xlabel("training clips N")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("test R² (mean of 5 traits)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle("Capability suite: test R² against training size (95% t intervals over seeds)", fontsize=12)
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    return save(fig, path)
