"""Say what a ``debug=`` mode changed, so a debug run is never mistaken for a real one."""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def debug_keys(name: str, config_dir: Path) -> list[str]:
    """Dotted keys set by ``configs/debug/<name>.yaml`` and the debug configs it builds on."""
    spec = OmegaConf.to_container(OmegaConf.load(config_dir / "debug" / f"{name}.yaml"))
    keys = [key for parent in spec.pop("defaults", []) for key in debug_keys(parent, config_dir)]

    def leaves(node: object, prefix: str) -> list[str]:
        if not isinstance(node, dict):
            return [prefix]
        return [key for name, value in node.items() for key in leaves(value, f"{prefix}{name}.")]

    keys += [key.rstrip(".") for key in leaves(spec, "")]
    return list(dict.fromkeys(keys))


def log_debug_changes(cfg: DictConfig) -> str | None:
    """Log (and return) ``debug=NAME changes: key=value, ...`` when a debug mode is chosen."""
    name = HydraConfig.get().runtime.choices.get("debug") if HydraConfig.initialized() else None
    if not name:
        return None
    keys = debug_keys(name, Path(cfg.paths.root_dir) / "configs")
    changes = ", ".join(f"{key}={OmegaConf.select(cfg, key)}" for key in keys)
    message = f"debug={name} changes: {changes}"
    log.info(message)
    return message
