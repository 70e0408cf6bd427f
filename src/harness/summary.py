"""Summarise a sweep folder: one row per job (``src/harness/sweep_jobs.py``), ranked by
the optimized metric.

Writes ``summary.csv``, ``summary.md`` and ``summary.png`` into the sweep folder. A sweep over
``data.fold`` also gets the mean and standard deviation of each setting's metrics across
its folds (cross-validation).
"""

from __future__ import annotations

import csv
import re
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from src.harness.sweep_jobs import Job, job_folders, override_keys, read_jobs

FOLD_KEY = "data.fold"
# Metric names that grow with quality; any other metric (loss, error) is minimized.
MAXIMIZED = re.compile(r"acc|r2|f1|auroc|auc|precision|recall|iou", re.IGNORECASE)


@dataclass
class Summary:
    jobs: list[Job]  # best first
    markdown: str


def objective(job_dir: Path) -> tuple[str, str]:
    """The optimized metric and its direction, as Hydra composed them for a job.

    Read from ``.hydra/``, which Hydra writes before the job starts, so a sweep whose jobs
    all failed early still has one. The direction comes from the Optuna sweeper if there
    was one, else from the data config when the metric is the one it monitors, else from
    the metric's name. The best checkpoint's score (``val/acc_best``) goes the way of the
    metric it is the best of.
    """
    config = OmegaConf.load(job_dir / ".hydra" / "config.yaml")
    metric = OmegaConf.select(config, "optimized_metric") or config.data.monitor
    hydra = yaml.safe_load((job_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]
    direction = str(hydra.get("sweeper", {}).get("direction", ""))
    if direction in ("maximize", "minimize"):
        return metric, direction[:3]
    if metric in (monitor := config.data.get("monitor"), f"{monitor}_best"):
        return metric, config.data.get("monitor_mode", "min")
    return metric, "max" if MAXIMIZED.search(metric) else "min"


def ranked(jobs: list[Job], metric: str, mode: str) -> list[Job]:
    """Finished jobs best first, then jobs without the metric, failed and missing ones."""
    sign = -1.0 if mode == "max" else 1.0

    def key(job: Job) -> tuple[int, float]:
        value = job.metrics.get(metric, float("nan"))
        order = ("ok", "pruned", "failed", "missing").index(job.status)
        return (order, sign * value) if value == value else (order, float("inf"))

    return sorted(jobs, key=key)


def job_table(jobs: list[Job], metric: str, keys: list[str]) -> tuple[list[str], list[list[Any]]]:
    other_metrics = sorted({key for job in jobs for key in job.metrics} - {metric, "wall_time_s"})
    metric_keys = [metric, *other_metrics, "wall_time_s"]
    header = ["job", "status", *keys, *metric_keys, "error"]
    rows = [
        [
            job.name,
            job.status,
            *(job.overrides.get(key, "") for key in keys),
            *(job.metrics.get(key, "") for key in metric_keys),
            job.error,
        ]
        for job in jobs
    ]
    return header, rows


def cross_validation(jobs: list[Job], metric: str) -> tuple[list[str], list[list[Any]]] | None:
    """Mean +- std over the folds of each setting (all other overrides equal)."""
    if not any(FOLD_KEY in job.overrides for job in jobs):
        return None
    swept = [key for key in override_keys(jobs)[0] if key != FOLD_KEY]
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        setting = " ".join(f"{key}={job.overrides.get(key, '')}" for key in swept) or "all"
        groups.setdefault(setting, []).append(job)
    test_metrics = sorted({key for job in jobs for key in job.metrics if key.startswith("test/")})
    metric_keys = list(dict.fromkeys([metric, *test_metrics]))
    header = ["setting", "folds ok", *(f"{key} mean ± std" for key in metric_keys)]
    rows = []
    for setting, members in groups.items():
        folds = [job.metrics for job in members if job.status == "ok"]  # the finished ones
        cells = [mean_std([fold[key] for fold in folds if key in fold]) for key in metric_keys]
        rows.append([setting, f"{len(folds)}/{len(members)}", *cells])
    return header, rows


def mean_std(values: list[float]) -> str:
    if not values:
        return ""
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4g} ± {spread:.2g}"


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, str) and re.fullmatch(r"-?\d*\.\d{5,}(e-?\d+)?", value):
            value = float(value)  # a sampled value such as optimizer.lr=0.0007695588054416491
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        return text.replace("|", "\\|")

    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cell(value) for value in line) + " |" for line in lines)


def plot(jobs: list[Job], metric: str, path: Path) -> bool:
    """The optimized metric against each parameter that varies; False if none varies."""
    finished = [job for job in jobs if metric in job.metrics]
    swept = override_keys(jobs)[0]
    if not swept or not finished:
        return False
    from matplotlib.figure import Figure  # imported here: it is slow and only needed here

    figure = Figure(figsize=(3.6 * len(swept), 3.2), layout="constrained")
    axes = figure.subplots(1, len(swept), sharey=True, squeeze=False)[0]
    scores = [job.metrics[metric] for job in finished]
    for axis, key in zip(axes, swept, strict=True):
        values = [job.overrides.get(key, "") for job in finished]
        try:
            numbers = [float(value) for value in values]
        except ValueError:  # categories, such as model.net.activation
            categories = sorted(set(values))
            axis.scatter([categories.index(value) for value in values], scores)
            axis.set_xticks(range(len(categories)), categories, rotation=30, ha="right")
        else:
            axis.scatter(numbers, scores)
            if min(numbers) > 0 and max(numbers) >= 10 * min(numbers):  # lr, weight decay
                axis.set_xscale("log")
        axis.set_xlabel(key)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel(metric)
    figure.savefig(path, dpi=100)
    return True


def summarize(sweep_dir: Path, metric: str | None = None, mode: str | None = None) -> Summary:
    """Write summary.csv, summary.md and summary.png into ``sweep_dir``; return the summary."""
    folders = job_folders(sweep_dir)
    jobs = read_jobs(sweep_dir, folders)
    found_metric, found_mode = objective(folders[0])
    metric, mode = metric or found_metric, mode or found_mode
    jobs = ranked(jobs, metric, mode)
    swept, common = override_keys(jobs)
    same = {key: value for job in jobs for key, value in job.overrides.items() if key in common}
    header, rows = job_table(jobs, metric, swept + common)
    with open(sweep_dir / "summary.csv", "w") as file:
        csv.writer(file, lineterminator="\n").writerows([header, *rows])
    counts = Counter(job.status for job in jobs)
    parts = [
        f"## Sweep {sweep_dir}",
        f"{len(jobs)} jobs: {counts['ok']} ok, {counts['pruned']} pruned, "
        f"{counts['failed']} failed, {counts['missing']} missing. "
        f"Ranked by {metric} ({'higher' if mode == 'max' else 'lower'} is better). "
        "Same in every job: "
        + (" ".join(f"`{key}={value}`" for key, value in same.items()) or "nothing"),
        markdown_table(*job_table(jobs, metric, swept)),
    ]
    folds = cross_validation(jobs, metric)
    if folds is not None:
        parts += ["### Cross-validation over data.fold", markdown_table(*folds)]
    if plot(jobs, metric, sweep_dir / "summary.png"):
        parts.append(f"![{metric} against each swept parameter](summary.png)")
    markdown = "\n\n".join(parts) + "\n"
    (sweep_dir / "summary.md").write_text(markdown)
    return Summary(jobs, markdown)
