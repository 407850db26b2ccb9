"""The `predict` pipeline logged as an MLflow model at the end of a train run, and registered.

kedro-mlflow's `KedroPipelineModel` is the model: it runs the inference pipeline as the registry builds
it (`predict`: validation, normalisation, the fold models, the ensemble, the decoding) on the rulings it
is given, with every other input of that pipeline (fold models, vocabulary, class table, decoding rule,
parameters) stored in the model as artifacts. Whatever the inference pipeline comes to need, as long as
the train run writes it to a persisted catalog dataset, goes into the model the same way.

It is logged by a hook rather than by registering the train pipeline through `pipeline_ml_factory`,
because the factory fixes the model's class and its logging arguments when the pipelines are built,
before the run's parameters are known: here the model answers bad input with the pipeline's one-line
error (MLflow answers anything but its own exceptions with a generic message), and whether to log it
and the registered name are parameters (`serving`), which `--params` can set.
"""

from __future__ import annotations

import importlib.metadata
import logging
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from kedro.framework.hooks import hook_impl
from kedro.framework.project import pipelines
from kedro.io import DataCatalog
from kedro.pipeline import Pipeline
from kedro_mlflow.mlflow import KedroPipelineModel
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, Schema

import sentence_reduction
from sentence_reduction.input_errors import find_input_error

logger = logging.getLogger(__name__)

INFERENCE_PIPELINE = "predict"
# The inference pipeline's input that the model's user gives: the rulings, as `RulingsDataset` reads them.
RULINGS_INPUT = "test_raw"


class RulingsPipelineModel(KedroPipelineModel):
    """The inference pipeline as an MLflow model: ``id, fact`` rows in, ``id, label`` (months) out."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        try:
            return super().predict(context, rulings_table(model_input), params)
        except Exception as error:
            input_error = find_input_error(error)
            if input_error is None:
                raise
            # An MlflowException's message is what the server answers (HTTP 400) and the CLI prints.
            raise MlflowException(str(input_error), error_code=INVALID_PARAMETER_VALUE) from None


def rulings_table(model_input: pd.DataFrame) -> pd.DataFrame:
    """The rulings as `RulingsDataset` reads a file: every field text, an empty one "", names stripped
    (MLflow parses a CSV or JSON request with inferred types and NaN for an empty field)."""
    table = pd.DataFrame(model_input)
    table = table.astype(object).where(table.notna(), "").astype(str)
    table.columns = [str(column).strip() for column in table.columns]
    return table


class InferenceModelHooks:
    """At the end of a run that wrote every artifact of the inference pipeline (a train run), logs that
    pipeline as a model in the run and registers it, as `conf/base/parameters_serving.yml` says."""

    def __init__(self) -> None:
        self._serving: dict[str, Any] = {}

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        self._serving = context.params.get("serving", {})

    @hook_impl(tryfirst=True)  # before kedro-mlflow's hook ends the run
    def after_pipeline_run(self, pipeline: Pipeline, catalog: DataCatalog) -> None:
        if not self._serving.get("log_model") or mlflow.active_run() is None:
            return
        inference = pipelines[INFERENCE_PIPELINE]
        if not model_artifacts(inference) <= pipeline.all_outputs():
            return  # not a train run (data, predict, or a part of train): the model's artifacts are not new
        model_info = log_inference_model(
            inference, catalog, self._serving["model_name"], self._serving["registered_model_name"]
        )
        logger.info(
            "Logged the %s pipeline as the MLflow model %s, registered as '%s' version %s",
            INFERENCE_PIPELINE,
            model_info.model_uri,
            self._serving["registered_model_name"],
            model_info.registered_model_version,
        )


def model_artifacts(inference: Pipeline) -> set[str]:
    """The datasets the model carries: the inference pipeline's inputs but the rulings and parameters."""
    return {name for name in inference.inputs() if name != RULINGS_INPUT and not name.startswith("params:")}


def log_inference_model(
    inference: Pipeline, catalog: DataCatalog, name: str, registered_model_name: str
) -> mlflow.models.model.ModelInfo:
    """Log ``inference`` with its artifacts from ``catalog`` as the model ``name`` of the active run,
    registered as ``registered_model_name``."""
    model = RulingsPipelineModel(pipeline=inference, catalog=catalog, input_name=RULINGS_INPUT)
    inputs = _input_columns(catalog.load("params:columns"))
    rulings = catalog.load(RULINGS_INPUT)
    with tempfile.TemporaryDirectory() as parameters_folder:
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=model,
            artifacts=model.extract_pipeline_artifacts(parameters_saving_folder=Path(parameters_folder)),
            signature=_signature(inputs),
            # Two rulings of the run's test file, the columns the model reads (a JSON-lines file has more):
            # MLflow checks that the model answers them, and stores a ready request
            # (serving_input_example.json) with the model.
            input_example=rulings[[column for column in inputs if column in rulings.columns]].head(2),
            # The package goes with the model, so that it loads with the code it was trained with.
            code_paths=[str(Path(sentence_reduction.__file__).parent)],
            pip_requirements=_requirements(),
            registered_model_name=registered_model_name,
        )


def _requirements() -> list[str]:
    """The project's dependencies (pyproject.toml) and the torch it runs with (installed apart, see the
    Makefile; without a local build tag such as +cpu). MLflow's own inference of them misses what the
    pickled pipeline imports, and names this package, which is on no index: it goes with the model as code."""
    dependencies = [
        requirement
        for requirement in importlib.metadata.requires("sentence_reduction") or []
        if "extra ==" not in requirement
    ]
    return [f"torch=={importlib.metadata.version('torch').split('+')[0]}", *dependencies]


def _input_columns(columns: dict[str, Any]) -> list[str]:
    """The columns the model reads: the id (unless the rows are numbered) and the text."""
    return [column for column in (columns.get("id"), columns["text"]) if column]


def _signature(inputs: list[str]) -> ModelSignature:
    # Optional columns: a missing one is reported by the pipeline's validation, as for a file.
    return ModelSignature(
        inputs=Schema([ColSpec("string", column, required=False) for column in inputs]),
        outputs=Schema([ColSpec("string", "id"), ColSpec("long", "label")]),
    )
