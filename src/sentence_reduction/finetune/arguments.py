"""The `training` parameters (`TrainingSettings`), a fold's Trainer arguments from them, and the
DeepSpeed config they train with.

Whether a fold trains under DeepSpeed is decided once, by `trains_with_deepspeed`: in each fold's
process (`training_arguments`, with the world size its launcher gave it) and once per run, before any
fold starts (`resolved_deepspeed_config`, with the world size the launcher settings will give).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
from dataclasses import dataclass, field
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


# What `torch_compile` compiles (`training.compiled_region`; docs/performance.md, docs/encoders.md).
COMPILED_REGIONS = ("layers", "encoder", "model")


@dataclass
class InTrainingEvaluation:
    """Which held-out rows are evaluated during training (the metric histories in MLflow): a fixed
    stratified sample of ``fraction`` of them, at least ``min_rows``. The whole fold is predicted at the end."""

    fraction: float = 1.0
    min_rows: int = 0


@dataclass
class TrainingSettings:
    """How a fold trains (the `training` parameters; conf/base/parameters_train.yml says what each does).

    ``arguments``: Hugging Face `TrainingArguments`, as named there; ``gpu_arguments`` are merged into
    them when a GPU is present. The other fields are the project's own: where folds keep their work,
    evaluation during training, checkpoints by wall time, compilation, DeepSpeed on one process, the
    optimizer's clip and bf16 master weights, inductor settings, and the launcher of several processes.
    """

    arguments: dict[str, Any] = field(default_factory=dict)
    gpu_arguments: dict[str, Any] = field(default_factory=dict)
    work_dir: str = "data/06_models/work"
    in_training_evaluation: InTrainingEvaluation = field(default_factory=InTrainingEvaluation)
    checkpoint_every_minutes: float | None = None
    compiled_region: str = "model"
    compile_predictions: bool = False
    deepspeed_single_process: bool = False
    clip_in_fused_optimizer: bool = False
    bf16_master_weights: bool = False
    master_weight_update: str = "per_parameter"
    inductor_config: dict[str, Any] = field(default_factory=dict)
    launcher: LauncherSettings = field(default_factory=LauncherSettings)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> TrainingSettings:
        """The settings from the `training` parameters (or from `dataclasses.asdict` of settings)."""
        unknown = set(params) - {item.name for item in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"training: unknown parameter(s) {', '.join(sorted(unknown))}")
        values = dict(params)
        values["in_training_evaluation"] = InTrainingEvaluation(**(values.get("in_training_evaluation") or {}))
        values["launcher"] = LauncherSettings.from_params(values.get("launcher") or {})
        if values.get("compiled_region", "model") not in COMPILED_REGIONS:
            raise ValueError(
                f"training.compiled_region: {values['compiled_region']!r} is not one of {', '.join(COMPILED_REGIONS)}"
            )
        for name in ("arguments", "gpu_arguments", "inductor_config"):
            values[name] = dict(values.get(name) or {})
        return cls(**values)

    def merged_with(self, overrides: dict[str, Any]) -> TrainingSettings:
        """These settings with ``overrides`` (a part of the `training` parameters) merged in key by key,
        as a candidate's own `training` is merged over the shared one."""
        return TrainingSettings.from_params(deep_merge(dataclasses.asdict(self), overrides or {}))


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in key by key (nested dicts merged, anything else replaced), as
    Kedro's soft merge of environments does; neither input is changed."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def effective_arguments(training: TrainingSettings, on_gpu: bool) -> dict[str, Any]:
    """The `training.arguments` parameters, with `training.gpu_arguments` merged in on GPU."""
    return {**training.arguments, **(training.gpu_arguments if on_gpu else {})}


def trains_with_deepspeed(training: TrainingSettings, on_gpu: bool, world_size: int) -> bool:
    """Whether a fold trained in ``world_size`` processes uses the `deepspeed` argument it is given.

    Only on GPU; and one process trains without it unless `training.deepspeed_single_process`:
    ZeRO has nothing to partition there, and its hooks, buckets and fp32 master copy cost 20% of
    the step (docs/performance.md); bf16 autocast + fused AdamW instead.
    """
    if not on_gpu or not effective_arguments(training, on_gpu).get("deepspeed"):
        return False
    return world_size > 1 or training.deepspeed_single_process


def compiled_region(training: TrainingSettings, on_gpu: bool) -> str | None:
    """What ``torch_compile`` compiles (``training.compiled_region``): ``layers`` (each encoder layer)
    or ``encoder`` (the layers as one graph), both compiled by `trainer.build_trainer`; ``model``, the
    whole model, by the Trainer; None without compilation."""
    return training.compiled_region if effective_arguments(training, on_gpu).get("torch_compile") else None


def compiles_a_region(training: TrainingSettings, on_gpu: bool) -> bool:
    """Whether the project compiles a part of the model itself rather than the Trainer the whole."""
    return compiled_region(training, on_gpu) in ("layers", "encoder")


def training_arguments(training: TrainingSettings, output_dir: Path, on_gpu: bool, run_name: str) -> TrainingArguments:
    """`TrainingArguments` from the `training.arguments` parameters, with `training.gpu_arguments`
    merged in on GPU (bf16, DeepSpeed, fused optimizer, compilation) and `use_cpu` otherwise."""
    values = effective_arguments(training, on_gpu)
    if compiles_a_region(training, on_gpu):
        # The region is compiled by `trainer.build_trainer` itself, in `torch_compile_mode`; a mode
        # left here would switch the Trainer's whole-model compilation back on.
        values["torch_compile"] = False
        values.pop("torch_compile_mode", None)
    if not trains_with_deepspeed(training, on_gpu, world_size=int(os.environ.get("WORLD_SIZE", "1"))):
        values.pop("deepspeed", None)
    if not on_gpu:
        values["use_cpu"] = True
    values.setdefault("run_name", run_name)
    return TrainingArguments(output_dir=str(output_dir), **values)


def resolved_deepspeed_config(training: TrainingSettings, on_gpu: bool) -> dict[str, Any]:
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
    world_size = training.launcher.world_size
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


def inductor_settings(settings: dict[str, Any]) -> contextlib.AbstractContextManager:
    """torch.compile's inductor configuration patched with ``settings`` (names as in
    ``torch._inductor.config``, e.g. ``triton.multi_kernel``); an unknown name raises."""
    if not settings:
        return contextlib.nullcontext()
    import torch._inductor.config as inductor_config  # imported only when asked: it is slow to import

    return inductor_config.patch(settings)
