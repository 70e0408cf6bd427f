"""Hydra's override grammar, for the commands a run prints (resume, eval) and the keys it reads."""

from __future__ import annotations

import shlex
from contextlib import suppress
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Quote, QuotedString
from hydra.errors import HydraException


def job_overrides() -> list[str]:
    """This run's command-line overrides; in a sweep, this job's share of them."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def override_key(item: str) -> str:
    """The key an override sets: ``data`` for ``data=digits``, ``+data=digits`` or ``~data``."""
    return item.lstrip("+~").split("=")[0]


def override(key: str, value: str) -> str:
    """``key=value`` that Hydra reads back as the string ``value``: bare if it can, else quoted.

    The user's own overrides are valid Hydra already; a value built here, such as a path
    with spaces or non-ASCII letters, may need Hydra's quotes.
    """
    with suppress(HydraException):  # a character its grammar has no bare form for
        if OverridesParser.create().parse_override(f"{key}={value}").value() == value:
            return f"{key}={value}"
    return f"{key}={QuotedString(text=value, quote=Quote.single).with_quotes()}"


def eval_command(ckpt_path: str | Path) -> str:
    """The command that tests a checkpoint, ready to paste into a POSIX shell."""
    return shlex.join(["python", "src/eval.py", override("ckpt_path", str(ckpt_path))])
