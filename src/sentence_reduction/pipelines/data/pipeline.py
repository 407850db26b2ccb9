"""Wiring of the `data` pipeline."""

from kedro.pipeline import Node, Pipeline

from sentence_reduction.pipelines.data.folds import assign_folds
from sentence_reduction.pipelines.data.ingestion import validate_rulings, validate_test_rulings
from sentence_reduction.pipelines.data.labels import build_class_table, encode_labels
from sentence_reduction.pipelines.data.normalisation import normalise_rulings


def create_pipeline(**kwargs) -> Pipeline:
    """Raw CSVs -> validated cases -> normalised text -> class ids -> folds."""
    return Pipeline(
        [
            Node(
                validate_rulings,
                inputs=["train_raw", "test_raw", "params:columns", "params:validation"],
                outputs=["train_cases", "test_cases"],
                name="validate_rulings",
                tags="training",
            ),
            Node(
                normalise_rulings,
                inputs=["train_cases", "params:text_normalisation"],
                outputs="normalised_train_cases",
                name="normalise_train_rulings",
                tags="training",
            ),
            Node(
                normalise_rulings,
                inputs=["test_cases", "params:text_normalisation"],
                outputs="normalised_test_cases",
                name="normalise_test_rulings",
                tags=["training", "inference"],
            ),
            Node(
                build_class_table,
                inputs=["train_cases", "params:label_encoding"],
                outputs="class_table",
                name="build_class_table",
                tags="training",
            ),
            Node(
                encode_labels,
                inputs=["normalised_train_cases", "class_table"],
                outputs="model_input_table",
                name="encode_labels",
                tags="training",
            ),
            Node(
                assign_folds,
                inputs=["model_input_table", "params:folds"],
                outputs="fold_assignments",
                name="assign_folds",
                tags="training",
            ),
        ]
    )


def create_test_ingestion_pipeline() -> Pipeline:
    """Only the test file, for the `predict` pipeline."""
    return Pipeline(
        [
            Node(
                validate_test_rulings,
                inputs=["test_raw", "params:columns", "params:validation"],
                outputs="test_cases",
                name="validate_test_rulings",
                tags="inference",
            )
        ]
    )
