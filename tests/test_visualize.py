"""scripts/visualize_training_metrics.py on the history of a real (tiny) training run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import scripts.visualize_training_metrics as viz
from scripts.train_personality_model import main as train_main
from tests.conftest import (
    REPO,
    assert_real_image,
    run_script_expecting_input_error,
    train_args,
    write_features,
)
from utils import constants as C
from utils import plotting as P
from utils.history import load_history

SCRIPT = REPO / "scripts" / "visualize_training_metrics.py"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """One real 3-epoch training run; its output folder."""
    root = tmp_path_factory.mktemp("viz")
    paths = write_features(root / "data")
    out = root / "results"
    assert train_main(train_args(paths, out, "--epochs", "3")) == 0
    return out


@pytest.fixture
def real_run_plots() -> None:
    """Request this to keep utils.run_plots (Phase 4.3) active in a test."""


@pytest.fixture(autouse=True)
def _only_phase_4_2_figures(request, monkeypatch) -> None:
    """Tests check this script's own figures; utils.run_plots runs only where requested."""
    if "real_run_plots" not in request.fixturenames:
        import utils.run_plots

        monkeypatch.setattr(utils.run_plots, "plot_run_logs", lambda history, output: [])


def _history(run: Path) -> np.ndarray:
    return np.load(run / C.HISTORY_FILE, allow_pickle=False)


def _no_temp_files(folder: Path) -> None:
    assert not list(folder.glob(".*tmp*")), "temporary files left behind"


def test_defaults_are_the_seed_paths():
    args = viz.build_parser().parse_args([])
    assert Path(args.history) == Path("results/training_history.npy")
    assert Path(args.output) == Path("results/training_visualizations")
    assert args.trust_pickle is False


def test_npy_history_gives_every_seed_figure(run, tmp_path, capsys, real_run_plots):
    out = tmp_path / "viz"
    assert viz.main(["--history", str(run / C.HISTORY_FILE), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert set(P.TRAINING_FIGURES) == {
        "loss.png", "mae.png", "mse.png", "r_squared.png",
        "per_trait_r_squared.png", "r2_comparison.png", "metric_correlation.png",
    }
    for name in P.TRAINING_FIGURES:
        assert_real_image(out / name)
        assert str(out / name) in printed
    _no_temp_files(out)


def test_json_history_reads_the_same(run, tmp_path):
    out = tmp_path / "viz_json"
    assert viz.main(["--history", str(run / C.HISTORY_JSON_FILE), "--output", str(out)]) == 0
    for name in P.TRAINING_FIGURES:
        assert_real_image(out / name)


def test_best_epoch_is_lowest_val_loss_and_lr_cuts_are_found(run):
    history = load_history(run / C.HISTORY_FILE)
    history["learning_rate"] = [1e-3, 5e-4, 5e-4]  # a plateau cut before epoch 2
    curves = P.prepare_curves(history)
    assert curves.epoch.tolist() == [1.0, 2.0, 3.0]
    assert curves.best_epoch == history["epoch"][int(np.argmin(history["val_loss"]))]
    assert curves.best_by == "val_loss"
    assert curves.lr_cuts == [2.0]
    # a schedule that decays every epoch is not marked cut by cut
    history["learning_rate"] = [1e-3, 8e-4, 5e-4]
    assert P.prepare_curves(history).lr_cuts == []


def test_one_epoch_history(run, tmp_path):
    hist = tmp_path / "one" / C.HISTORY_FILE
    hist.parent.mkdir()
    np.save(hist, _history(run)[:1], allow_pickle=False)
    out = tmp_path / "viz_one"
    assert viz.main(["--history", str(hist), "--output", str(out)]) == 0
    for name in P.TRAINING_FIGURES:
        # the correlation figure is a sentence saying one epoch is not enough
        assert_real_image(out / name, min_colors=8 if name == P.METRIC_CORRELATION_FILE else 64)


def test_resumed_history_is_plotted_against_its_epoch_column(run, tmp_path):
    table = _history(run)
    resumed = np.concatenate([table, table[1:]])  # 5 rows
    resumed["epoch"] = [3, 4, 5, 4, 5]  # epochs 4 and 5 redone after a crash
    resumed["val_loss"] = [0.5, 0.9, 0.7, 0.4, 0.6]  # the redone epoch 4 is the best
    hist = tmp_path / "resumed" / C.HISTORY_FILE
    hist.parent.mkdir()
    np.save(hist, resumed, allow_pickle=False)

    curves = P.prepare_curves(load_history(hist))
    assert curves.epoch.tolist() == [3.0, 4.0, 5.0]
    np.testing.assert_array_equal(curves.columns["val_loss"], [0.5, 0.4, 0.6])  # last row of each epoch
    assert curves.best_epoch == 4.0

    out = tmp_path / "viz_resumed"
    assert viz.main(["--history", str(hist), "--output", str(out)]) == 0
    for name in P.TRAINING_FIGURES:
        assert_real_image(out / name)


def test_gapped_epochs_stay_gapped(run):
    history = load_history(run / C.HISTORY_FILE)
    history["epoch"] = [2.0, 5.0, 9.0]
    curves = P.prepare_curves(history)
    assert curves.epoch.tolist() == [2.0, 5.0, 9.0]


def test_constant_metrics_are_left_out_of_the_correlation(tmp_path, monkeypatch):
    hist = tmp_path / "const.json"
    hist.write_text(json.dumps({
        "epoch": [1, 2, 3, 4], "loss": [0.4, 0.3, 0.25, 0.2], "val_loss": [0.5, 0.45, 0.44, 0.46],
        "mae": [0.3, 0.3, 0.3, 0.3], "learning_rate": [1e-3] * 4,
    }))
    drawn = {}
    save_figure = P.save_figure

    def keep(fig, path, dpi=150):
        drawn[Path(path).name] = fig
        save_figure(fig, path, dpi=dpi)

    monkeypatch.setattr(P, "save_figure", keep)
    out = tmp_path / "viz_const"
    assert viz.main(["--history", str(hist), "--output", str(out)]) == 0
    assert_real_image(out / P.METRIC_CORRELATION_FILE)
    ax = drawn[P.METRIC_CORRELATION_FILE].axes[0]
    shown = {t.get_text() for t in (*ax.get_xticklabels(), *ax.get_yticklabels())}
    # the two varying metrics are the heatmap's rows/columns; the constant ones are not
    assert shown == {P.metric_label("loss"), P.metric_label("val_loss")}
    assert not shown & {P.metric_label("mae"), P.metric_label("learning_rate")}
    # ... and are named as left out in the title
    assert "left out: training MAE, learning rate" in ax.get_title()
    assert (out / "loss.png").is_file()


def _pickled_history(run: Path, folder: Path) -> Path:
    """The old format: ``np.save(path, history.history)`` (a pickled dict, no epoch column)."""
    history = load_history(run / C.HISTORY_FILE)
    history.pop("epoch")
    path = folder / C.HISTORY_FILE
    folder.mkdir(parents=True, exist_ok=True)
    np.save(path, np.array(history, dtype=object), allow_pickle=True)
    return path


def test_pickled_history_is_refused_without_trust_pickle(run, tmp_path, capsys):
    hist = _pickled_history(run, tmp_path / "old")
    out = tmp_path / "viz_refused"
    assert viz.main(["--history", str(hist), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--trust_pickle" in err[0] and str(hist) in err[0]
    assert not out.exists()


def test_pickled_history_is_read_with_trust_pickle(run, tmp_path):
    hist = _pickled_history(run, tmp_path / "old")
    out = tmp_path / "viz_trusted"
    assert viz.main(["--history", str(hist), "--output", str(out), "--trust_pickle"]) == 0
    for name in P.TRAINING_FIGURES:
        assert_real_image(out / name)
    assert P.prepare_curves(load_history(hist, trust_pickle=True)).epoch.tolist() == [1.0, 2.0, 3.0]


def test_cli_error_is_one_line_and_exit_2(run, tmp_path):
    hist = _pickled_history(run, tmp_path / "old_cli")
    out = tmp_path / "viz_cli"
    err = run_script_expecting_input_error(SCRIPT, ["--history", str(hist), "--output", str(out)], out)
    assert "--trust_pickle" in err


def test_missing_history_is_an_input_error(tmp_path, capsys):
    out = tmp_path / "viz_missing"
    assert viz.main(["--history", str(tmp_path / "nope.npy"), "--output", str(out)]) == 2
    assert "not found" in capsys.readouterr().err
    assert not out.exists()


def test_the_script_draws_the_run_log_figures_and_lists_them(run, tmp_path, monkeypatch, capsys):
    import utils.run_plots

    calls = []

    def fake_plot_run_logs(history_path, output_dir):
        calls.append((history_path, output_dir))
        extra = Path(output_dir) / "dashboard.png"
        extra.write_bytes(b"")
        return [extra]

    monkeypatch.setattr(utils.run_plots, "plot_run_logs", fake_plot_run_logs)
    out = tmp_path / "viz_ext"
    assert viz.main(["--history", str(run / C.HISTORY_FILE), "--output", str(out)]) == 0
    assert calls == [(str(run / C.HISTORY_FILE), out)]
    assert str(out / "dashboard.png") in capsys.readouterr().out


def test_the_model_as_built_is_drawn_at_epoch_0_and_can_be_the_best_epoch():
    from utils.plotting import prepare_curves

    history = {"epoch": [1.0, 2.0, 3.0], "loss": [0.05, 0.04, 0.03], "val_loss": [0.07, 0.065, 0.08]}
    kept = prepare_curves(history, start={"val_loss": 0.06})
    assert kept.epoch.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert kept.best_epoch == 0.0
    assert kept.columns["val_loss"][0] == 0.06 and np.isnan(kept.columns["loss"][0])
    beaten = prepare_curves(history, start={"val_loss": 0.066})
    assert beaten.best_epoch == 2.0
    assert prepare_curves(history).epoch.tolist() == [1.0, 2.0, 3.0]
