"""The jobs of a sweep folder, read only from what Hydra and the jobs wrote
(``multirun.yaml``, ``.hydra/``, ``metrics.json``, ``error.txt``, ``pruned.txt``), so any
finished, failed or half-run sweep of any launcher or sweeper can be read, the jobs a killed
sweep never started included.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from src.harness.compat import sweep_jobs, sweep_parser

# a failed job's one-line error, then its traceback (src/harness/sweeps.py)
ERROR_FILE = "error.txt"
PRUNED_FILE = "pruned.txt"  # why a search stopped the job early, likewise


@dataclass
class Job:
    name: str
    # ok (metrics.json), failed (error.txt), pruned (pruned.txt: a search stopped it early)
    # or missing (none of them: killed, or not run yet)
    status: str
    overrides: dict[str, str]
    metrics: dict[str, float] = field(default_factory=dict)
    error: str = ""  # or, for an ok job, why some metrics are missing (reporting.fit_metrics)


def job_folders(sweep_dir: Path) -> list[Path]:
    """The folders of the jobs that started (Hydra wrote their ``.hydra/``), by number."""
    folders = [path.parent.parent for path in sweep_dir.glob("*/.hydra/overrides.yaml")]
    if not folders:
        raise FileNotFoundError(f"{sweep_dir} holds no job folder (<n>/.hydra/overrides.yaml)")
    return sorted(folders, key=lambda folder: job_number(folder.name))


def job_number(name: str) -> tuple[int, str]:
    return (int(name), "") if name.isdigit() else (-1, name)


def read_jobs(sweep_dir: Path, folders: list[Path]) -> list[Job]:
    """The jobs in ``folders``, and the others that the sweep asked for, by number."""
    started = [read_job(folder) for folder in folders]
    jobs = {job.name: job for job in planned_jobs(sweep_dir) + started}
    return sorted(jobs.values(), key=lambda job: job_number(job.name))


def planned_jobs(sweep_dir: Path) -> list[Job]:
    """Every job that the basic sweeper asked for, by number, with its overrides (missing).

    It writes ``multirun.yaml`` before its first job; its jobs are the cartesian product
    of the sweep's overrides, expanded and numbered here by Hydra's own parser and sweeper
    (a ``glob(...)`` lists the config groups on the sweep's own search path). A search
    draws its trials as it goes: only those that started are known.
    """
    multirun = sweep_dir / "multirun.yaml"
    if not multirun.is_file():
        return []
    return jobs_of(yaml.safe_load(multirun.read_text())["hydra"])


def jobs_of(hydra: dict[str, Any]) -> list[Job]:
    """The jobs a basic sweep with these Hydra settings asks for (none for a search)."""
    if not hydra["sweeper"]["_target_"].endswith("BasicSweeper"):
        return []
    params = [f"{key}={value}" for key, value in (hydra["sweeper"].get("params") or {}).items()]
    parser = sweep_parser(hydra["runtime"]["config_sources"])
    jobs = sweep_jobs(parser.parse_overrides([*params, *hydra["overrides"]["task"]]))
    return [Job(str(number), "missing", as_dict(job)) for number, job in enumerate(jobs)]


def as_dict(overrides: list[str]) -> dict[str, str]:
    return dict(line.split("=", 1) for line in overrides if "=" in line)


def read_job(folder: Path) -> Job:
    overrides = as_dict(yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text()) or [])
    for status, file in (("failed", ERROR_FILE), ("pruned", PRUNED_FILE)):
        if (folder / file).is_file():
            first_line = (folder / file).read_text().partition("\n")[0]  # the reason
            return Job(folder.name, status, overrides, error=first_line)
    if not (folder / "metrics.json").is_file():
        return Job(folder.name, "missing", overrides)
    raw = json.loads((folder / "metrics.json").read_text())
    metrics = {  # one learning rate column, whatever the optimizer (lr-Adam, lr-SGD, ...)
        re.sub(r"lr-[^/]+$", "lr", key): float(value)
        for key, value in raw.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    return Job(folder.name, "ok", overrides, metrics, error=raw.get("note", ""))


def override_keys(jobs: list[Job]) -> tuple[list[str], list[str]]:
    """The overridden keys whose value differs between jobs (swept), and the others."""
    known = [job for job in jobs if job.overrides]
    keys = list(dict.fromkeys(key for job in known for key in job.overrides))
    swept = [key for key in keys if len({job.overrides.get(key) for job in known}) > 1]
    return swept, [key for key in keys if key not in swept]
