"""MLflow tracking of the folds: a nested run per fold under the run kedro-mlflow opens per `kedro run`.

The fold's Trainer logs its arguments, model config and metric histories into the nested run through
transformers' MLflow callback (rank 0 only when several processes train); this hook opens and closes
that run around the fold's node, adds what the Trainer does not know (fold, seed, data hash, code
version, the fold's held-out metrics), and logs the run-level results and the DeepSpeed config every
fold trains with into the parent run.
"""

from __future__ import annotations

import hashlib
import subprocess
from typing import Any

import mlflow
import pandas as pd
from kedro.framework.hooks import hook_impl
from kedro.pipeline import Node
from mlflow.entities import RunStatus

from sentence_reduction import __version__

FOLD_TRAINING_TAG = "fold_training"
_TIMINGS = {"runtime", "samples_per_second", "steps_per_second", "epoch"}
# Node -> (its metrics output, the prefix of those metrics in the parent run): one per candidate, and
# the ensemble's own out-of-fold estimate (ensemble_final_score ...).
_PARENT_RESULTS = {
    "evaluate_out_of_fold": ("oof_metrics", "oof"),
    "evaluate_baseline": ("baseline_metrics", "baseline"),
    "evaluate_feature_model": ("features_metrics", "features"),
    "evaluate_regression": ("regression_metrics", "regression"),
    "choose_ensemble": ("ensemble_metrics", "ensemble"),
}
_DEEPSPEED_CONFIG = "deepspeed_config"  # the run-level dataset (pipelines/train/pipeline.py)


class FoldTrackingHooks:
    """Opens a nested MLflow run named after the fold for each fold's training node."""

    def __init__(self) -> None:
        self._fold_runs: dict[str, mlflow.ActiveRun] = {}
        self._log_model_weights = False

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        self._log_model_weights = bool(context.params.get("tracking", {}).get("log_model_weights", False))

    @hook_impl
    def before_node_run(self, node: Node, inputs: dict[str, Any]) -> None:
        if FOLD_TRAINING_TAG not in node.tags or mlflow.active_run() is None:
            return
        run = mlflow.start_run(run_name=node.namespace, nested=True)
        self._fold_runs[node.name] = run
        training = inputs.get("params:training", {})
        mlflow.log_params(
            {
                "fold": node.namespace.removeprefix("fold_"),
                "seed": training.get("arguments", {}).get("seed"),
                "data_sha256": _data_hash(inputs["model_input_table"]),
                "code_version": _code_version(),
            }
        )

    @hook_impl
    def after_node_run(self, node: Node, outputs: dict[str, Any]) -> None:
        run = self._fold_runs.pop(node.name, None)
        if run is not None:
            metrics = outputs[f"{node.namespace}.metrics"]
            # The fold's held-out metrics, named like the parent's out-of-fold ones (oof_final_score...).
            mlflow.log_metrics(
                {f"oof_{name}": value for name, value in metrics.items() if _is_number(value) and name not in _TIMINGS}
            )
            if self._log_model_weights:  # gigabytes for the real model: only when asked
                mlflow.log_artifacts(str(outputs[f"{node.namespace}.model"].folder), artifact_path="model")
            mlflow.end_run()
        elif node.name in _PARENT_RESULTS and mlflow.active_run() is not None:
            output, prefix = _PARENT_RESULTS[node.name]
            mlflow.log_metrics(_flat_metrics(outputs[output], prefix))
        elif outputs.get(_DEEPSPEED_CONFIG) and mlflow.active_run() is not None:  # empty without DeepSpeed
            mlflow.log_dict(outputs[_DEEPSPEED_CONFIG], "deepspeed_config.json")

    @hook_impl
    def on_node_error(self, error: Exception, node: Node) -> None:
        run = self._fold_runs.pop(node.name, None)
        if run is not None:
            mlflow.set_tag("error", " ".join(f"{type(error).__name__}: {error}".split())[:5000])
            mlflow.end_run(status=RunStatus.to_string(RunStatus.FAILED))


def _flat_metrics(values: dict[str, Any], prefix: str) -> dict[str, float]:
    flat: dict[str, float] = {}
    for name, value in values.items():
        key = f"{prefix}_{name}"
        if isinstance(value, dict):
            flat.update(_flat_metrics(value, key))
        elif _is_number(value):
            flat[key] = float(value)
    return flat


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _data_hash(table: pd.DataFrame) -> str:
    """A hash of the training table's content, to tell runs on different data apart."""
    row_hashes = pd.util.hash_pandas_object(table, index=False).to_numpy()
    return hashlib.sha256(row_hashes.tobytes()).hexdigest()[:16]


def _code_version() -> str:
    """The git commit (with ``-dirty`` for local changes), or the package version outside git."""
    try:
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return __version__
    return commit or __version__
