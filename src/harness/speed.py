"""Costs removed without changing what runs: two that Lightning adds to every training
step, and CPU threads that outnumber the cores a run was given.

The per-step costs matter most for the small models this template is often used with,
where one optimizer step takes a few hundred microseconds and Lightning's own
bookkeeping can take as long again.
"""

from __future__ import annotations

import contextlib
import ctypes
import os

import joblib
import torch
from lightning.pytorch.profilers import PassThroughProfiler

from src.harness.errors import ConfigError

NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"
NO_CONTEXT = contextlib.nullcontext()


class NoProfiler(PassThroughProfiler):
    """Lightning's "no profiler", with a cheaper no-op.

    Lightning wraps every hook call in ``profiler.profile(name)`` even when profiling is
    off: with the default callbacks that is about a hundred generator-based context
    managers per training step (about 2 us each on a small CPU). One shared null context
    does the same nothing for a sixth of that. ``trainer.profiler=simple`` (or any
    Lightning profiler) still replaces it.
    """

    def profile(self, action_name: str) -> contextlib.nullcontext:
        return NO_CONTEXT


def skip_failing_nvml_probe() -> None:
    """Stop torch from retrying to load the NVIDIA driver library on every optimizer step.

    Importing Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` so that asking whether a
    GPU exists does not initialise CUDA before a fork. torch's Adam and AdamW ask on every
    step; without an NVIDIA driver the NVML library cannot load, torch falls back to the
    ordinary CUDA check anyway, and the failed library load is repeated on every step
    (tens of microseconds each). Without a driver there is no CUDA state a fork could
    break, so the variable is dropped; with one, nothing changes.
    """
    if os.environ.get(NVML_CHECK) != "1":
        return
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        del os.environ[NVML_CHECK]


def set_threads(num_threads: int | None) -> None:
    """Give torch ``num_threads`` CPU threads, or by default the cores this run was given.

    torch counts the cores the process may run on, not a container's CPU limit: in a
    container allowed 2 of 64 cores its 64 threads take turns on 2. ``joblib.cpu_count``
    counts both. ``OMP_NUM_THREADS``, which torch reads itself, is left to stand: the
    user's setting, or the share of the cores that joblib gives each job of a parallel
    sweep (``hydra/launcher=joblib``: cores / ``n_jobs``). ``run_info.json`` records the
    number.
    """
    if num_threads is None:
        if os.environ.get("OMP_NUM_THREADS"):
            return
        num_threads = joblib.cpu_count()
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ConfigError(
            f"num_threads={num_threads!r}: give a number of CPU threads (1 or more), or null "
            "for the cores this run was given."
        )
    torch.set_num_threads(num_threads)
