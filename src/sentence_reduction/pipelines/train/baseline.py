"""The baseline candidate: character n-gram TF-IDF + logistic regression, one model per fold."""

from __future__ import annotations

from typing import Any

import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from threadpoolctl import threadpool_limits

from sentence_reduction.pipelines.train.out_of_fold import fit_out_of_fold, mean_class_probabilities, probability_table


def fit_baseline(
    model_input: pd.DataFrame, fold_assignments: pd.DataFrame, class_table: pd.DataFrame, baseline: dict[str, Any]
) -> tuple[list[Pipeline], pd.DataFrame]:
    """The fold models and the held-out cases' class probabilities, on the transformers' folds."""

    def make_classifier() -> Pipeline:
        return make_pipeline(
            TfidfVectorizer(
                analyzer="char",
                ngram_range=tuple(baseline["ngram_range"]),
                max_features=baseline["max_features"],
                sublinear_tf=True,
            ),
            LogisticRegression(C=baseline["C"], max_iter=baseline["max_iter"]),
        )

    # One BLAS thread: beside torch's threads, more oversubscribe the cores (14 s against 1 s a fit
    # on 2 cores), and the sparse solver gains little from them anyway.
    with threadpool_limits(limits=1, user_api="blas"):
        return fit_out_of_fold(make_classifier, model_input["fact"], model_input, fold_assignments, len(class_table))


def predict_baseline(
    baseline_models: list[Pipeline], test_cases: pd.DataFrame, class_table: pd.DataFrame
) -> pd.DataFrame:
    """The test cases' class probabilities: the mean of the fold models'."""
    with threadpool_limits(limits=1, user_api="blas"):
        probabilities = mean_class_probabilities(baseline_models, test_cases["fact"], len(class_table))
    return probability_table(test_cases["id"], probabilities)
