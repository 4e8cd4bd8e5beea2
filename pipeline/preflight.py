"""Every check before a command trains or logs anything, run once per command.

A single run is checked by the CLI before Hydra starts; a sweep by its sweeper, for every
cell, before the first job. Jobs trust what their command checked. Each failure is one
line naming the key and what is allowed, and exit code 2.
"""

from __future__ import annotations

import re
import sys
from typing import NoReturn

from pipeline.config import group_options
from pipeline.store import (
    BULK_DIALECTS,
    StoreUnavailable,
    check_store,
    first_line,
    resolve_tracking_uri,
    uri_scheme,
)
from pipeline.validate import ConfigError, validate

EXIT_BAD_INPUT = 2


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print a one-line error and exit before anything is trained or logged."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def preflight(cfg) -> str:
    """Validate a composed config and check its store; the resolved tracking URI.

    For a sweep, `preflight_sweep` (below) checks every cell."""
    try:
        validate(cfg)
        uri = resolve_tracking_uri(cfg.tracking.uri)
        check_store(uri, cfg.tracking.timeout_s)
        check_writer(cfg.tracking.writer, uri)
    except (ConfigError, StoreUnavailable) as error:
        fail(str(error))
    return uri


def check_writer(writer: str, uri: str) -> None:
    """tracking.writer=bulk needs a database store; the rest is checked on the store itself
    (its MLflow schema revision) when the command opens it."""
    if writer != "bulk":
        return
    if uri_scheme(uri) not in BULK_DIALECTS:
        raise ConfigError(
            "tracking.writer",
            f"bulk needs a database store ({', '.join(BULK_DIALECTS)}), not {uri_scheme(uri)!r}; "
            "use auto or client",
        )


def check_override_syntax(overrides: list[str]) -> None:
    """Catch malformed overrides with a one-line message instead of Hydra's multi-line one."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for override in overrides:
        try:
            parser.parse_overrides([override])
        except OverrideParseException as error:
            reason = str(error).strip().splitlines()
            detail = next(
                (line for line in reason if not line.startswith(("Error parsing", "See "))), ""
            )
            fail(
                f"malformed override {override!r}: {detail or reason[0]}; "
                "expected key=value (Hydra override grammar), e.g. model.activation=tanh"
            )


def describe_compose_error(error: Exception) -> str:
    """Hydra's composition errors, reduced to one line naming the key and what is allowed."""
    text = str(error)
    if match := re.search(r"Could not override '([^']+)'", text):
        return f"{match.group(1)}: no such key in the config (see the CLI section of the README)"
    if match := re.search(r"Could not find '([^/']+)/([^']+)'", text):
        group, value = match.groups()
        return f"{group}: {value!r} is not one of {', '.join(group_options(group))}"
    if match := re.search(r"full_key: (\S+)", text):
        return f"{match.group(1)}: {text.strip().splitlines()[0]}"
    return first_line(error)


def preflight_sweep(cfgs: list) -> str:
    """Validate every cell of a sweep and check its one store once; the resolved URI."""
    try:
        for cfg in cfgs:
            validate(cfg)
        if any(cfg.tracking != cfgs[0].tracking for cfg in cfgs):
            raise ConfigError(
                "tracking", "the tracking store and experiment cannot vary within one sweep"
            )
    except ConfigError as error:
        fail(str(error))
    return preflight(cfgs[0])
