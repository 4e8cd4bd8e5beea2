"""Where runs are stored: one absolute tracking URI, whoever launches from wherever."""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DB = PROJECT_ROOT / "mlflow.db"


# Database stores the bulk writer writes (`pipeline.bulk`), named here so that checking a
# config does not import it (SQLAlchemy and MLflow's table models).
BULK_DIALECTS = ("sqlite", "postgresql")


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


# Tracking URI schemes deadunits logs to; MLflow knows a few more (Databricks) we do not test.
SUPPORTED_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "file")


def uri_scheme(uri: str) -> str:
    """The URI's scheme without its driver: postgresql+psycopg2://... -> postgresql."""
    return uri.partition("://")[0].partition("+")[0].lower() if "://" in uri else ""


def check_store(uri: str, timeout_s: float) -> None:
    """Fail fast, before any training, when runs could not be logged to `uri`.

    Reads only: nothing is created or changed on disk, whatever the answer.
    """
    scheme = uri_scheme(uri)
    if scheme not in SUPPORTED_SCHEMES:
        raise StoreUnavailable(
            f"tracking.uri: unsupported scheme {scheme or '(none)'!r} in {redact_uri(uri)}; "
            f"expected one of {', '.join(SUPPORTED_SCHEMES)}"
        )
    if db := sqlite_path(uri):
        _check_writable_dir(db.parent, uri)
        _check_sqlite_file(db)
    elif scheme in ("http", "https"):
        _check_server(uri, timeout_s)
    elif scheme == "file":
        _check_writable_dir(Path(uri[len("file://") :]), uri)
    else:
        _check_database(uri, timeout_s)


def _check_writable_dir(directory: Path, uri: str) -> None:
    if not directory.is_dir():
        reason = "is not a directory" if directory.exists() else "does not exist"
        raise StoreUnavailable(f"tracking.uri: cannot write a store at {uri}: {directory} {reason}")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StoreUnavailable(
            f"tracking.uri: cannot write a store at {uri}: the directory {directory} "
            "is not writable (permissions or a read-only file system)"
        )


def _check_sqlite_file(db: Path) -> None:
    """An existing file must be an MLflow store we can write; it is opened read-only."""
    if not db.exists():
        return
    if not db.is_file() or not os.access(db, os.R_OK | os.W_OK):
        raise StoreUnavailable(f"tracking.uri: the SQLite store {db} is not a writable file")
    try:
        with closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as connection:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    except sqlite3.Error as error:
        raise StoreUnavailable(
            f"tracking.uri: {db} is not an SQLite database ({first_line(error)})"
        ) from None
    if tables and "alembic_version" not in tables:
        raise StoreUnavailable(
            f"tracking.uri: {db} is an SQLite database but not an MLflow tracking store; "
            "choose a new file or an existing MLflow store"
        )


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
