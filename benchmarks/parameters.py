"""The project's parameters as the benchmarks read them: the `erlangshen` environment, the training paths the
GPU benchmarks measure (each as changes to it), and ``--params`` items of the CPU benchmarks."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONFIG_JSON = ROOT / "benchmarks" / "erlangshen_config.json"  # Erlangshen-MegatronBert-1.3B's config.json
DEEPSPEED = ROOT / "conf" / "base" / "deepspeed"
# A model of the same shape family, small enough for the CPU smoke runs of the GPU benchmarks.
TINY_MODEL = {"num_hidden_layers": 1, "hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 128}

# The Trainer's per-step host-device synchronisations: its NaN/inf loss filter and blocking copies.
SYNCHRONISING = {"logging_nan_inf_filter": True, "accelerator_config": {"non_blocking": False}}
# chinese-roberta-wwm-ext-large's shape (a BERT: 24 layers, hidden 1024, 16 heads), random weights.
BERT_LARGE = {
    "architecture": "bert",
    "config": {
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "vocab_size": 21128,
    },
}

# The training paths measured: changes to the `model`, `training` and (as `gpu`) `training.gpu_arguments`
# parameters of the `erlangshen` environment, and the encoder trained (`encoder`: the model settings of an
# encoder built from its config; Erlangshen-MegatronBert-1.3B's config when none). One process trains
# without DeepSpeed unless `training.deepspeed_single_process` asks for it.
PATHS: dict[str, dict[str, Any]] = {
    # The winning solution's: transformers' eager attention, no compilation, DeepSpeed ZeRO-1, bf16, the
    # Trainer's AdamW as it defaulted before torch 2.8 (adamw_torch, foreach), no tf32.
    "winning_recipe": {
        "model": {"fused_attention": False},
        "training": {"deepspeed_single_process": True},
        "gpu": {
            "bf16": True,
            "tf32": False,
            "optim": "adamw_torch",
            "torch_compile": False,
            "deepspeed": str(DEEPSPEED / "zero1.json"),
            **SYNCHRONISING,
        },
    },
    # The project's, as conf/erlangshen sets it (docs/performance.md says what each part does).
    "default": {},
    # The project's under DeepSpeed ZeRO-2, on one GPU too: several GPUs' scaling (`default_zero2@2`).
    "default_zero2": {
        "training": {"deepspeed_single_process": True},
        "gpu": {"deepspeed": str(DEEPSPEED / "zero2.json")},
    },
    # A BERT-large-shaped encoder on the Hugging Face Trainer's path as a user gets it: bf16 autocast over
    # fp32 weights, transformers' SDPA, an fp32 residual stream, its fused AdamW and clip, no compilation, no
    # DeepSpeed on one GPU, a mask on every batch, the Trainer's synchronisations and its own prediction.
    "bert_large_hf_default": {
        "encoder": BERT_LARGE,
        "model": {
            "unpadded_without_mask": False,
            "dropout_masks_from_aten": False,
            "residual_in_autocast_dtype": False,
        },
        "training": {
            "compiled_region": "model",
            "bf16_master_weights": False,
            "clip_in_fused_optimizer": False,
            "compile_predictions": False,
        },
        "gpu": {"torch_compile": False, "optim": "adamw_torch_fused", "tf32": None, **SYNCHRONISING},
        "predict_with_trainer": True,
    },
    # The same encoder on the project's path for BERT-family encoders (docs/encoders.md): no attention
    # dropout, the master weights updated over each group's lists, the stack of layers compiled as one graph.
    "bert_large": {
        "encoder": BERT_LARGE,
        "model": {"config_overrides": {"attention_probs_dropout_prob": 0.0}},
        "training": {"master_weight_update": "multi_tensor", "compiled_region": "encoder"},
    },
}


def project_parameters() -> dict[str, Any]:
    """conf/base/parameters_train.yml with conf/erlangshen/parameters_train.yml merged key by key (as Kedro's
    soft merge does), and the `megatron_bert` candidate's model settings as `model`."""
    import yaml

    from sentence_reduction.finetune.arguments import deep_merge

    base = yaml.safe_load((ROOT / "conf/base/parameters_train.yml").read_text(encoding="utf-8"))
    environment = yaml.safe_load((ROOT / "conf/erlangshen/parameters_train.yml").read_text(encoding="utf-8"))
    params = deep_merge(base, environment)
    params["model"] = params["transformer_candidates"]["megatron_bert"]["model"]
    return params


def path_parameters(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The `model` and `training` parameters of training path ``name``: the erlangshen environment's with the
    path's changes (its `gpu` changes in `training.gpu_arguments`, its encoder's settings in `model`)."""
    from sentence_reduction.finetune.arguments import deep_merge

    path = PATHS[name]
    params = project_parameters()
    model = deep_merge(params["model"], path.get("model", {}))
    encoder = path.get("encoder")
    model.update(encoder or {}, config_path=None if encoder else str(CONFIG_JSON))
    training = deep_merge(params["training"], path.get("training", {}))
    training["gpu_arguments"] = {**(training.get("gpu_arguments") or {}), **path.get("gpu", {})}
    return model, training


def changed_parameters(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` items, read as ``kedro run --params`` reads them: dotted keys into nested ones, values
    parsed as YAML. An item that is not ``KEY=VALUE`` stops the run with one line."""
    from omegaconf import OmegaConf

    for item in items:
        if "=" not in item or not item.partition("=")[0].strip():
            raise SystemExit(f"--params: {item!r} is not KEY=VALUE (e.g. ordinal.C=5)")
    return OmegaConf.to_container(OmegaConf.from_dotlist(items))


def changed_run_parameters(items: list[str]) -> dict[str, Any]:
    """``--params`` items as a record's parameters: ``changed.<dotted key>`` -> value."""
    return {f"changed.{key}": value for key, value in _dotted(changed_parameters(items)).items()}


def _dotted(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in nested.items():
        if isinstance(value, Mapping):
            flat.update(_dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
