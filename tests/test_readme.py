"""The defaults the README states are the code's (parsed from README.md, compared with the parsers)."""

from __future__ import annotations

import re
from pathlib import Path

from scripts.train_personality_model import build_parser
from utils import constants as C
from utils.config import AnalysisConfig, TrainConfig, VisualizeConfig

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def _flat(text: str) -> str:
    return " ".join(text.split())


def _same(default: object, stated: str) -> bool:
    if isinstance(default, bool):
        return stated in ({"on", "true"} if default else {"off", "false"})
    return type(default)(stated) == default


def test_the_stated_training_defaults_are_the_parsers():
    match = re.search(r"Training defaults \(.*?\):(.*?)\. Exit codes", _flat(README))
    assert match, "README: the 'Training defaults' sentence is gone"
    stated = dict(re.findall(r"`--(\w+) ([^`]+)`", match.group(1)))
    assert len(stated) >= 8
    defaults = vars(build_parser().parse_args([]))
    wrong = {k: (v, defaults.get(k)) for k, v in stated.items() if k not in defaults or not _same(defaults[k], v)}
    assert not wrong, f"README states {wrong} (stated, code)"


def test_the_performance_summary_states_the_execution_defaults():
    text = _flat(README)
    match = re.search(r"\(XLA and (\d+) steps per graph call by default\)", text)
    assert match, "README: the execution defaults sentence is gone"
    assert int(match.group(1)) == TrainConfig().steps_per_execution
    assert TrainConfig().jit_compile is True


def test_no_arguments_work_on_data_sample_and_results():
    assert f"works on `{C.DEFAULT_DATA_DIR}/` and `{C.DEFAULT_RESULTS_DIR}/`" in _flat(README)
    for cls in (TrainConfig, AnalysisConfig, VisualizeConfig):
        cfg = cls()
        keys = ("static_features", "dynamic_features", "labels", "output", "model", "history")
        paths = [v for k, v in vars(cfg).items() if k in keys and isinstance(v, str)]
        assert paths and all(p.startswith((C.DEFAULT_DATA_DIR + "/", C.DEFAULT_RESULTS_DIR + "/")) for p in paths), cls


def test_the_results_tree_uses_the_constants_file_names():
    block = README.split("After the main job:", 1)[1].split("```", 2)[1]
    for name in (C.MODEL_FILE, C.CHECKPOINT_FILE, C.HISTORY_FILE, C.HISTORY_JSON_FILE, C.TRAINING_SUMMARY_FILE,
                 C.MANIFEST_FILE, C.TENSORBOARD_DIR, C.VISUALIZATION_DIR, C.PREDICTION_ANALYSIS_DIR, C.ARCHIVE_DIR):
        assert name in block, name
    assert "15 scalar per-trait metrics" not in README  # training compiles one fused metric (PersonalityMetrics)


def test_the_metrics_section_names_the_compiled_metric():
    section = _flat(README.split("## Metrics", 1)[1].split("\n## ", 1)[0])
    assert "PersonalityMetrics" in section and "utils/metrics.py" in section
