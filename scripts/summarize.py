"""Summarise a sweep: ``python scripts/summarize.py logs/train/multiruns/<timestamp>``.

Writes summary.csv, summary.md (with mean +- std across folds for a ``data.fold`` sweep)
and summary.png (the optimized metric against each swept parameter) into the sweep
folder and prints the table. A multirun does this by itself when it ends; run it by hand
on a sweep that was killed, is still running, or to rank by another metric.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from src.harness.summary import summarize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun folder holding job folders")
    parser.add_argument("--metric", help="rank by this metric instead of optimized_metric")
    parser.add_argument("--mode", choices=("min", "max"), help="whether lower or higher wins")
    args = parser.parse_args()
    if not args.sweep_dir.is_dir():
        parser.error(f"{args.sweep_dir} is not a folder")
    try:
        summary = summarize(args.sweep_dir, args.metric, args.mode)
    except FileNotFoundError as error:
        parser.error(str(error))
    print(summary.markdown)


if __name__ == "__main__":
    main()
