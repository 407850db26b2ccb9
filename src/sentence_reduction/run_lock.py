"""One `kedro run` at a time per project folder, and the MLflow store created by one process at a time.

A run holds an exclusive lock on ``.kedro_run.lock`` at the project root from the start of its pipeline
to its end; a second run refuses at once with one line naming the holder (pid, host, start, command),
before it writes anything or opens an MLflow run. The lock is the kernel's (`flock`): it goes with the
process that holds it, so a run killed outright leaves no lock behind, only the file, whose content
(the last holder) the next run replaces.

kedro-mlflow creates the tracking store (the SQLite file's tables) in its `after_context_created` hook,
which every `kedro` command's session calls: two fresh runs at once would create the tables together
(``table ... already exists``). Every session therefore holds ``.mlflow_store.lock`` around that hook:
taken before kedro-mlflow's (tryfirst), given back after it (trylast), seconds at most.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import IO, Any

from kedro.framework.hooks import hook_impl

from sentence_reduction.input_errors import OneLineError

RUN_LOCK = ".kedro_run.lock"
STORE_LOCK = ".mlflow_store.lock"
STORE_LOCK_TIMEOUT = 300.0  # seconds; the store is created in a few


class ProjectInUseError(OneLineError):
    """Another `kedro run` holds the project folder."""


class FileLock:
    """An exclusive `flock` on a file, held by this process until `release` (or its end); the file
    records the holder. Taking it again in the process that holds it changes nothing."""

    def __init__(self, path: Path):
        self.path = path
        self._file: IO[str] | None = None

    def acquire(self, timeout: float = 0.0) -> bool:
        """Take the lock, waiting up to ``timeout`` seconds; False if another process holds it."""
        if self._file is not None:
            return True
        lock_file = self.path.open("a+", encoding="utf-8")
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    lock_file.close()
                    return False
                time.sleep(0.1)
        lock_file.seek(0)
        lock_file.truncate()
        lock_file.write(json.dumps(_this_process()))
        lock_file.flush()
        self._file = lock_file
        return True

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def holder(self) -> str:
        """Who holds it, as its file says: pid, host, start and command."""
        try:
            holder = json.loads(self.path.read_text(encoding="utf-8"))
            return f"pid {holder['pid']} on {holder['host']}, started {holder['started']}: {holder['command']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "a process that has not yet written its name"


class RunLockHooks:
    """Holds the project's run lock for the whole pipeline run, and the store lock around kedro-mlflow's
    creation of the MLflow store."""

    def __init__(self) -> None:
        self._run_lock: FileLock | None = None
        self._store_lock: FileLock | None = None

    @hook_impl(tryfirst=True)  # before kedro-mlflow's hook creates the store
    def after_context_created(self, context: Any) -> None:
        project = Path(context.project_path)
        self._run_lock = FileLock(project / RUN_LOCK)
        self._store_lock = FileLock(project / STORE_LOCK)
        if not self._store_lock.acquire(timeout=STORE_LOCK_TIMEOUT):
            raise ProjectInUseError(
                f"{project / STORE_LOCK}: the MLflow store is being created by {self._store_lock.holder()} "
                f"for more than {STORE_LOCK_TIMEOUT:.0f} s"
            )

    @hook_impl(specname="after_context_created", trylast=True)  # after kedro-mlflow's hook
    def store_created(self, context: Any) -> None:
        if self._store_lock is not None:
            self._store_lock.release()

    @hook_impl(tryfirst=True)  # before kedro-mlflow's hook starts an MLflow run
    def before_pipeline_run(self) -> None:
        if self._run_lock is not None and not self._run_lock.acquire():
            raise ProjectInUseError(
                f"another kedro run is using this project ({self._run_lock.holder()}); "
                f"this run did not start: wait for it to end, or stop it"
            )

    @hook_impl(trylast=True)  # after the model is logged and the MLflow run ended
    def after_pipeline_run(self) -> None:
        if self._run_lock is not None:
            self._run_lock.release()

    @hook_impl(trylast=True)
    def on_pipeline_error(self) -> None:
        if self._run_lock is not None:
            self._run_lock.release()


def _this_process() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
