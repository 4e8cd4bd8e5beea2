"""deadunits analysis: MLflow runs -> pandas -> aggregates and theory -> report."""
