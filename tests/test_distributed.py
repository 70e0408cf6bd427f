"""Scale-out on Lightning's and Hydra's engines: DDP on CPU processes, parallel sweeps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
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
