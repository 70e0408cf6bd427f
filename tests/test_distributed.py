"""Scale-out on Lightning's and Hydra's engines: DDP on CPU processes, parallel sweeps."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

from src.models.module import SupervisedModule
from src.train import train
from tests.conftest import QUIET, ROOT


@pytest.mark.slow
def test_ddp_sim_syncs_metrics_and_writes_one_run_folder(make_cfg, tmp_path):
    # test=false: one spawn of the two processes (each spawn re-imports torch and Lightning).
    cfg = make_cfg("trainer=ddp_sim", "data.num_samples=2000", "trainer.max_epochs=1", "test=false")
    metrics = train(cfg)
    run = Path(cfg.paths.output_dir)
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoints",
        "config.yaml",
        "metrics.json",
        "run_info.json",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    assert json.loads((run / "metrics.json").read_text())["val/acc"] == metrics["val/acc"]
    # The same weights validated by one process: the 2-process metrics were synced across
    # ranks, not rank 0's half of the validation set.
    model = SupervisedModule.load_from_checkpoint(run / "checkpoints" / "last.ckpt")
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    (single,) = trainer.validate(model, datamodule=instantiate(cfg.data), verbose=False)
    assert single["val/acc"] == pytest.approx(metrics["val/acc"], abs=1e-6)
    assert single["val/loss"] == pytest.approx(metrics["val/loss"], rel=1e-5)


@pytest.mark.slow
def test_twelve_job_parallel_sweep_keeps_every_job_in_its_own_folder(tmp_path):
    seeds = list(range(1, 13))
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "src" / "train.py"),
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            f"seed={','.join(map(str, seeds))}",
            *QUIET,
            "data.num_samples=500",
            "trainer.max_epochs=1",
            f"paths.log_dir={tmp_path}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    jobs = sorted((p for p in sweep.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    assert [job.name for job in jobs] == [str(i) for i in range(12)]
    seen = []
    for job in jobs:
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["best_model_path"] == str(job / "checkpoints" / "best.ckpt")
        assert sorted(p.name for p in (job / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
        overrides = (job / ".hydra" / "overrides.yaml").read_text()
        (seed,) = [s for s in seeds if f"seed={s}\n" in overrides]
        assert f"seed: {seed}\n" in (job / "config.yaml").read_text()
        seen.append(seed)
    assert sorted(seen) == seeds


def descendants(pid: int) -> list[int]:
    """Process ids below ``pid``, read from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the job's process through /proc")
def test_preempted_submitit_job_is_requeued_and_resumes_from_its_last_checkpoint(tmp_path):
    command = [
        sys.executable,
        str(ROOT / "src" / "train.py"),
        "-m",
        "hydra/launcher=submitit_local",
        *QUIET,
        "data.num_samples=3000",
        "data.batch_size=16",
        "trainer.max_epochs=2",
        f"paths.log_dir={tmp_path}",
    ]
    with open(tmp_path / "output", "w") as output:
        sweep = subprocess.Popen(command, cwd=tmp_path, stdout=output, stderr=output)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("train/multiruns/*/0/checkpoints/last.ckpt")):
            assert sweep.poll() is None, (tmp_path / "output").read_text()[-3000:]
            assert time.monotonic() < deadline, "the job finished no epoch within 120 s"
            time.sleep(0.1)
        # What SLURM sends before a preemption or the time limit; submitit requeues the job.
        (task,) = [
            pid
            for pid in descendants(sweep.pid)
            if b"submitit.core._submit" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        os.kill(task, signal.SIGUSR2)
        sweep.wait(timeout=180)
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait()
    assert sweep.returncode == 0, (tmp_path / "output").read_text()[-3000:]
    (job,) = tmp_path.glob("train/multiruns/*/0")
    log = (job / "train.log").read_text()
    assert "left by an earlier attempt of this job" in log
    # Held to the end of the batch it came in, saved there; the requeued job went on from it.
    assert re.search(r"SIGUSR2: training stopped after batch \d+ of epoch \d+ \(step \d+\)", log)
    assert torch.load(job / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
    assert "test/acc" in json.loads((job / "metrics.json").read_text())
