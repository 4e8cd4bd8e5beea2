"""deadunits pipeline: config -> network -> dead-unit probe -> training -> MLflow.

Importing this package is cheap: TensorFlow is imported only by the engines.
"""

import os

# TensorFlow's C++ start-up chatter (CUDA probes, CPU features) is noise for a CPU sweep.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
