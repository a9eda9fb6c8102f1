"""kwatt's pure core: the algorithms that the operator, the sidecar and the simulator share.

Nothing here touches Kubernetes, NVML or the network; numpy is the only dependency,
and every piece of state is a JSON-able value so that it can live in a
TrainingJob's status or a sidecar's report.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
