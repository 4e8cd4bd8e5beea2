"""`python -m pipeline [-m] [overrides]`: the Hydra app, with one-line errors for bad input."""

from __future__ import annotations

import logging
import re
import shlex
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

import pipeline.resolvers  # noqa: F401  (registers ${repeat:...})
from pipeline.store import (
    PROJECT_ROOT,
    StoreUnavailable,
    check_store,
    first_line,
    resolve_tracking_uri,
)
from pipeline.validate import ConfigError, validate

CONFIG_DIR = PROJECT_ROOT / "conf"

log = logging.getLogger("deadunits")


def fail(message: str, code: int = 2):
    """Print a one-line error and exit before anything is trained or logged."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def check_override_syntax(argv: list[str]) -> None:
    """Catch malformed overrides with a one-line message instead of Hydra's multi-line one."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for arg in argv:
        if arg.startswith("-"):
            continue
        try:
            parser.parse_overrides([arg])
        except OverrideParseException as error:
            reason = str(error).strip().splitlines()
            detail = next(
                (line for line in reason if not line.startswith(("Error parsing", "See "))), ""
            )
            fail(
                f"malformed override {arg!r}: {detail or reason[0]}; "
                "expected key=value (Hydra override grammar), e.g. model.activation=tanh"
            )


def check_composes(argv: list[str]) -> None:
    """Compose the config once before Hydra runs, so unknown keys and options fail in one line."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([a for a in argv if not a.startswith("-")])
    plain = [o.input_line for o in parsed if not o.is_sweep_override() and not _is_hydra(o)]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        try:
            cfg = compose("config", overrides=plain)
        except Exception as error:
            fail(describe_compose_error(error))
    for override in parsed:
        if not override.is_sweep_override() or _is_hydra(override):
            continue
        key = override.key_or_group
        if "/" in key or (CONFIG_DIR / key).is_dir():
            options = sorted(p.stem for p in (CONFIG_DIR / key).glob("*.yaml"))
            for value in override.sweep_string_iterator():
                if value not in options:
                    fail(f"{key}: {value!r} is not one of {', '.join(options)}")
        elif override.key_or_group.startswith("+"):
            continue
        elif OmegaConf.select(cfg, key, default=_MISSING) is _MISSING:
            fail(f"{key}: no such key in the config (see the CLI section of the README)")
    multirun = any(a in ("-m", "--multirun") for a in argv)
    if not multirun:  # a sweep checks every job's config in the sweeper, before any job runs
        try:
            validate(cfg)
            check_store(resolve_tracking_uri(cfg.tracking.uri), cfg.tracking.timeout_s)
        except (ConfigError, StoreUnavailable) as error:
            fail(str(error))


_MISSING = object()


def _is_hydra(override) -> bool:
    return override.key_or_group.split("/")[0].split(".")[0] in ("hydra", "+hydra")


def describe_compose_error(error: Exception) -> str:
    """Hydra's composition errors, reduced to one line naming the key and what is allowed."""
    text = str(error)
    if match := re.search(r"Could not override '([^']+)'", text):
        return f"{match.group(1)}: no such key in the config (see the CLI section of the README)"
    if match := re.search(r"Could not find '([^/']+)/([^']+)'", text):
        group, value = match.groups()
        options = sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
        return f"{group}: {value!r} is not one of {', '.join(options)}"
    if match := re.search(r"full_key: (\S+)", text):
        return f"{match.group(1)}: {text.strip().splitlines()[0]}"
    return first_line(error)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def app(cfg: DictConfig) -> dict[str, int]:
    from pipeline.job import run_job  # imports MLflow and scikit-learn: only once input is valid

    try:
        summary = run_job(cfg)
    except (ConfigError, StoreUnavailable) as error:
        fail(str(error))
    if not _in_sweep(cfg):
        log.info("runs: %s", ", ".join(f"{k} {v}" for k, v in sorted(summary.items())) or "none")
    return summary


def _in_sweep(cfg: DictConfig) -> bool:
    return cfg.tracking.sweep_id is not None


def expand_overrides_flag(argv: list[str]) -> list[str]:
    """`--overrides "a=1 b=2"` (how MLproject passes them) becomes separate overrides."""
    out, args = [], iter(argv)
    for arg in args:
        if arg == "--overrides":
            out.extend(shlex.split(next(args, "")))
        elif arg.startswith("--overrides="):
            out.extend(shlex.split(arg.partition("=")[2]))
        else:
            out.append(arg)
    return out


def main() -> None:
    sys.argv[1:] = expand_overrides_flag(sys.argv[1:])
    check_override_syntax(sys.argv[1:])
    check_composes(sys.argv[1:])
    app()
