"""A fold's Trainer arguments from the `training` parameters, and the DeepSpeed config they train with.

Whether a fold trains under DeepSpeed is decided once, by `trains_with_deepspeed`: in each fold's
process (`training_arguments`, with the world size its launcher gave it) and once per run, before any
fold starts (`resolved_deepspeed_config`, with the world size the launcher settings will give).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from transformers import TrainingArguments
from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

from sentence_reduction.finetune.launcher import LauncherSettings

_ARGUMENT_DEFAULTS = {
    field.name: field.default
    for field in dataclasses.fields(TrainingArguments)
    if field.default is not dataclasses.MISSING
}


def effective_arguments(training: dict[str, Any], on_gpu: bool) -> dict[str, Any]:
    """The `training.arguments` parameters, with `training.gpu_arguments` merged in on GPU."""
    return {**training["arguments"], **((training.get("gpu_arguments") or {}) if on_gpu else {})}


def trains_with_deepspeed(training: dict[str, Any], on_gpu: bool, world_size: int) -> bool:
    """Whether a fold trained in ``world_size`` processes uses the `deepspeed` argument it is given.

    Only on GPU; and one process trains without it unless `training.deepspeed_single_process`:
    ZeRO has nothing to partition there, and its hooks, buckets and fp32 master copy cost 20% of
    the step (docs/performance.md); bf16 autocast + fused AdamW instead.
    """
    if not on_gpu or not effective_arguments(training, on_gpu).get("deepspeed"):
        return False
    return world_size > 1 or bool(training.get("deepspeed_single_process", False))


def compiles_layers(training: dict[str, Any], on_gpu: bool) -> bool:
    """Whether ``torch_compile`` compiles each encoder layer (``training.regional_compilation``)
    rather than the whole model."""
    return bool(effective_arguments(training, on_gpu).get("torch_compile")) and bool(
        training.get("regional_compilation")
    )


def training_arguments(training: dict[str, Any], output_dir: Path, on_gpu: bool, run_name: str) -> TrainingArguments:
    """`TrainingArguments` from the `training.arguments` parameters, with `training.gpu_arguments`
    merged in on GPU (bf16, DeepSpeed, fused optimizer, compilation) and `use_cpu` otherwise."""
    values = effective_arguments(training, on_gpu)
    if compiles_layers(training, on_gpu):
        values["torch_compile"] = False  # the engine compiles the layers itself (`engine.build_trainer`)
    if not trains_with_deepspeed(training, on_gpu, world_size=int(os.environ.get("WORLD_SIZE", "1"))):
        values.pop("deepspeed", None)
    if not on_gpu:
        values["use_cpu"] = True
    values.setdefault("run_name", run_name)
    return TrainingArguments(output_dir=str(output_dir), **values)


def resolved_deepspeed_config(training: dict[str, Any], on_gpu: bool) -> dict[str, Any]:
    """The DeepSpeed config the folds of a run train with, its "auto" values filled as each fold's
    `TrainingArguments` fill them (batch sizes over the launcher's world size, gradient accumulation
    and clipping, bf16/fp16, optimizer parameters); empty when the folds train without DeepSpeed.

    transformers' own filling (`HfTrainerDeepSpeedConfig.trainer_config_process`), handed the parameters
    over `TrainingArguments`' defaults as plain values: a `TrainingArguments` would set up this process's
    devices (and, with DeepSpeed, its distributed state) and report this process's world size, not the
    one the launcher will start.
    What the Trainer fills only once it holds the model and knows the fold's number of steps
    (`trainer_config_finalize`: ZeRO-3's bucket sizes from the hidden size, a scheduler's steps)
    stays "auto". Raises when a value set in the config contradicts the arguments, as the Trainer
    would, but before any fold has trained.
    """
    world_size = LauncherSettings.from_params(training.get("launcher") or {}).world_size
    if not trains_with_deepspeed(training, on_gpu, world_size):
        return {}
    values = {**_ARGUMENT_DEFAULTS, **effective_arguments(training, on_gpu), "world_size": world_size}
    arguments = SimpleNamespace(**values)
    # HfDeepSpeedConfig registers itself process-wide (the weak reference from_pretrained reads ZeRO-3
    # from): this one is dropped on return, and the folds, which read what it returns, register theirs after.
    config = HfTrainerDeepSpeedConfig(arguments.deepspeed)
    config.trainer_config_process(arguments)
    if config.mismatches:
        source = f" {arguments.deepspeed}" if isinstance(arguments.deepspeed, str) else ""
        raise ValueError(
            f'DeepSpeed config{source} contradicts the training arguments (set these to "auto"): '
            + "; ".join(mismatch.removeprefix("- ") for mismatch in config.mismatches)
        )
    return config.config
