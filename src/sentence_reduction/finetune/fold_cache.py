"""A fold's work folder: the finished result it keeps, and the Trainer checkpoints a run resumes from.

A finished result (model as safetensors, probabilities, metrics) is stamped with the fingerprint of
the job that made it: the same job run again returns it at once, once its files are checked to load;
a changed job, or a result that does not load, starts afresh.

A checkpoint counts as complete once the Trainer has written all its files and `mark_complete` has
recorded them (names and sizes) in ``checkpoint_complete.json``: a run resumes from the newest
checkpoint whose recorded files are all there, of their size, and load. A newer one cut short by a
kill or a full disk (no mark) is removed; one damaged since (a file cut, emptied or overwritten) is
set aside in ``checkpoints/set_aside/``. Each gets one log line.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from sentence_reduction.atomic import disk_full_reported, remove, replace_with, written_atomically
from sentence_reduction.file_checks import UnusableFileError, check_file, file_problem
from sentence_reduction.finetune.job import FoldJob, FoldResult, SavedModel

logger = logging.getLogger(__name__)

RESULT_FOLDER = "result"
MODEL_FOLDER = "model"
CHECKPOINT_FOLDER = "checkpoints"
COMPLETION_MARK = "checkpoint_complete.json"
SET_ASIDE_FOLDER = "set_aside"  # inside the checkpoints' folder: not a checkpoint-* name the Trainer rotates
_FINGERPRINT = "fingerprint"
_STAGING = f".{RESULT_FOLDER}.tmp"


def finished_result(job: FoldJob, work_dir: Path) -> FoldResult | None:
    """``job``'s finished result in ``work_dir``, if one is there and loads; otherwise None, with the
    folder ready for the job: stamped with its fingerprint, emptied first when it held another job's
    work, its result removed (one warning naming the file) when a file of it does not load."""
    fingerprint = job.fingerprint()
    if finished_fingerprint(work_dir) == fingerprint:
        try:
            result = load_result(work_dir, job)
        except UnusableFileError as error:
            logger.warning("%s: finished result not used, %s; retraining the fold", job.name, error)
            remove(work_dir / RESULT_FOLDER)
        else:
            logger.info("%s: finished result found in %s, not retraining", job.name, work_dir)
            return result
    if finished_fingerprint(work_dir) is not None or _job_changed(work_dir, fingerprint):
        logger.info("%s: the job changed since %s was written; starting afresh", job.name, work_dir)
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / _FINGERPRINT).write_text(fingerprint)
    return None


def prepare_to_train(name: str, work_dir: Path) -> None:
    """Before a fold trains (once, in the process that launches its workers): a result staged by a run
    that failed is removed, and the checkpoints that cannot be resumed from are removed or set aside."""
    remove(work_dir / _STAGING)
    checkpoints = work_dir / CHECKPOINT_FOLDER
    for folder in _checkpoints_newest_first(checkpoints):
        problem = checkpoint_problem(folder)
        if problem is None:
            return
        if not (folder / COMPLETION_MARK).is_file():
            logger.warning("%s: %s %s; removed", name, folder, problem)
            shutil.rmtree(folder)
            continue
        set_aside = checkpoints / SET_ASIDE_FOLDER / folder.name
        remove(set_aside)
        set_aside.parent.mkdir(exist_ok=True)
        os.replace(folder, set_aside)
        logger.warning("%s: %s %s; set aside in %s", name, folder, problem, set_aside)


def staging_folder(work_dir: Path) -> Path:
    """Where a fold's result is written before it replaces the work folder's result."""
    return work_dir / _STAGING


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
    needed = eval_probabilities.nbytes + predict_probabilities.nbytes + 64 * 1024
    with disk_full_reported(f"writing the fold's result in {staging}", staging, lambda: needed):
        np.save(staging / "eval_probabilities.npy", eval_probabilities)
        np.save(staging / "predict_probabilities.npy", predict_probabilities)
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (staging / _FINGERPRINT).write_text((work_dir / _FINGERPRINT).read_text())
    replace_with(staging, work_dir / RESULT_FOLDER)
    shutil.rmtree(work_dir / CHECKPOINT_FOLDER, ignore_errors=True)


def mark_complete(checkpoint: Path) -> None:
    """Record that every file of ``checkpoint`` is written: their names and sizes, in a file of its own
    written last (and atomically)."""
    files = {
        str(path.relative_to(checkpoint)): path.stat().st_size
        for path in sorted(checkpoint.rglob("*"))
        if path.is_file() and path.name != COMPLETION_MARK
    }
    with written_atomically(checkpoint / COMPLETION_MARK) as staging:
        staging.write_text(json.dumps({"files": files}, indent=1))


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` cannot be resumed from (not marked complete, or a recorded file missing, of
    another size, or unreadable), or None when it can."""
    mark = checkpoint / COMPLETION_MARK
    if not mark.is_file():
        return "was cut short (no completion mark)"
    try:
        files = json.loads(mark.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"has an unreadable {COMPLETION_MARK} ({type(error).__name__})"
    for name, size in files.items():
        problem = file_problem(checkpoint / name, size)
        if problem is not None:
            return f"is damaged ({name}: {problem})"
    return None


def last_complete_checkpoint(output_dir: Path) -> str | None:
    """The newest Trainer checkpoint in ``output_dir`` that can be resumed from (`checkpoint_problem`);
    nothing is moved (every rank of a fold asks)."""
    return next(
        (str(folder) for folder in _checkpoints_newest_first(output_dir) if checkpoint_problem(folder) is None), None
    )


def finished_fingerprint(work_dir: Path) -> str | None:
    """The fingerprint of the finished result in ``work_dir``, if there is one."""
    stamp = work_dir / RESULT_FOLDER / _FINGERPRINT
    try:
        return stamp.read_text() if stamp.is_file() else None
    except (OSError, UnicodeDecodeError):
        return ""  # unreadable: a result, but no job's


def load_result(work_dir: Path, job: FoldJob) -> FoldResult:
    """Read ``job``'s finished result folder (the model stays on disk until it is loaded), each file
    checked: `UnusableFileError` names the first that does not load or does not fit the job."""
    result_dir = work_dir / RESULT_FOLDER
    model = SavedModel(result_dir / MODEL_FOLDER)
    model.check()
    classes = len(job.class_months)
    return FoldResult(
        model=model,
        eval_probabilities=_probabilities(result_dir / "eval_probabilities.npy", (len(job.eval_texts), classes)),
        predict_probabilities=_probabilities(
            result_dir / "predict_probabilities.npy", (len(job.predict_texts), classes)
        ),
        metrics=_metrics(result_dir / "metrics.json"),
    )


def _probabilities(path: Path, shape: tuple[int, int]) -> np.ndarray:
    check_file(path)
    probabilities = np.load(path, allow_pickle=False)
    if probabilities.shape != shape:
        raise UnusableFileError(path, f"holds {probabilities.shape} probabilities, the job {shape}")
    if not np.isfinite(probabilities).all():
        raise UnusableFileError(path, "holds probabilities that are not finite")
    return probabilities


def _metrics(path: Path) -> dict[str, float]:
    check_file(path)
    metrics = json.loads(path.read_text())
    if not isinstance(metrics, dict):
        raise UnusableFileError(path, f"holds a JSON {type(metrics).__name__}, not the fold's metrics")
    return metrics


def _checkpoints_newest_first(output_dir: Path) -> list[Path]:
    if not output_dir.is_dir():
        return []
    steps = {
        int(path.name.rsplit("-", 1)[1]): path
        for path in output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
        if path.is_dir() and path.name.rsplit("-", 1)[1].isdigit()
    }
    return [steps[step] for step in sorted(steps, reverse=True)]


def _job_changed(work_dir: Path, fingerprint: str) -> bool:
    stamp = work_dir / _FINGERPRINT
    return stamp.is_file() and stamp.read_text(errors="replace") != fingerprint
