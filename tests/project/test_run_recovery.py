"""Killed runs closed: a RUNNING MLflow run whose process is gone is set KILLED with its fold runs; a run
whose process is alive is not. One run at a time: a run holding the project refuses another, and its
lock goes with it when it is killed. (The end-to-end cases, a `kedro run` SIGKILLed and run again, two
runs at once, are in test_reliability.py.)"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from sentence_reduction.run_lock import RUN_LOCK, FileLock, ProjectInUseError, RunLockHooks
from sentence_reduction.run_recovery import PARENT_TAG, close_runs_of_dead_processes, local_path, process_tags


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


def test_a_project_held_by_a_run_refuses_another_naming_it_and_a_killed_holder_leaves_no_lock(tmp_path):
    """The run lock is the kernel's: held while its process lives, gone with it (no stale lock to clear)."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from sentence_reduction.run_lock import FileLock\n"
            "lock = FileLock(Path(sys.argv[1])); assert lock.acquire(); print('held', flush=True); time.sleep(600)",
            str(tmp_path / RUN_LOCK),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        hooks = RunLockHooks()
        hooks.after_context_created(SimpleNamespace(project_path=tmp_path))
        hooks.store_created(SimpleNamespace(project_path=tmp_path))
        with pytest.raises(ProjectInUseError) as refused:
            hooks.before_pipeline_run()
        message = str(refused.value)
        holder_named = f"another kedro run is using this project (pid {holder.pid} on {socket.gethostname()}"
        assert message.startswith(holder_named)
        assert "started 20" in message and "\n" not in message
    finally:
        holder.kill()
        holder.wait()
    hooks.before_pipeline_run()  # the holder was killed: its lock went with it
    assert FileLock(tmp_path / RUN_LOCK).holder().startswith(f"pid {os.getpid()} ")
    assert not FileLock(tmp_path / RUN_LOCK).acquire()  # held by this run, until it ends
    hooks.after_pipeline_run()
    assert FileLock(tmp_path / RUN_LOCK).acquire()


def test_a_model_left_pending_by_a_run_that_is_over_is_discarded_and_a_live_run_model_is_kept(tmp_path):
    """A model whose logging was cut short (a kill, a full disk): its partial artifacts removed and it
    deleted, when the next run starts; a model a live run is logging now is left alone."""
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.create_experiment("sentence-reduction", artifact_location=str(tmp_path / "mlruns"))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_tags = process_tags(gone.pid)
    gone.wait()
    dead_run = _run(client, experiment_id, "train", dead_tags)
    failed_run = _run(client, experiment_id, "train", {})
    client.set_terminated(failed_run, status="FAILED")
    live_run = _run(client, experiment_id, "train", process_tags(os.getpid()))
    models = {
        run_id: client.create_logged_model(experiment_id, source_run_id=run_id)
        for run_id in (dead_run, failed_run, live_run)
    }
    for model in models.values():
        (local_path(model.artifact_location) / "artifacts").mkdir(parents=True)
        (local_path(model.artifact_location) / "artifacts" / "ordinal_models.pkl").write_bytes(b"\x80" * 1000)

    close_runs_of_dead_processes(client, experiment_id)
    assert [model.model_id for model in client.search_logged_models(experiment_ids=[experiment_id])] == [
        models[live_run].model_id
    ]
    assert [folder.name for folder in (tmp_path / "mlruns" / "models").iterdir()] == [models[live_run].model_id]
    assert local_path(models[live_run].artifact_location).exists()
