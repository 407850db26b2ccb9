"""The `predict` pipeline logged as an MLflow model at the end of a train run, checked, and registered.

The model is the inference pipeline as the registry builds it (`predict`: validation, normalisation, the
candidates' models, the ensemble, the decoding), with every other input of that pipeline (fold models,
vocabularies, class table, decoding rule, parameters) stored in it as artifacts: whatever the inference
pipeline comes to need, as long as the train run writes it to a persisted catalog dataset, goes into the
model the same way (kedro-mlflow's `KedroPipelineModel` collects them).

Served, it loads those artifacts once (a saved fold model into memory, `SavedModel.in_memory`) and
answers a request by calling the pipeline's node functions in order on the rulings, in-process: the same
functions `kedro run --pipelines=predict` runs, without a Kedro runner, a catalog copy or their logging
per request. A request is checked first (`RequestLimits`); bad input gets HTTP 400 with the pipeline's
one-line error. Each request logs one line.

It is logged by a hook rather than by registering the train pipeline through `pipeline_ml_factory`,
because the factory fixes the model's class and its logging arguments when the pipelines are built,
before the run's parameters are known: whether to log it, its names and its request limits are
parameters (`serving`), which `--params` can set. The logged model is loaded back and must answer its
input example before it is registered; a failed logging (a full disk) leaves no partial model behind
and the run FAILED, with one line.
"""

from __future__ import annotations

import contextvars
import importlib.metadata
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from kedro.framework.hooks import hook_impl
from kedro.framework.project import pipelines
from kedro.io import DataCatalog
from kedro.pipeline import Pipeline
from kedro_mlflow.mlflow import KedroPipelineModel
from mlflow.entities import LoggedModel, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, Schema
from mlflow.types.schema import AnyType
from mlflow.utils.file_utils import local_file_uri_to_path

import sentence_reduction
from sentence_reduction.atomic import disk_full_error, disk_full_reported, free_space, size_on_disk
from sentence_reduction.input_errors import InputDataError, OneLineError, find_input_error
from sentence_reduction.pipelines.train.column_features import shared_features
from sentence_reduction.run_recovery import discard_model, local_path

logger = logging.getLogger(__name__)

INFERENCE_PIPELINE = "predict"
# The inference pipeline's input that the model's user gives: the rulings, as `RulingsDataset` reads them.
RULINGS_INPUT = "test_raw"
REQUEST = "<input>"  # how a request is named in its errors, as the pipeline's validation names it
# Per request, the node runner's "Running node" lines are dropped (the model logs one line instead).
_SERVING = contextvars.ContextVar("serving", default=False)
_MARGIN = 4 * 1024 * 1024  # beyond the model's files: MLflow's own (MLmodel, requirements) and the store's rows


@dataclass(frozen=True)
class RequestLimits:
    """What one request may hold (`serving.max_rows`, `serving.max_text_chars`)."""

    max_rows: int
    max_text_chars: int

    @classmethod
    def from_params(cls, serving: dict[str, Any]) -> RequestLimits:
        return cls(max_rows=int(serving["max_rows"]), max_text_chars=int(serving["max_text_chars"]))


class InferenceModelError(OneLineError):
    """The inference model could not be logged, or does not answer: it is not registered."""


class RulingsPipelineModel(KedroPipelineModel):
    """The inference pipeline as an MLflow model: ``id, fact`` rows in, ``id, label`` (months) out."""

    def __init__(
        self,
        pipeline: Pipeline,
        catalog: DataCatalog,
        input_name: str,
        text_column: str,
        limits: RequestLimits,
        torch_threads: int,
        warm_up_rulings: pd.DataFrame | None = None,
    ):
        super().__init__(pipeline=pipeline, catalog=catalog, input_name=input_name)
        self.text_column = text_column
        self.limits = limits
        self.torch_threads = torch_threads
        self.warm_up_rulings = warm_up_rulings

    def load_context(self, context: Any) -> None:
        """Every artifact read once, and held in memory as the nodes take it (a saved model loaded); then
        ``warm_up_rulings`` answered once, so that what the models build at their first call (the trees'
        node tables, the features' fingerprints) is not built during the first request."""
        super().load_context(context)
        # The server answers one request at a time: torch's threads beyond this contend for the cores with
        # each other and with the other candidates (serving.torch_threads).
        torch.set_num_threads(self.torch_threads)
        self._inputs = {name: _in_memory(self.loaded_catalog.load(name)) for name in context.artifacts}
        logging.getLogger("kedro.pipeline.node").addFilter(_not_while_serving)
        # One line per request, this model's (with its timing), in place of the server's access line.
        logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
        if not logger.isEnabledFor(logging.INFO):  # a server configures no logging of its models
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False
        if self.warm_up_rulings is not None:
            started = time.perf_counter()
            self._answer(checked_rulings(self.warm_up_rulings, self.text_column, self.limits), None)
            logger.info(
                "model loaded, warmed up on %d rulings in %.0f ms", len(self.warm_up_rulings), _milliseconds(started)
            )

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        started = time.perf_counter()
        rows = len(model_input)
        try:
            answer = self._answer(checked_rulings(model_input, self.text_column, self.limits), params)
        except Exception as error:
            input_error = find_input_error(error)
            logger.info("%d rows refused in %.0f ms: %s", rows, _milliseconds(started), input_error or repr(error))
            if input_error is None:
                raise
            # An MlflowException's message is what the server answers (HTTP 400) and the CLI prints.
            raise MlflowException(str(input_error), error_code=INVALID_PARAMETER_VALUE) from None
        logger.info("%d rulings answered in %.0f ms", rows, _milliseconds(started))
        return answer

    def _answer(self, rulings: pd.DataFrame, params: dict[str, Any] | None) -> pd.DataFrame:
        """The pipeline's nodes run in order on ``rulings``; each distinct fitted feature transformer of
        the candidates transforms them once (`shared_features`)."""
        data = {**self._inputs, **{f"params:{name}": value for name, value in (params or {}).items()}}
        data[self.input_name] = rulings
        token = _SERVING.set(True)
        try:
            with shared_features():
                for node in self.pipeline.nodes:  # in the order they depend on each other
                    data.update(node.run({name: data[name] for name in node.inputs}))
        finally:
            _SERVING.reset(token)
        return data[self.output_name]


def checked_rulings(model_input: pd.DataFrame, text_column: str, limits: RequestLimits) -> pd.DataFrame:
    """The request's rows as the pipeline reads a rulings file (`rulings_table`), once they are found to
    be rulings: at most ``limits.max_rows`` of them, each text a string (a number or a list is not a
    ruling) of at most ``limits.max_text_chars`` characters, every other field a string or a number."""
    table = pd.DataFrame(model_input)
    if len(table) > limits.max_rows:
        raise InputDataError(
            REQUEST, f"{len(table)} rulings in one request, more than {limits.max_rows} (serving.max_rows): send fewer"
        )
    for column in table.columns:
        is_text = str(column).strip() == text_column
        for row, value in enumerate(table[column].tolist(), start=1):
            if value is None or (isinstance(value, float) and np.isnan(value)):
                continue  # an empty field: the pipeline's validation names it
            if is_text and not isinstance(value, str):
                raise InputDataError(REQUEST, f"not text: {_shown(value)}", row, str(column))
            if not is_text and not isinstance(value, str | int | float | np.integer | np.floating):
                raise InputDataError(REQUEST, f"not text or a number: {_shown(value)}", row, str(column))
            if is_text and len(value) > limits.max_text_chars:
                raise InputDataError(
                    REQUEST,
                    f"{len(value)} characters, more than a ruling may have here "
                    f"({limits.max_text_chars}, serving.max_text_chars)",
                    row,
                    str(column),
                )
    return rulings_table(table)


def rulings_table(model_input: pd.DataFrame) -> pd.DataFrame:
    """The rulings as `RulingsDataset` reads a file: every field text, an empty one "", names stripped
    (MLflow parses a CSV or JSON request with inferred types and NaN for an empty field)."""
    table = pd.DataFrame(model_input)
    table = table.astype(object).where(table.notna(), "").astype(str)
    table.columns = [str(column).strip() for column in table.columns]
    return table


class InferenceModelHooks:
    """At the end of a run that wrote every artifact of the inference pipeline (a train run), logs that
    pipeline as a model in the run, checks that it loads and answers, and registers it, as
    `conf/base/parameters_serving.yml` says."""

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
        try:
            model_info = log_inference_model(inference, catalog, self._serving)
        except Exception as error:
            # kedro-mlflow ends the run only after a successful pipeline: a failure here would leave it RUNNING.
            _end_run_failed()
            if isinstance(error, OneLineError):
                raise
            problem = " ".join(f"{type(error).__name__}: {error}".split())[:300]
            raise InferenceModelError(f"logging the {INFERENCE_PIPELINE} pipeline as a model: {problem}") from error
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
    inference: Pipeline, catalog: DataCatalog, serving: dict[str, Any]
) -> mlflow.models.model.ModelInfo:
    """Log ``inference`` with its artifacts from ``catalog`` as the model ``serving["model_name"]`` of the
    active run; load it back and have it answer its input example; then register it as
    ``serving["registered_model_name"]``. A failure leaves no logged model behind (`InferenceModelError`,
    or `DiskFullError` when the disk filled)."""
    columns = catalog.load("params:columns")
    inputs = _input_columns(columns)
    rulings = catalog.load(RULINGS_INPUT)
    # Two rulings of the run's test file, the columns the model reads (a JSON-lines file has more): MLflow
    # stores a ready request (serving_input_example.json) with the model, and the model must answer them
    # (and answers them once as it loads).
    example = rulings[[column for column in inputs if column in rulings.columns]].head(2)
    model = RulingsPipelineModel(
        pipeline=inference,
        catalog=catalog,
        input_name=RULINGS_INPUT,
        text_column=columns["text"],
        limits=RequestLimits.from_params(serving),
        torch_threads=int(serving["torch_threads"]),
        warm_up_rulings=example,
    )
    client = MlflowClient()
    with tempfile.TemporaryDirectory() as parameters_folder:
        artifacts = model.extract_pipeline_artifacts(parameters_saving_folder=Path(parameters_folder))
        package = Path(sentence_reduction.__file__).parent
        files = [package, *(Path(local_file_uri_to_path(uri)) for uri in artifacts.values())]
        needed = sum(size_on_disk(path) for path in files)
        what = f"logging the MLflow model '{serving['model_name']}'"
        _room_for(what, needed)
        try:
            with disk_full_reported(what, _artifact_folder(), lambda: needed):
                model_info = mlflow.pyfunc.log_model(
                    name=serving["model_name"],
                    python_model=model,
                    artifacts=artifacts,
                    signature=_signature(inputs),
                    input_example=example,
                    # The package goes with the model, so that it loads with the code it was trained with.
                    code_paths=[str(package)],
                    pip_requirements=_requirements(),
                )
        except Exception:
            _discard(client, mlflow.last_logged_model())
            raise
    try:
        answer = mlflow.pyfunc.load_model(model_info.model_uri).predict(example)
        if len(answer) != len(example):
            raise ValueError(f"{len(answer)} answers to {len(example)} rulings")
    except Exception as error:
        _discard(client, client.get_logged_model(model_info.model_id))
        raise InferenceModelError(
            f"the logged MLflow model {model_info.model_uri} does not answer its input example "
            f"({type(error).__name__}: {' '.join(str(error).split())[-300:]}): not registered"
        ) from error
    version = mlflow.register_model(model_info.model_uri, serving["registered_model_name"])
    model_info.registered_model_version = version.version
    return model_info


def _discard(client: MlflowClient, model: LoggedModel | None) -> None:
    """This run's logged model, after a failure: discarded (`discard_model`)."""
    run = mlflow.active_run()
    if model is not None and run is not None and model.source_run_id == run.info.run_id:
        discard_model(client, model)


def _end_run_failed() -> None:
    """The run FAILED, however often kedro-mlflow put it back on the active stack (once per node)."""
    try:
        while mlflow.active_run() is not None:
            mlflow.end_run(status=RunStatus.to_string(RunStatus.FAILED))
    except MlflowException as error:  # the store is full too: the next run marks it KILLED (run_recovery)
        logger.warning("the MLflow run could not be marked FAILED: %s", error.message.splitlines()[0])


def _room_for(what: str, needed: int) -> None:
    """Raise `DiskFullError` before anything is written when a file system lacks the room a model
    needs: the run's artifact folder for the model, and the temporary folder MLflow stages it in."""
    folders = [_artifact_folder(), Path(tempfile.gettempdir())]
    devices = [os.stat(_existing(folder)).st_dev for folder in folders]
    for folder, device in zip(folders, devices, strict=True):
        room = needed * devices.count(device) + _MARGIN
        if free_space(folder) < room:
            raise disk_full_error(what, folder, room)


def _existing(folder: Path) -> Path:
    return next(parent for parent in (folder, *folder.parents) if parent.exists())


def _artifact_folder() -> Path:
    """Where the active run's artifacts are written, when that is a local folder (else the working folder)."""
    return local_path(mlflow.get_artifact_uri()) or Path.cwd()


def _in_memory(artifact: Any) -> Any:
    """An artifact as a served model keeps it: held in memory where it can be (a saved fold model)."""
    in_memory = getattr(artifact, "in_memory", None)
    return in_memory() if callable(in_memory) else artifact


def _not_while_serving(record: logging.LogRecord) -> bool:
    return not _SERVING.get()


def _milliseconds(started: float) -> float:
    return 1000 * (time.perf_counter() - started)


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


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
    # Optional columns of any type: a missing one, an empty one or one that is not text is reported by
    # the model (`checked_rulings`, the pipeline's validation) rather than cast to text by MLflow.
    return ModelSignature(
        inputs=Schema([ColSpec(AnyType(), column, required=False) for column in inputs]),
        outputs=Schema([ColSpec("string", "id"), ColSpec("long", "label")]),
    )
