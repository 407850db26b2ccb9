"""The `pretrain` pipeline: continued masked-LM pretraining of transformer candidates on the rulings' texts."""

from sentence_reduction.pipelines.pretrain.pipeline import create_pipeline

__all__ = ["create_pipeline"]
