"""MLflow tracking of the folds: a nested run per transformer candidate and fold (named
``<candidate>.fold_<n>``) under the run kedro-mlflow opens per `kedro run`; and of each candidate's
pretraining (``<candidate>.pretraining``), the same way.

The fold's Trainer logs its arguments, model config and metric histories into the nested run through
transformers' MLflow callback (rank 0 only when several processes train); this hook opens and closes
that run around the fold's node, adds what the Trainer does not know (candidate, fold, seed, data hash,
code version, the fold's held-out metrics), and logs into the parent run every candidate's and the
ensemble's out-of-fold metrics (each ``<name>_metrics`` output, as ``<name>_final_score`` ...) and the
DeepSpeed config each candidate's folds train with.
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
from sentence_reduction.pipelines.node_tags import FOLD_TRAINING, PRETRAINING

_TIMINGS = {"runtime", "samples_per_second", "steps_per_second", "epoch"}
# A candidate's (or the ensemble's) out-of-fold metrics: the output <name>_metrics, logged as <name>_*.
_METRICS_SUFFIX = "_metrics"
_DEEPSPEED_CONFIG = ".deepspeed_config"  # each candidate's <candidate>.deepspeed_config


class FoldTrackingHooks:
    """Opens a nested MLflow run named after the fold for each fold's training node, and one named after
    the candidate for each pretraining node."""

    def __init__(self) -> None:
        self._fold_runs: dict[str, mlflow.ActiveRun] = {}
        self._log_model_weights = False

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        self._log_model_weights = bool(context.params.get("tracking", {}).get("log_model_weights", False))

    @hook_impl
    def before_node_run(self, node: Node, inputs: dict[str, Any]) -> None:
        if mlflow.active_run() is None:
            return
        if PRETRAINING in node.tags:
            self._fold_runs[node.name] = mlflow.start_run(run_name=f"{node.namespace}.pretraining", nested=True)
            mlflow.log_params({"candidate": node.namespace, "code_version": _code_version()})
            return
        if FOLD_TRAINING not in node.tags:
            return
        assert node.namespace is not None  # a fold's node is namespaced <candidate>.fold_<n>
        candidate, fold = node.namespace.rsplit(".", 1)
        run = mlflow.start_run(run_name=node.namespace, nested=True)
        self._fold_runs[node.name] = run
        training = inputs[f"{candidate}.training"]
        mlflow.log_params(
            {
                "candidate": candidate,
                "fold": fold.removeprefix("fold_"),
                "seed": training["arguments"].get("seed"),
                "data_sha256": _data_hash(inputs["model_input_table"]),
                "code_version": _code_version(),
            }
        )

    @hook_impl
    def after_node_run(self, node: Node, outputs: dict[str, Any]) -> None:
        run = self._fold_runs.pop(node.name, None)
        if run is not None and PRETRAINING in node.tags:
            mlflow.end_run()  # the Trainer logged its arguments, config and loss histories into it
            return
        if run is not None:
            metrics = outputs[f"{node.namespace}.metrics"]
            # The fold's held-out metrics (oof_final_score...).
            mlflow.log_metrics(
                {f"oof_{name}": value for name, value in metrics.items() if _is_number(value) and name not in _TIMINGS}
            )
            if self._log_model_weights:  # gigabytes for the real model: only when asked
                mlflow.log_artifacts(str(outputs[f"{node.namespace}.model"].folder), artifact_path="model")
            mlflow.end_run()
            return
        if mlflow.active_run() is None:
            return
        for name, value in outputs.items():
            if name.endswith(_METRICS_SUFFIX) and "." not in name:
                mlflow.log_metrics(_flat_metrics(value, name.removesuffix(_METRICS_SUFFIX)))
            elif name.endswith(_DEEPSPEED_CONFIG) and value:  # empty without DeepSpeed
                mlflow.log_dict(value, f"{name.removesuffix(_DEEPSPEED_CONFIG)}_deepspeed_config.json")

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
