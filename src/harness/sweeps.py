"""Jobs of a multirun: each may fail without ending the sweep, and a re-run resumes the sweep.

Hydra's launchers run ``main`` once per job. ``sweep_job`` wraps that call so that

* a job that already finished in an earlier run into the same sweep folder (same
  overrides, a ``metrics.json``) is not trained again: a sweep killed halfway resumes;
  a finished job with other overrides is moved aside whole first (``SweepCallback``);
* a job that fails writes its error and traceback to ``error.txt`` in its folder and
  returns None; the other jobs still run, and a sweep exits non-zero at the end, after
  its summary is written (``SweepCallback``); a search marks the trial failed and goes on;
* in a search with a pruner, the job reports its validation metric to its trial each
  epoch; a job that the pruner stops writes why to ``pruned.txt``;
* an ``optimized_metric`` that a job never logged ends the sweep at once: every other job
  would fail the same way, and a search over it would optimize nothing;
* a job in a worker process (joblib's loky workers) ends when the sweep's main process
  dies, even by ``kill -9``: neither joblib, loky nor the Hydra launcher watches for that,
  and a worker would otherwise train on for nobody, then idle for loky's 300 s timeout.

Works the same under the basic, joblib and submitit launchers and the Optuna sweeper,
because it runs inside each job.
"""

from __future__ import annotations

import json
import logging
import os
import re
import traceback
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from src.harness.atomic_files import write_atomic
from src.harness.cluster import check_slurm_reachable
from src.harness.failures import failure
from src.harness.overrides import job_overrides
from src.harness.paths import move_aside
from src.harness.problems import stop_with_error
from src.harness.summary import summarize
from src.harness.sweep_jobs import (
    ERROR_FILE,
    PRUNED_FILE,
    as_dict,
    jobs_of,
    override_keys,
    planned_jobs,
    read_job,
)
from src.harness.sweep_stops import end_with_the_sweep, stop_resumably

if TYPE_CHECKING:
    import lightning as L

log = logging.getLogger(__name__)

# Set in each job of an Optuna search to its trial's id (src/harness/search.py)
TRIAL_ENV = "OPTUNA_TRIAL_ID"


def sweep_job(task: Callable[[DictConfig], dict[str, Any]], cfg: DictConfig) -> float | None:
    """Run (or skip) one job of a sweep; return its optimized metric, None if it failed."""
    end_with_the_sweep()
    output_dir = Path(cfg.paths.output_dir)
    metrics = finished_metrics(output_dir)
    if metrics is not None:
        log.info("Skipped: this job already finished in this sweep folder (%s).", output_dir)
    else:
        # Whatever an earlier attempt left must not pass for this attempt's outcome.
        (output_dir / ERROR_FILE).unlink(missing_ok=True)
        (output_dir / "metrics.json").unlink(missing_ok=True)
        try:
            metrics = task(cfg)
        except Exception as error:
            if pruned(error):
                write_atomic(output_dir / PRUNED_FILE, f"{error}\n")
                return None
            message = failure(error, cfg)  # the traceback: to the job's log file and error.txt
            if TRIAL_ENV not in os.environ:  # a search reports its trials itself
                log.error("Job %s failed, the sweep goes on: %s", output_dir.name, message)
            # first the message on one line (what summaries and the search show), then the traceback
            trace = "".join(traceback.format_exception(error))
            write_atomic(output_dir / ERROR_FILE, f"{' '.join(message.split())}\n\n{trace}")
            return None
    name = cfg.get("optimized_metric")
    if name is None:
        return None
    if name in metrics:
        return float(metrics[name])
    never_validated = name.endswith("_best") and "best_epoch" not in metrics
    if never_validated and TRIAL_ENV not in os.environ:
        # a sweep of runs without validation, say: the summary lists the job unranked
        log.warning("Job %s never validated, so it has no %s.", output_dir.name, name)
        return None
    logged = sorted(key for key in metrics if "/" in key)  # train/loss, val/acc, ...
    fix = "Set optimized_metric to one of them"
    if never_validated:
        fix = (
            f"{name} is the job's best validation score, and the job never validated "
            "(trainer.limit_val_batches=0, or trainer.check_val_every_n_epoch above "
            "trainer.max_epochs). Validate at least once, or set optimized_metric to one "
            "of them"
        )
    message = (
        f"optimized_metric={name!r} was never logged by the job in {output_dir}, so the "
        f"sweep cannot rank its jobs and stops here. The job logged: {', '.join(logged)}. "
        f"{fix} (for a search, with the matching direction)."
    )
    log.error(message)
    stop_with_error(message)


def finished_metrics(output_dir: Path) -> dict[str, Any] | None:
    """The metrics of an earlier, finished run of this same job in this folder, if any.

    ``run_info.json`` is compared rather than Hydra's ``.hydra/overrides.yaml``, which Hydra
    rewrites for the new job before the job starts.
    """
    metrics_file, info_file = output_dir / "metrics.json", output_dir / "run_info.json"
    if not (metrics_file.is_file() and info_file.is_file()):
        return None
    earlier = json.loads(info_file.read_text()).get("overrides")
    if earlier != job_overrides():
        log.warning(
            "%s holds a finished job with other overrides (%s); it is run again over it.",
            output_dir,
            " ".join(earlier or []),
        )
        return None
    return json.loads(metrics_file.read_text())


def pruning_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """In a job of a search with a pruner: Optuna's callback that reports ``data.monitor`` to the
    job's trial after each validation and stops the job when the pruner says so."""
    sweeper = HydraConfig.get().sweeper if HydraConfig.initialized() else {}
    if TRIAL_ENV not in os.environ or not sweeper.get("pruner"):
        return []
    import optuna  # only here: a search's dependency, slow to import
    from hydra.utils import instantiate
    from optuna_integration import PyTorchLightningPruningCallback

    study = optuna.load_study(
        study_name=sweeper.study_name, storage=sweeper.storage, pruner=instantiate(sweeper.pruner)
    )
    trial = optuna.Trial(study, int(os.environ[TRIAL_ENV]))
    return [PyTorchLightningPruningCallback(trial, cfg.data.monitor)]


def pruned(error: Exception) -> bool:
    if TRIAL_ENV not in os.environ:
        return False
    import optuna

    return isinstance(error, optuna.TrialPruned)


class SweepCallback(Callback):
    """Before a multirun, refuse a SLURM sweep where no SLURM is reachable; at its end, write
    and print the summary, and exit 1 if a job of a sweep failed, or if no trial of a search
    finished (its failed and pruned trials are outcomes, reported in the summary)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_slurm_reachable(config)  # before the launcher submits anything
        keep_earlier_jobs(config)
        stop_resumably(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not any(sweep_dir.glob("*/.hydra")):  # a stored search that had all its trials
            return
        summary = summarize(sweep_dir)
        print(summary.markdown)
        not_ok = [job.name for job in summary.jobs if job.status != "ok"]
        search = not config.hydra.sweeper._target_.endswith("BasicSweeper")
        if not_ok and not (search and len(not_ok) < len(summary.jobs)):
            stop_with_error(
                f"{len(not_ok)} of {len(summary.jobs)} jobs did not finish "
                f"(jobs {', '.join(not_ok)}); their folders in {sweep_dir} hold error.txt, "
                f"and {sweep_dir / 'summary.md'} lists every job."
            )


def keep_earlier_jobs(config: DictConfig) -> None:
    """Move aside, whole, each finished job of an earlier sweep into this folder whose
    overrides differ from those of this sweep's job of the same number (``0`` becomes
    ``0-earlier-1``): Hydra would write the new job's ``.hydra/`` over it, and the new job
    its results. The summary lists both. A job with the same overrides is skipped
    (``finished_metrics``); an unfinished one is run again."""
    sweep_dir = Path(config.hydra.sweep.dir)
    for job in jobs_of(OmegaConf.to_container(config.hydra)):  # type: ignore[arg-type]
        folder = sweep_dir / job.name
        if not (folder / "metrics.json").is_file() or read_job(folder).overrides == job.overrides:
            continue
        aside = move_aside(folder)
        log.warning(
            "%s held a finished job with other overrides: moved to %s, kept whole.", folder, aside
        )


def swept_overrides() -> str:
    """In a sweep's job, its overrides that differ between the jobs, as `` lr=0.01 activation=tanh``
    (each key's last part): what the run name adds. Empty outside a sweep.

    The jobs are those the sweep planned (the basic sweeper's ``multirun.yaml``, read as the
    sweep summary reads it); a search varies the keys it draws.
    """
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return ""
    hydra = HydraConfig.get()
    sweep_dir = Path(hydra.sweep.dir)
    if TRIAL_ENV in os.environ:  # a search: the keys it draws, from its params and command line
        raw = OmegaConf.load(sweep_dir / "multirun.yaml").hydra.overrides.task
        lines = search_overrides(hydra.sweeper.params, raw, OverridesParser.create())
        varied = {line.get_key_element() for line in lines if line.is_sweep_override()}
    else:
        varied = override_keys(planned_jobs(sweep_dir))[0]
    own = as_dict(list(hydra.overrides.task)).items()
    return "".join(
        f" {key.rsplit('.', 1)[-1]}={brief(value)}" for key, value in own if key in varied
    )


def search_overrides(
    params: Mapping[str, Any] | None, arguments: Iterable[str], parser: OverridesParser
) -> list[Override]:
    """A search's overrides: its ``params``, then the command line's, whose entry for a key
    replaces the params' entry for it."""
    lines = [f"{key}={value}" for key, value in (params or {}).items()] + list(arguments)
    return list({line.get_key_element(): line for line in parser.parse_overrides(lines)}.values())


def brief(value: str) -> str:
    """A search's drawn number to 4 digits (``0.0007696``), a path by its last part (the run
    name becomes a folder name, ``names.py``), anything else as typed."""
    if "/" in value or "\\" in value:
        return re.split(r"[/\\]", value.rstrip("/\\"))[-1]
    try:
        return f"{float(value):.4g}" if len(value) > 8 else value
    except ValueError:
        return value
