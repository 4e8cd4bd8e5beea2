"""Garbage collection while a deadunits process starts.

A process first imports Hydra, MLflow and TensorFlow, which make objects that live as long
as it does. Collecting meanwhile walked them again and again: 2.0 s of CPU before a
10,000-run sweep's first job trained, 0.7 s in its writer process. So the collector is off
while a process starts (`starting`), and `started` collects once, sets what is left aside
for good (gc.freeze: later collections skip it) and turns the collector back on.
"""

from __future__ import annotations

import gc
from functools import cache


def starting() -> None:
    gc.disable()


@cache
def started() -> None:
    gc.collect()
    gc.freeze()
    gc.enable()
