"""Each trial of a search draws with its own seed: ``seed`` mixed with the trial's number.

A sampler seeded once with ``${seed}`` draws the same sequence in every process, so two
workers on one study, or a search run again after a stop, spend trials on parameters the
study already holds. Optuna numbers a study's trials uniquely across its workers (the
storage hands the numbers out), so a seed per trial number gives every worker and every
resumed run draws of their own, and one uninterrupted search from one seed stays
reproducible. The sampler still sees the study's history: TPE, CMA-ES and GP model every
finished trial, whichever worker ran it. Composed as Optuna's own ``PartialFixedSampler``
composes its base sampler. Not for the grid sampler, which shuffles its points once by its
seed, the same in every process as Optuna asks, and takes the next one not yet done.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from optuna import Study
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState


class TrialSeeded(BaseSampler):
    """The sampler ``make(seed)`` builds, built again for each trial with that trial's seed."""

    def __init__(self, make: Callable[[int | None], BaseSampler], seed: int | None) -> None:
        self.make, self.seed = make, seed
        self.sampler = make(seed)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        if self.seed is not None:  # without a seed, every draw is random already
            self.sampler = self.make(trial_seed(self.seed, trial.number))
        self.sampler.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self.sampler.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self.sampler.sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self.sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self, study: Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self.sampler.after_trial(study, trial, state, values)


def trial_seed(seed: int, number: int) -> int:
    """Independent streams for neighbouring numbers (numpy's ``SeedSequence``), not ``seed + n``."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])
