"""Early, precise checks of a composed config: every error names its key and what is allowed.

Pure Python, no TensorFlow: it runs before any training or logging.
"""

from __future__ import annotations

from numbers import Integral, Real

from pipeline.choices import ENGINES, LOSSES, OPTIMIZERS, WRITERS
from pipeline.config import group_options, seeds_of
from pipeline.forward import ACTIVATIONS
from pipeline.initializers import RAI

MAX_SEED = 2**31 - 1


class ConfigError(ValueError):
    """A config value that is not allowed; str() is one line naming the key."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key


def _is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _choice(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(key, f"{value!r} is not one of {', '.join(allowed)}")


def _int_in(key: str, value, low: int, high: int | None = None) -> None:
    if not _is_int(value) or value < low or (high is not None and value > high):
        bound = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        raise ConfigError(key, f"{value!r} is not allowed, expected {bound}")


def _positive_number(key: str, value) -> None:
    if not _is_number(value) or not value > 0 or value != value or value == float("inf"):
        raise ConfigError(key, f"{value!r} is not allowed, expected a finite number > 0")


def validate(cfg) -> None:
    """Raise ConfigError for the first value that is not allowed."""
    try:
        seeds = seeds_of(cfg)
    except ValueError:
        raise ConfigError("seeds", f"{cfg.seeds!r} is not a list of seeds like '0-9,12'") from None
    for seed in seeds:
        _int_in("seed", seed, 0, MAX_SEED)
    if not isinstance(cfg.force, bool):
        raise ConfigError("force", f"{cfg.force!r} is not allowed, expected true or false")

    model = cfg.model
    sizes = model.hidden_sizes
    if not hasattr(sizes, "__len__") or isinstance(sizes, str) or len(sizes) == 0:
        raise ConfigError(
            "model.hidden_sizes", f"{sizes!r} is not a non-empty list like [2] or [3,3]"
        )
    for size in sizes:
        _int_in("model.hidden_sizes", size, 1, 4096)
    _choice("model.activation", model.activation, ACTIVATIONS)
    _choice("model.output_activation", model.output_activation, ACTIVATIONS)
    if not _is_number(model.bias_init) or model.bias_init != model.bias_init:
        raise ConfigError("model.bias_init", f"{model.bias_init!r} is not a number")

    _choice("init.name", cfg.init.name, group_options("init"))
    if cfg.init.name == RAI:
        _positive_number("init.beta_a", cfg.init.beta_a)
        _positive_number("init.beta_b", cfg.init.beta_b)
        _positive_number("init.std", cfg.init.std)

    data = cfg.data
    _int_in("data.n_samples", data.n_samples, 4)
    for key in ("low", "high"):
        if not _is_number(data[key]) or abs(data[key]) == float("inf") or data[key] != data[key]:
            raise ConfigError(f"data.{key}", f"{data[key]!r} is not a finite number")
    if not data.low < data.high:
        raise ConfigError("data.low", f"{data.low!r} must be below data.high ({data.high!r})")
    if not _is_number(data.test_size) or not 0 < data.test_size < 1:
        raise ConfigError(
            "data.test_size", f"{data.test_size!r} is not allowed, expected a fraction in (0, 1)"
        )
    _int_in("data.seed", data.seed, 0, MAX_SEED)
    n_test = -int(-data.n_samples * data.test_size // 1)  # sklearn rounds the test share up
    n_train = data.n_samples - n_test
    if n_test < 1 or n_train < 1:
        raise ConfigError("data.test_size", f"{data.test_size!r} leaves an empty train or test set")

    train = cfg.train
    _int_in("train.epochs", train.epochs, 1, 100_000)
    _int_in("train.batch_size", train.batch_size, 1, n_train)
    _choice("train.optimizer", train.optimizer, OPTIMIZERS)
    _positive_number("train.learning_rate", train.learning_rate)
    _choice("train.loss", train.loss, LOSSES)
    _choice("train.engine", train.engine, ENGINES)
    _positive_number("train.memory_budget_mb", train.memory_budget_mb)

    tol = cfg.probe.saturation_tol
    if not _is_number(tol) or not 0 < tol < 1:
        raise ConfigError(
            "probe.saturation_tol", f"{tol!r} is not allowed, expected a number in (0, 1)"
        )

    tracking = cfg.tracking
    if not isinstance(tracking.experiment, str) or not tracking.experiment.strip():
        raise ConfigError("tracking.experiment", f"{tracking.experiment!r} is not a non-empty name")
    if tracking.uri is not None and not isinstance(tracking.uri, str):
        raise ConfigError("tracking.uri", f"{tracking.uri!r} is not a URI")
    _positive_number("tracking.timeout_s", tracking.timeout_s)
    _int_in("tracking.log_workers", tracking.log_workers, 1, 64)
    _choice("tracking.writer", tracking.writer, WRITERS)
    if not isinstance(tracking.artifacts, bool):
        raise ConfigError(
            "tracking.artifacts", f"{tracking.artifacts!r} is not allowed, expected true or false"
        )
