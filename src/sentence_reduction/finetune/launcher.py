"""Several processes for one fold: `torchrun` or the `deepspeed` launcher running `worker.py`.

The fold's job goes to the workers through a file in its work folder; rank 0 writes the result there
(see `engine.train_fold`). A rank that fails writes its error to ``errors/rank_<n>.txt`` first, so
the node can fail with that rank's own message instead of the launcher's summary.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sentence_reduction.finetune.job import TrainingJob

JOB_FILE = "job.json"
WORKER = "sentence_reduction.finetune.worker"  # a fold's rank
ERRORS_FOLDER = "errors"


class FoldTrainingError(RuntimeError):
    """A rank of a multi-process fold failed; the message is that rank's error."""


@dataclass
class LauncherSettings:
    """The `training.launcher` parameters.

    One node: ``nproc_per_node`` processes (one per GPU). Several nodes: ``nnodes`` with this node's
    ``node_rank`` and the ``master_addr``/``master_port`` of node 0 (torchrun, run the same command on
    every node), or a DeepSpeed ``hostfile`` (the deepspeed launcher reaches the other nodes by ssh).
    """

    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    hostfile: str | None = None
    program: str = "torchrun"  # or "deepspeed"

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> LauncherSettings:
        return cls(**params)

    @property
    def world_size(self) -> int:
        """How many processes train a fold: every slot of the hostfile's hosts for the deepspeed
        launcher given one (it is given no host or GPU filter), else ``nproc_per_node`` per node."""
        if not (self.program == "deepspeed" and self.hostfile):
            return self.nproc_per_node * self.nnodes
        from deepspeed.launcher.runner import fetch_hostfile  # the launcher's own parser; slow to import

        slots = fetch_hostfile(self.hostfile)
        if slots is None:  # the launcher would train on this node alone
            raise FileNotFoundError(f"training.launcher.hostfile: {self.hostfile} not found")
        return sum(slots.values())

    def command(self, work_dir: Path, worker_module: str = WORKER) -> list[str]:
        worker = [worker_module, str(work_dir)]
        if self.program == "deepspeed":
            command = [sys.executable, "-m", "deepspeed.launcher.runner", "--module"]
            if self.hostfile:
                command += ["--hostfile", self.hostfile]
            else:
                command += ["--num_nodes", str(self.nnodes), "--num_gpus", str(self.nproc_per_node)]
            return command + ["--master_addr", self.master_addr, "--master_port", str(self.master_port), *worker]
        if self.program == "torchrun":
            return [
                sys.executable,
                "-m",
                "torch.distributed.run",
                f"--nproc_per_node={self.nproc_per_node}",
                f"--nnodes={self.nnodes}",
                f"--node_rank={self.node_rank}",
                f"--master_addr={self.master_addr}",
                f"--master_port={self.master_port}",
                "-m",
                *worker,
            ]
        raise ValueError(f"training.launcher.program must be 'torchrun' or 'deepspeed', not {self.program!r}")


def launch(job: TrainingJob, work_dir: Path, settings: LauncherSettings, worker: str = WORKER) -> None:
    """Run ``job`` in ``settings.world_size`` processes of the module ``worker`` (a fold's, or a
    pretraining's) and wait; raise the first rank's error."""
    job.save(work_dir / JOB_FILE)
    errors = work_dir / ERRORS_FOLDER
    for stale in errors.glob("rank_*.txt"):
        stale.unlink()
    environment = dict(os.environ)
    # The workers log into the fold's MLflow run (rank 0 only: the Trainer's MLflow callback checks).
    environment.update(_mlflow_environment())
    completed = subprocess.run(settings.command(work_dir, worker), env=environment, check=False)
    if completed.returncode != 0:
        reports = sorted(errors.glob("rank_*.txt"), key=lambda path: int(path.stem.split("_")[1]))
        if reports:
            rank = reports[0].stem.split("_")[1]
            raise FoldTrainingError(f"{job.name}: rank {rank} failed: {reports[0].read_text().strip()}")
        raise FoldTrainingError(f"{job.name}: the launcher exited with code {completed.returncode}")


def _mlflow_environment() -> dict[str, str]:
    try:
        import mlflow
    except ImportError:  # tracking is optional for the engine
        return {}
    run = mlflow.active_run()
    if run is None:
        return {}
    return {"MLFLOW_RUN_ID": run.info.run_id, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()}
