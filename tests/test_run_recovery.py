"""Killed runs closed: a RUNNING MLflow run whose process is gone is set KILLED with its fold runs; a run
whose process is alive is not. (The end-to-end case, a `kedro run` SIGKILLed and run again, is in
test_reliability.py.)"""

from __future__ import annotations

import os
import subprocess
import sys

from mlflow.tracking import MlflowClient

from sentence_reduction.run_recovery import PARENT_TAG, close_runs_of_dead_processes, process_tags


def _run(client: MlflowClient, experiment_id: str, name: str, tags: dict[str, str]) -> str:
    return client.create_run(experiment_id, run_name=name, tags=tags).info.run_id


def test_runs_of_a_dead_process_are_killed_with_their_folds_and_a_live_process_runs_are_kept(tmp_path):
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.create_experiment("sentence-reduction")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_tags = process_tags(gone.pid)  # taken while it lives, as the hook does at the start of a run
    gone.wait()

    dead_parent = _run(client, experiment_id, "train", dead_tags)
    dead_fold = _run(client, experiment_id, "fold_1", {PARENT_TAG: dead_parent})
    finished_fold = _run(client, experiment_id, "fold_0", {PARENT_TAG: dead_parent})
    client.set_terminated(finished_fold, status="FINISHED")
    live_parent = _run(client, experiment_id, "train", process_tags(os.getpid()))
    live_fold = _run(client, experiment_id, "fold_0", {PARENT_TAG: live_parent})
    untagged = _run(client, experiment_id, "train", {})  # nothing says whose it is: left as it is

    assert close_runs_of_dead_processes(client, experiment_id) == sorted([dead_parent, dead_fold])
    status = {
        run_id: client.get_run(run_id).info.status
        for run_id in (dead_parent, dead_fold, finished_fold, live_parent, live_fold, untagged)
    }
    assert status == {
        dead_parent: "KILLED",
        dead_fold: "KILLED",
        finished_fold: "FINISHED",
        live_parent: "RUNNING",
        live_fold: "RUNNING",
        untagged: "RUNNING",
    }
    assert client.get_run(dead_parent).info.end_time is not None
    assert close_runs_of_dead_processes(client, experiment_id) == []
