"""Smoke test of scripts/benchmark_toolkit.py: tiny sizes, one repetition, no 8 GB files.

The benchmark itself is not a CI test (it takes half an hour); this checks that
the command runs end to end and writes a results document of the right shape.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "benchmark_toolkit.py"


def _positive_finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def test_help_is_fast_and_exits_zero() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0
    assert "--quick" in proc.stdout and "--measures" in proc.stdout


def test_unknown_measure_is_a_usage_error() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--measures", "nope"], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2
    assert "nope" in proc.stderr


def test_tiny_run_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    cmd = [
        sys.executable, str(SCRIPT), "--quick", "--measures", "overhead,help", "--reps", "1",
        "--overhead_n", "120", "--name", "smoke", "--output", str(out), "--no_doc",
        "--workdir", str(tmp_path / "work"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = json.loads(out.read_text())
    assert results["schema"] == "toolkit-benchmark/1"
    assert results["name"] == "smoke"
    for key in ("cpu_model", "cpu_cores", "ram_gb", "python", "versions"):
        assert key in results["machine"]
    assert set(results["measures"]) == {"overhead", "help"}
    overhead = results["measures"]["overhead"]
    assert set(overhead["median_epoch_s"]) == {"toolkit", "bare"}
    assert _positive_finite(overhead["ratio"])
    for ratio in (*overhead["ratio_to_bare"].values(), *overhead["cpu_ratio_to_bare"].values()):
        assert _positive_finite(ratio)
    assert isinstance(overhead["met"], bool)
    assert len(overhead["runs"]["toolkit"]) == 1
    help_times = results["measures"]["help"]["median_s"]
    assert "train_personality_model.py" in help_times
    assert all(_positive_finite(t) for t in help_times.values())
    assert {g["measure"] for g in results["goals"]} >= {"overhead: toolkit / bare epoch time"}
    for goal in results["goals"]:
        assert _positive_finite(goal["value"]) and isinstance(goal["met"], bool)
    assert not (tmp_path / "work" / "data").exists()  # generated data removed without --keep


def test_markdown_section_renders_and_replaces(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO))
    from benchmarks.runner import DOC_BEGIN, DOC_END, update_doc

    results = {
        "name": "x", "created": "2025-01-01T00:00:00+00:00", "command": "python scripts/benchmark_toolkit.py",
        "wall_seconds": 60.0, "config": {"reps": 3, "help_reps": 5},
        "machine": {"cpu_model": "cpu", "cpu_cores": 2, "ram_gb": 24.0, "os": "Linux", "python": "3.11",
                    "versions": {"tensorflow": "2.21"}},
        "measures": {"help": {"median_s": {"a.py": 0.1}, "missing": [], "met": True}},
        "goals": [{"measure": "--help latency, slowest script (s)", "value": 0.1, "goal": "< 1 s", "met": True}],
    }
    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n\nprose before\n")
    update_doc(results, doc)
    update_doc(results, doc)
    text = doc.read_text()
    assert text.count(DOC_BEGIN) == 1 and text.count(DOC_END) == 1
    assert "prose before" in text and "`a.py` 0.10 s" in text


def test_end_to_end_ratios_are_per_epoch_differences_and_long_run_totals() -> None:
    sys.path.insert(0, str(REPO))
    from benchmarks.end_to_end import ratio_table

    rng = np.random.default_rng(0)
    t = {v: {e: rng.uniform(10, 60, size=3) for e in (2, 6)} for v in ("toolkit", "plain", "plain_like")}
    runs = {v: {e: [{"seconds": float(x)} for x in xs] for e, xs in r.items()} for v, r in t.items()}
    table = ratio_table(runs, 2, 6)
    per_epoch = {v: np.median((t[v][6] - t[v][2]) / 4) for v in t}
    for ref in ("plain", "plain_like"):
        r = table["ratios"][f"toolkit/{ref}"]
        assert r["per_epoch"] == pytest.approx(per_epoch["toolkit"] / per_epoch[ref])
        assert r["end_to_end"] == pytest.approx(np.median(t["toolkit"][6]) / np.median(t[ref][6]))
        np.testing.assert_allclose(r["end_to_end_rounds"], t["toolkit"][6] / t[ref][6])
        np.testing.assert_allclose(r["per_epoch_rounds"], (t["toolkit"][6] - t["toolkit"][2]) / (t[ref][6] - t[ref][2]))
    assert set(table["ratios"]) == {"toolkit/plain", "toolkit/plain_like"}
