"""The trees candidate: a gradient-boosted classifier on the parsed features, one model per fold (with
``trees.ordinal`` one per threshold between the months, as the ordinal candidate's)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OrdinalEncoder

from sentence_reduction.pipelines.train.cumulative import CumulativeClassifier
from sentence_reduction.pipelines.train.out_of_fold import fit_out_of_fold, mean_class_probabilities, probability_table
from sentence_reduction.pipelines.train.parsing import PARSED_COLUMNS, aligned_features
from sentence_reduction.pipelines.train.threads import one_thread


def fit_trees(
    model_input: pd.DataFrame,
    parsed_features: pd.DataFrame,
    fold_assignments: pd.DataFrame,
    class_table: pd.DataFrame,
    trees: dict[str, Any],
) -> tuple[list[Pipeline], pd.DataFrame]:
    """The fold models and the held-out cases' class probabilities, on every parsed column.

    One OpenMP thread: beside torch's threads in the same process, the trees' OpenMP threads contend for
    the cores (measured on 2 cores: 7 s with one thread, 29 s by default, 232 s with two)."""
    features = aligned_features(model_input, parsed_features, PARSED_COLUMNS)

    def make_classifier() -> Pipeline:
        # The crime as a category: rare ones pooled, one unseen at prediction time treated as missing.
        crime = OrdinalEncoder(
            handle_unknown="use_encoded_value",
            unknown_value=np.nan,
            encoded_missing_value=np.nan,
            min_frequency=trees["min_crime_cases"],
        )
        # A number the ruling does not give as -1, below every real value (a tree splits on it as on
        # missing): a column missing in every training case would break the trees' binning.
        numbers = SimpleImputer(strategy="constant", fill_value=-1, keep_empty_features=True)
        boosted = HistGradientBoostingClassifier(categorical_features=[0], **trees["classifier"])
        return make_pipeline(
            ColumnTransformer([("crime", crime, ["crime"]), ("numbers", numbers, PARSED_COLUMNS[1:])]),
            CumulativeClassifier(boosted) if trees["ordinal"] else boosted,
        )

    with one_thread("openmp"):
        return fit_out_of_fold(make_classifier, features, model_input, fold_assignments, len(class_table))


def predict_trees(
    models: list[Pipeline], test_cases: pd.DataFrame, test_parsed_features: pd.DataFrame, class_table: pd.DataFrame
) -> pd.DataFrame:
    """The test cases' class probabilities: the mean of the fold models'."""
    features = aligned_features(test_cases, test_parsed_features, PARSED_COLUMNS)
    with one_thread("openmp"):
        probabilities = mean_class_probabilities(models, features, len(class_table))
    return probability_table(test_cases["id"], probabilities)
