"""The `pretrain` pipeline's node: one transformer candidate's continued masked-LM pretraining on the
training and test rulings' texts (no labels), around `finetune.pretraining`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch

from sentence_reduction.finetune.arguments import TrainingSettings, resolved_deepspeed_config
from sentence_reduction.finetune.model import ModelSettings
from sentence_reduction.finetune.pretraining import PretrainingJob, PretrainingSettings, run_pretraining
from sentence_reduction.finetune.text import tokenizer_files
from sentence_reduction.pipelines.train.transformer import prepare_tokenizer, with_deepspeed_config


def pretrain_encoder(
    train_cases: pd.DataFrame,
    test_cases: pd.DataFrame,
    model: dict[str, Any],
    training: dict[str, Any],
    candidate_training: dict[str, Any],
    pretraining: dict[str, Any],
    candidate: str,
) -> Path:
    """Pretrain ``candidate``'s encoder (its `model`: a pretrained folder, checked first, or a config)
    with masked-LM on every ruling's text, training and test; return the model folder it wrote (config,
    weights, tokenizer). It trains with the shared `training`, the candidate's own changes and
    `pretraining.training` merged in that order; its work folder (resume, finished result) is
    ``training.work_dir/<candidate>/pretraining``."""
    settings = PretrainingSettings.from_params(pretraining)
    texts = pd.concat([train_cases["fact"], test_cases["fact"]], ignore_index=True)
    tokenizer = prepare_tokenizer(texts.to_frame("fact"), model)  # a bad model folder stops the run here
    trained = TrainingSettings.from_params(training).merged_with(candidate_training).merged_with(settings.training)
    trained = with_deepspeed_config(trained, resolved_deepspeed_config(trained, on_gpu=torch.cuda.is_available()))
    kept, held_out = settings.split(texts.tolist(), seed=int(trained.arguments.get("seed", 42)))
    job = PretrainingJob(
        name=f"{candidate}.pretraining",
        texts=kept,
        eval_texts=held_out,
        tokenizer=tokenizer_files(tokenizer),
        model=ModelSettings.from_params(model),
        training=trained,
        mask_probability=settings.mask_probability,
        whole_word_masking=settings.whole_word_masking,
    )
    return run_pretraining(job, Path(trained.work_dir) / candidate / "pretraining")
