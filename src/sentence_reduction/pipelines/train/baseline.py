"""The linear candidate (`baseline`): TF-IDF n-grams of the ruling and its parsed features, scaled, into a
logistic regression, one model per fold.

The n-grams fit the text: words where the rulings come word-segmented (a space between words, as in
copies segmented by jieba), characters where they come raw. ``linear_features`` is shared with the
regression candidate, so both read the same evidence.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from sentence_reduction.pipelines.train.out_of_fold import fit_out_of_fold, mean_class_probabilities, probability_table
from sentence_reduction.pipelines.train.parsing import FEATURE_COLUMNS, aligned_features
from sentence_reduction.pipelines.train.threads import one_thread

ANALYZERS = ("auto", "word", "char")
# Features read as categories by a linear model: the crime, and the recommended months (also under the
# court's stance), whose value the granted months equal in most rulings that state it (a category lets
# each value carry its own weight).
_CATEGORICAL = ["crime", "recommended_months", "adopted_months", "adjusted_months"]
_NUMERIC = [column for column in FEATURE_COLUMNS if column != "crime"]


def fit_baseline(
    model_input: pd.DataFrame,
    parsed_features: pd.DataFrame,
    fold_assignments: pd.DataFrame,
    class_table: pd.DataFrame,
    baseline: dict[str, Any],
) -> tuple[list[Pipeline], pd.DataFrame]:
    """The fold models and the held-out cases' class probabilities, on the transformers' folds."""
    return fit_on_linear_features(
        lambda: LogisticRegression(C=baseline["C"], max_iter=baseline["max_iter"]),
        model_input,
        parsed_features,
        fold_assignments,
        class_table,
        baseline,
    )


def fit_on_linear_features(
    make_estimator: Callable[[], Any],
    model_input: pd.DataFrame,
    parsed_features: pd.DataFrame,
    fold_assignments: pd.DataFrame,
    class_table: pd.DataFrame,
    baseline: dict[str, Any],
) -> tuple[list[Pipeline], pd.DataFrame]:
    """One model per fold of `linear_features` (as ``baseline`` describes them) into ``make_estimator()``,
    and the held-out cases' class probabilities: what the linear, the regression and the ordinal
    candidates share."""
    inputs = linear_inputs(model_input, parsed_features)
    analyzer = text_analyzer(model_input["fact"], baseline)

    def make_classifier() -> Pipeline:
        return make_pipeline(linear_features(analyzer, baseline), make_estimator())

    # One BLAS thread: beside torch's threads, more oversubscribe the cores (14 s against 1 s a fit
    # on 2 cores), and the sparse solver gains little from them anyway.
    with one_thread("blas"):
        return fit_out_of_fold(make_classifier, inputs, model_input, fold_assignments, len(class_table))


def predict_on_linear_features(
    models: list[Pipeline], test_cases: pd.DataFrame, test_parsed_features: pd.DataFrame, class_table: pd.DataFrame
) -> pd.DataFrame:
    """The test cases' class probabilities from fold models of `fit_on_linear_features` (the linear, the
    regression and the ordinal candidates'): their mean."""
    inputs = linear_inputs(test_cases, test_parsed_features)
    with one_thread("blas"):
        probabilities = mean_class_probabilities(models, inputs, len(class_table))
    return probability_table(test_cases["id"], probabilities)


def linear_inputs(cases: pd.DataFrame, parsed_features: pd.DataFrame) -> pd.DataFrame:
    """``fact`` and the parsed features of each case, in ``cases``' order."""
    features = aligned_features(cases, parsed_features, FEATURE_COLUMNS)
    features.insert(0, "fact", cases["fact"].to_numpy())
    return features


def text_analyzer(texts: pd.Series, parameters: dict[str, Any]) -> str:
    """``word`` or ``char``: ``parameters["analyzer"]``, or under ``auto`` words when spaces make up at
    least ``segmented_space_share`` of the training texts' characters (a segmented copy), else characters."""
    analyzer = parameters["analyzer"]
    if analyzer not in ANALYZERS:
        raise ValueError(f"baseline analyzer must be one of {ANALYZERS}, not {analyzer!r}")
    if analyzer != "auto":
        return analyzer
    characters = texts.str.len().sum()
    spaces = texts.str.count(" ").sum()
    return "word" if characters and spaces / characters >= parameters["segmented_space_share"] else "char"


def linear_features(analyzer: str, parameters: dict[str, Any]) -> ColumnTransformer:
    """TF-IDF n-grams of ``fact`` (words split at whitespace, one-character words kept, or characters),
    and with ``parsed_features`` the parsed features: numbers as log(1+x) standardised with a flag where
    the ruling does not say, the crime and the recommended months as categories."""
    text = TfidfVectorizer(
        analyzer=analyzer,
        token_pattern=r"(?u)\S+" if analyzer == "word" else None,
        ngram_range=tuple(parameters[f"{analyzer}_ngram_range"]),
        min_df=parameters["min_df"],
        max_features=parameters["max_features"],
        sublinear_tf=True,
    )
    parts: list[tuple[str, Any, str | list[str]]] = [("text", text, "fact")]
    if parameters["parsed_features"]:
        numbers = make_pipeline(
            SimpleImputer(strategy="constant", fill_value=0, add_indicator=True, keep_empty_features=True),
            # Every parsed number is a non-negative count, term or amount; on a log scale like the metric.
            FunctionTransformer(np.log1p, feature_names_out="one-to-one"),
            StandardScaler(),
        )
        categories = OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=parameters["min_category_cases"])
        parts += [("numbers", numbers, _NUMERIC), ("categories", categories, _CATEGORICAL)]
    return ColumnTransformer(parts)
