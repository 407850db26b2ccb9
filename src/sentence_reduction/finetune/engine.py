"""Fine-tuning one fold with the Hugging Face Trainer (and DeepSpeed on GPU).

`run_fold` is the entry point: it trains in this process, or under a multi-process launcher, and
returns what the fold produced. A fold's work folder holds its Trainer checkpoints and, once it
finishes, its result (model as safetensors, probabilities, metrics) stamped with a fingerprint of the
job: the same job run again resumes from the last checkpoint, or returns the finished result at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    EvalPrediction,
    MegatronBertForSequenceClassification,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from sentence_reduction.scoring import classification_metrics, softmax
from sentence_reduction.finetune.model import ModelSettings, apply_runtime_settings, build_model, omits_full_masks
from sentence_reduction.finetune.text import TokenisedTexts, build_tokenizer, padding_collator

logger = logging.getLogger(__name__)

RESULT_FOLDER = "result"
MODEL_FOLDER = "model"


@dataclass
class FoldJob:
    """Everything one fold's fine-tuning needs: its data, vocabulary and parameters."""

    name: str
    train_texts: list[str]
    train_labels: list[int]
    eval_texts: list[str]
    eval_labels: list[int]
    predict_texts: list[str]
    vocabulary: list[str]
    class_months: list[int]
    model: dict[str, Any]
    training: dict[str, Any]

    def fingerprint(self) -> str:
        """A hash of the whole job (data and parameters), which names a finished result."""
        payload = json.dumps(asdict(self), sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> FoldJob:
        return cls(**json.loads(path.read_text(encoding="utf-8")))


@dataclass
class FoldResult:
    """What a fold produced."""

    model: MegatronBertForSequenceClassification
    eval_probabilities: np.ndarray
    predict_probabilities: np.ndarray
    metrics: dict[str, float]
    deepspeed_config: dict[str, Any]


def run_fold(job: FoldJob, work_dir: str | Path) -> FoldResult:
    """Train ``job`` (or resume it, or reuse its finished result) and return what it produced."""
    from sentence_reduction.finetune.launcher import LauncherSettings, launch  # launcher imports us

    work_dir = Path(work_dir)
    fingerprint = job.fingerprint()
    if finished_fingerprint(work_dir) == fingerprint:
        logger.info("%s: finished result found in %s, not retraining", job.name, work_dir)
        return load_result(work_dir)
    if finished_fingerprint(work_dir) is not None or _job_changed(work_dir, fingerprint):
        logger.info("%s: the job changed since %s was written; starting afresh", job.name, work_dir)
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "fingerprint").write_text(fingerprint)
    launcher = LauncherSettings.from_params(job.training.get("launcher", {}))
    try:
        if launcher.world_size > 1:
            launch(job, work_dir, launcher)
        else:
            fine_tune(job, work_dir)
    except Exception as error:
        logger.error("%s: training failed: %s: %s", job.name, type(error).__name__, error)
        raise
    return load_result(work_dir)


def fine_tune(job: FoldJob, work_dir: Path) -> None:
    """Train with the Trainer, resuming from the last checkpoint; rank 0 writes the result folder."""
    trainer = build_trainer(job, work_dir / "checkpoints")
    arguments, tokenizer = trainer.args, trainer.processing_class
    max_length = ModelSettings.from_params(job.model).max_length
    last_checkpoint = last_complete_checkpoint(Path(arguments.output_dir))
    if last_checkpoint:
        logger.info("%s: resuming from %s", job.name, last_checkpoint)
    trainer.train(resume_from_checkpoint=last_checkpoint)

    # The held-out metrics reach the fold's MLflow run as oof_* from the node's output (tracking.py).
    evaluation = trainer.predict(trainer.eval_dataset, metric_key_prefix="eval")
    prediction = trainer.predict(TokenisedTexts(tokenizer, job.predict_texts, max_length))
    result_dir = work_dir / RESULT_FOLDER
    staging = work_dir / f".{RESULT_FOLDER}.tmp"
    trainer.save_model(str(staging / MODEL_FOLDER))  # gathers ZeRO-3 shards; writes on rank 0 only
    if trainer.is_world_process_zero():
        (staging / MODEL_FOLDER / "training_args.bin").unlink(missing_ok=True)  # a pickle; never read
        np.save(staging / "eval_probabilities.npy", softmax(evaluation.predictions))
        np.save(staging / "predict_probabilities.npy", softmax(prediction.predictions))
        metrics = {key.removeprefix("eval_"): value for key, value in evaluation.metrics.items()}
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (staging / "deepspeed_config.json").write_text(json.dumps(_resolved_deepspeed_config(arguments)))
        (staging / "fingerprint").write_text((work_dir / "fingerprint").read_text())
        os.replace(staging, result_dir)
        shutil.rmtree(arguments.output_dir, ignore_errors=True)  # the checkpoints are spent


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


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """Length-grouped batches whose order is drawn from the seed and the epoch alone.

    transformers' sampler draws its order from the global torch RNG at the start of each epoch; after
    a resume in the middle of epoch k > 0 that RNG is not where the uninterrupted run had it, so the
    rest of the epoch would see other batches. The Trainer calls ``set_epoch`` before each epoch.
    """

    def __init__(self, batch_size: int, dataset: torch.utils.data.Dataset, seed: int, model_input_name: str | None):
        super().__init__(batch_size, dataset=dataset, model_input_name=model_input_name, generator=torch.Generator())
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.generator.manual_seed(self.seed + self.epoch)
        return super().__iter__()


class FoldTrainer(Trainer):
    """The Trainer, with length-grouped batches for training only, in an order resumable mid-epoch,
    gradient clipping inside torch's fused AdamW, and inductor settings while it compiles.

    transformers applies ``train_sampling_strategy: group_by_length`` to evaluation and prediction too,
    which returns predictions in a shuffled order: probabilities must stay in the dataset's order.
    """

    def __init__(self, *args, clip_in_fused_optimizer: bool = False, inductor_config: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.clip_in_fused_optimizer = clip_in_fused_optimizer
        self.inductor_config = dict(inductor_config or {})

    def train(self, *args, **kwargs):
        with _inductor_settings(self.inductor_config):
            return super().train(*args, **kwargs)

    def predict(self, *args, **kwargs):
        with _inductor_settings(self.inductor_config):
            return super().predict(*args, **kwargs)

    def _clip_grad_norm(self, model: torch.nn.Module) -> torch.Tensor:
        optimizer = self._fused_adam_to_clip_in()
        if optimizer is None:
            return super()._clip_grad_norm(model)
        norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
        # torch's fused Adam divides each gradient by `grad_scale` as it reads it (GradScaler's hook):
        # the same clip as clip_grad_norm_, without a pass over the 1.3e9 gradients of its own.
        optimizer.grad_scale = torch.clamp((norm + 1e-6) / self.args.max_grad_norm, min=1.0)
        return norm

    def _fused_adam_to_clip_in(self) -> torch.optim.Adam | None:
        """The optimizer, when clipping inside it was asked for and is the Trainer's clip exactly."""
        optimizer = getattr(self.optimizer, "optimizer", self.optimizer)  # inside accelerate's wrapper
        if (
            not self.clip_in_fused_optimizer
            or self.is_deepspeed_enabled
            or self.is_fsdp_enabled
            or self.args.fp16  # GradScaler owns grad_scale
            or not isinstance(optimizer, torch.optim.Adam)  # AdamW is an Adam
            or not optimizer.defaults.get("fused")
        ):
            return None
        return optimizer

    def _get_train_sampler(
        self, train_dataset: torch.utils.data.Dataset | None = None
    ) -> torch.utils.data.Sampler | None:
        train_dataset = self.train_dataset if train_dataset is None else train_dataset
        if self.args.train_sampling_strategy != "group_by_length":
            return super()._get_train_sampler(train_dataset)
        return EpochSeededLengthGroupedSampler(
            self.args.train_batch_size * self.args.gradient_accumulation_steps,
            train_dataset,
            seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
            model_input_name=self.processing_class.model_input_names[0] if self.processing_class is not None else None,
        )

    def _get_eval_sampler(self, eval_dataset: torch.utils.data.Dataset) -> torch.utils.data.Sampler | None:
        if self.args.world_size <= 1:
            return torch.utils.data.SequentialSampler(eval_dataset)
        return None  # accelerate shards in order and gathers back in order


def build_trainer(job: FoldJob, output_dir: Path) -> Trainer:
    """The fold's Trainer: tokenised data, the model (fused attention when asked), the recipe's
    arguments (bf16 and DeepSpeed on GPU) and the metrics; the project's one training path."""
    on_gpu = torch.cuda.is_available()
    if on_gpu:
        _default_launcher_environment()  # DeepSpeed wants these even for one process
    settings = ModelSettings.from_params(job.model)
    arguments = training_arguments(job.training, output_dir, on_gpu, run_name=job.name)
    set_seed(arguments.seed)  # the model's random initialisation happens before the Trainer seeds
    tokenizer = build_tokenizer(job.vocabulary)
    model = build_model(settings, num_labels=len(job.class_months), vocab_size=len(job.vocabulary))
    return FoldTrainer(
        model=model,
        args=arguments,
        train_dataset=TokenisedTexts(tokenizer, job.train_texts, settings.max_length, job.train_labels),
        eval_dataset=TokenisedTexts(tokenizer, job.eval_texts, settings.max_length, job.eval_labels),
        data_collator=padding_collator(tokenizer, on_gpu, omits_full_masks(settings)),
        processing_class=tokenizer,
        compute_metrics=_metrics_function(job.class_months),
        clip_in_fused_optimizer=job.training.get("clip_in_fused_optimizer", False),
        inductor_config=job.training.get("inductor_config"),
    )


def training_arguments(training: dict[str, Any], output_dir: Path, on_gpu: bool, run_name: str) -> TrainingArguments:
    """`TrainingArguments` from the `training.arguments` parameters, with `training.gpu_arguments`
    merged in on GPU (bf16, DeepSpeed, fused optimizer, compilation) and `use_cpu` otherwise."""
    values = dict(training["arguments"])
    if on_gpu:
        values.update(training.get("gpu_arguments") or {})
        if int(os.environ.get("WORLD_SIZE", "1")) == 1 and not training.get("deepspeed_single_process", False):
            # One process: ZeRO has nothing to partition, and its hooks, buckets and fp32 master copy
            # cost 20% of the step (docs/performance.md); bf16 autocast + fused AdamW instead.
            values.pop("deepspeed", None)
    else:
        values["use_cpu"] = True
    values.setdefault("run_name", run_name)
    return TrainingArguments(output_dir=str(output_dir), **values)


def finished_fingerprint(work_dir: Path) -> str | None:
    """The fingerprint of the finished result in ``work_dir``, if there is one."""
    stamp = work_dir / RESULT_FOLDER / "fingerprint"
    return stamp.read_text() if stamp.is_file() else None


def load_result(work_dir: Path) -> FoldResult:
    """Read a finished fold's result folder (the model from safetensors)."""
    result_dir = work_dir / RESULT_FOLDER
    model = MegatronBertForSequenceClassification.from_pretrained(result_dir / MODEL_FOLDER, use_safetensors=True)
    deepspeed_config = json.loads((result_dir / "deepspeed_config.json").read_text())
    return FoldResult(
        model=model,
        eval_probabilities=np.load(result_dir / "eval_probabilities.npy"),
        predict_probabilities=np.load(result_dir / "predict_probabilities.npy"),
        metrics=json.loads((result_dir / "metrics.json").read_text()),
        deepspeed_config=deepspeed_config,
    )


def predict_probabilities(
    model: MegatronBertForSequenceClassification,
    vocabulary: list[str],
    texts: list[str],
    model_params: dict[str, Any],
    training: dict[str, Any],
) -> np.ndarray:
    """Class probabilities of ``texts`` from a trained model, batched like evaluation."""
    # A plain loop, not a Trainer: in a process that trained with DeepSpeed, a new Trainer inherits
    # accelerate's process-wide DeepSpeed state and refuses ZeRO-1/2 inference ("ZeRO inference only
    # makes sense with ZeRO Stage 3"); and there is no output folder to make.
    settings = ModelSettings.from_params(model_params)
    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda" if on_gpu else "cpu")
    model = apply_runtime_settings(model, settings).to(device).eval()
    tokenizer = build_tokenizer(vocabulary)
    arguments = training["arguments"]
    loader = torch.utils.data.DataLoader(
        TokenisedTexts(tokenizer, texts, settings.max_length),
        batch_size=int(arguments.get("per_device_eval_batch_size", 8)),
        collate_fn=padding_collator(tokenizer, on_gpu, omits_full_masks(settings)),
        num_workers=int(arguments.get("dataloader_num_workers", 0)),
        pin_memory=on_gpu,
    )
    logits = []
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_gpu):
        for batch in loader:
            batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
            logits.append(model(**batch).logits.float().cpu())
    return softmax(torch.cat(logits).numpy())


def _metrics_function(class_months: list[int]):
    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        return classification_metrics(softmax(prediction.predictions), prediction.label_ids, class_months)

    return compute_metrics


def _job_changed(work_dir: Path, fingerprint: str) -> bool:
    stamp = work_dir / "fingerprint"
    return stamp.is_file() and stamp.read_text() != fingerprint


def _resolved_deepspeed_config(arguments: TrainingArguments) -> dict[str, Any]:
    """The DeepSpeed config with the Trainer's "auto" values filled in; empty when DeepSpeed is unused."""
    config = getattr(arguments, "hf_deepspeed_config", None)
    return {} if config is None else config.config


def _inductor_settings(settings: dict[str, Any]):
    """torch.compile's inductor configuration patched with ``settings`` (names as in
    ``torch._inductor.config``, e.g. ``triton.multi_kernel``); an unknown name raises."""
    if not settings:
        return contextlib.nullcontext()
    import torch._inductor.config as inductor_config  # imported only when asked: it is slow to import

    return inductor_config.patch(settings)


def _default_launcher_environment() -> None:
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(probe.getsockname()[1])
    for name, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}.items():
        os.environ.setdefault(name, value)
