"""The fold's Trainer set up: the Trainer subclass, its training sampler, the checkpoint callback, the
optimizer and the held-out rows evaluated during training. A checkpoint is marked complete once all its
files are written (`fold_cache.mark_complete`); a save that fills the disk fails with one line."""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Sized
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from transformers import (
    EvalPrediction,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, PredictionOutput, TrainOutput, rotate_checkpoints

from sentence_reduction.atomic import disk_full_reported
from sentence_reduction.finetune.arguments import (
    TrainingSettings,
    compiles_a_region,
    effective_arguments,
    inductor_settings,
    training_arguments,
)
from sentence_reduction.finetune.fold_cache import mark_complete
from sentence_reduction.finetune.job import FoldJob
from sentence_reduction.finetune.master_weights import MasterWeightAdamW
from sentence_reduction.finetune.model import ModelSettings, build_model, compile_region, omits_full_masks
from sentence_reduction.finetune.text import TokenisedTexts, padding_collator
from sentence_reduction.scoring import classification_metrics, softmax


def in_training_evaluation_rows(labels: list[int], fraction: float, min_rows: int, seed: int) -> np.ndarray:
    """Indices of the held-out rows evaluated during training: a fixed stratified sample of
    ``fraction`` of them (at least ``min_rows``). The whole fold is predicted once at the end."""
    count = len(labels)
    size = min(count, max(int(min_rows), math.ceil(fraction * count)))
    if size >= count:
        return np.arange(count)
    rows = np.arange(count)
    try:
        sample, _ = train_test_split(rows, train_size=size, stratify=labels, random_state=seed)
    except ValueError:  # a class of one row, or fewer rows than classes: no stratified sample exists
        sample, _ = train_test_split(rows, train_size=size, random_state=seed)
    return np.sort(sample)


class CheckpointEveryMinutes(TrainerCallback):
    """A checkpoint once ``minutes`` of training have passed since the last one (or the start).

    A checkpoint of the 1.3B model (weights and AdamW state, 15-17.5 GB) stalls the steps for
    15-20 s; by wall time its cost stays a fixed share of the job, whatever the fold's size. Checked
    at logging steps (when the loss is read anyway): rank 0 decides for every rank, since all of
    them must take part in the save.
    """

    def __init__(self, minutes: float):
        self.seconds = 60.0 * minutes
        self.last_save = time.monotonic()

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.last_save = time.monotonic()

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if state.global_step % max(1, int(state.logging_steps or 1)):
            return
        due = [time.monotonic() - self.last_save >= self.seconds]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.broadcast_object_list(due, src=0)
        if due[0]:
            control.should_save = True

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self.last_save = time.monotonic()


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
    gradient clipping inside the optimizer's update (torch's fused AdamW, or `MasterWeightAdamW`),
    inductor settings while it compiles, and inputs that keep one compiled graph for training and
    one for evaluation.

    transformers applies ``train_sampling_strategy: group_by_length`` to evaluation and prediction too,
    which returns predictions in a shuffled order: probabilities must stay in the dataset's order.
    """

    # What the project hands every one of its trainers (`project_trainer`).
    model: PreTrainedModel
    processing_class: PreTrainedTokenizerBase

    def __init__(
        self,
        *args,
        clip_in_fused_optimizer: bool = False,
        inductor_config: dict | None = None,
        dynamic_sequence_length: bool = False,
        compiled: bool = False,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.compiled = compiled
        self.clip_in_fused_optimizer = clip_in_fused_optimizer
        self.inductor_config = dict(inductor_config or {})
        self.dynamic_sequence_length = dynamic_sequence_length

    def _prepare_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        inputs = super()._prepare_inputs(inputs)
        if self.dynamic_sequence_length:
            # Batches are padded to their longest text: compiled for any length from the first
            # batch on, rather than for its length and then recompiled when the next one differs.
            for value in inputs.values():
                if isinstance(value, torch.Tensor) and value.dim() == 2:
                    torch._dynamo.maybe_mark_dynamic(value, 1)
        return inputs

    def get_train_dataloader(self) -> torch.utils.data.DataLoader:
        if not self.compiled or self.args.dataloader_drop_last:
            return super().get_train_dataloader()
        # A short last batch is one more input shape for the compiled step, and a batch of one is
        # always compiled apart: training drops it (each epoch's order differs, so no text is lost
        # for good); evaluation and prediction never do.
        self.args.dataloader_drop_last = True
        try:
            return super().get_train_dataloader()
        finally:
            self.args.dataloader_drop_last = False

    def train(self, *args: Any, **kwargs: Any) -> TrainOutput:
        with inductor_settings(self.inductor_config):
            return super().train(*args, **kwargs)

    def predict(self, *args: Any, **kwargs: Any) -> PredictionOutput:
        with inductor_settings(self.inductor_config):
            return super().predict(*args, **kwargs)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        folder = Path(output_dir or output_folder(self))
        with disk_full_reported(f"saving the model in {folder}", folder, self._model_bytes):
            super().save_model(output_dir, _internal_call)

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        """The Trainer's checkpoint, then its completion mark, then the rotation of older checkpoints:
        a kill at any point leaves a complete checkpoint to resume from."""
        run_dir = Path(self._get_output_dir(trial=trial))
        checkpoint = run_dir / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        save_total_limit, self.args.save_total_limit = self.args.save_total_limit, None
        try:
            with disk_full_reported(f"saving checkpoint {checkpoint}", run_dir, self._checkpoint_bytes):
                super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = save_total_limit
        if self.args.world_size > 1:
            self.accelerator.wait_for_everyone()  # every rank's files written before the mark
        if self.args.should_save:
            mark_complete(checkpoint)
            rotate_checkpoints(
                output_dir=str(run_dir),
                save_total_limit=save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=True,
            )

    def _model_bytes(self) -> int:
        return _bytes(self.model.parameters())

    def _checkpoint_bytes(self) -> int:
        """About what a checkpoint takes: the weights and the optimizer's state (this rank's share)."""
        state = getattr(self._unwrapped_optimizer(), "state", None) or {}
        tensors = [value for values in state.values() if isinstance(values, dict) for value in values.values()]
        return self._model_bytes() + _bytes(value for value in tensors if isinstance(value, torch.Tensor))

    def _clip_grad_norm(self, model: torch.nn.Module) -> torch.Tensor:
        master_weights = self._unwrapped_optimizer()
        if isinstance(master_weights, MasterWeightAdamW):
            return master_weights.clip_gradients(self.args.max_grad_norm)
        optimizer = self._fused_adam_to_clip_in()
        if optimizer is None:
            return super()._clip_grad_norm(model)
        norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
        # torch's fused Adam divides each gradient by `grad_scale` as it reads it (GradScaler's hook):
        # the same clip as clip_grad_norm_, without a pass over the 1.3e9 gradients of its own.
        # (An attribute torch's Adam reads but does not declare.)
        optimizer.grad_scale = torch.clamp((norm + 1e-6) / self.args.max_grad_norm, min=1.0)  # type: ignore[attr-defined]
        return norm

    def _unwrapped_optimizer(self) -> torch.optim.Optimizer | None:
        return getattr(self.optimizer, "optimizer", self.optimizer)  # inside accelerate's wrapper

    def _fused_adam_to_clip_in(self) -> torch.optim.Adam | None:
        """The optimizer, when clipping inside it was asked for and is the Trainer's clip exactly."""
        optimizer = self._unwrapped_optimizer()
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
        if train_dataset is None or self.args.train_sampling_strategy != "group_by_length":
            return super()._get_train_sampler(train_dataset)
        return EpochSeededLengthGroupedSampler(
            self.args.train_batch_size * self.args.gradient_accumulation_steps,
            train_dataset,
            seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
            model_input_name=self.processing_class.model_input_names[0] if self.processing_class is not None else None,
        )

    def _get_eval_sampler(self, eval_dataset: torch.utils.data.Dataset) -> torch.utils.data.Sampler | None:
        if self.args.world_size <= 1 and isinstance(eval_dataset, Sized):
            return torch.utils.data.SequentialSampler(eval_dataset)
        return None  # several processes: accelerate shards in order and gathers back in order


def build_trainer(job: FoldJob, output_dir: Path) -> FoldTrainer:
    """The fold's Trainer: tokenised data, the model (fused attention when asked), the recipe's
    arguments (bf16 and DeepSpeed on GPU) and the metrics; the project's one training path."""
    on_gpu = torch.cuda.is_available()
    if on_gpu:
        default_launcher_environment()  # DeepSpeed wants these even for one process
    settings, training = job.model, job.training
    arguments = training_arguments(training, output_dir, on_gpu, run_name=job.name)
    set_seed(arguments.seed)  # the model's random initialisation happens before the Trainer seeds
    tokenizer = job.load_tokenizer()
    model = build_model(settings, num_labels=len(job.class_months), vocab_size=len(tokenizer))
    train_dataset = tokenised_texts(tokenizer, job.train_texts, settings, job.train_labels)
    evaluation = training.in_training_evaluation
    sample = in_training_evaluation_rows(job.eval_labels, evaluation.fraction, evaluation.min_rows, arguments.seed)
    eval_dataset = tokenised_texts(
        tokenizer, [job.eval_texts[row] for row in sample], settings, [job.eval_labels[row] for row in sample]
    )
    # Every batch with a mask, or (when no text of the fold needs padding) none: the same keyword
    # arguments on every batch, so a whole-model graph is not specialised on the mask's presence.
    # (Compiled layers still get no mask for a batch without padding: eager transformers drops an
    # all-ones mask above them, one graph more and SDPA's faster unmasked kernel.)
    unpadded = _fills_max_length(train_dataset, eval_dataset, max_length=settings.max_length)
    return project_trainer(
        model,
        training,
        arguments,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=padding_collator(tokenizer, on_gpu, omits_full_masks(settings) and unpadded),
        processing_class=tokenizer,
        compute_metrics=_metrics_function(job.class_months),
        unpadded=unpadded,
    )


def project_trainer(
    model: PreTrainedModel,
    training: TrainingSettings,
    arguments: TrainingArguments,
    unpadded: bool,
    **trainer_arguments: Any,
) -> FoldTrainer:
    """A `FoldTrainer` of ``model`` with ``arguments`` (made by `training_arguments`) and the datasets,
    collator... of ``trainer_arguments``, on the project's path that ``training`` sets: the region it
    compiles (for any length unless ``unpadded``: no text needs padding), the optimizer's clip and
    master weights, inductor settings, checkpoints by wall time. Fine-tuning's and pretraining's."""
    on_gpu = torch.cuda.is_available()
    # Regional compilation: the layers, or the encoder, compiled here (for any length unless no text
    # needs padding), not the whole model by the Trainer (see `training_arguments`).
    regional = compiles_a_region(training, on_gpu)
    if regional:
        compile_region(
            model,
            training.compiled_region,
            dynamic=not unpadded,
            mode=effective_arguments(training, on_gpu).get("torch_compile_mode"),
        )
    trainer = FoldTrainer(
        model=model,
        args=arguments,
        clip_in_fused_optimizer=training.clip_in_fused_optimizer,
        inductor_config=training.inductor_config,
        dynamic_sequence_length=arguments.torch_compile and not unpadded,
        compiled=arguments.torch_compile or regional,
        optimizer_cls_and_kwargs=master_weight_optimizer(
            training, arguments, compiled=on_gpu and (arguments.torch_compile or regional)
        ),
        **trainer_arguments,
    )
    if training.checkpoint_every_minutes:
        trainer.add_callback(CheckpointEveryMinutes(float(training.checkpoint_every_minutes)))
    return trainer


def master_weight_optimizer(
    training: TrainingSettings, arguments: TrainingArguments, compiled: bool
) -> tuple[type[MasterWeightAdamW], dict[str, Any]] | None:
    """`MasterWeightAdamW` and its arguments from the recipe's AdamW when ``training.bf16_master_weights``
    asks for it, else None (the Trainer's own optimizer).

    Under DeepSpeed (several processes) the weights already train this way, in DeepSpeed's bf16
    optimizer, so the parameter changes nothing there.
    """
    if not training.bf16_master_weights or arguments.deepspeed or arguments.fsdp:
        return None
    optim = str(getattr(arguments.optim, "value", arguments.optim))
    if arguments.fp16 or optim not in ("adamw_torch", "adamw_torch_fused"):
        raise ValueError(
            "training.bf16_master_weights trains bf16 weights with AdamW: it needs optim adamw_torch or "
            f"adamw_torch_fused and no fp16, not optim {optim}" + (" with fp16" if arguments.fp16 else "")
        )
    if training.master_weight_update not in ("per_parameter", "multi_tensor"):
        raise ValueError(
            f"training.master_weight_update: per_parameter or multi_tensor, not {training.master_weight_update!r}"
        )
    return MasterWeightAdamW, {
        "lr": arguments.learning_rate,
        "betas": (arguments.adam_beta1, arguments.adam_beta2),
        "eps": arguments.adam_epsilon,
        "weight_decay": arguments.weight_decay,
        "compiled": compiled,
        "multi_tensor": training.master_weight_update == "multi_tensor",
    }


def tokenised_texts(
    tokenizer: Any, texts: list[str], settings: ModelSettings, labels: list[int] | None = None
) -> TokenisedTexts:
    """``texts`` tokenised as the candidate's model reads them: ``max_length`` tokens, cut as ``truncation`` says."""
    return TokenisedTexts(tokenizer, texts, settings.max_length, labels, settings.truncation, settings.head_share)


def _bytes(tensors: Any) -> int:
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


def _fills_max_length(*datasets: TokenisedTexts, max_length: int) -> bool:
    return all(length == max_length for dataset in datasets for length in dataset.lengths)


def output_folder(trainer: Trainer) -> str:
    """The trainer's ``output_dir`` (None only before `TrainingArguments` sets its default)."""
    return cast(str, trainer.args.output_dir)


def first_output(values: np.ndarray | tuple[np.ndarray, ...]) -> np.ndarray:
    """A classifier's logits (or labels) among the Trainer's predictions: the array, or the first of a
    tuple (a model that also outputs hidden states or attentions)."""
    return values[0] if isinstance(values, tuple) else values


def _metrics_function(class_months: list[int]):
    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        probabilities = softmax(first_output(prediction.predictions))
        return classification_metrics(probabilities, first_output(prediction.label_ids), class_months)

    return compute_metrics


def default_launcher_environment() -> None:
    """The launcher's variables (rank, world size, master address and a free port) for one process."""
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(probe.getsockname()[1])
    for name, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}.items():
        os.environ.setdefault(name, value)
