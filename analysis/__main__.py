"""python -m analysis --experiment NAME [--sweep ID] [--tracking-uri URI] [--out DIR]"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_EXPERIMENT = "deadunits"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Report on dead units from the runs the pipeline logged to MLflow.",
    )
    parser.add_argument(
        "--experiment", default=DEFAULT_EXPERIMENT, help="MLflow experiment (default: %(default)s)"
    )
    parser.add_argument("--sweep", default=None, help="only the runs of this sweep_id")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else mlflow.db at the project root)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: reports/<experiment>)"
    )
    parser.add_argument(
        "--history-runs",
        type=int,
        default=50,
        help="runs per group and dead/alive status whose loss history is read (default: 50)",
    )
    parser.add_argument(
        "--no-log", action="store_true", help="do not log the report as an MLflow run"
    )
    args = parser.parse_args(argv)
    if args.history_runs < 1:
        parser.error("--history-runs must be at least 1")
    return args


def check_tracking_uri(tracking_uri: str | None) -> str | None:
    """The one-line error for a store that cannot be opened, as the pipeline gives it."""
    from omegaconf import OmegaConf

    from pipeline.store import PROJECT_ROOT, StoreUnavailable, check_store, resolve_tracking_uri

    timeout_s = OmegaConf.load(PROJECT_ROOT / "conf" / "tracking" / "default.yaml").timeout_s
    try:
        check_store(resolve_tracking_uri(tracking_uri), timeout_s)
    except StoreUnavailable as error:
        return str(error)
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out if args.out is not None else Path("reports") / args.experiment
    if problem := check_tracking_uri(args.tracking_uri):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    # Heavy imports (mlflow, pandas, matplotlib) only after the arguments are known good.
    from mlflow.exceptions import MlflowException

    from analysis.errors import AnalysisError
    from analysis.report import write_report

    try:
        output = write_report(
            args.experiment,
            out,
            sweep_id=args.sweep,
            tracking_uri=args.tracking_uri,
            log_to_mlflow=not args.no_log,
            history_per_cell=args.history_runs,
        )
    except AnalysisError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except MlflowException as error:
        print(f"error: MLflow: {error.message.splitlines()[0]}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    results = output.results
    print(f"report: {output.html} ({len(results.loaded.frame)} runs, {len(results.death)} groups)")
    if output.run_id:
        print(f"logged as MLflow run {output.run_id} (run name 'report')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
