"""The transformer candidates' nodes, around the fine-tuning engine: a candidate's training settings,
tokenizer and DeepSpeed config, one fold's training, a saved fold model's predictions."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformers import PreTrainedTokenizerBase

from sentence_reduction.finetune.arguments import TrainingSettings, resolved_deepspeed_config
from sentence_reduction.finetune.engine import run_fold
from sentence_reduction.finetune.job import FoldJob, SavedModel
from sentence_reduction.finetune.model import ModelSettings
from sentence_reduction.finetune.model_folder import pretrained_tokenizer
from sentence_reduction.finetune.predictor import predict_probabilities
from sentence_reduction.finetune.text import (
    build_character_vocabulary,
    build_tokenizer,
    read_vocabulary,
    tokenizer_files,
)
from sentence_reduction.input_errors import InputDataError
from sentence_reduction.pipelines.data.folds import case_folds
from sentence_reduction.pipelines.train.out_of_fold import probability_table
from sentence_reduction.scoring import classification_metrics

logger = logging.getLogger(__name__)


def candidate_training(training: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The candidate's `training` parameters: the shared ones with its own ``overrides`` merged in key
    by key (every field present, its default where neither sets it)."""
    return dataclasses.asdict(TrainingSettings.from_params(training).merged_with(overrides))


def prepare_tokenizer(model_input: pd.DataFrame, model: dict[str, Any]) -> PreTrainedTokenizerBase:
    """The candidate's tokenizer: its pretrained folder's, whatever the folder holds (the folder checked
    first: a bad one stops the run with one line before anything trains); or, for a model built from a
    config, a BERT tokenizer over a given vocab.txt or the characters of the texts."""
    settings = ModelSettings.from_params(model)
    if settings.pretrained_path:
        return pretrained_tokenizer(settings.pretrained_path)
    if settings.vocabulary_path:
        if not Path(settings.vocabulary_path).is_file():
            raise InputDataError(settings.vocabulary_path, "no such vocabulary file (model.vocabulary_path)")
        return build_tokenizer(read_vocabulary(settings.vocabulary_path))
    return build_tokenizer(build_character_vocabulary(model_input["fact"], settings.vocabulary_min_frequency))


def resolve_deepspeed_config(training: dict[str, Any]) -> dict[str, Any]:
    """The DeepSpeed config every fold of this run trains with, its "auto" values resolved for the
    launcher's world size; empty when the folds train without DeepSpeed (on the CPU, or one process
    on one GPU unless `training.deepspeed_single_process`)."""
    return resolved_deepspeed_config(TrainingSettings.from_params(training), on_gpu=torch.cuda.is_available())


def train_fold(
    model_input: pd.DataFrame,
    fold_assignments: pd.DataFrame,
    test_cases: pd.DataFrame,
    tokenizer: PreTrainedTokenizerBase,
    class_table: pd.DataFrame,
    deepspeed_config: dict[str, Any],
    model: dict[str, Any],
    training: dict[str, Any],
    candidate: str,
    fold: int,
) -> tuple[SavedModel, pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """Fine-tune ``candidate`` on every case not held out in ``fold``, with its DeepSpeed config; return
    the model, the held-out cases' class probabilities, the test set's class probabilities and the
    fold's metrics. Its work folder (resume, finished result) is ``training.work_dir/<candidate>/fold_<n>``."""
    held_out = _held_out_mask(model_input, fold_assignments, fold)
    train, evaluation = model_input[~held_out], model_input[held_out]
    job = FoldJob(
        name=f"{candidate}.fold_{fold}",
        train_texts=train["fact"].tolist(),
        train_labels=train["class_id"].tolist(),
        eval_texts=evaluation["fact"].tolist(),
        eval_labels=evaluation["class_id"].tolist(),
        predict_texts=test_cases["fact"].tolist(),
        tokenizer=tokenizer_files(tokenizer),
        class_months=class_table["months"].tolist(),
        model=ModelSettings.from_params(model),
        training=with_deepspeed_config(TrainingSettings.from_params(training), deepspeed_config),
    )
    result = run_fold(job, Path(job.training.work_dir) / candidate / f"fold_{fold}")
    # The engine knows classes only; the competition's scores compare with the cases' own months
    # (the same numbers unless a class holds several months).
    metrics = {
        **result.metrics,
        **classification_metrics(
            result.eval_probabilities,
            evaluation["class_id"].to_numpy(),
            job.class_months,
            true_months=evaluation["label"].to_numpy(),
        ),
    }
    logger.info(
        "%s: %s",
        job.name,
        ", ".join(f"{name} {value:.4f}" for name, value in metrics.items() if isinstance(value, float)),
    )
    return (
        result.model,
        probability_table(evaluation["id"], result.eval_probabilities),
        probability_table(test_cases["id"], result.predict_probabilities),
        metrics,
    )


def predict_fold(
    fold_model: SavedModel,
    tokenizer: PreTrainedTokenizerBase,
    test_cases: pd.DataFrame,
    model: dict[str, Any],
    training: dict[str, Any],
) -> pd.DataFrame:
    """A saved fold model's class probabilities for a test set."""
    probabilities = predict_probabilities(
        fold_model.load(),
        tokenizer,
        test_cases["fact"].tolist(),
        ModelSettings.from_params(model),
        TrainingSettings.from_params(training),
    )
    return probability_table(test_cases["id"], probabilities)


def with_deepspeed_config(training: TrainingSettings, deepspeed_config: dict[str, Any]) -> TrainingSettings:
    """``training`` with the run's resolved DeepSpeed config in place of its json file: the fold trains
    with the config the run logged, and the fold's fingerprint holds the config's content, not a path."""
    if not deepspeed_config:
        return training  # no DeepSpeed: the engine makes the same decision and never reads the file
    return dataclasses.replace(training, gpu_arguments={**training.gpu_arguments, "deepspeed": deepspeed_config})


def _held_out_mask(model_input: pd.DataFrame, fold_assignments: pd.DataFrame, fold: int) -> np.ndarray:
    folds = case_folds(model_input, fold_assignments)
    if not (folds == fold).any():
        raise ValueError(
            f"fold {fold} holds out no case: folds.n_splits shapes the pipeline, set it in conf/, not --params"
        )
    return folds == fold
