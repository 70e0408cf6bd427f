"""Write the JSON schemas that give an editor completion and checks in ``configs/<group>/``.

``python scripts/config_schemas.py`` writes ``schemas/<group>.json`` for each config group
from the classes its shipped configs name (``_target_``, nested ones such as ``model.net``
too), read the way a run checks its config (``src/harness/validation.py``): the arguments
of each class's signature, typed by its type hints. So a new net or data module gets its
schema by rerunning this script after its config is written, and the schema cannot say
other than the run does. ``.vscode/settings.json`` maps each group's files to its schema.

What a schema cannot know, it allows: a ``${...}`` interpolation or ``???`` in place of any
value, a ``defaults:`` list, the keys a class's ``**kwargs`` takes, and a file that puts
its keys at the config's top (``# @package _global_``, as the model configs do).
"""

from __future__ import annotations

import collections
import inspect
import json
import sys
import typing
from collections.abc import Iterable, Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra.utils import get_class  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

import src  # noqa: E402, F401 - registers the resolvers the configs name
from src.harness.validation import keyword_parameters  # noqa: E402

# Groups whose file is one spec, and those whose file names several (callbacks: {name: spec}).
SINGLE = ("model", "data", "optimizer", "scheduler", "trainer")
NAMED = ("callbacks", "logger")
INTERPOLATION = {"type": "string", "pattern": r"\$\{|^\?\?\?$"}
DEFAULTS = {"type": "array", "items": {"type": ["string", "object"]}}
# Keys a spec may hold besides its class's arguments: Hydra's, the scheduler's step unit
# that SupervisedModule hands to Lightning rather than to the scheduler, and the trainer's
# steps_per_call, which the harness takes before it builds the Trainer.
HYDRA_KEYS = {"_partial_": {"type": "boolean"}, "_recursive_": {"type": "boolean"}}
EXTRA_KEYS = {
    "scheduler": {"interval": {"enum": ["epoch", "step"]}},
    "trainer": {"steps_per_call": {"type": "integer", "minimum": 1}},  # the harness's
}
PLAIN = {int: "integer", float: "number", bool: "boolean", str: "string", type(None): "null"}


def type_schema(annotation: Any) -> dict[str, Any]:
    """The JSON schema of the values a type hint admits from YAML; any class that is not a
    plain value may be given as a spec of its own (a mapping with a ``_target_``)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation in PLAIN:
        return {"type": PLAIN[annotation]}
    if annotation is Path:
        return {"type": "string"}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (typing.Union, type(int | None)):
        return {"anyOf": [type_schema(arg) for arg in args]}
    if isinstance(origin, type) and issubclass(origin, Mapping) or annotation in (dict, Mapping):
        return {"type": "object"}
    if isinstance(origin, type) and issubclass(origin, Iterable) or annotation in (list, tuple):
        items = [type_schema(arg) for arg in args if arg is not Ellipsis]
        if not items:
            return {"type": "array"}
        same = all(item == items[0] for item in items)
        return {"type": "array", "items": items[0] if same else {"anyOf": items}}
    if isinstance(annotation, type) and annotation is not object:
        return {"type": "object", "required": ["_target_"]}
    return {}


def interpolable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema``, or an interpolation in its place (in a list's items too)."""
    if not schema or schema.get("type") == "string":
        return schema
    if "items" in schema:
        schema = {**schema, "items": interpolable(schema["items"])}
    return {"anyOf": [schema, {"$ref": "#/definitions/interpolation"}]}


def plain_default(value: Any) -> Any:
    """``value`` as JSON, or ``inspect.Parameter.empty`` where JSON has no such value."""
    if isinstance(value, tuple):
        value = list(value)
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return inspect.Parameter.empty


def class_schema(target: str, key: str, found: dict[str, set[str]]) -> dict[str, Any]:
    """The schema of a ``_target_: target`` spec at ``key`` (``model.net``): its class's
    arguments; those that the shipped configs give as specs, by the classes they name."""
    cls = get_class(target)
    parameters = keyword_parameters(cls)
    schema: dict[str, Any] = {"type": "object", "title": cls.__name__}
    schema["description"] = (inspect.getdoc(cls) or target).split("\n\n")[0]
    properties = {"_target_": {"const": target}, **HYDRA_KEYS}
    for name, parameter in (parameters or {}).items():
        nested = [f"{key}.{name}", f"{key}.{name}[]"]
        if found.get(nested[0]):
            properties[name] = specs_schema(nested[0], found)
        elif found.get(nested[1]):
            properties[name] = {"type": "array", "items": specs_schema(nested[1], found)}
        else:
            properties[name] = interpolable(type_schema(parameter.annotation))
        default = plain_default(parameter.default)
        if default is not inspect.Parameter.empty:
            properties[name]["default"] = default
    properties |= EXTRA_KEYS.get(key, {})
    return {**schema, "properties": properties, "additionalProperties": parameters is None}


def specs_schema(key: str, found: dict[str, set[str]]) -> dict[str, Any]:
    """Any of the specs the shipped configs give at ``key``, told apart by ``_target_``."""
    return {"anyOf": [class_schema(target, key, found) for target in sorted(found[key])]}


def collect(node: Any, key: str, found: dict[str, set[str]]) -> None:
    """Record in ``found`` the ``_target_`` of each spec under ``node``, by its key (a list's
    items as ``key[]``, a named group's entries as ``callbacks.*``)."""
    if isinstance(node, dict):
        if isinstance(node.get("_target_"), str):
            found[key].add(node["_target_"])
        for name, value in node.items():
            if name != "defaults":
                collect(value, f"{key}.{name}", found)
    elif isinstance(node, list):
        for item in node:
            collect(item, f"{key}[]", found)


def shipped_specs(configs: Path) -> dict[str, set[str]]:
    """The classes the configs in ``configs`` name, by key: ``model.net``, ``trainer.plugins[]``,
    ``callbacks.*``. The module comes from the entry configs (``model._target_``)."""
    found: dict[str, set[str]] = collections.defaultdict(set)
    for path in sorted(configs.glob("*.yaml")):
        collect({"model": OmegaConf.to_container(OmegaConf.load(path)).get("model")}, "", found)
    for group in SINGLE + NAMED:
        for path in sorted((configs / group).rglob("*.yaml")):
            content = OmegaConf.to_container(OmegaConf.load(path)) or {}
            if path.read_text().startswith("# @package _global_"):
                content = content.get(group)
            specs = (content or {}).values() if group in NAMED else [content]
            for spec in specs:
                collect(spec, f"{group}.*" if group in NAMED else group, found)
    return {key.lstrip("."): targets for key, targets in found.items()}


def group_schema(group: str, found: dict[str, set[str]]) -> dict[str, Any]:
    """What one group's config holds: a spec (``data``), or specs by name (``callbacks``)."""
    if group in NAMED:
        entry = {"anyOf": [specs_schema(f"{group}.*", found), {"type": "null"}]}
        properties = {"defaults": DEFAULTS}
        return {"type": "object", "properties": properties, "additionalProperties": entry}
    schema = specs_schema(group, found)
    for option in schema["anyOf"]:
        option["properties"] = {"defaults": DEFAULTS, **option["properties"]}
    return schema if group != "scheduler" else {"anyOf": [*schema["anyOf"], {"type": "null"}]}


def signatures_from() -> str:
    """The libraries whose signatures the optimizer, trainer and callback schemas hold."""
    return ", ".join(f"{name} {version(name)}" for name in ("torch", "lightning"))


def schemas(configs: Path = ROOT / "configs") -> dict[str, dict[str, Any]]:
    """One schema per group: its own keys, or (``# @package _global_``) the config's top keys,
    its group's checked under the group's name, the others' as a run's configs name them."""
    found = shipped_specs(configs)
    entry_keys = {key for path in configs.glob("*.yaml") for key in OmegaConf.load(path)}
    top = sorted(entry_keys - {"defaults"} | {"paths", "hydra", "experiment", "debug"})
    top += [group for group in SINGLE + NAMED if group not in top]
    return {
        group: {
            # draft-07: the newest that every version of the YAML extension's server reads
            "$schema": "http://json-schema.org/draft-07/schema#",
            "title": f"configs/{group}",
            "description": f"Written by scripts/config_schemas.py from the classes that "
            f"configs/{group}/ names; rerun it after adding a class or a config.",
            "$comment": signatures_from(),
            "anyOf": [
                {"$ref": "#/definitions/group"},
                {
                    "type": "object",
                    "properties": {
                        "defaults": DEFAULTS,
                        **{key: {} for key in top},
                        group: {"$ref": "#/definitions/group"},
                    },
                    "additionalProperties": False,
                },
            ],
            "definitions": {"group": group_schema(group, found), "interpolation": INTERPOLATION},
        }
        for group in SINGLE + NAMED
    }


def main() -> None:
    folder = ROOT / "schemas"
    folder.mkdir(exist_ok=True)
    for group, schema in schemas().items():
        (folder / f"{group}.json").write_text(json.dumps(schema, indent=1) + "\n")
        print(f"wrote {folder.relative_to(ROOT)}/{group}.json")


if __name__ == "__main__":
    main()
