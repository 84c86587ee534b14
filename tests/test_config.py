"""One source for every default: the settings dataclasses make the flags (issue 9).

Each script's parser is generated from its dataclass; these tests compare the
parser with the dataclass (names, defaults, help) and check that no script
states a default of its own.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
from pathlib import Path

import pytest

from models.config import ModelConfig
from scripts import analyze_model_predictions, train_personality_model, visualize_training_metrics
from utils import constants as C
from utils.cli import flag_defaults, flag_fields, from_args, option, settings_parser
from utils.config import AnalysisConfig, InputFiles, TrainConfig, VisualizeConfig
from utils.errors import InputError

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = {
    "train_personality_model.py": (train_personality_model, TrainConfig),
    "analyze_model_predictions.py": (analyze_model_predictions, AnalysisConfig),
    "visualize_training_metrics.py": (visualize_training_metrics, VisualizeConfig),
}
# The client's commands are a contract: these flags exist (more may be added).
CONTRACT_FLAGS = {
    "train_personality_model.py": {
        "static_features", "dynamic_features", "labels", "output", "resume", "val_split", "batch_size", "epochs",
        "learning_rate", "weight_decay", "seed", "patience", "schedule", "lr_factor", "lr_patience", "min_lr",
        "jit_compile", "steps_per_execution", "fusion", "width", "num_heads", "depth", "dropout", "ff_multiplier",
        "head_units", "pooled_tokens", "histogram_freq", "batch_log_frequency", "verbose", "wandb",
        "wandb_project", "wandb_mode",
    },
    "analyze_model_predictions.py": {
        "model", "static_features", "dynamic_features", "labels", "output", "train_labels", "split",
        "batch_size", "attention_samples", "verbose",
    },
    "visualize_training_metrics.py": {"history", "output", "trust_pickle"},
}


def _flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.dest != "help"}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_the_parser_is_the_dataclass(script):
    module, cls = SCRIPTS[script]
    flags = _flags(module.build_parser())
    fields = {f.name: f for f in flag_fields(cls)}
    assert set(flags) == set(fields)
    assert CONTRACT_FLAGS[script] <= set(flags)
    for name, action in flags.items():
        assert action.default == fields[name].default, name
        assert action.help == fields[name].metadata["help"], name
    # parsing nothing gives the dataclass's own defaults
    assert from_args(cls, module.build_parser().parse_args([])) == cls()


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_no_script_states_a_default_or_a_flag_itself(script):
    tree = ast.parse((REPO / "scripts" / script).read_text(encoding="utf-8"))
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert not [c for c in calls if isinstance(c.func, ast.Attribute) and c.func.attr == "add_argument"]
    assert not [k for c in calls for k in c.keywords if k.arg == "default"]


def test_model_flags_come_from_model_config():
    parser = train_personality_model.build_parser()
    flags = _flags(parser)
    for f in dataclasses.fields(ModelConfig):
        assert flags[f.name].default == getattr(ModelConfig(), f.name), f.name
    groups = {g.title: {a.dest for a in g._group_actions} for g in parser._action_groups}
    assert groups["model"] == {f.name for f in dataclasses.fields(ModelConfig)}


def test_a_changed_model_default_changes_the_flag():
    @dataclasses.dataclass(frozen=True)
    class Other:
        width: int = option(32, "w")
        fusion: str = option("concat", "f", choices=C.FUSION_MODES)

    assert settings_parser("x", "", Other).parse_args([]) == argparse.Namespace(width=32, fusion="concat")
    assert flag_defaults(Other) == {"width": 32, "fusion": "concat"}


def test_no_default_is_stated_twice_across_the_settings_modules():
    """TrainConfig restates no ModelConfig field; the shared input flags are declared once for both scripts."""
    assert not {f.name for f in dataclasses.fields(TrainConfig)} & {f.name for f in dataclasses.fields(ModelConfig)}
    assert {f.name for f in flag_fields(TrainConfig)} >= {f.name for f in dataclasses.fields(ModelConfig)}
    source = (REPO / "utils" / "config.py").read_text(encoding="utf-8")
    for name in (C.STATIC_FEATURES_FILE, C.DYNAMIC_FEATURES_FILE, C.LABELS_FILE):
        assert name not in source  # the file names come from utils.constants
    for key in ("static_features", "dynamic_features", "labels"):
        train, analysis = (next(f for f in flag_fields(c) if f.name == key) for c in (TrainConfig, AnalysisConfig))
        assert train.default == analysis.default and train.metadata["help"] == analysis.metadata["help"]
    # declared once, in InputFiles, and inherited by both (neither class restates them)
    assert issubclass(TrainConfig, InputFiles) and issubclass(AnalysisConfig, InputFiles)
    inputs = {f.name for f in dataclasses.fields(InputFiles)}
    assert not inputs & (set(TrainConfig.__annotations__) | set(AnalysisConfig.__annotations__))


def test_analysis_split_default_is_auto_everywhere():
    parser = analyze_model_predictions.build_parser()
    assert AnalysisConfig().split == parser.parse_args([]).split == "auto"
    assert "auto" in C.ANALYSIS_SPLITS


def test_flat_dict_round_trip_and_the_old_flat_keys():
    cfg = TrainConfig.from_dict({"width": 16, "num_heads": 2, "fusion": "concat", "epochs": 3})
    assert cfg.model == ModelConfig(width=16, num_heads=2, fusion="concat") and cfg.epochs == 3
    flat = cfg.to_dict()
    assert "model" not in flat and flat["width"] == 16 and flat["fusion"] == "concat"
    assert TrainConfig.from_dict(flat) == cfg
    with pytest.raises(InputError, match="num_heads"):
        TrainConfig.from_dict({"width": 10, "num_heads": 4})
    with pytest.raises(TypeError, match="widht"):
        TrainConfig.from_dict({"widht": 16})


def test_checked_types_and_booleans_reach_the_parser():
    parser = train_personality_model.build_parser()
    assert parser.parse_args(["--no-jit_compile"]).jit_compile is False
    assert parser.parse_args(["--resume"]).resume is True
    assert parser.parse_args(["--dropout", "0.3"]).dropout == 0.3
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--num_heads", "0"])
    assert exc.value.code == 2
