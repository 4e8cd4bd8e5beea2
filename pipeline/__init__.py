"""deadunits pipeline: config -> network -> dead-unit probe -> training -> MLflow.

Importing this package is cheap: TensorFlow is imported only by the engines.
"""
