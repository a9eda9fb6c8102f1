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
# Carbon-aware limits (spec.objective.carbon, docs/carbon.md); no KWATT_CARBON_SOURCE: off
ENV_CARBON_SOURCE = "KWATT_CARBON_SOURCE"  # uk | electricitymaps | watttime | file | csv
ENV_CARBON_URL = "KWATT_CARBON_URL"  # the provider's endpoint (WattTime: its base URL)
ENV_CARBON_ZONE = "KWATT_CARBON_ZONE"  # UK region id, ElectricityMaps zone, WattTime region
ENV_CARBON_FILE = "KWATT_CARBON_FILE"  # file and csv sources: the mounted ConfigMap key
ENV_CARBON_SECRET_DIR = "KWATT_CARBON_SECRET_DIR"  # the mounted Secret (token, username, password)
ENV_CARBON_INTERVAL = "KWATT_CARBON_INTERVAL_S"  # seconds between decisions
ENV_CARBON_FORECAST = "KWATT_CARBON_FORECAST"  # last | daily
ENV_CARBON_MAX_AGE = "KWATT_CARBON_MAX_AGE_S"  # older readings are refused
ENV_CARBON_REFERENCE = "KWATT_CARBON_REFERENCE_G"  # fixed reference intensity, g CO2/kWh
ENV_CARBON_TIMEOUT = "KWATT_CARBON_TIMEOUT_S"  # an HTTP source's time to answer
ENV_CARBON_PROFILE = "KWATT_CARBON_PROFILE"  # cached curve: [[limit W, J/step, s/step], ...]
CARBON_SECRET_DIR = "/var/run/secrets/kwatt-carbon"  # where the operator mounts the Secret
CARBON_CONFIG_DIR = "/var/run/kwatt-carbon"  # where it mounts the ConfigMap
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
