"""On a real SLURM scheduler: a sweep, DDP in two srun tasks, a job requeued and resumed.

The slow tests need ``sbatch`` and a live cluster (CI starts a one-node one with
``scripts/slurm_local.sh start``); elsewhere they skip and say why. Every job gets a name
unique to its test, and whatever a test leaves queued is cancelled by that name.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lightning.fabric.plugins.environments import SLURMEnvironment

from src.train import build_trainer
from tests.conftest import ROOT


def test_a_slurm_sweep_where_sbatch_is_missing_exits_1_with_one_paragraph(tmp_path):
    path = [d for d in os.environ["PATH"].split(os.pathsep) if not (Path(d) / "sbatch").exists()]
    result = subprocess.run(
        [sys.executable, "src/train.py", "-m", "hydra/launcher=slurm", "seed=1,2"],
        cwd=ROOT,
        env={**os.environ, "PATH": os.pathsep.join(path), "HYDRA_FULL_ERROR": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (message,) = result.stderr.strip().splitlines()
    assert message.startswith("error: hydra/launcher=slurm submits")
    assert "no SLURM is reachable" in message and "sbatch command is not on the PATH" in message
    assert "scripts/slurm_local.sh start" in message and "hydra/launcher=submitit_local" in message


def test_inside_a_submitit_job_lightning_leaves_the_requeue_to_submitit(make_cfg, monkeypatch):
    for name, value in {
        "SLURM_JOB_ID": "7",
        "SLURM_NTASKS": "1",
        "SLURM_JOB_NAME": "train",
    }.items():
        monkeypatch.setenv(name, value)
    lightning_alone = build_trainer(make_cfg())._accelerator_connector.cluster_environment
    assert isinstance(lightning_alone, SLURMEnvironment) and lightning_alone.auto_requeue

    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    environment = build_trainer(make_cfg())._accelerator_connector.cluster_environment
    assert isinstance(environment, SLURMEnvironment) and not environment.auto_requeue
