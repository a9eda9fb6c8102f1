"""The energy-time cost that every kwatt decision minimises (Zeus, NSDI '23, eq. 2).

cost = eta * weight * energy + (1 - eta) * MaxPower * time

MaxPower is the highest power limit times the number of GPUs of the run: it only
turns seconds into joules, so it must count every GPU (upstream's single-GPU
slip under data parallelism is avoided here). `weight` scales the energy term
and is 1 by default; the carbon-aware objective sets it from the grid's
intensity at the time of the run.
"""

from __future__ import annotations

from dataclasses import dataclass


class CostModelError(ValueError):
    """A cost-model parameter is out of range."""


@dataclass(frozen=True)
class CostModel:
    """Zeus's energy-time cost with a hook for a time-varying energy weight."""

    eta: float
    max_power_w: float
    energy_weight: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.eta <= 1.0:
            raise CostModelError(f"eta must be between 0 and 1, got {self.eta}.")
        if not self.max_power_w > 0.0:
            raise CostModelError(f"max_power_w must be positive, got {self.max_power_w}.")
        if self.energy_weight < 0.0:
            raise CostModelError(f"energy_weight must not be negative, got {self.energy_weight}.")

    @classmethod
    def for_gpus(cls, eta: float, max_limit_w: float, gpu_count: int) -> CostModel:
        """Cost model of a run on `gpu_count` GPUs whose highest limit is `max_limit_w`."""
        if gpu_count < 1:
            raise CostModelError(f"gpu_count must be at least 1, got {gpu_count}.")
        return cls(eta=eta, max_power_w=max_limit_w * gpu_count)

    def with_weight(self, energy_weight: float) -> CostModel:
        """The same model with another energy weight (e.g. from carbon intensity)."""
        return CostModel(self.eta, self.max_power_w, energy_weight)

    def cost(self, energy_j: float, time_s: float) -> float:
        """Cost in joule-equivalents of spending `energy_j` over `time_s`."""
        return (
            self.eta * self.energy_weight * energy_j + (1.0 - self.eta) * self.max_power_w * time_s
        )
