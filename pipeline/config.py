"""The Hydra config: where it lives, the options of its groups, and the resolvers it uses.

Importing this module registers the resolvers (`${repeat:width,depth}`).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from omegaconf import OmegaConf

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"


@cache
def group_options(group: str) -> tuple[str, ...]:
    """The options of a config group: its files in conf/<group>/ (init: the initializers)."""
    return tuple(sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml")))


def is_group(key: str) -> bool:
    return (CONFIG_DIR / key).is_dir()


def seeds_of(cfg) -> list[int]:
    """The seeds a job trains: `seeds` (set by the sweeper for a batched cell), else `seed`."""
    return list(cfg.seeds) if cfg.get("seeds") is not None else [cfg.seed]


def repeat(width: int, depth: int) -> list[int]:
    """hidden_sizes for `depth` hidden layers of `width` units: ${repeat:${model.width},${model.depth}}."""
    return [width] * depth


if not OmegaConf.has_resolver("repeat"):
    OmegaConf.register_new_resolver("repeat", repeat)
