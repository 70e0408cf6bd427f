"""SLURM: refuse a SLURM sweep where no SLURM is, and let exactly one mechanism requeue a job.

``hydra/launcher=slurm`` hands each job to submitit, which writes an sbatch script, submits
it and runs the job with ``srun``. Off a cluster submitit fails only when the first job is
submitted, with a long traceback ending in ``RuntimeError: Could not detect "srun"``;
:func:`check_slurm_reachable` says the same in one paragraph before anything starts.

Requeue: submitit is in charge of every job it started. SLURM signals the job
(``--signal=USR2@signal_delay_s``) ahead of its time limit or a preemption; submitit's
handler requeues it with ``scontrol requeue`` and the job runs again in its own folder,
resuming from the ``last.ckpt`` its earlier attempt left there (``earlier_attempt_checkpoint``).
Lightning would arm its own requeue as well (``SLURMEnvironment(auto_requeue=True)``:
SIGUSR1 saves ``hpc_ckpt_N.ckpt`` and requeues); :func:`requeue_plugins` turns that off
inside submitit's jobs, so no job is requeued twice or resumed from two checkpoints.
"""

from __future__ import annotations

import os
import shutil

from lightning.fabric.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf

from src.harness.problems import stop_with_error


def check_slurm_reachable(config: DictConfig) -> None:
    """Stop a multirun on the SLURM launcher at once where ``sbatch`` is not on the PATH."""
    target = OmegaConf.select(config, "hydra.launcher._target_", default="")
    if target.endswith(".SlurmLauncher") and not shutil.which("sbatch"):
        stop_with_error(
            "hydra/launcher=slurm submits every job of the sweep to a SLURM cluster, but no "
            "SLURM is reachable from this machine (the sbatch command is not on the PATH), so "
            "nothing was submitted. Run the sweep on a machine of the cluster (its login node), "
            "or start a one-node test cluster here with `sudo bash scripts/slurm_local.sh start`, "
            "or run the same jobs on this machine with hydra/launcher=submitit_local (or joblib)."
        )


def requeue_plugins() -> list[SLURMEnvironment]:
    """The Trainer's SLURM environment inside a submitit job: Lightning's auto-requeue off."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return []  # a hand-written sbatch script: Lightning detects SLURM and requeues itself
    return [SLURMEnvironment(auto_requeue=False)]
