"""A fold's work folder: the finished result it keeps, and the Trainer checkpoints a run resumes from.

A finished result (model as safetensors, probabilities, metrics) is stamped with the fingerprint of
the job that made it: the same job run again returns it at once; a changed job starts afresh.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from sentence_reduction.atomic import replace_with
from sentence_reduction.finetune.job import FoldJob, FoldResult, SavedModel

logger = logging.getLogger(__name__)

RESULT_FOLDER = "result"
MODEL_FOLDER = "model"
CHECKPOINT_FOLDER = "checkpoints"
_FINGERPRINT = "fingerprint"


def finished_result(job: FoldJob, work_dir: Path) -> FoldResult | None:
    """``job``'s finished result in ``work_dir``, if one is there; otherwise None, with the folder
    ready for the job: stamped with its fingerprint, and emptied first when it held another job's work."""
    fingerprint = job.fingerprint()
    if finished_fingerprint(work_dir) == fingerprint:
        logger.info("%s: finished result found in %s, not retraining", job.name, work_dir)
        return load_result(work_dir)
    if finished_fingerprint(work_dir) is not None or _job_changed(work_dir, fingerprint):
        logger.info("%s: the job changed since %s was written; starting afresh", job.name, work_dir)
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / _FINGERPRINT).write_text(fingerprint)
    return None


def save_result(
    work_dir: Path,
    staging: Path,
    eval_probabilities: np.ndarray,
    predict_probabilities: np.ndarray,
    metrics: dict[str, float],
) -> None:
    """Complete the result staged in ``staging`` (where the model was saved) and put it in place of
    the work folder's result at once; the checkpoints are spent."""
    (staging / MODEL_FOLDER / "training_args.bin").unlink(missing_ok=True)  # a pickle; never read
    np.save(staging / "eval_probabilities.npy", eval_probabilities)
    np.save(staging / "predict_probabilities.npy", predict_probabilities)
    (staging / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (staging / _FINGERPRINT).write_text((work_dir / _FINGERPRINT).read_text())
    replace_with(staging, work_dir / RESULT_FOLDER)
    shutil.rmtree(work_dir / CHECKPOINT_FOLDER, ignore_errors=True)


def last_complete_checkpoint(output_dir: Path) -> str | None:
    """The newest Trainer checkpoint in ``output_dir`` that was written to the end.

    The Trainer writes a checkpoint's files in place and its ``trainer_state.json`` last: a run killed
    while saving leaves a newer folder without it (or with it cut short), which cannot be resumed from.
    """
    if not output_dir.is_dir():
        return None
    steps = {
        int(path.name.rsplit("-", 1)[1]): path
        for path in output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
        if path.is_dir() and path.name.rsplit("-", 1)[1].isdigit()
    }
    for step in sorted(steps, reverse=True):
        try:
            json.loads((steps[step] / "trainer_state.json").read_text())
        except (OSError, ValueError):
            logger.warning("%s was cut short (no trainer state); not resuming from it", steps[step])
            continue
        return str(steps[step])
    return None


def finished_fingerprint(work_dir: Path) -> str | None:
    """The fingerprint of the finished result in ``work_dir``, if there is one."""
    stamp = work_dir / RESULT_FOLDER / _FINGERPRINT
    return stamp.read_text() if stamp.is_file() else None


def load_result(work_dir: Path) -> FoldResult:
    """Read a finished fold's result folder (the model stays on disk until it is loaded)."""
    result_dir = work_dir / RESULT_FOLDER
    return FoldResult(
        model=SavedModel(result_dir / MODEL_FOLDER),
        eval_probabilities=np.load(result_dir / "eval_probabilities.npy"),
        predict_probabilities=np.load(result_dir / "predict_probabilities.npy"),
        metrics=json.loads((result_dir / "metrics.json").read_text()),
    )


def _job_changed(work_dir: Path, fingerprint: str) -> bool:
    stamp = work_dir / _FINGERPRINT
    return stamp.is_file() and stamp.read_text() != fingerprint
