"""Fine-tuning one fold with the Hugging Face Trainer (and DeepSpeed on GPU).

`run_fold` is the entry point: it trains in this process, or under a multi-process launcher, and
returns what the fold produced. Its work folder (`fold_cache`) keeps the Trainer's checkpoints and,
once the fold finishes, its result: the same job run again resumes from the last complete checkpoint,
or returns the finished result at once; a checkpoint or result that does not load is not used.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from transformers import Trainer, TrainerCallback

from sentence_reduction.finetune.fold_cache import (
    CHECKPOINT_FOLDER,
    MODEL_FOLDER,
    RESULT_FOLDER,
    finished_result,
    last_complete_checkpoint,
    load_result,
    prepare_to_train,
    save_result,
    staging_folder,
)
from sentence_reduction.finetune.job import FoldJob, FoldResult
from sentence_reduction.finetune.launcher import launch
from sentence_reduction.finetune.predictor import Predictor
from sentence_reduction.finetune.trainer import (
    FoldTrainer,
    build_trainer,
    first_output,
    output_folder,
    tokenised_texts,
)
from sentence_reduction.scoring import classification_metrics, softmax

logger = logging.getLogger(__name__)

__all__ = ["MODEL_FOLDER", "RESULT_FOLDER", "run_fold", "train_fold"]


def run_fold(job: FoldJob, work_dir: str | Path, callbacks: Sequence[TrainerCallback] = ()) -> FoldResult:
    """Train ``job`` (or resume it, or reuse its finished result) and return what it produced. ``callbacks``
    join the Trainer's when the fold trains in this process (a benchmark's timers of the fold's phases)."""
    work_dir = Path(work_dir)
    finished = finished_result(job, work_dir)
    if finished is not None:
        return finished
    prepare_to_train(job.name, work_dir)
    try:
        if job.training.launcher.world_size > 1:
            launch(job, work_dir, job.training.launcher)
        else:
            train_fold(job, work_dir, callbacks)
    except Exception as error:
        logger.error("%s: training failed: %s: %s", job.name, type(error).__name__, error)
        raise
    return load_result(work_dir, job)


def train_fold(job: FoldJob, work_dir: Path, callbacks: Sequence[TrainerCallback] = ()) -> None:
    """Train with the Trainer and ``callbacks``, resuming from the last checkpoint; rank 0 writes the result."""
    trainer = build_trainer(job, work_dir / CHECKPOINT_FOLDER)
    for callback in callbacks:
        trainer.add_callback(callback)
    train_resuming(trainer, job.name)

    staging = staging_folder(work_dir)
    trainer.save_model(str(staging / MODEL_FOLDER))  # gathers ZeRO-3 shards; writes on rank 0 only
    started = time.perf_counter()
    eval_probabilities, predict_probabilities = _final_predictions(trainer, job)
    # The held-out metrics reach the fold's MLflow run as oof_* from the node's output (tracking.py).
    metrics = classification_metrics(eval_probabilities, np.asarray(job.eval_labels), job.class_months)
    metrics["runtime"] = time.perf_counter() - started
    metrics["samples_per_second"] = (len(job.eval_texts) + len(job.predict_texts)) / metrics["runtime"]
    if trainer.is_world_process_zero():
        save_result(work_dir, staging, eval_probabilities, predict_probabilities, metrics)


def train_resuming(trainer: Trainer, name: str) -> None:
    """``trainer.train()``, from the last complete checkpoint in its output folder when there is one: a
    fold's, or a pretraining's."""
    last_checkpoint = last_complete_checkpoint(Path(output_folder(trainer)))
    if last_checkpoint:
        logger.info("%s: resuming from %s", name, last_checkpoint)
    trainer.train(resume_from_checkpoint=last_checkpoint)


def _final_predictions(trainer: FoldTrainer, job: FoldJob) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities of the whole held-out fold and of the test texts, once training is done.

    One process: the inference path of `predict_probabilities` (bf16 weights, the layers compiled
    when asked, batches of similar length), the same one the predict pipeline takes. Several
    processes: the Trainer's sharded prediction, which gathers every rank's share back in order.
    """
    if trainer.args.world_size > 1:
        tokenizer = trainer.processing_class
        eval_probabilities, predict_probabilities = (
            softmax(first_output(trainer.predict(tokenised_texts(tokenizer, texts, job.model)).predictions))
            for texts in (job.eval_texts, job.predict_texts)
        )
        return eval_probabilities, predict_probabilities
    model = trainer.accelerator.unwrap_model(trainer.model, keep_torch_compile=False)
    predictor = Predictor(model, trainer.processing_class, job.model, job.training)
    return predictor(job.eval_texts), predictor(job.predict_texts)
