"""Several processes for one job (a fold's fine-tuning, or a pretraining): `torchrun` or the `deepspeed`
launcher running a worker module (`worker.py` for a fold).

The job goes to the workers through a file in its work folder; rank 0 writes the result there
(see `engine.train_fold`). A rank that fails writes its error to ``errors/rank_<n>.txt`` first, so
the node can fail with that rank's own message instead of the launcher's summary.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sentence_reduction.finetune.arguments import LauncherSettings
    from sentence_reduction.finetune.job import TrainingJob

JOB_FILE = "job.json"
WORKER = "sentence_reduction.finetune.worker"  # a fold's rank
ERRORS_FOLDER = "errors"


class FoldTrainingError(RuntimeError):
    """A rank of a multi-process fold failed; the message is that rank's error."""


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
    completed = subprocess.run(launch_command(settings, work_dir, worker), env=environment, check=False)
    if completed.returncode != 0:
        reports = sorted(errors.glob("rank_*.txt"), key=lambda path: int(path.stem.split("_")[1]))
        if reports:
            rank = reports[0].stem.split("_")[1]
            raise FoldTrainingError(f"{job.name}: rank {rank} failed: {reports[0].read_text().strip()}")
        raise FoldTrainingError(f"{job.name}: the launcher exited with code {completed.returncode}")


def launch_command(settings: LauncherSettings, work_dir: Path, worker_module: str = WORKER) -> list[str]:
    """The command that starts the job's workers on this node: the deepspeed launcher's, or torchrun's."""
    worker = [worker_module, str(work_dir)]
    if settings.program == "deepspeed":
        command = [sys.executable, "-m", "deepspeed.launcher.runner", "--module"]
        if settings.hostfile:
            command += ["--hostfile", settings.hostfile]
        else:
            command += ["--num_nodes", str(settings.nnodes), "--num_gpus", str(settings.nproc_per_node)]
        return command + ["--master_addr", settings.master_addr, "--master_port", str(settings.master_port), *worker]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={settings.nproc_per_node}",
        f"--nnodes={settings.nnodes}",
        f"--node_rank={settings.node_rank}",
        f"--master_addr={settings.master_addr}",
        f"--master_port={settings.master_port}",
        "-m",
        *worker,
    ]


def _mlflow_environment() -> dict[str, str]:
    try:
        import mlflow
    except ImportError:  # tracking is optional for the engine
        return {}
    run = mlflow.active_run()
    if run is None:
        return {}
    return {"MLFLOW_RUN_ID": run.info.run_id, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()}
