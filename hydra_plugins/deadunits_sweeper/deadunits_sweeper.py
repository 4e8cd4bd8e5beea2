"""Registers `hydra/sweeper=deadunits`; the sweep logic lives in pipeline.sweep."""

from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore

from pipeline.sweep import GroupingSweeper


class DeadunitsSweeper(GroupingSweeper):
    """Hydra only instantiates plugins defined under hydra_plugins."""


@dataclass
class DeadunitsSweeperConf:
    _target_: str = "hydra_plugins.deadunits_sweeper.deadunits_sweeper.DeadunitsSweeper"
    # Jobs handed to the launcher per call; null: 1, or 4 x n_jobs for joblib.
    jobs_per_launch: Any = None
    params: Any = None


ConfigStore.instance().store(
    group="hydra/sweeper", name="deadunits", node=DeadunitsSweeperConf, provider="deadunits"
)
