"""Paired comparison of one network variant across two capability-suite runs (A minus B), per set and N.

``python experiments/paired_rows.py RUN_A RUN_B [--variant pooled_query]``

RUN_A and RUN_B are suite output folders (``results.jsonl``) made with the same sets, sizes and
seeds but different model settings (e.g. ``--model pooled_width=0``). Each seed's data set and
test clips are the same in both runs, so the differences are paired by seed; prints the mean of
each run and the mean difference with its 95% t interval over seeds (``utils.capability.t_interval``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.capability import RESULTS_FILE, read_rows, t_interval  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--variant", default="pooled_query")
    args = parser.parse_args(argv)
    rows = {}
    for tag, folder in (("a", args.run_a), ("b", args.run_b)):
        for row in read_rows(folder / RESULTS_FILE):
            if row["variant"] == args.variant:
                rows[(tag, row["set"], int(row["n"]), int(row["seed"]))] = row["r2"]["mean"]
    cells = sorted({(s, n) for (_, s, n, _) in rows})
    print(f"{args.variant}: A = {args.run_a}, B = {args.run_b}; test R², mean [95% t interval] over paired seeds")
    print("| set | N | seeds | A | B | A − B |")
    print("|---|---|---|---|---|---|")
    for set_name, n in cells:
        seeds = sorted(seed for (tag, s, m, seed) in rows if tag == "a" and (s, m) == (set_name, n)
                       and ("b", s, m, seed) in rows)
        if not seeds:
            continue
        a = [rows[("a", set_name, n, seed)] for seed in seeds]
        b = [rows[("b", set_name, n, seed)] for seed in seeds]
        cell = [t_interval(x) for x in (a, b, [p - q for p, q in zip(a, b)])]
        text = [f"{m:.3f} [{lo:.3f}, {hi:.3f}]" for m, lo, hi in cell[:2]]
        m, lo, hi = cell[2]
        text.append(f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]")
        print(f"| {set_name} | {n:,} | {', '.join(map(str, seeds))} | " + " | ".join(text) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
