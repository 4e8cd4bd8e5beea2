"""The one error the analysis raises on purpose: bad input that the user can fix."""


class AnalysisError(Exception):
    """A clear one-line problem (unknown experiment, no runs, ...); the CLI prints it."""
