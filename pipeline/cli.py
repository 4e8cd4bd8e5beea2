"""`python -m pipeline [-m] [overrides]`: the Hydra app, with one-line errors for bad input."""

from __future__ import annotations

import atexit
import logging
import os
import shlex
import sys
import threading
from typing import NoReturn

import hydra
from omegaconf import DictConfig, OmegaConf

from pipeline.config import CONFIG_DIR, group_options, is_group
from pipeline.preflight import check_override_syntax, describe_compose_error, fail, preflight
from pipeline.store import StoreUnavailable

log = logging.getLogger("deadunits")

_MISSING = object()


def parse_command_line(argv: list[str]):
    """Hydra's own parser: its flags (--cfg, --package, --info, ...) and the overrides."""
    from hydra._internal.utils import get_args_parser

    return get_args_parser().parse_args(argv)


def asks_for_information(args) -> bool:
    """--cfg, --info, --help and friends: Hydra prints and exits; nothing runs or is written."""
    return bool(args.cfg or args.info or args.help or args.hydra_help or args.shell_completion)


def check_composes(overrides: list[str]) -> DictConfig:
    """Compose the config once before Hydra runs, so unknown keys and options fail in one line."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
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
        if "/" in key or is_group(key):
            options = group_options(key)
            for value in override.sweep_string_iterator():
                if value not in options:
                    fail(f"{key}: {value!r} is not one of {', '.join(options)}")
        elif key.startswith("+"):
            continue
        elif OmegaConf.select(cfg, key, default=_MISSING) is _MISSING:
            fail(f"{key}: no such key in the config (see the CLI section of the README)")
    return cfg


def _is_hydra(override) -> bool:
    return override.key_or_group.split("/")[0].split(".")[0] in ("hydra", "+hydra")


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def app(cfg: DictConfig) -> dict[str, int]:
    from pipeline.job import run_job  # imports MLflow and scikit-learn: only once input is valid

    try:
        summary = run_job(cfg)
    except StoreUnavailable as error:  # a writer the store cannot take; nothing trained yet
        fail(str(error))
    if cfg.tracking.sweep_id is None:
        log.info("runs: %s", ", ".join(f"{k} {v}" for k, v in sorted(summary.items())) or "none")
    return summary


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


def without_sweep(argv: list[str], args) -> list[str]:
    """A multirun's arguments as Hydra composes its primary config: no -m, no sweep values.

    Hydra refuses --cfg or --info beside -m; asked with a sweep, they show the config
    every job of the sweep starts from (the sweeper adds the swept values)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    swept = {o for o in args.overrides if parser.parse_override(o).is_sweep_override()}
    return [a for a in argv if a not in ("-m", "--multirun") and a not in swept]


def main() -> None:
    sys.argv[1:] = expand_overrides_flag(sys.argv[1:])
    args = parse_command_line(sys.argv[1:])
    if asks_for_information(args) and args.multirun:
        sys.argv[1:] = without_sweep(sys.argv[1:], args)
    elif not asks_for_information(args):
        check_override_syntax(args.overrides)
        cfg = check_composes(args.overrides)
        if not args.multirun:  # a sweep is checked by its sweeper, every cell, before any job
            preflight(cfg)
    app()
    exit_now()


def exit_now() -> NoReturn:
    """Exit 0 as the interpreter would, minus its teardown, which took 2-3 s after a batched
    sweep (TensorFlow frees its traced functions one by one). Everything is committed by now.
    The interpreter's own exit order: threads and executors first (the writer process,
    joblib's workers), then the exit handlers (MLflow's, logging's)."""
    threading._shutdown()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
