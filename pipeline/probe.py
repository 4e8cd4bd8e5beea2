"""The dead-unit probe: a plain forward pass over the training inputs.

A hidden unit is dead when its activation's derivative is zero at its pre-activation
for every input; only ReLU units can be dead. tanh and sigmoid units can only be
saturated (derivative below a tolerance everywhere), which is reported apart.
Everything works on stacked weights with a leading member axis, so one call
probes one run or ten thousand.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline import schema
from pipeline.forward import ACTIVATIONS, layer_outputs


@dataclass(frozen=True)
class ProbeResult:
    """Masks with a leading member axis: dead[l] and saturated[l] are (members, units of layer l)."""

    dead: list[np.ndarray]
    saturated: list[np.ndarray]
    output_dead: np.ndarray  # (members,) bool: every output unit dead

    @property
    def members(self) -> int:
        return len(self.output_dead)

    @property
    def hidden_units(self) -> int:
        return sum(mask.shape[1] for mask in self.dead)

    def dead_units(self) -> np.ndarray:
        return sum(mask.sum(axis=1) for mask in self.dead)

    def saturated_units(self) -> np.ndarray:
        return sum(mask.sum(axis=1) for mask in self.saturated)

    def collapsed(self) -> np.ndarray:
        """Some hidden layer is entirely dead, so the network's output is constant."""
        return np.any(np.stack([mask.all(axis=1) for mask in self.dead]), axis=0)

    def metrics(self, stage: str) -> list[dict[str, float]]:
        """The logged metrics of every member at one stage ('init' or 'final')."""
        dead = self.dead_units()
        columns = {
            schema.dead_units(stage): dead,
            schema.dead_fraction(stage): dead / self.hidden_units,
            schema.saturated_units(stage): self.saturated_units(),
            schema.output_dead(stage): self.output_dead,
            schema.collapsed(stage): self.collapsed(),
        }
        for layer, mask in enumerate(self.dead, start=1):
            columns[schema.layer_dead_units(stage, layer)] = mask.sum(axis=1)
        names = list(columns)
        rows = np.column_stack([np.asarray(c, np.float64) for c in columns.values()]).tolist()
        return [dict(zip(names, row, strict=True)) for row in rows]


def probe(
    weights: list[tuple[np.ndarray, np.ndarray]],
    x: np.ndarray,
    activation: str,
    output_activation: str,
    saturation_tol: float,
) -> ProbeResult:
    """Probe stacked weights [(kernel (M, in, out), bias (M, out)), ...] on inputs x (n, in)."""
    return probe_outputs(
        layer_outputs(weights, x, activation), activation, output_activation, saturation_tol
    )


def probe_outputs(
    outputs: list[np.ndarray], activation: str, output_activation: str, saturation_tol: float
) -> ProbeResult:
    """Probe the pre-activations `forward.layer_outputs` computed."""
    dead, saturated = [], []
    *hidden, output = outputs
    for z in hidden:
        dead.append(_dead(activation, z))
        saturated.append(_saturated(activation, z, saturation_tol))
    output_dead = _dead(output_activation, output).all(axis=1)
    return ProbeResult(dead, saturated, output_dead)


def _dead(name: str, z: np.ndarray) -> np.ndarray:
    if ACTIVATIONS[name].can_die:
        return (z <= 0.0).all(axis=1)  # Keras's ReLU gradient at exactly 0 is 0
    return np.zeros(z.shape[::2], dtype=bool)


def _saturated(name: str, z: np.ndarray, tol: float) -> np.ndarray:
    if (derivative := ACTIVATIONS[name].derivative) is not None:
        return (derivative(z) < tol).all(axis=1)
    return np.zeros(z.shape[::2], dtype=bool)
