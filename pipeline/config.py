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
    """The seeds a job trains: `seeds` (set by the sweeper for a batched cell: a list, or its
    compact text form, see `seed_ranges`), else `seed`."""
    seeds = cfg.get("seeds")
    if seeds is None:
        return [cfg.seed]
    return parse_seed_ranges(seeds) if isinstance(seeds, str) else list(seeds)


def seed_ranges(seeds: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> "0-2,5,7-8": thousands of seeds as a short override value
    (Hydra's override parser takes quadratic time in the length of a list)."""
    parts, start = [], 0
    for index in range(1, len(seeds) + 1):
        if index == len(seeds) or seeds[index] != seeds[index - 1] + 1:
            first, last = seeds[start], seeds[index - 1]
            parts.append(str(first) if first == last else f"{first}-{last}")
            start = index
    return ",".join(parts)


def parse_seed_ranges(text: str) -> list[int]:
    """The inverse of `seed_ranges`; ValueError for anything else."""
    seeds = []
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        seeds.extend(range(int(first), int(last or first) + 1))
    return seeds


def repeat(width: int, depth: int) -> list[int]:
    """hidden_sizes for `depth` hidden layers of `width` units: ${repeat:${model.width},${model.depth}}."""
    return [width] * depth


if not OmegaConf.has_resolver("repeat"):
    OmegaConf.register_new_resolver("repeat", repeat)
