"""Killed runs closed: the MLflow runs that a killed `kedro run` left RUNNING are set KILLED, and the
models it was logging removed.

A `kedro run` killed with SIGKILL (or on a machine that went down) cannot end its MLflow runs: its parent
run and the fold run it was in stay RUNNING for ever in the store. So every run is tagged with the host
and the process that holds it, and when a later run starts, each RUNNING run of the experiment whose
process is gone is set KILLED, with its fold runs. A run whose process is alive (another `kedro run`
beside this one) is left alone, and so is a run of another host, whose processes cannot be seen here.
A model such a run was logging (PENDING: its artifacts partly written), or any PENDING model of a run
that is over, is discarded (`discard_model`): its artifacts removed, its status FAILED, deleted.
"""

from __future__ import annotations

import logging
import os
import socket
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import mlflow
import psutil
from kedro.framework.hooks import hook_impl
from mlflow.entities import LoggedModel, LoggedModelStatus, Run, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.file_utils import local_file_uri_to_path

from sentence_reduction.atomic import remove

logger = logging.getLogger(__name__)

HOST_TAG = "process.host"
PID_TAG = "process.pid"
# With the pid, the process's start time: a pid the system has since given to another process does not
# keep a dead run open.
STARTED_TAG = "process.started"
PARENT_TAG = "mlflow.parentRunId"


class KilledRunRecoveryHooks:
    """Tags this run with its process, then closes the runs of processes that are gone."""

    @hook_impl(trylast=True)  # after kedro-mlflow's hook has started this run's MLflow run
    def before_pipeline_run(self) -> None:
        active = mlflow.active_run()
        if active is None:  # tracking is off for this pipeline
            return
        mlflow.set_tags(process_tags(os.getpid()))
        close_runs_of_dead_processes(MlflowClient(), active.info.experiment_id)


def process_tags(pid: int) -> dict[str, str]:
    """The tags that say which process holds a run."""
    return {
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(pid),
        STARTED_TAG: repr(psutil.Process(pid).create_time()),
    }


def close_runs_of_dead_processes(client: MlflowClient, experiment_id: str) -> list[str]:
    """Set KILLED every RUNNING run of ``experiment_id`` held by a process of this host that is gone,
    and the RUNNING runs nested under it; return their ids. The PENDING models of runs that are over
    are discarded."""
    running = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'")
    dead = {run.info.run_id for run in running if _held_by_dead_process(run)}
    nested = {run.info.run_id for run in running if run.data.tags.get(PARENT_TAG) in dead}
    for run in running:
        if run.info.run_id in dead:
            logger.info(
                "MLflow run '%s' (%s) was left RUNNING by process %s, which is gone: marked KILLED",
                run.info.run_name,
                run.info.run_id,
                run.data.tags[PID_TAG],
            )
        if run.info.run_id in dead | nested:
            client.set_terminated(run.info.run_id, status=RunStatus.to_string(RunStatus.KILLED))
    for model in _logged_models(client, experiment_id):
        run_id = model.source_run_id
        if model.status != LoggedModelStatus.PENDING or run_id is None:
            continue
        if run_id in dead or client.get_run(run_id).info.status != "RUNNING":
            discard_model(client, model)  # its run is over: it will never be finished
    return sorted(dead | nested)


def _logged_models(client: MlflowClient, experiment_id: str) -> Iterator[LoggedModel]:
    page_token = None
    while True:
        page = client.search_logged_models(experiment_ids=[experiment_id], page_token=page_token)
        yield from page
        page_token = page.token
        if not page_token:
            return


def discard_model(client: MlflowClient, model: LoggedModel) -> None:
    """A logged model that did not finish (a failure or a kill while it was logged): its artifacts
    removed first (room on a full disk for what follows), then its status FAILED, and it deleted."""
    folder = local_path(model.artifact_location)
    if folder is not None:
        remove(folder.parent if folder.parent.name == model.model_id else folder)  # models/<id>/artifacts
    try:
        client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        client.delete_logged_model(model.model_id)
    except MlflowException as error:
        logger.warning("the logged model %s could not be marked FAILED: %s", model.model_id, error.message)
        return
    logger.info("the logged model %s did not finish: its artifacts removed, its status FAILED", model.model_id)


def local_path(location: str) -> Path | None:
    """The local folder of an artifact location (a path, or a file: URI), or None for a remote one."""
    scheme = urllib.parse.urlparse(location).scheme
    if scheme == "file":
        return Path(local_file_uri_to_path(location))
    return Path(location) if scheme == "" else None


def _held_by_dead_process(run: Run) -> bool:
    tags = run.data.tags
    if tags.get(HOST_TAG) != socket.gethostname() or PID_TAG not in tags:
        return False  # another host's run, or one that never said who holds it: it cannot be checked
    try:
        return process_tags(int(tags[PID_TAG])) != {key: tags.get(key) for key in (HOST_TAG, PID_TAG, STARTED_TAG)}
    except psutil.NoSuchProcess:
        return True
