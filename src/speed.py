"""Two costs Lightning adds to every training step, removed without changing what runs.

Both matter most for the small models this template is often used with, where one
optimizer step takes a few hundred microseconds and Lightning's own bookkeeping can
take as long again.
"""

from __future__ import annotations

import contextlib
import ctypes
import os

from lightning.pytorch.profilers import PassThroughProfiler

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
