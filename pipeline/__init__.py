"""deadunits pipeline: config -> network -> dead-unit probe -> training -> MLflow.

Importing this package is cheap: TensorFlow is imported only by the engines, through
`pipeline.numerics`, which fixes its environment here, before anything can import it.
"""

import os

from pipeline import numerics

numerics.set_environment()

# MLflow's telemetry thread calls out to the internet (unreachable here) and, when that fails,
# deletes an environment variable while other threads read the environment: a KeyError race
# that crashed about 1 logging call in 80 against a tracking server.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
