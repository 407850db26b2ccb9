"""Fine-tuning one fold with the Hugging Face Trainer (and DeepSpeed on GPU).

`run_fold` is the entry point: it trains in this process, or under a multi-process launcher, and
returns what the fold produced. A fold's work folder holds its Trainer checkpoints and, once it
finishes, its result (model as safetensors, probabilities, metrics) stamped with a fingerprint of the
job: the same job run again resumes from the last checkpoint, or returns the finished result at once.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import math
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from transformers import (
    EvalPrediction,
    MegatronBertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from sentence_reduction.atomic import replace_with
from sentence_reduction.finetune.arguments import compiles_layers, effective_arguments, training_arguments
from sentence_reduction.finetune.job import FoldJob, FoldResult, SavedModel
from sentence_reduction.finetune.launcher import LauncherSettings, launch
from sentence_reduction.finetune.master_weights import MasterWeightAdamW
from sentence_reduction.finetune.model import (
    ModelSettings,
    apply_runtime_settings,
    build_model,
    compile_layers,
    omits_full_masks,
)
from sentence_reduction.finetune.text import TokenisedTexts, build_tokenizer, padded_batch, padding_collator, tokenise
from sentence_reduction.scoring import classification_metrics, softmax

logger = logging.getLogger(__name__)

RESULT_FOLDER = "result"
MODEL_FOLDER = "model"


def run_fold(job: FoldJob, work_dir: str | Path) -> FoldResult:
    """Train ``job`` (or resume it, or reuse its finished result) and return what it produced."""
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
    arguments = trainer.args
    last_checkpoint = last_complete_checkpoint(Path(arguments.output_dir))
    if last_checkpoint:
        logger.info("%s: resuming from %s", job.name, last_checkpoint)
    trainer.train(resume_from_checkpoint=last_checkpoint)

    result_dir = work_dir / RESULT_FOLDER
    staging = work_dir / f".{RESULT_FOLDER}.tmp"
    trainer.save_model(str(staging / MODEL_FOLDER))  # gathers ZeRO-3 shards; writes on rank 0 only
    started = time.perf_counter()
    eval_probabilities, predict_probabilities = _final_predictions(trainer, job)
    # The held-out metrics reach the fold's MLflow run as oof_* from the node's output (tracking.py).
    metrics = classification_metrics(eval_probabilities, np.asarray(job.eval_labels), job.class_months)
    metrics["runtime"] = time.perf_counter() - started
    metrics["samples_per_second"] = (len(job.eval_texts) + len(job.predict_texts)) / metrics["runtime"]
    if trainer.is_world_process_zero():
        (staging / MODEL_FOLDER / "training_args.bin").unlink(missing_ok=True)  # a pickle; never read
        np.save(staging / "eval_probabilities.npy", eval_probabilities)
        np.save(staging / "predict_probabilities.npy", predict_probabilities)
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (staging / "fingerprint").write_text((work_dir / "fingerprint").read_text())
        replace_with(staging, result_dir)
        shutil.rmtree(arguments.output_dir, ignore_errors=True)  # the checkpoints are spent


def _final_predictions(trainer: FoldTrainer, job: FoldJob) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities of the whole held-out fold and of the test texts, once training is done.

    One process: the inference path of `predict_probabilities` (bf16 weights, the layers compiled
    when asked, batches of similar length), the same one the predict pipeline takes. Several
    processes: the Trainer's sharded prediction, which gathers every rank's share back in order.
    """
    settings = ModelSettings.from_params(job.model)
    if trainer.args.world_size > 1:
        tokenizer = trainer.processing_class
        return tuple(
            softmax(trainer.predict(_tokenised(tokenizer, texts, settings)).predictions)
            for texts in (job.eval_texts, job.predict_texts)
        )
    model = trainer.accelerator.unwrap_model(trainer.model, keep_torch_compile=False)
    predictor = Predictor(model, job.vocabulary, settings, job.training)
    return predictor(job.eval_texts), predictor(job.predict_texts)


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

    def on_train_begin(self, args, state, control, **kwargs):
        self.last_save = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % max(1, int(state.logging_steps or 1)):
            return
        due = [time.monotonic() - self.last_save >= self.seconds]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.broadcast_object_list(due, src=0)
        if due[0]:
            control.should_save = True

    def on_save(self, args, state, control, **kwargs):
        self.last_save = time.monotonic()


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
    gradient clipping inside the optimizer's update (torch's fused AdamW, or `MasterWeightAdamW`),
    inductor settings while it compiles, and inputs that keep one compiled graph for training and
    one for evaluation.

    transformers applies ``train_sampling_strategy: group_by_length`` to evaluation and prediction too,
    which returns predictions in a shuffled order: probabilities must stay in the dataset's order.
    """

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

    def train(self, *args, **kwargs):
        with _inductor_settings(self.inductor_config):
            return super().train(*args, **kwargs)

    def predict(self, *args, **kwargs):
        with _inductor_settings(self.inductor_config):
            return super().predict(*args, **kwargs)

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
        optimizer.grad_scale = torch.clamp((norm + 1e-6) / self.args.max_grad_norm, min=1.0)
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
    train_dataset = _tokenised(tokenizer, job.train_texts, settings, job.train_labels)
    evaluation = job.training.get("in_training_evaluation") or {}
    sample = in_training_evaluation_rows(
        job.eval_labels, evaluation.get("fraction", 1.0), evaluation.get("min_rows", 0), arguments.seed
    )
    eval_dataset = _tokenised(
        tokenizer, [job.eval_texts[row] for row in sample], settings, [job.eval_labels[row] for row in sample]
    )
    # Every batch with a mask, or (when no text of the fold needs padding) none: the same keyword
    # arguments on every batch, so a whole-model graph is not specialised on the mask's presence.
    # (Compiled layers still get no mask for a batch without padding: eager transformers drops an
    # all-ones mask above them, one graph more and SDPA's faster unmasked kernel.)
    unpadded = _fills_max_length(train_dataset, eval_dataset, max_length=settings.max_length)
    # Regional compilation: the layers compiled here (for any length unless no text needs padding),
    # not the whole model by the Trainer (see `training_arguments`).
    regional = compiles_layers(job.training, on_gpu)
    if regional:
        compile_layers(model, dynamic=not unpadded)
    trainer = FoldTrainer(
        model=model,
        args=arguments,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=padding_collator(tokenizer, on_gpu, omits_full_masks(settings) and unpadded),
        processing_class=tokenizer,
        compute_metrics=_metrics_function(job.class_months),
        clip_in_fused_optimizer=job.training.get("clip_in_fused_optimizer", False),
        inductor_config=job.training.get("inductor_config"),
        dynamic_sequence_length=arguments.torch_compile and not unpadded,
        compiled=arguments.torch_compile or regional,
        optimizer_cls_and_kwargs=master_weight_optimizer(
            job.training, arguments, compiled=on_gpu and (arguments.torch_compile or regional)
        ),
    )
    if job.training.get("checkpoint_every_minutes"):
        trainer.add_callback(CheckpointEveryMinutes(float(job.training["checkpoint_every_minutes"])))
    return trainer


def master_weight_optimizer(
    training: dict[str, Any], arguments: TrainingArguments, compiled: bool
) -> tuple[type[MasterWeightAdamW], dict[str, Any]] | None:
    """`MasterWeightAdamW` and its arguments from the recipe's AdamW when ``training.bf16_master_weights``
    asks for it, else None (the Trainer's own optimizer).

    Under DeepSpeed (several processes) the weights already train this way, in DeepSpeed's bf16
    optimizer, so the parameter changes nothing there.
    """
    if not training.get("bf16_master_weights") or arguments.deepspeed or arguments.fsdp:
        return None
    optim = str(getattr(arguments.optim, "value", arguments.optim))
    if arguments.fp16 or optim not in ("adamw_torch", "adamw_torch_fused"):
        raise ValueError(
            "training.bf16_master_weights trains bf16 weights with AdamW: it needs optim adamw_torch or "
            f"adamw_torch_fused and no fp16, not optim {optim}" + (" with fp16" if arguments.fp16 else "")
        )
    return MasterWeightAdamW, {
        "lr": arguments.learning_rate,
        "betas": (arguments.adam_beta1, arguments.adam_beta2),
        "eps": arguments.adam_epsilon,
        "weight_decay": arguments.weight_decay,
        "compiled": compiled,
    }


def _tokenised(
    tokenizer: Any, texts: list[str], settings: ModelSettings, labels: list[int] | None = None
) -> TokenisedTexts:
    return TokenisedTexts(tokenizer, texts, settings.max_length, labels, settings.truncation, settings.head_share)


def _fills_max_length(*datasets: TokenisedTexts, max_length: int) -> bool:
    return all(length == max_length for dataset in datasets for length in dataset.lengths)


def finished_fingerprint(work_dir: Path) -> str | None:
    """The fingerprint of the finished result in ``work_dir``, if there is one."""
    stamp = work_dir / RESULT_FOLDER / "fingerprint"
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


def predict_probabilities(
    model: MegatronBertForSequenceClassification,
    vocabulary: list[str],
    texts: list[str],
    model_params: dict[str, Any],
    training: dict[str, Any],
) -> np.ndarray:
    """Class probabilities of ``texts`` from a trained model (see `Predictor`)."""
    return Predictor(model, vocabulary, ModelSettings.from_params(model_params), training)(texts)


class Predictor:
    """A trained model's class probabilities for any texts, in the texts' order.

    A plain loop, not a Trainer: in a process that trained with DeepSpeed, a new Trainer inherits
    accelerate's process-wide DeepSpeed state and refuses ZeRO-1/2 inference ("ZeRO inference only
    makes sense with ZeRO Stage 3"). On GPU the weights are cast to bf16 when the recipe trains in
    bf16 (fp32 weights under autocast run 1.5x slower) and, when ``training.compile_predictions``
    asks, the layers are compiled for any batch and length (`compile_layers`: one layer's graph, a
    few seconds, serves every layer and every fold; the whole model's took 75 s, and static shapes
    for full batches measured no faster: docs/performance.md).
    The texts go in chunks of ``CHUNK_BATCHES`` batches, longest first within a chunk (little
    padding); a background thread tokenises and pads the next chunk while the GPU runs this one, and
    a batch without padding runs without a mask. The model is modified in place.
    """

    CHUNK_BATCHES = 8  # 1,024 texts at batch 128: tokenised in about 0.15 s, run in about 2.5 s

    def __init__(
        self,
        model: MegatronBertForSequenceClassification,
        vocabulary: list[str],
        settings: ModelSettings,
        training: dict[str, Any],
    ):
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        on_gpu = self.device.type == "cuda"
        arguments = effective_arguments(training, on_gpu=on_gpu)
        self.settings = settings
        self.tokenizer = build_tokenizer(vocabulary)
        self.batch_size = int(arguments.get("per_device_eval_batch_size", 8))
        self.inductor_config = training.get("inductor_config") or {}
        model = apply_runtime_settings(model, settings).eval()
        # fp32 elsewhere: a model trained with bf16 weights (`bf16_master_weights`) is saved in bf16.
        model.to(self.device, dtype=torch.bfloat16 if on_gpu and arguments.get("bf16") else torch.float32)
        if on_gpu and training.get("compile_predictions"):
            compile_layers(model, dynamic=True)
        self.model = model
        self.num_labels = model.config.num_labels

    def __call__(self, texts: list[str]) -> np.ndarray:
        probabilities = np.zeros((len(texts), self.num_labels), dtype=np.float32)
        if not texts:
            return probabilities
        chunk = self.CHUNK_BATCHES * self.batch_size
        logits, rows = [], []
        with (
            concurrent.futures.ThreadPoolExecutor(max_workers=1) as tokeniser,
            torch.inference_mode(),
            _inductor_settings(self.inductor_config),
        ):
            upcoming = tokeniser.submit(self._batches, texts[:chunk])
            for start in range(0, len(texts), chunk):
                order, batches = upcoming.result()
                if start + chunk < len(texts):
                    upcoming = tokeniser.submit(self._batches, texts[start + chunk : start + 2 * chunk])
                rows.append(start + order)
                for batch in batches:  # no host sync in the loop: the GPU queue runs ahead
                    batch = {key: value.to(self.device, non_blocking=True) for key, value in batch.items()}
                    logits.append(self.model(**batch).logits.float())
        probabilities[np.concatenate(rows)] = torch.cat(logits).cpu().numpy()
        return softmax(probabilities)

    def _batches(self, texts: list[str]) -> tuple[np.ndarray, list[dict[str, torch.Tensor]]]:
        """The texts tokenised, longest first, as padded batches (pinned on GPU); and that order."""
        input_ids = tokenise(
            self.tokenizer, texts, self.settings.max_length, self.settings.truncation, self.settings.head_share
        )["input_ids"]
        order = np.argsort(-np.fromiter(map(len, input_ids), dtype=np.int64, count=len(input_ids)), kind="stable")
        on_gpu = self.device.type == "cuda"
        batches = []
        for start in range(0, len(order), self.batch_size):
            batch = padded_batch(
                [input_ids[row] for row in order[start : start + self.batch_size]],
                self.tokenizer.pad_token_id,
                multiple_of=8 if on_gpu else None,  # tensor cores, as `padding_collator`
                omit_full_mask=omits_full_masks(self.settings),
            )
            batches.append({key: value.pin_memory() if on_gpu else value for key, value in batch.items()})
        return order, batches


def _metrics_function(class_months: list[int]):
    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        return classification_metrics(softmax(prediction.predictions), prediction.label_ids, class_months)

    return compute_metrics


def _job_changed(work_dir: Path, fingerprint: str) -> bool:
    stamp = work_dir / "fingerprint"
    return stamp.is_file() and stamp.read_text() != fingerprint


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
