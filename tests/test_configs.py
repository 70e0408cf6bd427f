"""Every config file composes and resolves: a renamed key or a broken interpolation fails here."""

from __future__ import annotations

from pathlib import Path

import pytest

from src.harness.provenance import resolved_config
from tests.conftest import CONFIG_DIR, compose_config

# Groups whose options are meant to be selected alone on the command line.
GROUP_OPTIONS = sorted(
    (path.parent.relative_to(CONFIG_DIR).as_posix(), path.stem)
    for path in CONFIG_DIR.glob("*/*.yaml")
    if path.parent.name != "hydra" and not path.stem.startswith("_")  # _shared: a base
)


@pytest.mark.parametrize(
    ("group", "option"), GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS]
)
def test_every_option_composes_and_resolves(
    group: str, option: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    overrides = [f"{group}={option}"]
    if option == "streaming":  # it reads its task and shapes from the chunks it is given
        overrides.append(f"data.input_dir={request.getfixturevalue('digits_chunks')}")
    cfg = compose_config(overrides, tmp_path)
    resolved = resolved_config(cfg)
    assert resolved["paths"]["output_dir"] == str(tmp_path)
    assert resolved["data"]["task"] in ("classification", "regression")


def test_the_groups_found_cover_the_core_configs() -> None:
    groups = {group for group, _ in GROUP_OPTIONS}
    assert {"model", "data", "optimizer", "scheduler", "trainer", "callbacks", "logger"} <= groups
