"""Wiring of the `train` and `predict` pipelines: one namespaced branch per fold, three candidates
(the fold transformers, the TF-IDF baseline, the domain-feature model,
the log-months regression) and their ensemble."""

from __future__ import annotations

from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline

from sentence_reduction.pipelines.train.baseline import fit_baseline, predict_baseline
from sentence_reduction.pipelines.train.domain_features import (
    fit_feature_model,
    parse_domain_features,
    predict_feature_model,
)
from sentence_reduction.pipelines.train.ensemble import apply_ensemble, choose_ensemble, plot_candidates
from sentence_reduction.pipelines.train.fine_tuning import (
    predict_fold,
    prepare_vocabulary,
    resolve_deepspeed_config,
    train_fold,
)
from sentence_reduction.pipelines.train.out_of_fold import (
    average_test_probabilities,
    evaluate_candidate,
    stack_fold_probabilities,
)
from sentence_reduction.pipelines.train.regression import fit_regression, predict_regression
from sentence_reduction.pipelines.train.submission import write_submission

CANDIDATES = ("transformer", "baseline", "features", "regression")
_TRAINING = "training"
_BOTH = ["training", "inference"]


def create_train_pipeline(n_folds: int) -> Pipeline:
    """Vocabulary -> fold_0 .. fold_{n-1} fine-tuning; baseline and domain-feature model on the same
    folds; each candidate's out-of-fold metrics; the ensemble chosen out of fold; the submission."""
    branches = sum((_training_branch(fold) for fold in range(n_folds)), Pipeline([]))
    return _candidates(n_folds) + branches + _ensemble_choice() + _inference(n_folds)


def create_predict_pipeline(n_folds: int) -> Pipeline:
    """The saved fold models, baseline models, feature models and ensemble applied to a test file."""
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
            namespace=f"fold_{fold}",
            inputs={"vocabulary", "normalised_test_cases"},
            outputs={"test_probabilities": f"transformer_test_probabilities_fold_{fold}"},
            parameters={"params:model", "params:training"},
        )
        for fold in range(n_folds)
    ]
    return sum(branches, Pipeline([])) + _inference(n_folds)


def _candidates(n_folds: int) -> Pipeline:
    """What only training does: the vocabulary and the DeepSpeed config every fold trains with, fit the
    baseline and the feature model per fold, join the transformers' out-of-fold tables, and evaluate each
    candidate out of fold."""
    return Pipeline(
        [
            Node(
                prepare_vocabulary,
                inputs=["model_input_table", "params:model"],
                outputs="vocabulary",
                name="prepare_vocabulary",
                tags=_TRAINING,
            ),
            Node(
                resolve_deepspeed_config,
                inputs="params:training",
                outputs="deepspeed_config",
                name="resolve_deepspeed_config",
                tags=_TRAINING,
            ),
            Node(
                stack_fold_probabilities,
                inputs=[f"transformer_oof_probabilities_fold_{fold}" for fold in range(n_folds)],
                outputs="transformer_oof_probabilities",
                name="stack_fold_probabilities",
                tags=_TRAINING,
            ),
            Node(
                fit_baseline,
                inputs=["model_input_table", "domain_features", "fold_assignments", "class_table", "params:baseline"],
                outputs=["baseline_models", "baseline_oof_probabilities"],
                name="fit_baseline",
                tags=_TRAINING,
            ),
            Node(
                fit_regression,
                inputs=[
                    "model_input_table",
                    "domain_features",
                    "fold_assignments",
                    "class_table",
                    "params:baseline",
                    "params:regression",
                ],
                outputs=["regression_models", "regression_oof_probabilities"],
                name="fit_regression",
                tags=_TRAINING,
            ),
            Node(
                parse_domain_features,
                inputs="model_input_table",
                outputs="domain_features",
                name="parse_domain_features",
                tags=_TRAINING,
            ),
            Node(
                fit_feature_model,
                inputs=[
                    "domain_features",
                    "model_input_table",
                    "fold_assignments",
                    "class_table",
                    "params:feature_model",
                ],
                outputs=["feature_models", "features_oof_probabilities"],
                name="fit_feature_model",
                tags=_TRAINING,
            ),
            *(
                Node(
                    evaluate_candidate,
                    inputs=[f"{candidate}_oof_probabilities", "model_input_table", "class_table", "params:evaluation"],
                    outputs=metrics,
                    name=name,
                    tags=_TRAINING,
                )
                for candidate, metrics, name in (
                    ("transformer", "oof_metrics", "evaluate_out_of_fold"),
                    ("baseline", "baseline_metrics", "evaluate_baseline"),
                    ("features", "features_metrics", "evaluate_feature_model"),
                    ("regression", "regression_metrics", "evaluate_regression"),
                )
            ),
        ]
    )


def _ensemble_choice() -> Pipeline:
    return Pipeline(
        [
            Node(
                choose_ensemble,
                inputs={
                    "model_input": "model_input_table",
                    "fold_assignments": "fold_assignments",
                    "class_table": "class_table",
                    "ensemble": "params:ensemble",
                    "evaluation": "params:evaluation",
                    **{candidate: f"{candidate}_oof_probabilities" for candidate in CANDIDATES},
                },
                outputs=["ensemble", "ensemble_metrics", "confusion_matrix", "class_report"],
                name="choose_ensemble",
                tags=_TRAINING,
            ),
            Node(
                plot_candidates,
                inputs={
                    "ensemble_metrics": "ensemble_metrics",
                    "transformer": "oof_metrics",
                    "baseline": "baseline_metrics",
                    "features": "features_metrics",
                    "regression": "regression_metrics",
                },
                outputs="candidate_comparison",
                name="plot_candidates",
                tags=_TRAINING,
            ),
        ]
    )


def _inference(n_folds: int) -> Pipeline:
    """The same in training and prediction: each candidate's test probabilities from its saved models,
    the saved ensemble applied to them, the submission."""
    return Pipeline(
        [
            Node(
                average_test_probabilities,
                inputs=[f"transformer_test_probabilities_fold_{fold}" for fold in range(n_folds)],
                outputs="transformer_test_probabilities",
                name="average_test_probabilities",
                tags=_BOTH,
            ),
            Node(
                parse_domain_features,
                inputs="normalised_test_cases",
                outputs="test_domain_features",
                name="parse_test_domain_features",
                tags=_BOTH,
            ),
            Node(
                predict_baseline,
                inputs=["baseline_models", "normalised_test_cases", "test_domain_features", "class_table"],
                outputs="baseline_test_probabilities",
                name="predict_baseline",
                tags=_BOTH,
            ),
            Node(
                predict_regression,
                inputs=["regression_models", "normalised_test_cases", "test_domain_features", "class_table"],
                outputs="regression_test_probabilities",
                name="predict_regression",
                tags=_BOTH,
            ),
            Node(
                predict_feature_model,
                inputs=["feature_models", "test_domain_features", "class_table"],
                outputs="features_test_probabilities",
                name="predict_feature_model",
                tags=_BOTH,
            ),
            Node(
                apply_ensemble,
                inputs={"ensemble": "ensemble", **{c: f"{c}_test_probabilities" for c in CANDIDATES}},
                outputs="ensemble_test_probabilities",
                name="apply_ensemble",
                tags=_BOTH,
            ),
            Node(
                write_submission,
                inputs=["normalised_test_cases", "ensemble_test_probabilities", "class_table", "ensemble"],
                outputs="submission",
                name="write_submission",
                tags=_BOTH,
            ),
        ]
    )


def _training_branch(fold: int) -> Pipeline:
    # The probabilities leave the namespace under names of their own: nodes outside it read them, and
    # a dotted name there is reserved for Kedro's namespacing (it warns).
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
                    "deepspeed_config",
                    "params:model",
                    "params:training",
                ],
                outputs=["model", "oof_probabilities", "test_probabilities", "metrics"],
                name="train_fold",
                tags=["training", "fold_training"],
            )
        ],
        namespace=f"fold_{fold}",
        inputs={
            "model_input_table",
            "fold_assignments",
            "normalised_test_cases",
            "vocabulary",
            "class_table",
            "deepspeed_config",
        },
        outputs={
            "oof_probabilities": f"transformer_oof_probabilities_fold_{fold}",
            "test_probabilities": f"transformer_test_probabilities_fold_{fold}",
        },
        parameters={"params:model", "params:training"},
    )


def _bind_fold(fold: int):
    """`train_fold` for one fold, keeping its name and docstring for logs and kedro viz."""
    return update_wrapper(partial(train_fold, fold=fold), train_fold)
