"""One rank of a multi-process fold: `python -m sentence_reduction.finetune.worker WORK_DIR`; what every
multi-process job's rank does around its training (`run_rank`)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

from sentence_reduction.finetune.engine import train_fold
from sentence_reduction.finetune.job import FoldJob
from sentence_reduction.finetune.launcher import ERRORS_FOLDER, JOB_FILE


def main(work_dir: str) -> None:
    folder = Path(work_dir)
    run_rank(folder, lambda: train_fold(FoldJob.load(folder / JOB_FILE), folder))


def run_rank(folder: Path, train: Callable[[], None]) -> None:
    """Run this rank's share of ``train`` (a job in ``folder``): inside the job's MLflow run on rank 0; a
    failure written to ``errors/rank_<n>.txt`` for the launching node to report."""
    try:
        with _fold_run(rank=int(os.environ.get("RANK", "0"))):
            train()
        _leave_process_group()
    except BaseException as error:
        errors = folder / ERRORS_FOLDER
        errors.mkdir(exist_ok=True)
        message = " ".join(f"{type(error).__name__}: {error}".split())
        (errors / f"rank_{os.environ.get('RANK', '0')}.txt").write_text(message, encoding="utf-8")
        raise


def _leave_process_group() -> None:
    """Wait until rank 0 has written the result, then close the group before exiting: a rank that
    exits with it open can abort in gloo's teardown ("terminate called without an active exception")."""
    import torch.distributed as distributed

    if distributed.is_available() and distributed.is_initialized():
        distributed.barrier()
        distributed.destroy_process_group()


def _fold_run(rank: int) -> contextlib.AbstractContextManager:
    """On rank 0, the fold's MLflow run (MLFLOW_RUN_ID, from the node) made active for the whole
    job, so the Trainer's MLflow callback logs into it and does not end it before the final
    evaluation is logged; the other ranks never touch MLflow."""
    run_id = os.environ.pop("MLFLOW_RUN_ID", None)  # else the callback would start the run again
    if run_id is None or rank != 0:
        return contextlib.nullcontext()
    import mlflow

    return mlflow.start_run(run_id=run_id)


if __name__ == "__main__":
    main(sys.argv[1])
