"""The editor's JSON schemas (scripts/config_schemas.py): current, accepting every shipped
config, and refusing a value of the wrong type or a key no class takes."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator
from omegaconf import OmegaConf

from scripts.config_schemas import NAMED, SINGLE, schemas

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
GROUPS = SINGLE + NAMED
SHIPPED = sorted(path for group in GROUPS for path in (CONFIGS / group).rglob("*.yaml"))


@pytest.fixture(scope="module")
def written() -> dict[str, dict[str, Any]]:
    return schemas()


def content(path: Path) -> Any:
    """A config file as the editor sees it: interpolations unresolved."""
    return OmegaConf.to_container(OmegaConf.load(path)) or {}


def problems(schema: dict[str, Any], config: Any) -> list[str]:
    return [error.message for error in Draft7Validator(schema).iter_errors(config)]


def test_committed_schemas_are_current(written):
    """Stale after a change to a configured class or a config. Under another torch or
    Lightning (whose signatures the optimizer, scheduler, trainer and callback schemas hold)
    they differ too, which is not a change of the project's: that is skipped, saying so."""
    committed = json.loads((ROOT / "schemas" / "model.json").read_text())["$comment"]
    if committed != written["model"]["$comment"]:
        pytest.skip(
            f"schemas/ were written from {committed}; installed: {written['model']['$comment']}"
        )
    stale = [
        group
        for group in GROUPS
        if json.loads((ROOT / "schemas" / f"{group}.json").read_text()) != written[group]
    ]
    assert not stale, f"schemas/ {stale} are stale: run python scripts/config_schemas.py"


def test_schemas_are_valid_json_schemas(written):
    for schema in written.values():
        Draft7Validator.check_schema(schema)


def test_the_editor_maps_each_group_to_its_schema():
    settings = json.loads((ROOT / ".vscode" / "settings.json").read_text())
    expected = {f"./schemas/{group}.json": [f"configs/{group}/**/*.yaml"] for group in GROUPS}
    assert settings["yaml.schemas"] == expected


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: str(path.relative_to(CONFIGS)))
def test_every_shipped_config_validates(written, path):
    assert problems(written[path.relative_to(CONFIGS).parts[0]], content(path)) == []


def changed(config: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """``config`` with the dotted ``key`` set to ``value``."""
    config = copy.deepcopy(config)
    *parents, last = key.split(".")
    node = config
    for parent in parents:
        node = node[parent]
    node[last] = value
    return config


@pytest.mark.parametrize(
    ("file", "key", "value"),
    [
        ("model/mlp.yaml", "model.net.hidden_sizes", "abc"),
        ("model/mlp.yaml", "model.net.dropout", [0.1]),
        ("model/mlp.yaml", "model.compile", "yes"),
        ("trainer/default.yaml", "max_epochs", "ten"),
        # Literal annotations become enums: Lightning's precision, a data module's monitor_mode.
        # MLP's activation is a plain str, so `activation: relux` is left to the run's check.
        ("trainer/default.yaml", "precision", "17-mixed"),
        ("data/_shared.yaml", "monitor_mode", "maxx"),
        ("data/mnist.yaml", "download", "sometimes"),
        ("optimizer/sgd.yaml", "nesterov", 1),
        ("scheduler/step.yaml", "interval", "batch"),
        ("callbacks/early_stopping.yaml", "early_stopping.patience", "ten"),
        ("logger/mlflow.yaml", "mlflow.log_model", "some"),
    ],
)
def test_a_value_of_the_wrong_type_fails(written, file, key, value):
    group = file.split("/")[0]
    assert problems(written[group], changed(content(CONFIGS / file), key, value))


@pytest.mark.parametrize(
    ("file", "key"),
    [
        ("model/mlp.yaml", "model.net.hidden_size"),
        ("model/mlp.yaml", "model.nett"),
        ("model/mlp.yaml", "modle"),  # a top-level key of a `# @package _global_` file
        ("data/mnist.yaml", "batch_sise"),
        ("optimizer/adam.yaml", "learning_rate"),
        ("trainer/default.yaml", "max_epoch"),
        ("callbacks/model_checkpoint.yaml", "model_checkpoint.every_n_epoch"),
    ],
)
def test_an_unknown_key_fails(written, file, key):
    group = file.split("/")[0]
    assert problems(written[group], changed(content(CONFIGS / file), key, 1))


def test_interpolations_stand_for_any_value(written):
    config = changed(content(CONFIGS / "trainer/default.yaml"), "max_epochs", "${oc.env:EPOCHS}")
    assert problems(written["trainer"], changed(config, "devices", "???")) == []


def test_a_new_net_gets_its_schema_from_its_config(tmp_path):
    """What a user's net gets by rerunning the script: its own arguments, typed."""
    configs = tmp_path / "configs"
    shutil.copytree(CONFIGS, configs)
    (configs / "model" / "linear.yaml").write_text(
        "# @package _global_\nmodel:\n  net:\n    _target_: torch.nn.Linear\n"
        "    in_features: 20\n    out_features: ${data.num_outputs}\n"
    )
    schema = schemas(configs)["model"]
    config = content(configs / "model" / "linear.yaml")
    assert problems(schema, config) == []
    assert problems(schema, changed(config, "model.net.in_features", "twenty"))
    assert problems(schema, content(CONFIGS / "model" / "mlp.yaml")) == []
