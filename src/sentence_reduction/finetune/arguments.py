"""The `training` parameters (`TrainingSettings`, with `InTrainingEvaluation` and `LauncherSettings`), a
fold's Trainer arguments from them, and the DeepSpeed config they train with.

The dataclasses hold every default, and each field says what it does (``metadata["help"]``, as Hugging
Face's argument dataclasses do); conf/base sets a field only where the project's default run differs.

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

_ARGUMENT_DEFAULTS = {
    field.name: field.default
    for field in dataclasses.fields(TrainingArguments)
    if field.default is not dataclasses.MISSING
}


# What `torch_compile` compiles (`training.compiled_region`; docs/gpu.md, docs/encoders.md).
COMPILED_REGIONS = ("layers", "encoder", "model")
LAUNCHERS = ("torchrun", "deepspeed")


@dataclass
class InTrainingEvaluation:
    """Which held-out rows are evaluated during training (the `training.in_training_evaluation`
    parameters): the metric histories in MLflow. The whole fold is predicted once at the end."""

    fraction: float = field(
        default=0.01,
        metadata={"help": "The share of the held-out fold evaluated during training, a fixed stratified sample."},
    )
    min_rows: int = field(default=100, metadata={"help": "At least this many held-out rows (all where fewer)."})


@dataclass
class LauncherSettings:
    """How many processes train a fold, and how they are started (the `training.launcher` parameters).

    One node: ``nproc_per_node`` processes (one per GPU). Several nodes: ``nnodes`` with this node's
    ``node_rank`` and the ``master_addr``/``master_port`` of node 0 (torchrun, run the same command on
    every node), or a DeepSpeed ``hostfile`` (the deepspeed launcher reaches the other nodes by ssh).
    More than one process: `finetune.launcher` runs torchrun (or the deepspeed launcher) from the fold's node.
    """

    nproc_per_node: int = field(default=1, metadata={"help": "Processes per node, one per GPU."})
    nnodes: int = field(default=1, metadata={"help": "Nodes that train each fold together."})
    node_rank: int = field(default=0, metadata={"help": "This node's rank among them (torchrun)."})
    master_addr: str = field(default="127.0.0.1", metadata={"help": "The address of node 0."})
    master_port: int = field(default=29500, metadata={"help": "A free port on node 0."})
    hostfile: str | None = field(
        default=None,
        metadata={"help": "A DeepSpeed hostfile (program: deepspeed): its hosts' slots are the processes."},
    )
    program: str = field(default="torchrun", metadata={"help": f"The launcher: one of {', '.join(LAUNCHERS)}."})

    def __post_init__(self) -> None:
        if self.program not in LAUNCHERS:
            raise ValueError(f"training.launcher.program must be one of {', '.join(LAUNCHERS)}, not {self.program!r}")

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> LauncherSettings:
        return cls(**params)

    @property
    def world_size(self) -> int:
        """How many processes train a fold: every slot of the hostfile's hosts for the deepspeed
        launcher given one (it is given no host or GPU filter), else ``nproc_per_node`` per node."""
        if not (self.program == "deepspeed" and self.hostfile):
            return self.nproc_per_node * self.nnodes
        from deepspeed.launcher.runner import fetch_hostfile  # the launcher's own parser; slow to import

        slots = fetch_hostfile(self.hostfile)
        if slots is None:  # the launcher would train on this node alone
            raise FileNotFoundError(f"training.launcher.hostfile: {self.hostfile} not found")
        return sum(slots.values())


@dataclass
class TrainingSettings:
    """How a fold trains (the `training` parameters, and a transformer candidate's own `training` merged
    over them key by key).

    ``arguments``: Hugging Face `TrainingArguments`, as named there; ``gpu_arguments`` are merged into
    them when a GPU is present. The other fields are the project's own.
    """

    arguments: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "Hugging Face TrainingArguments, as named there."}
    )
    gpu_arguments: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "TrainingArguments merged into `arguments` when a GPU is present (bf16, DeepSpeed...)."},
    )
    work_dir: str = field(
        default="data/06_models/work",
        metadata={"help": "Where each fold keeps its work, <candidate>/fold_<n>: checkpoints and its finished result."},
    )
    in_training_evaluation: InTrainingEvaluation = field(
        default_factory=InTrainingEvaluation,
        metadata={"help": "The held-out rows evaluated during training (InTrainingEvaluation)."},
    )
    checkpoint_every_minutes: float | None = field(
        default=None,
        metadata={
            "help": "A checkpoint whenever this many minutes of training have passed since the last one (with "
            'save_strategy "no": none by step count); None: the Trainer\'s save_strategy alone.'
        },
    )
    compiled_region: str = field(
        default="layers",
        metadata={
            "help": "With torch_compile, what is compiled: `layers`, each encoder layer on its own (the layers share "
            "one graph, which later folds of the run reuse); `encoder`, the stack of layers as one graph (less "
            "host time a step, a longer compilation); `model`, the whole model, by the Trainer."
        },
    )
    compile_predictions: bool = field(
        default=True,
        metadata={"help": "Final predictions with the layers compiled for any batch and length (GPU only)."},
    )
    deepspeed_single_process: bool = field(
        default=False,
        metadata={
            "help": "Train with DeepSpeed in one process too. By default DeepSpeed is used when several processes "
            "train a fold: one process on one GPU has nothing to partition, and DeepSpeed slows its step."
        },
    )
    clip_in_fused_optimizer: bool = field(
        default=True,
        metadata={
            "help": "With torch's fused AdamW (optim: adamw_torch_fused) and no DeepSpeed, clip the gradients inside "
            "the optimizer (as its gradient scale): the Trainer's clip, one pass over the gradients fewer. Any "
            "other optimizer is clipped by the Trainer."
        },
    )
    bf16_master_weights: bool = field(
        default=False,
        metadata={
            "help": "Train bf16 weights with fp32 master weights and moments in the optimizer (DeepSpeed's bf16 "
            "numerics) instead of bf16 autocast over fp32 weights: one fused update (finetune/master_weights.py). "
            "Replaces `optim` (an AdamW); ignored under DeepSpeed, whose bf16 optimizer does this. Models are "
            "then saved in bf16."
        },
    )
    master_weight_update: str = field(
        default="per_parameter",
        metadata={
            "help": "How the bf16 master weights update: per_parameter (one compiled kernel per parameter, the "
            "fewest bytes) or multi_tensor (torch's fused AdamW over a group's lists, a few launches: for "
            "encoders of many small tensors, whose step waits on the host)."
        },
    )
    inductor_config: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "torch.compile's inductor settings while a fold trains and predicts (torch._inductor.config "
            "names, e.g. triton.multi_kernel: 1); used only with torch_compile."
        },
    )
    launcher: LauncherSettings = field(
        default_factory=LauncherSettings,
        metadata={"help": "How many processes train a fold, and how they are started (LauncherSettings)."},
    )

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> TrainingSettings:
        """The settings from the `training` parameters (or from `dataclasses.asdict` of settings)."""
        unknown = set(params) - {item.name for item in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"training: unknown parameter(s) {', '.join(sorted(unknown))}")
        values = dict(params)
        values["in_training_evaluation"] = InTrainingEvaluation(**(values.get("in_training_evaluation") or {}))
        values["launcher"] = LauncherSettings.from_params(values.get("launcher") or {})
        if values.get("compiled_region", "layers") not in COMPILED_REGIONS:
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
    ZeRO has nothing to partition there, and its hooks, buckets and fp32 master copy slow the step
    (benchmarks/results/history_gpu.jsonl, "no DeepSpeed for one process"); bf16 autocast + fused AdamW instead.
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
