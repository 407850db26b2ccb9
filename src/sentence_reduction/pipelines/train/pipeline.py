"""Wiring of the `train` and `predict` pipelines: the rulings parsed; each candidate (the classical ones
from their registry, `candidates.py`, fitted on the folds; each transformer candidate in its own namespace,
one branch per fold inside it) with its out-of-fold metrics; their ensemble; the submission. `predict` is
the nodes tagged `inference` (the same in both) and each saved fold model's predictions."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline

from sentence_reduction.pipelines.node_tags import FOLD_TRAINING, INFERENCE
from sentence_reduction.pipelines.train.candidates import CLASSICAL_CANDIDATES, Candidate
from sentence_reduction.pipelines.train.ensemble import apply_ensemble, choose_ensemble, plot_candidates
from sentence_reduction.pipelines.train.out_of_fold import (
    average_test_probabilities,
    evaluate_candidate,
    stack_fold_probabilities,
)
from sentence_reduction.pipelines.train.parsing import parse_rulings
from sentence_reduction.pipelines.train.submission import write_submission
from sentence_reduction.pipelines.train.transformer import (
    candidate_training,
    predict_fold,
    prepare_tokenizer,
    resolve_deepspeed_config,
    train_fold,
)


def create_train_pipeline(n_folds: int, transformer_candidates: Sequence[str]) -> Pipeline:
    """Each transformer candidate trained on fold_0 .. fold_{n-1}; the classical candidates on the same
    folds; each candidate's out-of-fold metrics; the ensemble chosen out of fold; the submission."""
    transformers = sum((_transformer_candidate(name, n_folds) for name in transformer_candidates), Pipeline([]))
    classical = sum(
        (_classical_candidate(name, candidate) for name, candidate in CLASSICAL_CANDIDATES.items()), _parsing()
    )
    candidates = (*transformer_candidates, *CLASSICAL_CANDIDATES)
    return transformers + classical + _ensemble_choice(candidates) + _inference(candidates)


def create_predict_pipeline(n_folds: int, transformer_candidates: Sequence[str]) -> Pipeline:
    """The saved models of every candidate and the saved ensemble applied to a test file: each transformer
    fold model's predictions, then the train pipeline's nodes tagged `inference`."""
    fold_predictions = [
        Node(
            predict_fold,
            inputs=[
                f"{name}.fold_{fold}.model",
                f"{name}.tokenizer",
                "normalised_test_cases",
                f"params:transformer_candidates.{name}.model",
                f"{name}.training",
            ],
            outputs=f"{name}.fold_{fold}.test_probabilities",
            name="predict_fold",
            namespace=f"{name}.fold_{fold}",
            tags=INFERENCE,
        )
        for name in transformer_candidates
        for fold in range(n_folds)
    ]
    return Pipeline(fold_predictions) + create_train_pipeline(n_folds, transformer_candidates).only_nodes_with_tags(
        INFERENCE
    )


def _transformer_candidate(name: str, n_folds: int) -> Pipeline:
    """One transformer candidate in its namespace ``name``: its training settings, tokenizer and
    DeepSpeed config; one branch per fold (``name.fold_<n>``); its out-of-fold table and metrics and
    its test probabilities, under names of their own (``<name>_oof_probabilities``...) for the ensemble.

    Names are written in full rather than mapped by a namespaced `Pipeline`: a node outside the
    namespace reads only the undotted ones (a dotted name there is reserved for Kedro's namespacing:
    it warns)."""
    parameters = f"params:transformer_candidates.{name}"
    folds = range(n_folds)
    return Pipeline(
        [
            Node(
                candidate_training,
                inputs=["params:training", f"{parameters}.training"],
                outputs=f"{name}.training",
                name="candidate_training",
                namespace=name,
                tags=INFERENCE,
            ),
            Node(
                prepare_tokenizer,
                inputs=["model_input_table", f"{parameters}.model"],
                outputs=f"{name}.tokenizer",
                name="prepare_tokenizer",
                namespace=name,
            ),
            Node(
                resolve_deepspeed_config,
                inputs=f"{name}.training",
                outputs=f"{name}.deepspeed_config",
                name="resolve_deepspeed_config",
                namespace=name,
            ),
            *(_fold_training(name, fold) for fold in folds),
            Node(
                stack_fold_probabilities,
                inputs=[f"{name}.fold_{fold}.oof_probabilities" for fold in folds],
                outputs=f"{name}_oof_probabilities",
                name="stack_fold_probabilities",
                namespace=name,
            ),
            _evaluation(name, name="evaluate_candidate", namespace=name),
            Node(
                average_test_probabilities,
                inputs=[f"{name}.fold_{fold}.test_probabilities" for fold in folds],
                outputs=f"{name}_test_probabilities",
                name="average_test_probabilities",
                namespace=name,
                tags=INFERENCE,
            ),
        ]
    )


def _fold_training(name: str, fold: int) -> Node:
    namespace = f"{name}.fold_{fold}"
    return Node(
        _bind_fold(name, fold),
        inputs=[
            "model_input_table",
            "fold_assignments",
            "normalised_test_cases",
            f"{name}.tokenizer",
            "class_table",
            f"{name}.deepspeed_config",
            f"params:transformer_candidates.{name}.model",
            f"{name}.training",
        ],
        outputs=[f"{namespace}.{output}" for output in ("model", "oof_probabilities", "test_probabilities", "metrics")],
        name="train_fold",
        namespace=namespace,
        tags=FOLD_TRAINING,
    )


def _parsing() -> Pipeline:
    """The rulings parsed, which every classical candidate reads: the training cases' (training only) and
    the test cases' (in prediction too)."""
    return Pipeline(
        [
            Node(parse_rulings, inputs="model_input_table", outputs="parsed_features", name="parse_rulings"),
            Node(
                parse_rulings,
                inputs="normalised_test_cases",
                outputs="test_parsed_features",
                name="parse_test_rulings",
                tags=INFERENCE,
            ),
        ]
    )


def _classical_candidate(name: str, candidate: Candidate) -> Pipeline:
    """A classical candidate: its fold models and out-of-fold probabilities, their metrics, and (in
    prediction too) the test cases' probabilities from its saved models."""
    return Pipeline(
        [
            Node(
                candidate.fit,
                inputs=[
                    "model_input_table",
                    "parsed_features",
                    "fold_assignments",
                    "class_table",
                    *(f"params:{parameters}" for parameters in candidate.parameters),
                ],
                outputs=[f"{name}_models", f"{name}_oof_probabilities"],
                name=f"fit_{name}",
            ),
            _evaluation(name, name=f"evaluate_{name}"),
            Node(
                candidate.predict,
                inputs=[f"{name}_models", "normalised_test_cases", "test_parsed_features", "class_table"],
                outputs=f"{name}_test_probabilities",
                name=f"predict_{name}",
                tags=INFERENCE,
            ),
        ]
    )


def _evaluation(candidate: str, name: str, namespace: str | None = None) -> Node:
    """A candidate's metrics over its out-of-fold probabilities."""
    return Node(
        evaluate_candidate,
        inputs=[f"{candidate}_oof_probabilities", "model_input_table", "class_table", "params:evaluation"],
        outputs=f"{candidate}_metrics",
        name=name,
        namespace=namespace,
    )


def _ensemble_choice(candidates: Sequence[str]) -> Pipeline:
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
                    **{candidate: f"{candidate}_oof_probabilities" for candidate in candidates},
                },
                outputs=["ensemble", "ensemble_metrics", "confusion_matrix", "class_report"],
                name="choose_ensemble",
            ),
            Node(
                plot_candidates,
                inputs={
                    "ensemble_metrics": "ensemble_metrics",
                    **{candidate: f"{candidate}_metrics" for candidate in candidates},
                },
                outputs="candidate_comparison",
                name="plot_candidates",
            ),
        ]
    )


def _inference(candidates: Sequence[str]) -> Pipeline:
    """The same in training and prediction: the saved ensemble applied to every candidate's test
    probabilities, the submission."""
    return Pipeline(
        [
            Node(
                apply_ensemble,
                inputs={"ensemble": "ensemble", **{c: f"{c}_test_probabilities" for c in candidates}},
                outputs="ensemble_test_probabilities",
                name="apply_ensemble",
                tags=INFERENCE,
            ),
            Node(
                write_submission,
                inputs=["normalised_test_cases", "ensemble_test_probabilities", "class_table", "ensemble"],
                outputs="submission",
                name="write_submission",
                tags=INFERENCE,
            ),
        ]
    )


def _bind_fold(candidate: str, fold: int):
    """`train_fold` for one candidate and fold, keeping its name and docstring for logs and kedro viz."""
    return update_wrapper(partial(train_fold, candidate=candidate, fold=fold), train_fold)
