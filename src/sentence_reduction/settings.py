"""Project settings: Kedro defaults except where noted."""

from kedro.config import OmegaConfigLoader

from sentence_reduction.config_environment import ConfigEnvironmentHooks

# Kedro reads CONFIG_LOADER_ARGS here; the benchmarks read conf/ with the same arguments.
from sentence_reduction.config_loading import CONFIG_LOADER_ARGS as CONFIG_LOADER_ARGS
from sentence_reduction.run_lock import RunLockHooks
from sentence_reduction.run_recovery import KilledRunRecoveryHooks
from sentence_reduction.serving import InferenceModelHooks
from sentence_reduction.tracking import FoldTrackingHooks

CONFIG_LOADER_CLASS = OmegaConfigLoader

# RunLockHooks: one `kedro run` at a time in the project folder, and the MLflow store created without
# racing (its hooks run first and last around kedro-mlflow's: see run_lock.py).
HOOKS = (
    ConfigEnvironmentHooks(),
    RunLockHooks(),
    FoldTrackingHooks(),
    KilledRunRecoveryHooks(),
    InferenceModelHooks(),
)
