"""deadunits analysis: MLflow runs -> pandas -> aggregates and theory -> report."""

import os

# MLflow's telemetry thread calls out to the internet (unreachable here) and, when that fails,
# deletes an environment variable while other threads read the environment: a KeyError race
# that crashed about 1 logging call in 80 against a tracking server.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
