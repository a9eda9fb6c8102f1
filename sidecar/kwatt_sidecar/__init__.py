"""The kwatt sidecar: measures and limits the trainer's GPUs, profiles, advises, reports.

It runs next to the trainer in every run's Pod (a native sidecar). The decisions
are kwatt_core.run's; this package reads the GPU (NVML or the sandbox's
simulated GPU), serves the trainer's localhost protocol and /metrics, restores
the default power limits, and writes the run report to the termination message.
Start it with `python -m kwatt_sidecar`; it is configured from the environment.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
