"""The `train` and `predict` pipelines: per-fold fine-tuning, evaluation, baseline and submission."""

from sentence_reduction.pipelines.train.pipeline import create_predict_pipeline, create_train_pipeline

__all__ = ["create_predict_pipeline", "create_train_pipeline"]
