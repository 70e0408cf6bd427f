"""Names that become parts of paths, each kept to one folder name inside ``paths.log_dir``.

``task_name`` names the run's folder (``logs/<task_name>/runs/...``), ``run_name`` the
TensorBoard run (``logs/<run_name>/...``), a logger's ``name`` or ``version`` its folder.
Joined into a path, ``run_name=../../x`` or ``run_name=/elsewhere`` would write outside the
log folder, and a name longer than the file system allows would fail with ``File name too
long`` after the run folder was made. So they are checked before Hydra creates any folder
(``CreateRunFolder``), a sweep's values included; spaces and ``=`` (a sweep job's run name,
``mlp-digits lr=0.01``) are fine.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig

from src.harness.overrides import override_key

NAME_KEYS = ("task_name", "trained_task", "run_name", "tags")
LOGGER_NAME_KEYS = ("name", "version", "experiment_name")
MAX_BYTES = 200  # file systems allow 255 per name; room for the suffixes added to it
RULE = (
    "a name becomes a folder under paths.log_dir: it may hold spaces and = but not / or \\, "
    f"may not be . or .., nor hold control characters, nor exceed {MAX_BYTES} bytes"
)


def is_folder_name(name: str) -> bool:
    """Whether ``name`` is one folder name that stays where it is joined."""
    return not (
        {"/", "\\"} & set(name)
        or name in (".", "..")
        or any(ord(char) < 32 or ord(char) == 127 for char in name)
        or len(name.encode()) > MAX_BYTES
    )


def configured_names(config: DictConfig) -> Iterator[tuple[str, Any]]:
    """``(key, value)`` for each name the composed ``config`` gives."""
    for key in NAME_KEYS:
        yield key, config.get(key)
    loggers = config.get("logger")
    for logger, settings in loggers.items() if isinstance(loggers, DictConfig) else []:
        for key in LOGGER_NAME_KEYS if isinstance(settings, DictConfig) else []:
            yield f"logger.{logger}.{key}", settings.get(key)


def swept_names(config: DictConfig) -> Iterator[tuple[str, Any]]:
    """``(key, value)`` for each value a sweep gives a name, on its command line or in its
    sweeper's ``params``: the jobs' folders are made before a job could check its own."""
    params = config.hydra.sweeper.get("params") or {}
    lines = [*(f"{key}={value}" for key, value in params.items()), *config.hydra.overrides.task]
    names = [line for line in lines if is_name_key(override_key(line))]
    for parsed in OverridesParser.create().parse_overrides(names):
        if parsed.is_sweep_override():
            yield from ((parsed.get_key_element(), value) for value in parsed.sweep_iterator())


def is_name_key(key: str) -> bool:
    parts = key.split(".")
    return key in NAME_KEYS or (
        len(parts) == 3 and parts[0] == "logger" and parts[2] in LOGGER_NAME_KEYS
    )


def unsafe_names(names: Iterable[tuple[str, Any]]) -> str | None:
    """The message refusing every name that is not one folder name, or None."""
    bad: dict[str, str] = {}  # value -> key: run_name also reaches loggers by interpolation
    for key, value in names:
        for item in value if isinstance(value, list | ListConfig) else [value]:
            if isinstance(item, str) and not is_folder_name(item):
                bad.setdefault(item, key)
    if not bad:
        return None
    shown = (
        f"{key}={value if len(value) < 60 else value[:50] + '...'!r}" for value, key in bad.items()
    )
    return f"{', '.join(shown)}: {RULE}."
