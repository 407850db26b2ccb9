"""The `data` pipeline: validated rulings -> normalised text -> class ids -> folds."""

from sentence_reduction.pipelines.data.pipeline import create_pipeline, create_test_ingestion_pipeline

__all__ = ["create_pipeline", "create_test_ingestion_pipeline"]
