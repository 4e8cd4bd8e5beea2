"""Where runs are stored: one absolute tracking URI, whoever launches from wherever."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DB = PROJECT_ROOT / "mlflow.db"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """Explicit URI, else $MLFLOW_TRACKING_URI, else SQLite at the project root.

    Relative SQLite paths are made absolute, since Hydra gives each job its own
    output directory and a relative path would scatter runs over many stores.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_DB}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        relative = uri[len("sqlite:///") :]
        uri = f"sqlite:///{Path(relative).resolve()}"
    elif "://" not in uri and not uri.startswith("databricks"):
        # A bare path means a file store; MLflow 3 deprecates it, so keep it explicit.
        uri = Path(uri).resolve().as_uri()
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file behind a sqlite:// URI, or None for other stores."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :])
    return None


def first_line(error: BaseException) -> str:
    """An exception's first line of text, or its type name when it has none."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


class StoreUnavailable(RuntimeError):
    """The tracking store cannot be reached or written; str() is one line."""


def check_store(uri: str, timeout_s: float) -> None:
    """Fail fast, before any training, when runs could not be logged to `uri`."""
    if db := sqlite_path(uri):
        _check_writable_dir(db.parent, uri)
        if db.exists() and not os.access(db, os.W_OK):
            raise StoreUnavailable(f"tracking.uri: the SQLite store {db} is not writable")
    elif uri.startswith(("http://", "https://")):
        _check_server(uri, timeout_s)
    elif uri.startswith(("postgresql", "mysql", "mssql")):
        _check_database(uri, timeout_s)
    elif uri.startswith("file:"):
        _check_writable_dir(Path(uri[len("file://") :]), uri)


def _check_writable_dir(directory: Path, uri: str) -> None:
    probe = directory / f".deadunits-write-check-{os.getpid()}"
    try:
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise StoreUnavailable(
            f"tracking.uri: cannot write a store at {uri} ({error.strerror}); "
            "the directory must exist and be writable"
        ) from None


def _check_server(uri: str, timeout_s: float) -> None:
    import requests

    try:
        response = requests.get(f"{uri.rstrip('/')}/health", timeout=timeout_s)
    except requests.RequestException:
        raise StoreUnavailable(
            f"tracking.uri: no MLflow tracking server answered at {redact_uri(uri)} "
            f"within {timeout_s:g} s (tracking.timeout_s)"
        ) from None
    if response.status_code != 200:
        raise StoreUnavailable(
            f"tracking.uri: {redact_uri(uri)} answered HTTP {response.status_code}, "
            "not an MLflow tracking server"
        )


def _check_database(uri: str, timeout_s: float) -> None:
    import sqlalchemy

    args = {"connect_timeout": max(1, int(timeout_s))} if uri.startswith("postgresql") else {}
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=args)
        with engine.connect():
            pass
    except Exception as error:  # driver errors vary; all mean "cannot log here"
        raise StoreUnavailable(
            f"tracking.uri: cannot connect to {redact_uri(uri)}: {first_line(error)}"
        ) from None


def redact_uri(uri: str) -> str:
    """Hide a password in user:password@host."""
    scheme, sep, rest = uri.partition("://")
    if "@" in rest:
        credentials, _, host = rest.rpartition("@")
        user = credentials.split(":")[0]
        return f"{scheme}{sep}{user}:***@{host}"
    return uri
