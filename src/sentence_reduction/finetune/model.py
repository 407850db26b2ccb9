"""The model factory: MegatronBert for sequence classification, pretrained or built from a config."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import MegatronBertConfig, MegatronBertForSequenceClassification

from sentence_reduction.finetune.attention import use_fused_attention


@dataclass
class ModelSettings:
    """Which model to fine-tune (the `model` parameters).

    ``pretrained_path``: a local folder with config.json, vocab.txt and weights (the real
    Erlangshen-MegatronBert-1.3B download). Without it the model is built with random weights from
    ``config_path`` (a config.json) or else the inline ``config``, with ``config_overrides`` on top.
    ``vocabulary_path``: a vocab.txt to use when no pretrained folder is given; without either, a
    character vocabulary is built from the training texts.
    """

    pretrained_path: str | None = None
    config_path: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    config_overrides: dict[str, Any] = field(default_factory=dict)
    vocabulary_path: str | None = None
    vocabulary_min_frequency: int = 1
    max_length: int = 512
    fused_attention: bool = True

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> ModelSettings:
        return cls(**params)


def build_model(settings: ModelSettings, num_labels: int, vocab_size: int) -> MegatronBertForSequenceClassification:
    """A MegatronBert classifier with ``num_labels`` outputs, its attention fused when asked."""
    if settings.pretrained_path:
        model = MegatronBertForSequenceClassification.from_pretrained(
            settings.pretrained_path, num_labels=num_labels, **settings.config_overrides
        )
    else:
        model = MegatronBertForSequenceClassification(model_config(settings, num_labels, vocab_size))
    return use_fused_attention(model) if settings.fused_attention else model


def model_config(settings: ModelSettings, num_labels: int, vocab_size: int) -> MegatronBertConfig:
    """The config of a model built from scratch: config_path (or else config), then config_overrides."""
    if settings.config_path:
        values = json.loads(Path(settings.config_path).read_text(encoding="utf-8"))
    else:
        values = dict(settings.config)
    values.update(settings.config_overrides)
    values.pop("model_type", None)
    # The embedding table must cover the tokenizer's ids; a config may round it up (Erlangshen: 21248).
    values["vocab_size"] = max(int(values.get("vocab_size", 0)), vocab_size)
    return MegatronBertConfig(**values, num_labels=num_labels)
