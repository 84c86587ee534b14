"""Shared fixtures: tiny feature files, isolated wandb folders, quiet TensorFlow."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PERSONALITY_TOOLKIT_HASH_CACHE", "off")  # no SHA-256 cache in ~/.cache from tests
REPO = Path(__file__).resolve().parents[1]


def write_features(
    folder: Path,
    n: int = 48,
    static_shape: tuple[int, ...] = (4, 8),
    dynamic_shape: tuple[int, ...] = (3, 12),
    dtype: str = "float32",
    seed: int = 0,
) -> dict[str, str]:
    """Three small valid .npy files with a learnable signal; returns their paths."""
    rng = np.random.default_rng(seed)
    static = rng.normal(size=(n, *static_shape)).astype(dtype)
    dynamic = rng.normal(size=(n, *dynamic_shape)).astype(dtype)
    s = static.reshape(n, -1).astype("float64")
    d = dynamic.reshape(n, -1).astype("float64")
    z = s[:, :5] + d[:, :5] + 0.3 * rng.normal(size=(n, 5))
    labels = (1.0 / (1.0 + np.exp(-z))).astype("float32")
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "static_features": str(folder / "static_features.npy"),
        "dynamic_features": str(folder / "dynamic_features.npy"),
        "labels": str(folder / "labels.npy"),
    }
    np.save(paths["static_features"], static)
    np.save(paths["dynamic_features"], dynamic)
    np.save(paths["labels"], labels)
    return paths


@pytest.fixture
def tiny_data(tmp_path: Path) -> dict[str, str]:
    return write_features(tmp_path / "data")


@pytest.fixture
def wandb_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """wandb offline, every wandb folder inside tmp_path."""
    root = tmp_path / "wandb_home"
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        folder = root / var.lower()
        folder.mkdir(parents=True)
        monkeypatch.setenv(var, str(folder))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    return root


def train_args(paths: dict[str, str], out: Path, *extra: str) -> list[str]:
    """A fast training command line for the tiny data."""
    return [
        "--static_features", paths["static_features"],
        "--dynamic_features", paths["dynamic_features"],
        "--labels", paths["labels"],
        "--output", str(out / "personality_model_trained.h5"),
        "--epochs", "2", "--batch_size", "16", "--width", "16", "--num_heads", "2",
        "--head_units", "16", "--verbose", "0", "--histogram_freq", "0",
        # XLA compiles for seconds before epoch 1: not worth it for 2-epoch test runs
        # (tests/test_training.py runs the default, XLA on, once)
        "--no-jit_compile",
        *extra,
    ]


def assert_real_image(path: Path, min_colors: int = 64) -> None:
    """A PNG at >= 150 dpi, of a reasonable size, with real content (not a blank canvas)."""
    from matplotlib.image import imread
    from PIL import Image

    assert path.is_file(), path
    with Image.open(path) as im:
        dpi = im.info.get("dpi", (0, 0))
    assert min(dpi) >= 149.5, (path.name, dpi)
    pixels = imread(path)[..., :3]
    assert pixels.shape[0] >= 300 and pixels.shape[1] >= 400, (path.name, pixels.shape)
    assert pixels.std() > 0.05, f"{path.name} is nearly uniform"
    rgb = (pixels.reshape(-1, 3) * 255).astype(np.uint32)
    colors = np.unique(rgb[:, 0] << 16 | rgb[:, 1] << 8 | rgb[:, 2])
    assert len(colors) >= min_colors, f"{path.name}: only {len(colors)} distinct colors"


def ccc_two_pass(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Lin's CCC per column with population moments, two passes."""
    my, mp = y.mean(axis=0), p.mean(axis=0)
    vy = ((y - my) ** 2).mean(axis=0)
    vp = ((p - mp) ** 2).mean(axis=0)
    cov = ((y - my) * (p - mp)).mean(axis=0)
    return 2 * cov / (vy + vp + (my - mp) ** 2)


def run_script_expecting_input_error(script: Path, argv: list[str], out: Path) -> str:
    """Run a script as a user would; check exit 2, one stderr line, no output folder; return stderr."""
    proc = subprocess.run(
        [sys.executable, str(script), *argv], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not out.exists()
    return proc.stderr


def wait_for_resume_state(out: Path, epoch: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    """Until a training run's resume state says ``epoch`` finished (history and checkpoint are written before it)."""
    import json
    import time

    from utils import constants as C

    state = out / C.RESUME_DIR / C.RESUME_STATE_FILE
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"training ended early with code {proc.returncode}: {proc.stderr.read()[-2000:]}")
        try:
            if json.loads(state.read_text())["epoch"] >= epoch:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.02)
    raise AssertionError("training did not reach the epoch in time")
