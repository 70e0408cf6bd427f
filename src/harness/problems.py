"""One way to report a problem: found before any work, or met in a Hydra callback.

Before any data is read, the run's objects are built and each is checked on the way; every
problem goes into one :class:`Problems`, so a command line with three mistakes gets one
message naming all three rather than three runs. A Hydra callback or sweeper cannot raise an
ordinary exception (Hydra turns it into a warning and goes on): :func:`stop_with_error` ends
the process with the same ``error:`` line the entry points print.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable
from typing import Any, NoReturn, TypeVar

from hydra.errors import InstantiationException
from lightning.fabric.utilities.exceptions import MisconfigurationException

from src.harness.errors import ConfigError

Built = TypeVar("Built")
# What building a configured object raises when a value is wrong.
BUILD_ERRORS = (ValueError, TypeError, KeyError, MisconfigurationException, ConfigError)
BUILD_ERRORS += (InstantiationException,)


class CannotBuild(Exception):
    """A builder gives up on its object; why is already in the :class:`Problems`."""


class Problems:
    """The configuration's problems, gathered while the run's objects are built."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def add(self, *messages: str) -> None:
        self.found.extend(messages)

    def attempt(self, key: str, build: Callable[[], Built]) -> Built:
        """``build()``; an error about a value becomes a problem of ``key``, in the words of
        the library or class that raised it."""
        try:
            return build()
        except BUILD_ERRORS as error:
            cause = error.__cause__ or error  # Hydra wraps a constructor's error
            self.add(f"{key}: {str(cause).splitlines()[0] if str(cause) else repr(cause)}")
            raise CannotBuild from None

    def each(self, builds: Iterable[Callable[[], Built]]) -> list[Built]:
        """Every build, also after one fails, so that all their problems are found; then
        ``CannotBuild`` if any failed."""
        built, failed = [], False
        for build in builds:
            try:
                built.append(build())
            except CannotBuild:
                failed = True
        if failed:
            raise CannotBuild
        return built

    def build_all(self, cfg: Any, *builders: Callable[[Any, Problems], Any]) -> list[Any]:
        """Each ``builder(cfg, self)``; then one ``ConfigError`` listing every problem found."""
        built: list[Any] = []
        with contextlib.suppress(CannotBuild):
            built = self.each(functools.partial(builder, cfg, self) for builder in builders)
        self.raise_if_any()
        return built

    def raise_if_any(self) -> None:
        if self.found:
            raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(self.found))


def stop_with_error(message: str) -> NoReturn:
    """End the process from a Hydra callback or sweeper with the entry points' ``error:`` line
    (a ``SystemExit``: Hydra turns a callback's other exceptions into warnings)."""
    raise SystemExit(f"error: {message}")
