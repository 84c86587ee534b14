#!/usr/bin/env python
"""Write the per-person-effects data set: only identity predicts the labels (a leakage test bed).

Every clip belongs to a person; the clips of one person share an appearance
fingerprint (static features) and a label offset drawn independently of it;
the dynamic features are noise. A random clip split lets a model look people
up by fingerprint (high R²); a group split shows R² of about zero. Writes
static_features.npy, dynamic_features.npy, labels.npy and ids.txt
(``person<k>.<nnn>.mp4``, so ``--ids`` gives the groups). See
utils/synthetic_groups.py and docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.cli import Parser, non_negative_int, positive_int, run_script  # noqa: E402
from utils.synthetic_groups import PersonEffectsSpec  # noqa: E402

PROG = "generate_person_effects_data.py"


def build_parser() -> Parser:
    defaults = PersonEffectsSpec()
    p = Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--output", default="data_person_effects", help="folder for the four files")
    p.add_argument("--n_people", type=positive_int, default=defaults.n_people, help="number of people (groups)")
    p.add_argument("--clips_per_person", type=positive_int, default=defaults.clips_per_person, help="clips of each person")
    p.add_argument("--seed", type=non_negative_int, default=defaults.seed, help="generator seed")
    return p


def run(args: argparse.Namespace) -> int:
    from utils.synthetic_groups import write_person_effects

    spec = PersonEffectsSpec(n_people=args.n_people, clips_per_person=args.clips_per_person, seed=args.seed)
    paths = write_person_effects(args.output, spec)
    print(f"Wrote {spec.n_people * spec.clips_per_person} clips of {spec.n_people} people:")
    for path in paths.values():
        print(f"  {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_script(build_parser(), argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
