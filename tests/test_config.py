"""Every config and preset composes, and the composed values are valid."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import pipeline.config  # noqa: F401
from pipeline.choices import override_table
from pipeline.forward import ACTIVATIONS
from pipeline.validate import validate

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir())
OPTIONS = [(group, p.stem) for group in GROUPS for p in sorted((CONF / group).glob("*.yaml"))]


def compose_with(*overrides: str, hydra: bool = False):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


def test_default_config_composes_and_validates():
    cfg = compose_with()
    validate(cfg)
    assert cfg.seed == 0
    assert cfg.init.name == "glorot_uniform"
    assert list(cfg.model.hidden_sizes) == [2]


@pytest.mark.parametrize(("group", "option"), OPTIONS)
def test_every_group_option_composes(group, option):
    cfg = compose_with(f"{group}={option}")
    validate(cfg)
    if group == "init":
        assert cfg.init.name == option


def test_the_readme_lists_the_allowed_values_of_the_registries():
    """The README's table is printed by `python -m pipeline.choices`; paste it anew."""
    readme = (CONF.parent / "README.md").read_text()
    assert override_table() in readme


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_validates(activation):
    validate(
        compose_with(f"model.activation={activation}", f"model.output_activation={activation}")
    )


def test_public_override_keys_exist():
    cfg = compose_with(
        "seed=7",
        "model.hidden_sizes=[3,3]",
        "model.activation=tanh",
        "model.output_activation=relu",
        "model.bias_init=0.1",
        "init=he_normal",
        "data.n_samples=500",
        "data.low=-1.0",
        "data.high=1.0",
        "data.test_size=0.25",
        "data.seed=1",
        "train.epochs=3",
        "train.batch_size=10",
        "train.optimizer=sgd",
        "train.learning_rate=0.01",
        "train.loss=mse",
        "train.engine=keras",
        "tracking.uri=sqlite:///x.db",
        "tracking.experiment=e",
    )
    validate(cfg)
    assert cfg.seed == 7 and list(cfg.model.hidden_sizes) == [3, 3] and cfg.init.name == "he_normal"


def test_notebook_preset_sets_what_the_notebook_set():
    cfg = compose_with("experiment=seed_notebook", hydra=True)
    assert cfg.seed == 23 and cfg.init.name == "legacy_tf2"
    assert list(cfg.model.hidden_sizes) == [2] and cfg.model.bias_init == 0.0
    assert cfg.model.output_activation == cfg.model.activation == "relu"
    assert (cfg.data.n_samples, cfg.data.seed, cfg.data.test_size) == (2000, 23, 0.2)
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.loss, cfg.train.optimizer) == (
        10,
        25,
        "mae",
        "adam",
    )
    assert cfg.hydra.sweeper.params["model.activation"] == "relu,linear"


@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_every_preset_composes_validates_and_sweeps(preset):
    cfg = compose_with(f"experiment={preset}", hydra=True)
    assert cfg.tracking.experiment == preset
    assert cfg.hydra.sweeper.params, "a preset is a sweep: it sets hydra.sweeper.params"
    task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    validate(task)


def test_depth_width_preset_builds_hidden_sizes_from_width_and_depth():
    cfg = compose_with("experiment=depth_width_collapse", "model.width=3", "model.depth=4")
    assert list(cfg.model.hidden_sizes) == [3, 3, 3, 3]
