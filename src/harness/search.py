"""An Optuna search over Hydra's launchers, with Optuna's ask-and-tell API: ``hparams_search=NAME``.

Hydra's own ``hydra-optuna-sweeper`` pins Optuna below 3; this is the glue that current
Optuna needs. The sweeper Hydra finds (``hydra_plugins/optuna_search.py``) imports this
module only when a search runs: Optuna and its database cost every other run 0.14 s.
Search spaces keep that plugin's syntax (``choice``, ``interval``, ``range``,
``tag(log, ...)``), in ``hydra.sweeper.params`` or on the command line.

The study lives in an RDB (by default a SQLite file in the sweep folder), which gives

* resumption: trials that finished are kept, and the same command (with the same
  storage and study name) runs only the trials still missing; a trial that a Ctrl-C,
  SIGTERM or a lost machine stopped runs again (Optuna's heartbeat finds the lost ones);
* several workers: the same command on several machines with a shared database URL
  runs one study;
* pruning: each job reads its trial from the storage and reports its validation
  metric every epoch (``src/harness/sweeps.py``).

A failed, diverged or pruned trial is an outcome, logged in one line; the search goes on.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.errors import HydraException
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna import Study, Trial
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from sqlalchemy.exc import DBAPIError

from src.harness.compat import trial_id
from src.harness.failures import EXIT_CODES
from src.harness.problems import stop_with_error
from src.harness.sweep_jobs import read_job
from src.harness.sweep_stops import go_on_command
from src.harness.sweeps import TRIAL_ENV, search_overrides
from src.harness.trial_seeds import TrialSeeded

log = logging.getLogger(__name__)

SCALARS = (str, int, float, bool, type(None))


@dataclass
class Search:
    """The settings of ``hydra.sweeper``; ``setup`` and ``sweep`` as Hydra calls a sweeper's."""

    direction: str
    n_trials: int
    n_jobs: int
    storage: str  # the study's database URL
    study_name: str
    sampler: DictConfig
    pruner: DictConfig | None
    heartbeat_interval: int
    params: DictConfig | None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        quiet_optuna()

    def sweep(self, arguments: list[str]) -> None:
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        try:  # every setting checked before anything is written
            space, fixed = search_space(search_overrides(self.params, arguments, parser))
            sampler, pruner = self.algorithms(space)
        except (HydraException, ValueError, TypeError) as error:
            refuse(sweep_dir, f"the search's settings (hydra.sweeper): {error}")
        sweep_dir.mkdir(parents=True, exist_ok=True)
        try:
            study = self.open_study(sampler, pruner)
        except Exception as error:  # a URL that names no database, or one out of reach
            refuse(
                sweep_dir,
                f"cannot open the study {self.study_name!r} in "
                f"hydra.sweeper.storage={self.storage}: {type(error).__name__}: {error}",
            )
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        metric = self.config.get("optimized_metric")
        while (batch := self.next_batch(study, space)) != []:
            overrides = [fixed + trial_overrides(trial) for trial in batch]
            try:
                with heartbeat(self.database, batch, self.heartbeat_interval):
                    returns = self.launcher.launch(overrides, initial_job_idx=batch[0].number)
            except BaseException as stop:  # an interrupt, or an error that ends the search
                # Ctrl-C, or a job's exit code for Ctrl-C or SIGTERM
                interrupted = isinstance(stop, KeyboardInterrupt) or (
                    isinstance(stop, SystemExit) and stop.code in EXIT_CODES.values()
                )
                for trial in batch:
                    tell(study, trial, state=TrialState.FAIL, skip_if_finished=True)
                    if interrupted:  # queued again, to run first when the search goes on
                        RetryHeartbeatStaleTrialCallback()(study, study.trials[trial.number])
                if interrupted:
                    print(self.how_to_go_on(study, sweep_dir), file=sys.stderr)
                raise
            for trial, result in zip(batch, returns, strict=True):
                self.record(study, trial, result, metric)
        write_results(study, sweep_dir)

    def algorithms(self, space: dict[str, BaseDistribution]) -> tuple[BaseSampler, BasePruner]:
        """The sampler and pruner, and a direction that agrees with the data's monitor."""
        metric, data = self.config.optimized_metric, self.config.data
        mode = data.monitor_mode  # max or min
        if metric in (data.monitor, f"{data.monitor}_best") and self.direction[:3] != mode:
            better = "higher" if mode == "max" else "lower"
            raise ValueError(f"direction={self.direction}, but {metric} is better {better}")
        is_grid = str(self.sampler.get("_target_", "")).endswith("GridSampler")
        grid = grid_of(space) if is_grid else None
        pruner = instantiate(self.pruner) if self.pruner else optuna.pruners.NopPruner()
        if grid is not None:  # each point once
            self.n_trials = min(self.n_trials, math.prod(map(len, grid.values())))
            # its points in one order from its seed, in every worker: it skips those done
            return instantiate(self.sampler, search_space=grid), pruner
        settings = OmegaConf.to_container(self.sampler, resolve=True)
        seed = settings.pop("seed", None)  # type: ignore[union-attr]
        return TrialSeeded(lambda own: instantiate(settings, seed=own), seed), pruner

    def open_study(self, sampler: BaseSampler, pruner: BasePruner) -> Study:
        """Create the study, or load it with the trials that earlier runs of it finished."""
        self.database = self.open_storage()  # kept: the running trials' heartbeats go to it
        study = optuna.create_study(
            storage=self.database,
            study_name=self.study_name,
            sampler=sampler,
            pruner=pruner,
            direction=self.direction,
            load_if_exists=True,
        )
        optuna.storages.fail_stale_trials(study)  # trials of a run that died without a word
        if study.trials:
            kept = counted(study)
            log.info(
                "Study %s in %s: %d of %d trials already done, kept; %s.",
                self.study_name, self.storage, kept, self.n_trials,
                "going on" if kept < self.n_trials else "a larger hydra.sweeper.n_trials adds more",
            )  # fmt: skip
        return study

    def open_storage(self, attempts: int = 5) -> RDBStorage:
        """The study's database. Workers that start together on a new one race to create its
        tables and stamp its version: the losers try again, each after its own random pause
        (a common pause would race again), until the winner has committed."""
        for attempt in itertools.count(1):
            try:
                return RDBStorage(
                    self.storage,
                    heartbeat_interval=self.heartbeat_interval,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(),
                )
            except DBAPIError:
                if attempt == attempts:
                    raise
                time.sleep(0.5 + random.random())

    def how_to_go_on(self, study: Study, sweep_dir: Path) -> str:
        # in this sweep's folder if the study is stored there, else in a new one
        folder = sweep_dir if str(sweep_dir) in self.storage else None
        return (
            f"The search stopped; the trials it finished ({counted(study)}) are kept in "
            f"{self.storage}. Go on with:\n  "
            f"{go_on_command(self.config.hydra.overrides, folder)}"
        )

    def next_batch(self, study: Study, space: dict[str, BaseDistribution]) -> list[Trial]:
        """Up to ``n_jobs`` trials: those queued again first, then new ones, to ``n_trials``."""
        optuna.storages.fail_stale_trials(study)
        waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
        size = min(self.n_jobs, max(self.n_trials - counted(study), 0) + waiting)
        return [study.ask(space) for _ in range(size)]

    def record(self, study: Study, trial: Trial, result: Any, metric: str) -> None:
        """Record the job's outcome, read from what it wrote in its folder, in one line."""
        folder = Path(result.hydra_cfg.hydra.runtime.output_dir)
        job = read_job(folder)
        trial.set_user_attr("folder", str(folder))
        value = result.return_value if result.status == JobStatus.COMPLETED else None
        if job.status == "ok" and value is not None and math.isfinite(value):
            tell(study, trial, values=value)
            log.info("Trial %d: %s=%.6g (%s)", trial.number, metric, value, folder)
        elif job.status == "pruned":
            tell(study, trial, state=TrialState.PRUNED)
            log.info("Trial %d pruned: %s (%s)", trial.number, job.error, folder)
        else:
            reason = job.error or f"{metric} is {value}"
            trial.set_user_attr("failure", reason)
            tell(study, trial, state=TrialState.FAIL)
            log.warning("Trial %d failed: %s (%s)", trial.number, reason, folder)


def refuse(sweep_dir: Path, message: str) -> NoReturn:
    """Stop before any trial, leaving no sweep folder: the one made for this search
    (``CreateRunFolder``) is removed if nothing was written into it."""
    with suppress(OSError):  # not empty: an earlier sweep's folder, kept
        sweep_dir.rmdir()
    stop_with_error(message)


def quiet_optuna() -> None:
    """Optuna's messages through Hydra's logging: its own handler writes colour codes to files."""
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    # the heartbeat's functions are marked experimental since Optuna 2.9; nothing to act on
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # ask-and-tell beats for its trials itself (heartbeat below)
    warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used")


def search_space(overrides: list[Override]) -> tuple[dict[str, BaseDistribution], list[str]]:
    """The swept keys as Optuna distributions, and the other overrides as every job's own."""
    swept = [line for line in overrides if line.is_sweep_override()]
    space = {line.get_key_element(): distribution(line) for line in swept}
    return space, [line.input_line for line in overrides if not line.is_sweep_override()]


def distribution(override: Override) -> BaseDistribution:
    """``choice(a, b)``, ``range(1, 9, 2)``, ``interval(0.1, 1)``, and ``tag(log|int, ...)``."""
    value = override.value()
    tags = getattr(value, "tags", set())
    if isinstance(value, ChoiceSweep):
        # a list or dict choice (``choice([64],[128,64])``) is drawn as its override text
        return CategoricalDistribution(
            [x if isinstance(x, SCALARS) else Transformer.str(x) for x in value.list]
        )
    if isinstance(value, RangeSweep):
        choices = list(override.sweep_iterator())
        if all(isinstance(x, int) for x in choices):
            return IntDistribution(choices[0], choices[-1], step=int(value.step))
        return CategoricalDistribution(choices)
    if isinstance(value, IntervalSweep):
        if "int" in tags:
            return IntDistribution(int(value.start), int(value.end), log="log" in tags)
        return FloatDistribution(value.start, value.end, log="log" in tags)
    raise ValueError(f"{override.input_line}: not a search dimension")


def grid_of(space: dict[str, BaseDistribution]) -> dict[str, list[Any]]:
    """A grid sampler's search space: every dimension must be a list of choices."""
    if not all(isinstance(dist, CategoricalDistribution) for dist in space.values()):
        raise ValueError("hydra/sweeper/sampler=grid needs choice(...) for every parameter")
    return {name: list(dist.choices) for name, dist in space.items()}  # type: ignore[attr-defined]


def trial_overrides(trial: Trial) -> list[str]:
    # hydra.job.env_set tells the job which trial it is (src/harness/sweeps.py: pruning_callbacks)
    return [f"{key}={value}" for key, value in trial.params.items()] + [
        f"++hydra.job.env_set.{TRIAL_ENV}='{trial_id(trial)}'"
    ]


def tell(study: Study, trial: Trial, **outcome: Any) -> None:
    """``study.tell``, but the grid sampler's "every point done", a ``Study.stop()`` that only
    ``study.optimize`` may call, is left to ``n_trials`` (the outcome is stored either way)."""
    try:
        study.tell(trial, **outcome)
    except RuntimeError as error:
        if "Study.stop" not in str(error):
            raise


def counted(study: Study) -> int:
    """Trials that take a place in ``n_trials``: all but the waiting ones and the failures
    queued again (those stopped by an interrupt or lost with their machine)."""
    trials = study.get_trials(deepcopy=False)
    retried = {RetryHeartbeatStaleTrialCallback.retried_trial_number(trial) for trial in trials}
    return sum(
        trial.state != TrialState.WAITING and trial.number not in retried for trial in trials
    )


@contextmanager
def heartbeat(storage: RDBStorage, trials: list[Trial], interval: int) -> Iterator[None]:
    """Tell the storage every ``interval`` seconds that ``trials`` still run: a worker that
    stops beating (killed, its machine lost) has its trials failed and queued again."""
    done = threading.Event()

    def beat() -> None:
        while True:
            for trial in trials:
                storage.record_heartbeat(trial_id(trial))
            if done.wait(interval):
                return

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def write_results(study: Study, sweep_dir: Path) -> None:
    """optimization_results.yaml: the best trial, and how every trial of the study ended."""
    states = [trial.state.name.lower() for trial in study.get_trials(deepcopy=False)]
    counts = {state: states.count(state) for state in ("complete", "pruned", "fail")}
    results: dict[str, Any] = {"name": study.study_name, "trials": counts}
    if counts["complete"]:
        best = study.best_trial
        results |= {"best_trial": best.number, "best_value": best.value}
        results |= {"best_params": best.params, "best_folder": best.user_attrs.get("folder")}
        log.info("Best trial %d: %.6g with %s", best.number, best.value, best.params)
    OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
    print(
        f"Search {study.study_name}: {counts['complete']} complete, {counts['pruned']} pruned, "
        f"{counts['fail']} failed trials.",
        file=sys.stderr,
    )
