"""Simulated GPUs for the sandbox's GPU nodes: devices, their provider and a trace-driven trainer.

This is a simulation for tests and demos. A device is a small JSON file whose
power and speed follow the Zeus traces; the sidecar reads and limits it through
the same interface as NVML, and the simulated trainer advances its clock.
"""
