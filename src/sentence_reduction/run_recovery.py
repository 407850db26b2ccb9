"""Killed runs closed: the MLflow runs that a killed `kedro run` left RUNNING are set KILLED.

A `kedro run` killed with SIGKILL (or on a machine that went down) cannot end its MLflow runs: its parent
run and the fold run it was in stay RUNNING for ever in the store. So every run is tagged with the host
and the process that holds it, and when a later run starts, each RUNNING run of the experiment whose
process is gone is set KILLED, with its fold runs. A run whose process is alive (another `kedro run`
beside this one) is left alone, and so is a run of another host, whose processes cannot be seen here.
"""

from __future__ import annotations

import logging
import os
import socket

import mlflow
import psutil
from kedro.framework.hooks import hook_impl
from mlflow.entities import Run, RunStatus
from mlflow.tracking import MlflowClient

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
    and the RUNNING runs nested under it; return their ids."""
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
    return sorted(dead | nested)


def _held_by_dead_process(run: Run) -> bool:
    tags = run.data.tags
    if tags.get(HOST_TAG) != socket.gethostname() or PID_TAG not in tags:
        return False  # another host's run, or one that never said who holds it: it cannot be checked
    try:
        return process_tags(int(tags[PID_TAG])) != {key: tags.get(key) for key in (HOST_TAG, PID_TAG, STARTED_TAG)}
    except psutil.NoSuchProcess:
        return True
