"""The model factory: any encoder for sequence classification (`AutoModelForSequenceClassification`)
or masked-LM pretraining (`AutoModelForMaskedLM`), pretrained from a folder in the Hugging Face hub's
layout or built from a config, with the fast path's runtime settings that apply to its architecture."""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.models.auto.auto_factory import _BaseAutoModelClass
from transformers.utils import logging as hf_logging

from sentence_reduction.finetune.attention import use_fused_attention
from sentence_reduction.finetune.dropout import draw_dropout_masks_with_aten
from sentence_reduction.finetune.sdpa_backend import attention_implementation

logger = logging.getLogger(__name__)

# MegatronBert runs the project's own SDPA attention (`finetune.attention`); other architectures take
# transformers' own SDPA attention. MegatronBert is pre-LN, the other BERT-family encoders post-LN.
MEGATRON_BERT = "megatron-bert"


@dataclass
class ModelSettings:
    """Which model to fine-tune, and how it runs (a transformer candidate's `model` parameters).

    A pretrained folder in the Hugging Face hub's layout, of any architecture
    `AutoModelForSequenceClassification` knows (Erlangshen-MegatronBert-1.3B, chinese-roberta-wwm-ext-large,
    bert-base-chinese, multilingual-e5-small, a folder `kedro run --pipelines=pretrain` wrote...; checked by
    `finetune.model_folder`); or else a model with random weights built from a config.
    """

    pretrained_path: str | None = field(
        default=None,
        metadata={
            "help": "A local folder in the hub's layout (config.json, weights as safetensors or pytorch_model.bin, a "
            "tokenizer AutoTokenizer reads: tokenizer.json, vocab.txt or a SentencePiece model); its config.json's "
            "model_type names the architecture. None: a model built from a config."
        },
    )
    architecture: str = field(
        default=MEGATRON_BERT,
        metadata={
            "help": "A transformers model_type (megatron-bert, bert...) for a model built from a config "
            "that names none."
        },
    )
    config_path: str | None = field(
        default=None, metadata={"help": "A config.json to build a randomly initialised model from."}
    )
    config: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "The config of a model built from scratch, without config_path."}
    )
    config_overrides: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "Applied over any config, pretrained too, e.g. {num_hidden_layers: 2} to shrink one."},
    )
    vocabulary_path: str | None = field(
        default=None,
        metadata={
            "help": "A vocab.txt for the BERT tokenizer of a model built from a config; neither this nor a "
            "pretrained folder: characters of the training texts."
        },
    )
    vocabulary_min_frequency: int = field(
        default=1, metadata={"help": "A character vocabulary keeps the characters seen this often in training."}
    )
    max_length: int = field(default=512, metadata={"help": "Tokens a text keeps, [CLS] and [SEP] included."})
    truncation: str = field(
        default="head",
        metadata={"help": "What a longer text keeps (finetune.text.tokenise): head, tail, or head_tail."},
    )
    head_share: float = field(default=0.5, metadata={"help": "head_tail: the share of the room taken from the head."})
    fused_attention: bool = field(
        default=True,
        metadata={
            "help": "scaled_dot_product_attention instead of eager attention (MegatronBert: the project's own "
            "module, finetune.attention; others: transformers' attn_implementation=sdpa)."
        },
    )
    attention_backend: str | None = field(
        default=None,
        metadata={
            "help": "With fused attention, encoders other than MegatronBert: the SDPA kernel tried first (flash, "
            "efficient, cudnn or math; finetune.sdpa_backend). None: torch's own choice."
        },
    )
    unpadded_without_mask: bool = field(
        default=True,
        metadata={
            "help": "With fused attention, a batch without padding runs without an attention mask "
            "(SDPA's mask-free kernels are faster)."
        },
    )
    residual_in_autocast_dtype: bool = field(
        default=True,
        metadata={
            "help": "Under mixed precision, the residual stream in the autocast dtype (bf16) rather than fp32, as "
            "Megatron-LM and DeepSpeed's bf16 mode keep it (keep_residual_in_autocast_dtype)."
        },
    )
    dropout_masks_from_aten: bool = field(
        default=False,
        metadata={
            "help": "Hidden dropout draws its masks with ATen's Bernoulli kernel instead of inside "
            "inductor's fused kernels (finetune.dropout)."
        },
    )

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> ModelSettings:
        return cls(**params)


def build_model(settings: ModelSettings, num_labels: int, vocab_size: int) -> PreTrainedModel:
    """A classifier with ``num_labels`` outputs for a tokenizer of ``vocab_size`` ids: pretrained (a new
    classification head) or built from a config with random weights; with the runtime settings of its
    architecture."""
    return _built(AutoModelForSequenceClassification, settings, vocab_size, num_labels=num_labels)


def build_masked_lm(settings: ModelSettings, vocab_size: int) -> PreTrainedModel:
    """A masked language model (`AutoModelForMaskedLM`) for a tokenizer of ``vocab_size`` ids: pretrained,
    with the checkpoint's own masked-LM head where it has one (a new one where it has none), or built from
    a config with random weights; with the runtime settings of its architecture."""
    return _built(AutoModelForMaskedLM, settings, vocab_size)


def _built(
    auto_class: type[_BaseAutoModelClass], settings: ModelSettings, vocab_size: int, **head: Any
) -> PreTrainedModel:
    if settings.pretrained_path:
        config = AutoConfig.from_pretrained(settings.pretrained_path, **head, **settings.config_overrides)
        if vocab_size > config.vocab_size:
            raise ValueError(
                f"{settings.pretrained_path}: the tokenizer has {vocab_size} ids, more than the model's "
                f"{config.vocab_size} token embeddings"
            )
    else:
        config = model_config(settings, vocab_size, **head)
    attention = (
        {} if config.model_type == MEGATRON_BERT else {"attn_implementation": _attention_implementation(settings)}
    )
    if settings.pretrained_path:
        # In fp32 whatever the folder's dtype (a model pretrained with bf16 weights is saved in bf16): the
        # training path casts to bf16 itself where the recipe asks.
        model = load_pretrained(auto_class, settings.pretrained_path, config=config, dtype=torch.float32, **attention)
    else:
        model = auto_class.from_config(config, **attention)
    if head:
        # Set before the first forward, which would set it itself and so fail the compiled graph's guard.
        model.config.problem_type = "single_label_classification"
    return apply_runtime_settings(model, settings)


def load_classifier(folder: str | Path, **kwargs: Any) -> PreTrainedModel:
    """A sequence classifier from ``folder`` (`load_pretrained`)."""
    return load_pretrained(AutoModelForSequenceClassification, folder, **kwargs)


def load_pretrained(auto_class: type[_BaseAutoModelClass], folder: str | Path, **kwargs: Any) -> PreTrainedModel:
    """``auto_class.from_pretrained`` with one log line for its load report (what loaded, what is new,
    what went unused) in place of transformers' table, which it prints for every model it loads: once
    per fold."""
    with _quiet_load_report():
        model, info = auto_class.from_pretrained(folder, output_loading_info=True, **kwargs)
    new = sorted(info["missing_keys"]) + sorted(key for key, *_ in info["mismatched_keys"])
    logger.info(
        "%s from %s: %d tensors loaded; new: %s; unused: %s",
        type(model).__name__,
        folder,
        len(model.state_dict()) - len(new),
        _names(new),
        _names(sorted(info["unexpected_keys"])),
    )
    return model


def _names(keys: list[str], shown: int = 4) -> str:
    if not keys:
        return "none"
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


@contextlib.contextmanager
def _quiet_load_report():
    """transformers' own load report (a warning of its `modeling_utils` logger) and its "Loading weights"
    progress bar held back. The report is filtered by its text rather than by raising the logger's level:
    at WARNING or above transformers also checks a tensor-parallel plan and warns of every layer."""
    report_logger = logging.getLogger("transformers.modeling_utils")
    report_filter = _WithoutLoadReport()
    report_logger.addFilter(report_filter)
    progress_bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        report_logger.removeFilter(report_filter)
        if progress_bar:
            hf_logging.enable_progress_bar()


class _WithoutLoadReport(logging.Filter):
    """Drops the load report, and the warning that a head whose weights are tied to others (a masked-LM
    head's bias) is absent from the checkpoint: a checkpoint without that head (multilingual-e5) is not
    corrupted, and the one log line names the head's tensors as new."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "LOAD REPORT" not in message and "are absent from the checkpoint" not in message


def _attention_implementation(settings: ModelSettings) -> str:
    if not settings.fused_attention:
        if settings.attention_backend is not None:
            raise ValueError("model.attention_backend chooses an SDPA kernel: it needs fused_attention")
        return "eager"
    return attention_implementation(settings.attention_backend)


def apply_runtime_settings(model: PreTrainedModel, settings: ModelSettings) -> PreTrainedModel:
    """The attention implementation, the residual stream's dtype (MegatronBert) and how dropout draws
    its masks, as asked; in place. None is saved with the weights, so a model loaded from disk gets
    them again through this."""
    if model.config.model_type != MEGATRON_BERT:
        model.set_attn_implementation(_attention_implementation(settings))
    elif settings.attention_backend is not None:
        raise ValueError("model.attention_backend applies to transformers' SDPA attention, not MegatronBert's own")
    elif settings.fused_attention:
        use_fused_attention(model)
    if settings.residual_in_autocast_dtype:
        keep_residual_in_autocast_dtype(model)
    if settings.dropout_masks_from_aten:
        draw_dropout_masks_with_aten(model)
    return model


def compile_region(model: PreTrainedModel, region: str, dynamic: bool | None, mode: str | None = None) -> None:
    """Compile a region of the model in place (torch.compile's ``mode``), the rest left eager:
    ``layers``, each encoder layer (`compile_layers`), or ``encoder``, the stack of layers as one graph.

    One graph for the stack is called once a step forward and once backward instead of once per layer
    each way, so the host's share per step (dynamo's guards, AOTAutograd's wrappers) is paid once, and
    CUDA graphs (``mode: reduce-overhead``) can record it: each layer compiled apart runs its forward
    before the previous layers' backward, which CUDA-graph trees do not record. It compiles the layers'
    code once per layer, though: a longer first step (docs/encoders.md).
    """
    if region == "layers":
        compile_layers(model, dynamic, mode)
    elif region == "encoder":
        model.base_model.get_submodule("encoder").compile(dynamic=dynamic, mode=mode)
    else:
        raise ValueError(f"compile_region: {region!r} is neither layers nor encoder")


def compile_layers(model: PreTrainedModel, dynamic: bool | None, mode: str | None = None) -> None:
    """Regional compilation: each encoder layer compiled in place (torch.compile's ``mode``), the rest
    of the model left eager.

    The layers share their code, so the graph compiled for the first one serves all of them, and the
    layers of a later fold's model too (same process): the 1.3B model compiles one layer's graph
    instead of the whole model's (docs/performance.md). In place, so state-dict keys do not change.
    Any BERT-family encoder: its layers are ``base_model.encoder.layer``.
    """
    for layer in model.base_model.get_submodule("encoder.layer").children():
        layer.compile(dynamic=dynamic, mode=mode)


def keep_residual_in_autocast_dtype(model: PreTrainedModel) -> None:
    """Under autocast, keep the residual stream in the autocast dtype (bf16) instead of fp32.

    Under autocast a layer norm computes and returns fp32, whatever its input: the embeddings come out
    fp32, and every residual addition (bf16 sublayer output + fp32 stream) stays fp32, so the layer
    norms, dropouts and residual additions around each sublayer move twice the bytes. MegatronBert
    (pre-LN) adds each sublayer to the stream: cast once at the bottom (the embeddings), the whole
    stream stays bf16. A post-LN encoder (BERT, RoBERTa...) makes its stream of each layer norm's
    output: each of those is cast too. That is the stream of Megatron-LM (which pre-trained Erlangshen)
    and of DeepSpeed's bf16 mode (the winning solution); layer norms still compute in fp32 under
    autocast. Without autocast (CPU, DeepSpeed's bf16 weights) the hooks change nothing.
    """
    modules = [model.base_model.get_submodule("embeddings")]
    if model.config.model_type != MEGATRON_BERT:
        encoder = model.base_model.get_submodule("encoder")
        modules += [module for module in encoder.modules() if isinstance(module, torch.nn.LayerNorm)]
    for module in modules:
        if not getattr(module, "_residual_in_autocast_dtype", False):
            module.register_forward_hook(_cast_to_autocast_dtype)
            module._residual_in_autocast_dtype = True  # type: ignore[assignment]  # typed for tensors and modules


def _cast_to_autocast_dtype(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    device_type = output.device.type
    if torch.is_autocast_enabled(device_type):
        return output.to(torch.get_autocast_dtype(device_type))
    return output


def omits_full_masks(settings: ModelSettings) -> bool:
    """Whether batches without padding go to the model without an attention mask."""
    return settings.fused_attention and settings.unpadded_without_mask


def model_config(settings: ModelSettings, vocab_size: int, **head: Any) -> PretrainedConfig:
    """The config of a model built from scratch: config_path (or else config), then config_overrides;
    of the architecture the config names (model_type), or else ``settings.architecture``; with
    ``head``'s settings (num_labels for a classifier)."""
    if settings.config_path:
        values = json.loads(Path(settings.config_path).read_text(encoding="utf-8"))
    else:
        values = dict(settings.config)
    values.update(settings.config_overrides)
    architecture = values.pop("model_type", None) or settings.architecture
    # The embedding table must cover the tokenizer's ids; a config may round it up (Erlangshen: 21248).
    values["vocab_size"] = max(int(values.get("vocab_size", 0)), vocab_size)
    values.pop("architectures", None)  # the head is ours
    return AutoConfig.for_model(architecture, **values, **head)
