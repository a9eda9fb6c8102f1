"""Names shared by the operator, the sidecar and the client: one source of truth.

The operator sets these environment variables on the injected sidecar (and the
batch size, the port and the target metric's name on the trainer); the sidecar and
the client read them. Changing a name here changes it everywhere.
"""

from __future__ import annotations

# Operator -> sidecar
ENV_RUN = "KWATT_RUN"  # run number of this TrainingJob
ENV_JOB = "KWATT_JOB"  # namespace/name of the TrainingJob
ENV_BATCH_SIZE = "KWATT_BATCH_SIZE"  # the batch size chosen for this run
ENV_ETA = "KWATT_ETA"
ENV_BETA = "KWATT_BETA"
ENV_COST_THRESHOLD = "KWATT_COST_THRESHOLD"  # early-stop threshold (cost units); absent: none
ENV_TARGET_METRIC = "KWATT_TARGET_METRIC"  # target value of the validation metric
ENV_TARGET_HIGHER = "KWATT_TARGET_HIGHER_IS_BETTER"  # "true" / "false"
ENV_MAX_EPOCHS = "KWATT_MAX_EPOCHS"
ENV_POWER_MODE = "KWATT_POWER_MODE"  # optimize | observe | fixed
ENV_FIXED_LIMIT = "KWATT_FIXED_LIMIT_W"  # with mode fixed
ENV_CACHED_LIMIT = "KWATT_CACHED_LIMIT_W"  # optimum already known for this batch size: no profiling
ENV_WARMUP_STEPS = "KWATT_WARMUP_STEPS"
ENV_MEASURE_STEPS = "KWATT_MEASURE_STEPS"
ENV_PORT = "KWATT_PORT"  # localhost port of the sidecar's protocol server
ENV_METRICS_PORT = "KWATT_METRICS_PORT"  # port of /metrics
ENV_GPU_BACKEND = "KWATT_GPU_BACKEND"  # nvml (default) | simulated
ENV_TERMINATION_PATH = "KWATT_TERMINATION_PATH"  # default /dev/termination-log
ENV_STATE_DIR = "KWATT_STATE_DIR"  # node directory (hostPath) of per-GPU restore records
ENV_SIM_GPU_DIR = "KWATT_SIM_GPU_DIR"  # simulated GPUs only: the node's device directory
ENV_SAMPLE_INTERVAL = "KWATT_SAMPLE_INTERVAL_S"  # power sampling where no energy counter exists
ENV_LOG_LEVEL = "KWATT_LOG_LEVEL"  # INFO (default) | DEBUG | WARNING
# Downward API on the sidecar: labels of /metrics, join-able with DCGM and Kepler
ENV_POD_NAME = "POD_NAME"
ENV_POD_NAMESPACE = "POD_NAMESPACE"

# Operator -> trainer (the name of the batch-size variable is the user's choice;
# this is its default)
DEFAULT_BATCH_SIZE_ENV = "KWATT_BATCH_SIZE"
# spec.target.metric as the user wrote it: the name the framework callbacks look up
# (the sidecar never needs it: the trainer sends the metric's value, not its name)
ENV_TARGET_METRIC_NAME = "KWATT_TARGET_METRIC_NAME"

DEFAULT_PORT = 8931
DEFAULT_METRICS_PORT = 8932
DEFAULT_TERMINATION_PATH = "/dev/termination-log"
DEFAULT_STATE_DIR = "/var/run/kwatt"
SIDECAR_CONTAINER = "kwatt-sidecar"
