"""Wiring of the `train` and `predict` pipelines: one namespaced branch per fold."""

from __future__ import annotations

from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline

from sentence_reduction.pipelines.train.evaluation import (
    average_test_probabilities,
    evaluate_baseline,
    evaluate_out_of_fold,
    write_submission,
)
from sentence_reduction.pipelines.train.fine_tuning import predict_fold, prepare_vocabulary, train_fold


def create_train_pipeline(n_folds: int) -> Pipeline:
    """Vocabulary -> fold_0 .. fold_{n-1} fine-tuning -> out-of-fold evaluation, baseline, submission."""
    folds = [f"fold_{fold}" for fold in range(n_folds)]
    shared = Pipeline(
        [
            Node(
                prepare_vocabulary,
                inputs=["model_input_table", "params:model"],
                outputs="vocabulary",
                name="prepare_vocabulary",
                tags="training",
            ),
            Node(
                evaluate_out_of_fold,
                inputs=["model_input_table", "class_table", "params:evaluation"]
                + [f"{fold}.oof_probabilities" for fold in folds],
                outputs=["oof_metrics", "confusion_matrix", "class_report", "decoding_rule"],
                name="evaluate_out_of_fold",
                tags="training",
            ),
            Node(
                evaluate_baseline,
                inputs=["model_input_table", "fold_assignments", "class_table", "params:baseline"],
                outputs="baseline_metrics",
                name="evaluate_baseline",
                tags="training",
            ),
        ]
    )
    return shared + sum((_training_branch(fold) for fold in range(n_folds)), Pipeline([])) + _submission(folds)


def create_predict_pipeline(n_folds: int) -> Pipeline:
    """The saved fold models applied to a new test file, then the same ensemble and submission."""
    folds = [f"fold_{fold}" for fold in range(n_folds)]
    branches = [
        Pipeline(
            [
                Node(
                    predict_fold,
                    inputs=["model", "vocabulary", "normalised_test_cases", "params:model", "params:training"],
                    outputs="test_probabilities",
                    name="predict_fold",
                    tags="inference",
                )
            ],
            namespace=fold,
            inputs={"vocabulary", "normalised_test_cases"},
            parameters={"params:model", "params:training"},
        )
        for fold in folds
    ]
    return sum(branches, Pipeline([])) + _submission(folds)


def _training_branch(fold: int) -> Pipeline:
    return Pipeline(
        [
            Node(
                _bind_fold(fold),
                inputs=[
                    "model_input_table",
                    "fold_assignments",
                    "normalised_test_cases",
                    "vocabulary",
                    "class_table",
                    "params:model",
                    "params:training",
                ],
                outputs=["model", "oof_probabilities", "test_probabilities", "metrics", "deepspeed_config"],
                name="train_fold",
                tags=["training", "fold_training"],
            )
        ],
        namespace=f"fold_{fold}",
        inputs={"model_input_table", "fold_assignments", "normalised_test_cases", "vocabulary", "class_table"},
        parameters={"params:model", "params:training"},
    )


def _submission(folds: list[str]) -> Pipeline:
    return Pipeline(
        [
            Node(
                average_test_probabilities,
                inputs=[f"{fold}.test_probabilities" for fold in folds],
                outputs="test_probabilities",
                name="average_test_probabilities",
                tags=["training", "inference"],
            ),
            Node(
                write_submission,
                inputs=["normalised_test_cases", "test_probabilities", "class_table", "decoding_rule"],
                outputs="submission",
                name="write_submission",
                tags=["training", "inference"],
            ),
        ]
    )


def _bind_fold(fold: int):
    """`train_fold` for one fold, keeping its name and docstring for logs and kedro viz."""
    return update_wrapper(partial(train_fold, fold=fold), train_fold)
