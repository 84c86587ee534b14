"""A data set where only identity predicts the labels: the leakage test bed.

Every clip belongs to a person. The clips of one person share an appearance
fingerprint (a random vector added to every static token) and a label offset
(a random draw of the five traits); the offset is drawn independently of the
fingerprint, and the dynamic features are pure noise. So nothing about a
clip predicts the label of a person never seen in training, while a model that
saw other clips of the same person can look the person up by fingerprint.

Under a random clip-level split a memorizing model (ridge on pooled features,
with more feature dimensions than people) therefore scores a high R²; under a
group split its R² is about zero. ``tests/test_cross_validate.py`` and
``docs/evaluation.md`` use it to show what a leaking split reports.

Clip ids follow the First Impressions pattern ``<person>.<nnn>.mp4`` so the
default ``--group_pattern`` finds the person.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from utils.constants import DYNAMIC_FEATURES_FILE, LABELS_FILE, NUM_TRAITS, STATIC_FEATURES_FILE
from utils.io import save_npy, write_text

IDS_FILE = "ids.txt"


@dataclasses.dataclass(frozen=True)
class PersonEffectsSpec:
    """Shape and strength of the per-person data set."""

    n_people: int = 100
    clips_per_person: int = 3
    static_tokens: int = 4
    static_dim: int = 128  # more dimensions than people: a linear model can memorize them
    dynamic_tokens: int = 4
    dynamic_dim: int = 16
    fingerprint_scale: float = 1.0  # std of the person's appearance vector
    clip_noise: float = 0.3  # std of the clip's own appearance variation
    offset_std: float = 0.12  # std of the person's label offset (First Impressions trait std ~0.15)
    label_noise: float = 0.02  # std of the clip's own label noise
    seed: int = 0


@dataclasses.dataclass
class PersonEffectsData:
    static: np.ndarray  # (N, static_tokens, static_dim) float32
    dynamic: np.ndarray  # (N, dynamic_tokens, dynamic_dim) float32
    labels: np.ndarray  # (N, 5) float32 in [0, 1]
    ids: np.ndarray  # (N,) "<person>.<nnn>.mp4"
    groups: np.ndarray  # (N,) the person


def generate_person_effects(spec: PersonEffectsSpec = PersonEffectsSpec()) -> PersonEffectsData:
    """Generate the data set; the rows of one person are spread over the file (shuffled)."""
    rng = np.random.default_rng(spec.seed)
    n = spec.n_people * spec.clips_per_person
    person = np.repeat(np.arange(spec.n_people), spec.clips_per_person)
    order = rng.permutation(n)  # interleave people, as real files are rarely sorted by person
    person = person[order]
    clip_no = np.concatenate([np.arange(spec.clips_per_person)] * spec.n_people)[order]

    fingerprint = rng.normal(0.0, spec.fingerprint_scale, size=(spec.n_people, spec.static_dim))
    static = fingerprint[person][:, None, :] + rng.normal(
        0.0, spec.clip_noise, size=(n, spec.static_tokens, spec.static_dim)
    )
    dynamic = rng.normal(0.0, 1.0, size=(n, spec.dynamic_tokens, spec.dynamic_dim))
    offset = rng.normal(0.0, spec.offset_std, size=(spec.n_people, NUM_TRAITS))  # independent of the fingerprint
    labels = np.clip(0.5 + offset[person] + rng.normal(0.0, spec.label_noise, size=(n, NUM_TRAITS)), 0.0, 1.0)
    names = np.array([f"person{p:03d}" for p in person])
    ids = np.array([f"{g}.{c:03d}.mp4" for g, c in zip(names, clip_no)])
    return PersonEffectsData(
        static=static.astype("float32"),
        dynamic=dynamic.astype("float32"),
        labels=labels.astype("float32"),
        ids=ids,
        groups=names,
    )


def write_person_effects(folder: str | Path, spec: PersonEffectsSpec = PersonEffectsSpec()) -> dict[str, Path]:
    """Write the three ``.npy`` files and ``ids.txt`` into ``folder``; returns their paths."""
    folder = Path(folder)
    data = generate_person_effects(spec)
    paths = {
        "static_features": folder / STATIC_FEATURES_FILE,
        "dynamic_features": folder / DYNAMIC_FEATURES_FILE,
        "labels": folder / LABELS_FILE,
        "ids": folder / IDS_FILE,
    }
    save_npy(paths["static_features"], data.static)
    save_npy(paths["dynamic_features"], data.dynamic)
    save_npy(paths["labels"], data.labels)
    write_text(paths["ids"], "\n".join(data.ids) + "\n")
    return paths
