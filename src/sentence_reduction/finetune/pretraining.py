"""Continued masked-LM pretraining of an encoder on unlabelled texts, on fine-tuning's training path.

`run_pretraining` is the entry point, as `engine.run_fold` is a fold's: it trains in this process or
under the multi-process launcher (`python -m sentence_reduction.finetune.pretraining WORK_DIR` is a
worker), resumes from the last complete checkpoint of its work folder, and returns the finished
result at once when the same job ran to the end before. The result is a model folder in the hub's
layout (config.json, model.safetensors, the tokenizer's files), which a candidate's
`model.pretrained_path` fine-tunes from.

The model is `AutoModelForMaskedLM`'s: the checkpoint's own masked-LM head where it ships one
(Erlangshen: `MegatronBertForMaskedLM`), a new one where it has none (multilingual-e5), or the whole
model from a config. Texts longer than the model's room are read whole, in pieces (`MaskedLanguageTexts`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import Trainer, set_seed

from sentence_reduction.atomic import replace_with
from sentence_reduction.finetune.arguments import TrainingSettings, training_arguments
from sentence_reduction.finetune.engine import train_resuming
from sentence_reduction.finetune.fold_cache import (
    CHECKPOINT_FOLDER,
    MODEL_FOLDER,
    RESULT_FOLDER,
    finished_fingerprint,
)
from sentence_reduction.finetune.job import TrainingJob
from sentence_reduction.finetune.launcher import JOB_FILE, launch
from sentence_reduction.finetune.model import ModelSettings, build_masked_lm, omits_full_masks
from sentence_reduction.finetune.text import MaskedLanguageTexts, masking_collator
from sentence_reduction.finetune.trainer import default_launcher_environment, project_trainer
from sentence_reduction.finetune.worker import run_rank

logger = logging.getLogger(__name__)

WORKER = "sentence_reduction.finetune.pretraining"
_FINGERPRINT = "fingerprint"


@dataclass
class PretrainingJob(TrainingJob):
    """Everything one encoder's pretraining needs: the texts it trains on, the texts its evaluation loss
    is measured on, the masking, and its tokenizer and settings (`TrainingJob`).

    ``mask_probability``: the share of tokens (or of words) the model predicts; ``whole_word_masking``:
    mask every token of a word together, a word being tokens with no gap between them in the text (the
    words of word-segmented text, read by a character tokenizer).
    """

    name: str
    texts: list[str]
    eval_texts: list[str]
    tokenizer: dict[str, str]
    model: ModelSettings
    training: TrainingSettings
    mask_probability: float = 0.15
    whole_word_masking: bool = False


@dataclass
class PretrainingSettings:
    """The `pretraining` parameters (conf/base/parameters_pretrain.yml): which transformer candidates
    pretrain, the masking, the share of texts held out for the evaluation loss, and ``training``: changes
    merged key by key over each candidate's own `training` settings."""

    candidates: list[str] = field(default_factory=list)
    mask_probability: float = 0.15
    whole_word_masking: bool = False
    held_out_fraction: float = 0.02
    training: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> PretrainingSettings:
        unknown = set(params) - {item.name for item in fields(cls)}
        if unknown:
            raise ValueError(f"pretraining: unknown parameter(s) {', '.join(sorted(unknown))}")
        return cls(**params)

    def split(self, texts: list[str], seed: int) -> tuple[list[str], list[str]]:
        """``texts`` as the texts trained on and those held out (``held_out_fraction`` of them, drawn with
        ``seed``; none when the fraction is 0)."""
        order = np.random.default_rng(seed).permutation(len(texts))
        held_out = math.ceil(self.held_out_fraction * len(texts)) if self.held_out_fraction > 0 else 0
        return [texts[index] for index in sorted(order[held_out:])], [
            texts[index] for index in sorted(order[:held_out])
        ]


def run_pretraining(job: PretrainingJob, work_dir: str | Path) -> Path:
    """Pretrain as ``job`` says (or resume it, or reuse its finished result); the model folder it wrote."""
    work_dir = Path(work_dir)
    result = work_dir / RESULT_FOLDER / MODEL_FOLDER
    fingerprint = job.fingerprint()
    if finished_fingerprint(work_dir) == fingerprint:
        logger.info("%s: finished result found in %s, not training again", job.name, work_dir)
        return result
    stamp = work_dir / _FINGERPRINT
    if finished_fingerprint(work_dir) is not None or (stamp.is_file() and stamp.read_text() != fingerprint):
        logger.info("%s: the job changed since %s was written; starting afresh", job.name, work_dir)
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint)
    if job.training.launcher.world_size > 1:
        launch(job, work_dir, job.training.launcher, worker=WORKER)
    else:
        pretrain(job, work_dir)
    return result


def pretrain(job: PretrainingJob, work_dir: Path) -> None:
    """Train with the Trainer, resuming from the last checkpoint; rank 0 writes the result folder: the
    model, its tokenizer, and the held-out texts' loss and perplexity (metrics.json)."""
    trainer = build_pretraining_trainer(job, work_dir / CHECKPOINT_FOLDER)
    train_resuming(trainer, job.name)
    staging = work_dir / f".{RESULT_FOLDER}.tmp"
    trainer.save_model(str(staging / MODEL_FOLDER))  # with the tokenizer (its processing class)
    metrics = trainer.evaluate() if trainer.eval_dataset is not None else {}
    if "eval_loss" in metrics:
        metrics["eval_perplexity"] = math.exp(min(metrics["eval_loss"], 50.0))
    if trainer.is_world_process_zero():
        (staging / MODEL_FOLDER / "training_args.bin").unlink(missing_ok=True)  # a pickle; never read
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (staging / _FINGERPRINT).write_text((work_dir / _FINGERPRINT).read_text())
        replace_with(staging, work_dir / RESULT_FOLDER)
        shutil.rmtree(work_dir / CHECKPOINT_FOLDER, ignore_errors=True)
        logger.info("%s: %s", job.name, ", ".join(f"{name} {value:.4f}" for name, value in metrics.items()))


def build_pretraining_trainer(job: PretrainingJob, output_dir: Path) -> Trainer:
    """The pretraining's Trainer: the texts in pieces of ``max_length`` tokens, masked as the job says,
    the masked-LM model, and the Trainer path, arguments and checkpoints of fine-tuning
    (`trainer.project_trainer`); no metrics but the masked-LM loss."""
    on_gpu = torch.cuda.is_available()
    if on_gpu:
        default_launcher_environment()  # DeepSpeed wants these even for one process
    settings = job.model
    # The collator reads the pieces' special-token masks and word offsets, which the model does not take:
    # the Trainer would drop them first. No texts held out: nothing to evaluate.
    changes = {"remove_unused_columns": False, **({} if job.eval_texts else {"eval_strategy": "no"})}
    training = dataclasses.replace(job.training, arguments={**job.training.arguments, **changes})
    arguments = training_arguments(training, output_dir, on_gpu, run_name=job.name)
    set_seed(arguments.seed)  # the model's random initialisation (or new head) happens before the Trainer seeds
    tokenizer = job.load_tokenizer()
    if tokenizer.mask_token_id is None:
        raise ValueError(f"{job.name}: the tokenizer has no mask token, which masked-LM training needs")
    model = build_masked_lm(settings, vocab_size=len(tokenizer))
    pieces = {
        name: MaskedLanguageTexts(tokenizer, texts, settings.max_length, word_offsets=job.whole_word_masking)
        for name, texts in (("train", job.texts), ("eval", job.eval_texts))
    }
    unpadded = all(length == settings.max_length for dataset in pieces.values() for length in dataset.lengths)
    return project_trainer(
        model,
        training,
        arguments,
        unpadded,
        train_dataset=pieces["train"],
        eval_dataset=pieces["eval"] if len(pieces["eval"]) else None,
        data_collator=masking_collator(
            tokenizer,
            on_gpu,
            job.mask_probability,
            job.whole_word_masking,
            seed=arguments.seed,
            omit_full_mask=omits_full_masks(settings) and unpadded,
        ),
        processing_class=tokenizer,
    )


def main(work_dir: str) -> None:
    """One rank of a multi-process pretraining (the launcher's worker)."""
    folder = Path(work_dir)
    run_rank(folder, lambda: pretrain(PretrainingJob.load(folder / JOB_FILE), folder))


if __name__ == "__main__":
    main(sys.argv[1])
