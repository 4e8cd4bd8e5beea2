"""OmegaConf resolvers the configs use; importing this module registers them."""

from omegaconf import OmegaConf


def repeat(width: int, depth: int) -> list[int]:
    """hidden_sizes for `depth` hidden layers of `width` units: ${repeat:${model.width},${model.depth}}."""
    return [width] * depth


if not OmegaConf.has_resolver("repeat"):
    OmegaConf.register_new_resolver("repeat", repeat)
