"""SLURM: refuse a SLURM sweep where no SLURM is.

``hydra/launcher=slurm`` hands each job to submitit, which writes an sbatch script, submits
it and runs the job with ``srun``. Off a cluster submitit fails only when the first job is
submitted, with a long traceback ending in ``RuntimeError: Could not detect "srun"``;
:func:`check_slurm_reachable` says the same in one paragraph before anything starts.
"""

from __future__ import annotations

import shutil

from omegaconf import DictConfig


def check_slurm_reachable(config: DictConfig) -> None:
    """Stop a multirun on the SLURM launcher at once where ``sbatch`` is not on the PATH."""
    target = config.hydra.launcher.get("_target_") or ""
    if not target.endswith(".SlurmLauncher") or shutil.which("sbatch"):
        return
    raise SystemExit(
        "error: hydra/launcher=slurm submits every job of the sweep to a SLURM cluster, but no "
        "SLURM is reachable from this machine (the sbatch command is not on the PATH), so "
        "nothing was submitted. Run the sweep on a machine of the cluster (its login node), or "
        "start a one-node test cluster here with `sudo bash scripts/slurm_local.sh start`, or "
        "run the same jobs on this machine with hydra/launcher=submitit_local (or joblib)."
    )
