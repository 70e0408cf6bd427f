"""Every ``python src/...`` command shown in the README runs, shrunk to a fast_dev_run.

A renamed option or config breaks this test instead of a user's first try.
"""

from __future__ import annotations

import re
import shlex

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser

from src.errors import ConfigError
from tests.conftest import ROOT, SHARED_DATA

ENTRY_POINTS = {"src/train.py": "train"}
TINY = ["trainer.fast_dev_run=true"]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    commands = [
        part.strip()
        for block in blocks
        for line in block.splitlines()
        for part in line.split("&&")
        if part.strip().startswith("python src/")
    ]
    assert commands, "the README shows no python src/ command"
    return commands


def first_of_each_sweep(arguments: list[str]) -> list[str]:
    """A multirun's first job: ``a=1,2`` becomes ``a=1``."""
    parsed = OverridesParser.create().parse_overrides(arguments)
    return [
        f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}"
        if o.is_sweep_override()
        else o.input_line
        for o in parsed
    ]


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_runs(command: str, make_cfg, monkeypatch) -> None:
    script, *arguments = shlex.split(command)[1:]
    config_name = ENTRY_POINTS[script]
    arguments = [a for a in arguments if a not in ("-m", "--multirun")]
    if "../shared/data" in command and not SHARED_DATA.is_dir():
        pytest.skip(f"needs the reference data in {SHARED_DATA}")
    monkeypatch.chdir(ROOT)
    prints_only = "--cfg" in arguments
    arguments = [a for a in arguments if a not in ("--cfg", "job")]
    cfg = make_cfg(*first_of_each_sweep(arguments), *TINY, config_name=config_name)
    if prints_only:
        return
    from src.train import train

    if cfg.trainer.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="trainer=cpu"):
            train(cfg)
        return
    metrics = train(cfg)
    assert "test/loss" in metrics or cfg.get("test") is False
